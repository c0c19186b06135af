"""The FramePack model loader node."""

from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..framepack_core import CheckpointError
from ..framepack_core.model.checkpoint import INDEX_NAME, SINGLE_NAME

from ..comfy_adapter.native_model import WEIGHT_DTYPES, load_framepack_model

DIFFUSERS_PREFIX = "diffusers/"


def diffusers_folders() -> dict[str, str]:
    """Transformer folders under models/diffusers: display name -> absolute path.

    A folder qualifies when it holds a config.json and safetensors weights (sharded with an index, or a single
    file); a full pipeline folder contributes its ``transformer`` subfolder. Listing never follows a link to
    a folder below the top level (a model folder there may be a link): a link loop cannot make it walk on.
    """
    found = {}
    for root in folder_paths.get_folder_paths("diffusers"):
        if not os.path.isdir(root):
            continue
        starts = [root] + sorted(entry.path for entry in os.scandir(root) if entry.is_symlink() and entry.is_dir())
        for start in starts:
            for current, dirs, files in os.walk(start):
                dirs.sort()
                has_weights = INDEX_NAME in files or SINGLE_NAME in files
                if "config.json" in files and has_weights:
                    name = os.path.relpath(current, root).replace(os.sep, "/")
                    found[DIFFUSERS_PREFIX + name] = current
    return found


def model_choices() -> list[str]:
    return folder_paths.get_filename_list("diffusion_models") + sorted(diffusers_folders())


def listed_file(folder: str, name: str) -> str:
    """The path of a name listed for a model folder, whatever kind of file it is.

    ComfyUI's own lookup skips anything but regular files and then says "not found"; the path is returned so
    that the core loaders can say what the file really is (a FIFO, a device), without ever opening it.
    """
    relative = os.path.relpath(os.path.join("/", name), "/")
    for root in folder_paths.get_folder_paths(folder):
        path = os.path.join(root, relative)
        if os.path.lexists(path):
            return path
    return folder_paths.get_full_path_or_raise(folder, name)


def resolve_model(name: str) -> str:
    """Map a listed model name to its path; names are only ever looked up, never joined onto a path."""
    if name in folder_paths.get_filename_list("diffusion_models"):
        return listed_file("diffusion_models", name)
    folders = diffusers_folders()
    if name in folders:
        return folders[name]
    raise CheckpointError(
        f"model {name!r} is not in models/diffusion_models or models/diffusers. Put the FramePack transformer "
        "there and refresh the node list (press R), then pick it from the list.")


class FramePackModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackModelLoader",
            display_name="Load FramePack Model",
            category="FramePack/loaders",
            description="Loads a FramePack transformer (FramePackI2V_HY or FramePack_F1) as a native ComfyUI MODEL: "
                        "ComfyUI's model management handles devices and low-VRAM loading, and core nodes such as "
                        "LoraLoaderModelOnly and TorchCompileModel work on it.",
            inputs=[
                io.Combo.Input("model_name", options=model_choices(),
                               tooltip="A single .safetensors file from models/diffusion_models, or a diffusers folder "
                                       "(config.json + shards) from models/diffusers."),
                io.Combo.Input("weight_dtype", options=list(WEIGHT_DTYPES), default="default",
                               tooltip="Storage dtype of the weights. 'default' keeps the file's (fp8 files stay fp8); "
                                       "fp8 halves the memory of bf16 weights at a small quality cost; "
                                       "fp8_e4m3fn_fast also uses fp8 matrix multiplication where the GPU supports it."),
            ],
            outputs=[io.Model.Output(tooltip="The FramePack transformer, for the FramePack sampler nodes.")],
        )

    @classmethod
    def execute(cls, model_name, weight_dtype) -> io.NodeOutput:
        # Which released checkpoint this is, by its usual name, so the sampler can warn about a mode mismatch.
        variant = "f1" if "f1" in model_name.lower() else "i2v"
        return io.NodeOutput(load_framepack_model(resolve_model(model_name), weight_dtype, variant))
