"""One-frame inference: sample a single latent frame at a chosen RoPE index from clean control frames.

With the start image as control at index 0 and the target at a later index, FramePack predicts how that frame
looks after some time ("one-frame inference"). Adding a second control image at a far index (the
"kisekaeichi" reference-editing recipe) makes the target take over that image's content, e.g. clothes or a
background; masks zero the parts of each control latent that should not be used.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..model.packing import CleanGroup
from .generate import GenerationSettings, SectionJob
from .sampling import flow_sigmas


@dataclasses.dataclass
class SingleFrameRequest:
    """Controls (1, 16, 1, H, W) at their indices, optional masks (H', W') in [0, 1] per control."""

    controls: list
    control_indices: list
    target_index: int = 1
    masks: list | None = None
    use_2x: bool = False
    use_4x: bool = False


def masked(latent: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Multiply a latent by a mask resized to the latent grid (area interpolation)."""
    if mask is None:
        return latent
    mask = mask.float().reshape(1, 1, *mask.shape[-2:])
    mask = F.interpolate(mask, size=latent.shape[-2:], mode="area")
    return latent * mask.unsqueeze(2)


def single_frame_inputs(request: SingleFrameRequest) -> dict:
    controls, indices = request.controls, request.control_indices
    if not controls or len(controls) != len(indices):
        raise InputError(f"one-frame inference needs control latents with one index each, got {len(controls)} "
                         f"latents and {len(indices)} indices.")
    size = tuple(controls[0].shape[-2:])
    for i, latent in enumerate(controls):
        if latent.ndim != 5 or latent.shape[:3] != (1, 16, 1) or tuple(latent.shape[-2:]) != size:
            raise InputError(f"control {i} has shape {tuple(latent.shape)}; every control must be one latent frame "
                             f"(1, 16, 1, {size[0]}, {size[1]}): encode all images at the same bucket size.")
    if request.target_index in indices:
        raise InputError(f"target_index {request.target_index} equals a control index {indices}; choose another.")
    masks = request.masks or [None] * len(controls)
    clean = torch.cat([masked(c.float(), m) for c, m in zip(controls, masks)], dim=2)
    base = max(indices + [request.target_index]) + 1
    zeros = torch.zeros_like(controls[0])
    groups = []  # in the reference's order: 4x, 2x, 1x
    if request.use_4x:
        groups.append(CleanGroup("proj_4x", zeros.expand(-1, -1, 16, -1, -1), torch.arange(base + 2, base + 18)[None]))
    if request.use_2x:
        groups.append(CleanGroup("proj_2x", zeros.expand(-1, -1, 2, -1, -1), torch.tensor([[base, base + 1]])))
    groups.append(CleanGroup("proj", clean, torch.tensor([list(indices)])))
    return {"latent_indices": torch.tensor([[request.target_index]]), "clean_groups": groups}


def sample_single_frame(sample_section, request: SingleFrameRequest, positive, image_embeddings,
                        settings: GenerationSettings, negative=None, on_step=None) -> torch.Tensor:
    """Sample the target frame (1, 16, 1, H, W) with a section sampler (see ``generate``)."""
    height, width = request.controls[0].shape[-2:]
    generator = torch.Generator("cpu").manual_seed(settings.seed)
    noise = torch.randn((1, 16, 1, height, width), generator=generator)
    sigmas = flow_sigmas(settings.steps, seq_len=height * width // 4, shift=settings.shift)

    def step_callback(info):
        if on_step is not None:
            on_step(info["i"] + 1, settings.steps, info["denoised"])

    job = SectionJob(None, noise, sigmas, single_frame_inputs(request), positive, negative, image_embeddings,
                     settings, step_callback)
    return sample_section(job).float()
