"""Colour-drift correction: match every frame's colour statistics to a reference image in Lab space."""

from __future__ import annotations

import kornia
import torch

from ..errors import InputError


def match_colors(frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Shift and scale each frame's per-channel Lab mean and std to the reference's.

    ``frames`` (N, H, W, 3) and ``reference`` (1 or N, H', W', 3) are ComfyUI images in [0, 1]; ``strength``
    blends between the input (0) and the fully matched frames (1). Long FramePack videos slowly drift in
    colour and contrast; this pulls them back to the start image.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or reference.ndim != 4 or reference.shape[-1] != 3:
        raise InputError(f"colour matching takes RGB images (N, H, W, 3), got {tuple(frames.shape)} and "
                         f"{tuple(reference.shape)}.")
    if not 0 <= strength <= 1:
        raise InputError(f"strength must be between 0 and 1, got {strength}.")
    lab = kornia.color.rgb_to_lab(frames.permute(0, 3, 1, 2).float().clamp(0, 1))
    ref = kornia.color.rgb_to_lab(reference[:1].permute(0, 3, 1, 2).float().clamp(0, 1))
    mean, std = lab.mean(dim=(2, 3), keepdim=True), lab.std(dim=(2, 3), keepdim=True)
    ref_mean, ref_std = ref.mean(dim=(2, 3), keepdim=True), ref.std(dim=(2, 3), keepdim=True)
    matched = (lab - mean) / std.clamp(min=1e-5) * ref_std + ref_mean
    rgb = kornia.color.lab_to_rgb(matched).clamp(0, 1).permute(0, 2, 3, 1)
    return torch.lerp(frames.float(), rgb, strength).to(frames.dtype)
