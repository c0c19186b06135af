"""Loading FramePack transformer weights: single safetensors files and sharded diffusers folders.

Only safetensors are read (a pickle file can run code). The model is built on the meta device and the
loaded tensors are assigned to it one by one, so loading never holds two copies of the weights. Every
problem with a file is reported as a ``CheckpointError`` naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open

from .config import FramePackConfig, infer_config
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError, NumericalError
from .transformer import FramePackTransformer
from .ops import CastOps
from ..numerics import finite

log = logging.getLogger(__name__)

INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
SINGLE_NAME = "diffusion_pytorch_model.safetensors"
# Prefixes under which other tools store the same weights.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# Modules the ComfyUI fp8 repacks keep in higher precision; only the blocks' Linear weights become fp8.
FP8_KEEP_PREFIXES = ("x_embedder.", "clean_x_embedder.", "context_embedder.", "image_projection.",
                     "time_text_embed.", "norm_out.", "proj_out.")
# A config.json is about 1 KB and a shard index about 100 KB.
MAX_JSON_BYTES = 64 * 2**20
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
STORED_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                 "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


@dataclasses.dataclass
class CheckpointSource:
    """Where each tensor of a checkpoint lives: ``files[key]`` is the safetensors file, ``names[key]`` the stored name."""

    path: Path
    files: dict
    names: dict
    shapes: dict
    dtypes: dict
    config: dict | None
    metadata: dict


def load_transformer(path, *, dtype=None, device="cpu", operations=None, attention=None, config=None,
                     model_class=FramePackTransformer) -> FramePackTransformer:
    """Load a FramePack transformer from a ``.safetensors`` file or a diffusers folder.

    ``dtype`` is the storage dtype of the weights: None keeps the file's dtypes; a float dtype converts
    every weight; an fp8 dtype converts the blocks' Linear weights only (norms, biases and embedders stay in
    bfloat16, as in the ComfyUI repacks). ``config`` overrides the file's config (a dict or FramePackConfig).
    ``model_class`` is a FramePackTransformer subclass to build (the ComfyUI adapter passes its own).
    """
    check_dtype(dtype)
    source = open_checkpoint(path)
    model_config = resolve_config(source, config)
    compute_dtype = choose_compute_dtype(source, dtype)
    with torch.device("meta"):
        model = model_class(model_config, attention=attention, dtype=compute_dtype, operations=operations or CastOps)
    check_keys(source, model)
    state = read_tensors(source, dtype, device)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    log.info("loaded FramePack transformer from %s (%d tensors, compute dtype %s)", source.path, len(state), compute_dtype)
    return model


def check_dtype(dtype) -> None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CheckpointError(f"dtype must be None (keep the file's) or a torch floating-point dtype such as "
                              f"torch.bfloat16 or torch.float8_e4m3fn, got {dtype!r}.")


# ------------------------------------------------------------------------------------------- reading headers

def open_checkpoint(path) -> CheckpointSource:
    """Read the tensor directory of a single file or a diffusers folder, without reading tensor data."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"the checkpoint path must be a file or folder name, got {path!r}.")
    path = Path(os.fspath(path)).expanduser()
    if not path.exists():
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path}. Put the FramePack transformer in ComfyUI's models/diffusion_models "
            "(single .safetensors file) or models/diffusers (diffusers folder) and check the name.")
    if path.is_dir():
        return open_folder(path)
    return open_files(path, [path], config=None)


def check_regular_file(path, what: str = "checkpoint", error: type = CheckpointError) -> None:
    """Refuse a FIFO, device or socket before opening it: reading a FIFO would block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise error(f"cannot read the {what} {path}: {err}.") from None
    if not stat.S_ISREG(mode):
        raise error(f"the {what} {path} is not a regular file (it is a FIFO, device or socket); it must be a plain "
                    ".safetensors file: replace it with the downloaded file.")


def shard_path(folder: Path, name) -> Path:
    """A shard named in the index, which must lie inside the folder once symlinks are resolved."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{folder / INDEX_NAME} names a shard {name!r}, which is not a file name; the diffusers "
                              "folder is damaged: download it again.")
    path = folder / name
    root = folder.resolve()
    if not path.resolve().is_relative_to(root):
        raise CheckpointError(f"{folder / INDEX_NAME} names the shard {name!r}, which lies outside the model folder "
                              f"({path.resolve()}); shards are only read from inside {root}. The index is damaged or "
                              "was edited: download the model again.")
    return path


def open_folder(folder: Path) -> CheckpointSource:
    config = read_json(folder / "config.json") if (folder / "config.json").exists() else None
    index_path = folder / INDEX_NAME
    if index_path.exists():
        weight_map = read_json(index_path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no 'weight_map'; the diffusers folder is damaged: download it again.")
        shards = sorted({shard_path(folder, name) for name in weight_map.values()})
        absent = [s.name for s in shards if not s.exists()]
        if absent:
            raise CheckpointError(
                f"diffusers folder {folder} is incomplete: shard(s) {absent} listed in {INDEX_NAME} are missing. "
                "Download the missing files.")
        return open_files(folder, shards, config)
    single = folder / SINGLE_NAME
    if single.is_file():
        return open_files(folder, [single], config)
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return open_files(folder, files, config)
    raise CheckpointError(
        f"{folder} is not a diffusers transformer folder: it has no {INDEX_NAME} or {SINGLE_NAME} "
        f"(found {len(files)} .safetensors files). Point to the folder holding config.json and the shards, "
        "or to a single .safetensors file.")


def read_json(path: Path) -> dict:
    check_regular_file(path)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointError(f"{path} is {path.stat().st_size} bytes, more than any model's JSON file "
                              f"({MAX_JSON_BYTES} at most); it is not a config or index: download the model again.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CheckpointError(f"cannot read {path}: its JSON is nested too deeply to be a model config or index. "
                              "The file is damaged: download it again.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}. The file is damaged: download it again.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(data).__name__}.")
    return data


def open_files(root: Path, files, config) -> CheckpointSource:
    source = CheckpointSource(root, {}, {}, {}, {}, config, {})
    for file in files:
        read_header(file, source)
    if not source.files:
        raise CheckpointError(f"{root} holds no tensors. It is not a FramePack transformer: download the model again.")
    identify(source)
    return source


def read_header(file: Path, source: CheckpointSource) -> None:
    if file.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{file} is a pickle checkpoint; only .safetensors files are loaded because pickle files can run code. "
            "Use the .safetensors release of the model.")
    check_regular_file(file)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for name in handle.keys():
                key = strip_prefix(name)
                if key in source.files:
                    raise CheckpointError(f"tensor {key!r} appears twice ({source.files[key].name} and {file.name}).")
                piece = handle.get_slice(name)
                source.files[key], source.names[key] = file, name
                source.shapes[key] = tuple(piece.get_shape())
                source.dtypes[key] = piece.get_dtype()
    except SafetensorError as err:
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({err}); it is truncated or corrupt. Download it again.") from None
    except OSError as err:
        raise CheckpointError(f"cannot read {file}: {err}.") from None
    source.metadata.update(metadata)


def strip_prefix(name: str) -> str:
    for prefix in KEY_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def identify(source: CheckpointSource) -> None:
    """Raise a CheckpointError that says what the file is when it is not a FramePack transformer."""
    keys = source.files.keys()
    has = lambda fragment: any(fragment in k for k in keys)  # noqa: E731
    if "x_embedder.proj.weight" in keys and "clean_x_embedder.proj.weight" in keys and "image_projection.up.weight" in keys:
        return
    where = source.path
    if has("lora_") or has(".lora.") or has("lora_down") or has("lora_A"):
        kind = "a LoRA, not a transformer. Load the FramePack transformer here and apply the LoRA with LoraLoaderModelOnly"
    elif any(k.startswith(("encoder.", "decoder.")) for k in keys) or has("quant_conv"):
        kind = "a VAE. Load it with VAELoader; this loader needs the FramePack transformer (FramePackI2V_HY or FramePack_F1)"
    elif has("txt_in.individual_token_refiner") or has("double_blocks.0.img_attn_qkv"):
        kind = ("a plain HunyuanVideo transformer (original key naming). FramePack needs its own checkpoint "
                "(FramePackI2V_HY or FramePack_F1_I2V_HY), which adds clean_x_embedder and image_projection")
    elif has("double_blocks.") and has("img_in."):
        kind = "a Flux-style model. This loader needs the FramePack transformer (FramePackI2V_HY or FramePack_F1_I2V_HY)"
    elif "x_embedder.proj.weight" in keys and has("transformer_blocks."):
        missing = [m for m in ("clean_x_embedder", "image_projection") if not has(m + ".")]
        kind = (f"a HunyuanVideo transformer without FramePack's {' and '.join(missing)}. Use a FramePack checkpoint "
                "(FramePackI2V_HY or FramePack_F1_I2V_HY)")
    else:
        sample = sorted(keys)[:4]
        kind = (f"not a FramePack transformer: its tensors are named like {sample}, while FramePack has "
                "x_embedder.proj.weight, clean_x_embedder.proj_2x.weight, transformer_blocks.0.attn.to_q.weight, ... "
                "Choose the FramePack transformer file")
    raise CheckpointError(f"{where} is {kind}.")


# ------------------------------------------------------------------------------------------- config and keys

def resolve_config(source: CheckpointSource, override) -> FramePackConfig:
    """Config from the caller, else config.json, else the file's metadata, else inferred from the shapes."""
    try:
        if isinstance(override, FramePackConfig):
            return override
        if override is not None:
            return FramePackConfig.from_dict(override)
        if source.config is not None:
            return FramePackConfig.from_dict(source.config)
        if "config" in source.metadata:
            return FramePackConfig.from_dict(json.loads(source.metadata["config"]))
        return infer_config(source.shapes)
    except RecursionError:
        raise CheckpointError(f"{source.path}: the config in the file's metadata is nested too deeply to be a model "
                              "config; the file is damaged: download it again.") from None
    except (ConfigError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{source.path}: the model config is unusable: {err}") from None


def check_keys(source: CheckpointSource, model: FramePackTransformer) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(source.files))
    extra = sorted(set(source.files) - set(expected))
    wrong = sorted(k for k in set(expected) & set(source.files) if expected[k] != source.shapes[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensor(s) are missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} tensor(s) are not part of this model, e.g. {extra[:3]}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} tensor(s) have the wrong shape, e.g. {k}: file {source.shapes[k]}, model {expected[k]}")
    if problems:
        raise CheckpointError(
            f"{source.path} does not match the FramePack transformer config it describes: {'; '.join(problems)}. "
            "The file is incomplete or belongs to another model: download the FramePack checkpoint again.")


# ------------------------------------------------------------------------------------------- dtypes and data

def block_weight_dtype(source: CheckpointSource) -> torch.dtype:
    """Storage dtype of the blocks' weights (what a file is "in": fp8 repacks keep other tensors in bf16)."""
    key = "transformer_blocks.0.attn.to_q.weight"
    name = source.dtypes.get(key) or source.dtypes["x_embedder.proj.weight"]
    return STORED_DTYPES.get(name, torch.float32)


def parameter_count(source: CheckpointSource) -> int:
    count = 0
    for shape in source.shapes.values():
        size = 1
        for dim in shape:
            size *= dim
        count += size
    return count


def choose_compute_dtype(source: CheckpointSource, dtype):
    """The activation dtype: the requested float dtype, else the most common non-fp8 dtype of the weights."""
    if dtype is not None and dtype not in FP8_DTYPES:
        return dtype
    counts: dict = {}
    for name in source.dtypes.values():
        counts[name] = counts.get(name, 0) + 1
    for name in sorted(counts, key=counts.get, reverse=True):
        candidate = STORED_DTYPES.get(name)
        if candidate is not None and candidate.is_floating_point and candidate.itemsize > 1:
            return candidate
    return torch.bfloat16


def storage_dtype(key: str, stored: torch.dtype, dtype) -> torch.dtype:
    """The dtype a tensor is kept in after loading."""
    if key.startswith("proj_out."):
        return torch.float32
    if dtype is None:
        return stored
    if dtype in FP8_DTYPES:
        is_block_weight = key.endswith(".weight") and not key.startswith(FP8_KEEP_PREFIXES) and "norm" not in key
        if is_block_weight:
            return dtype
        return stored if stored in (torch.bfloat16, torch.float32, torch.float16) else torch.bfloat16
    return dtype


def read_tensors(source: CheckpointSource, dtype, device) -> dict:
    """Every tensor in its storage dtype on ``device``.

    Tensors kept in the file's dtype stay views of the file's memory map (no copy at all on the CPU). Tensors
    that change dtype are read with plain file reads instead, so the memory map never holds the original
    next to the converted copy: peak memory stays near the size of the converted weights.
    """
    state = {}
    by_file: dict = {}
    for key, file in source.files.items():
        by_file.setdefault(file, []).append(key)
    for file, keys in by_file.items():
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle, open(file, "rb") as raw:
                offsets = data_offsets(raw)
                for key in keys:
                    stored = STORED_DTYPES.get(source.dtypes[key])
                    if stored is None:
                        raise CheckpointError(f"{file} stores {key} as {source.dtypes[key]}, not as floating point "
                                              "weights; it is not a usable FramePack checkpoint.")
                    target = storage_dtype(key, stored, dtype)
                    state[key] = read_tensor(handle, raw, offsets, source, key, stored, target).to(device)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{file} could not be read ({err}); it is truncated or corrupt. Download it again.") from None
    return state


def read_tensor(handle, raw, offsets, source: CheckpointSource, key: str, stored, target) -> torch.Tensor:
    """One tensor in its storage dtype, checked for NaN / inf as read (the file's copy is freed on return)."""
    name, file = source.names[key], source.files[key]
    if target == stored:
        tensor = handle.get_tensor(name)
    else:
        tensor = read_copy(raw, offsets[name], stored, source.shapes[key], file)
    check_finite_weight(tensor, key, file)
    converted = tensor.to(target)
    if target != stored and not finite(converted):
        raise NumericalError(f"{file}: tensor {key} overflows when converted from {stored} to {target} (its values "
                             "beyond that dtype's range would become inf). Load it in a wider dtype: weight_dtype "
                             "default or bfloat16.")
    return converted


def check_finite_weight(tensor: torch.Tensor, key: str, file: Path) -> None:
    """One reduction per tensor as it is read: a NaN weight would make every video silently NaN."""
    if not finite(tensor):
        bad = tensor.float().isfinite().logical_not().sum() if tensor.itemsize > 1 else "some"
        raise NumericalError(f"{file}: tensor {key} holds {bad} NaN or infinite value(s) of {tensor.numel()}, so "
                             "every output would be NaN. The file is damaged (or was saved from a diverged "
                             "training run): download it again.")


def data_offsets(raw) -> dict:
    """Absolute byte ranges of the tensors of an (already validated) safetensors file."""
    raw.seek(0)
    length = int.from_bytes(raw.read(8), "little")
    header = json.loads(raw.read(length))
    base = 8 + length
    return {name: (base + info["data_offsets"][0], base + info["data_offsets"][1])
            for name, info in header.items() if name != "__metadata__"}


def read_copy(raw, span, dtype, shape, file) -> torch.Tensor:
    start, end = span
    buffer = bytearray(end - start)
    raw.seek(start)
    if raw.readinto(buffer) != len(buffer):
        raise CheckpointError(f"{file} ends before its tensor data does; it is truncated. Download it again.")
    if not buffer:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape)


def save_config_metadata(config: FramePackConfig) -> Mapping[str, str]:
    """safetensors metadata that makes a single file self-describing (read back by ``load_transformer``)."""
    return {"format": "pt", "config": json.dumps(config.to_dict())}
