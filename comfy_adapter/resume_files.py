"""Saved runs of the FramePack sampler in ComfyUI's output folder.

After every finished section the sampler appends the section to a run folder in ``output/framepack_resume/``; a
cancelled or crashed run continues from it. The folder's name is a hash of everything that changes the result:
the model's weights and patches (LoRAs), a connected SAMPLER and its options, the conditioning and the settings
(schedule and step caches included), so queueing the same graph again finds it ("auto"), and any change starts a
new run. A finished run is kept, so that a crash in a later node (say, an out-of-memory VAE decode) costs no
sampling: queued again, the sampler returns it at once. Old runs are removed when a new one starts: the newest
``KEEP_FINISHED`` finished and ``KEEP_UNFINISHED`` unfinished runs stay.

Listing the node (``resume_choices``) only reads: it never creates the folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from pathlib import Path

import folder_paths
import torch

from ..framepack_core import InputError
from ..framepack_core.engine.resume import HEADER_NAME, fingerprint, prune_runs, settings_record
from .section_sampler import step_cache_choice

log = logging.getLogger(__name__)

RESUME_FOLDER = "framepack_resume"
AUTO, OFF = "auto", "off"
# Deep enough to reach a LoRA adapter's weight tensors inside a patch (list, tuple, adapter, fields, weights).
PATCH_DEPTH = 8
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# Larger tensors in a SAMPLER's options are identified by shape and dtype (hashing would cost too much).
TENSOR_HASH_LIMIT = 1 << 20
KEEP_FINISHED, KEEP_UNFINISHED = 3, 5


def resume_folder() -> Path:
    return Path(folder_paths.get_output_directory()) / RESUME_FOLDER


def saved_runs() -> list[str]:
    """Run folders and single-file states in the resume folder; none when it is missing or unreadable."""
    try:
        entries = list(os.scandir(resume_folder()))
    except OSError:
        return []
    folders = [e.name for e in entries if e.name.startswith("framepack_") and e.is_dir()
               and os.path.isfile(os.path.join(e.path, HEADER_NAME))]
    files = [e.name for e in entries if e.name.startswith("framepack_") and e.name.endswith(".safetensors")
             and e.is_file()]
    return sorted(folders + files)


def resume_choices() -> list[str]:
    return [AUTO, OFF] + saved_runs()


def patches_digest(model) -> str:
    """A digest of the LoRA (and other) weight patches of a ModelPatcher, from its public ``get_key_patches``:
    per patched key, a description of each patch (strengths, adapter fields, weights) whatever its layout."""
    digest = hashlib.sha256()
    for key, (_, *patches) in sorted(model.get_key_patches().items()):
        if patches:
            digest.update(f"{key}|{describe(patches, max_depth=PATCH_DEPTH)}".encode())
    return digest.hexdigest()


def describe(value, depth: int = 0, max_depth: int = 4) -> str:
    """A stable text for a SAMPLER's (or a patch's) parts: functions by module, name and closed-over values;
    objects by fields; tensors by a hash of their values (large ones by shape and dtype)."""
    if depth > max_depth:
        return "..."
    inner = lambda v: describe(v, depth + 1, max_depth)  # noqa: E731
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if torch.is_tensor(value):
        if value.numel() > TENSOR_HASH_LIMIT:
            return f"tensor{tuple(value.shape)}:{value.dtype}"
        data = value.detach().cpu()
        data = data.float() if data.dtype in (torch.bfloat16, *FP8_DTYPES) else data
        return f"tensor{tuple(value.shape)}:{hashlib.sha256(data.numpy().tobytes()).hexdigest()}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {inner(v)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(inner(v) for v in value) + "]"
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(inner(v) for v in value)) + "}"
    if inspect.isfunction(value) or inspect.ismethod(value):
        function = getattr(value, "__func__", value)
        cells = [inner(contents(cell)) for cell in function.__closure__ or ()]
        return f"{function.__module__}.{function.__qualname__}{inner(function.__defaults__)}{cells}"
    fields = getattr(value, "__dict__", None)
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    return name + (inner(fields) if isinstance(fields, dict) else f"<{value!r}>")


def contents(cell):
    try:
        return cell.cell_contents
    except ValueError:  # a closure cell not filled yet
        return None


def sampler_identity(sampler) -> str:
    """What a connected SAMPLER is: its class, sampler function and options (empty without one)."""
    return "" if sampler is None else describe(sampler)


def run_fingerprint(model, inputs, sampler=None) -> str:
    """The fingerprint a saved run must match: the weights, their patches, the SAMPLER, the conditioning and
    a step-cache node's choice (only when there is one, so runs without one keep their fingerprint)."""
    core = fingerprint(model.model.diffusion_model, inputs)
    text = f"{core}|{patches_digest(model)}|{sampler_identity(sampler)}"
    choice = step_cache_choice(model)
    if choice is not None:
        text += f"|{describe(choice)}"
    return hashlib.sha256(text.encode()).hexdigest()


def auto_path(run_fp: str, settings) -> Path:
    key = hashlib.sha256(f"{run_fp}|{json.dumps(settings_record(settings), sort_keys=True)}".encode()).hexdigest()
    return resume_folder() / f"framepack_{key[:20]}"


def chosen_path(choice: str, run_fp: str, settings) -> tuple[Path | None, Path | None]:
    """(saved run to resume from or None, run folder to write or None) for the node's resume_file choice."""
    target = auto_path(run_fp, settings)
    if choice == OFF:
        return None, None
    if choice == AUTO:
        return (target if (target / HEADER_NAME).is_file() else None), target
    if choice not in saved_runs():
        raise InputError(f"saved run {choice!r} is not in {resume_folder()}; pick one from the list "
                         "(press R to refresh it), or 'auto'.")
    return resume_folder() / choice, target


def remove_old_runs(*keep: Path) -> None:
    """The retention policy, applied when a run starts (the run and the one it resumes are kept)."""
    for folder in prune_runs(resume_folder(), keep_finished=KEEP_FINISHED, keep_unfinished=KEEP_UNFINISHED,
                             keep=keep):
        log.info("FramePack: removed the old saved run %s", folder)
