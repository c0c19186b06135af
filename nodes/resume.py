"""Resume files of the FramePack sampler in ComfyUI's output folder.

After every finished section the sampler saves the run's state to ``output/framepack_resume/``; a cancelled
or crashed run continues from it. The file name is a hash of the model (with its LoRA patches), the
conditioning and the settings, so queueing the same graph again finds it ("auto"); it is deleted once the
video is finished.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import folder_paths
import torch

from ..framepack_core import InputError
from ..framepack_core.resume import fingerprint, settings_record

RESUME_FOLDER = "framepack_resume"
AUTO, OFF = "auto", "off"
PATCH_SAMPLE = 64


def resume_folder() -> Path:
    folder = Path(folder_paths.get_output_directory()) / RESUME_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def resume_choices() -> list[str]:
    return [AUTO, OFF] + sorted(p.name for p in resume_folder().glob("framepack_*.safetensors"))


def patches_digest(model) -> str:
    """A digest of the LoRA (and other) weight patches on a ModelPatcher: keys, strengths, sampled weights."""
    digest = hashlib.sha256()
    for key in sorted(model.patches):
        for patch in model.patches[key]:
            strength, adapter, strength_model = patch[0], patch[1], patch[2]
            digest.update(f"{key}|{strength}|{strength_model}".encode())
            weights = getattr(adapter, "weights", adapter)
            for tensor in weights if isinstance(weights, (list, tuple)) else [weights]:
                if torch.is_tensor(tensor):
                    flat = tensor.detach().float().cpu().reshape(-1)
                    digest.update(str(tuple(tensor.shape)).encode())
                    digest.update(torch.cat([flat[:PATCH_SAMPLE], flat[-PATCH_SAMPLE:]]).numpy().tobytes())
    return digest.hexdigest()


def run_fingerprint(model, inputs) -> str:
    """The fingerprint a resume file must match: the weights, their patches and the conditioning."""
    core = fingerprint(model.model.diffusion_model, inputs)
    return hashlib.sha256(f"{core}|{patches_digest(model)}".encode()).hexdigest()


def auto_path(run_fp: str, settings) -> Path:
    key = hashlib.sha256(f"{run_fp}|{json.dumps(settings_record(settings), sort_keys=True)}".encode()).hexdigest()
    return resume_folder() / f"framepack_{key[:20]}.safetensors"


def chosen_path(choice: str, run_fp: str, settings) -> tuple[Path | None, Path | None]:
    """(file to resume from or None, file to write or None) for the node's resume_file choice."""
    target = auto_path(run_fp, settings)
    if choice == OFF:
        return None, None
    if choice == AUTO:
        return (target if target.is_file() else None), target
    if choice not in resume_choices():
        raise InputError(f"resume file {choice!r} is not in {resume_folder()}; pick one from the list "
                         "(press R to refresh it), or 'auto'.")
    return resume_folder() / choice, target
