"""Pixel-space stitching for callers that decode the video section by section.

Consecutive section decodes overlap by ``4W - 3`` pixel frames (the causal VAE maps the first latent of a
decode to one frame and every later latent to four); the overlap is cross-faded linearly.
"""

from __future__ import annotations

import torch


def overlap_frames(latent_window_size: int) -> int:
    """Pixel frames two consecutive section decodes share: ``4W - 3``."""
    return 4 * latent_window_size - 3


def soft_append(earlier: torch.Tensor, later: torch.Tensor, overlap: int) -> torch.Tensor:
    """Join two (B, C, T, H, W) clips along T, cross-fading the last ``overlap`` frames of ``earlier``
    into the first ``overlap`` frames of ``later`` (weight of ``earlier`` falls linearly from 1 to 0)."""
    if overlap <= 0:
        return torch.cat([earlier, later], dim=2)
    if earlier.shape[2] < overlap or later.shape[2] < overlap:
        raise ValueError(
            f"cannot cross-fade {overlap} frames: the clips have {earlier.shape[2]} and {later.shape[2]} frames.")
    weights = torch.linspace(1, 0, overlap, dtype=earlier.dtype, device=earlier.device).view(1, 1, -1, 1, 1)
    blended = weights * earlier[:, :, -overlap:] + (1 - weights) * later[:, :, :overlap]
    return torch.cat([earlier[:, :, :-overlap], blended, later[:, :, overlap:]], dim=2)
