"""Three-axis rotary position embedding (time, y, x) in HunyuanVideo's interleaved-pair convention.

Tables are float32 and kept as separate cos / sin tensors of shape ``(B, T, H, W, head_dim)``; each
frequency appears twice (channels 2i and 2i+1), the time axis first, then y, then x.
"""

from __future__ import annotations

import torch


def axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """Rotation angles ``positions * theta^(-2j/dim)`` for one axis, each repeated twice: ``(*positions.shape, dim)``."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    angles = positions.to(torch.float32).unsqueeze(-1) * freqs
    return angles.repeat_interleave(2, dim=-1)


def rope_table(frame_indices: torch.Tensor, height: int, width: int, axes_dim, theta: float):
    """cos / sin tables for frames ``frame_indices`` (B, T) on an ``height x width`` post-patch grid.

    Returns two float32 tensors of shape ``(B, T, height, width, sum(axes_dim))``.
    """
    device = frame_indices.device
    batch, frames = frame_indices.shape
    dim_t, dim_y, dim_x = axes_dim
    grid_shape = (batch, frames, height, width)
    t = axis_angles(frame_indices, dim_t, theta)[:, :, None, None, :].expand(*grid_shape, dim_t)
    y = axis_angles(torch.arange(height, device=device), dim_y, theta)[None, None, :, None, :].expand(*grid_shape, dim_y)
    x = axis_angles(torch.arange(width, device=device), dim_x, theta)[None, None, None, :, :].expand(*grid_shape, dim_x)
    angles = torch.cat([t, y, x], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` (B, S, heads, D) by the angles in ``cos``/``sin`` (B, S, D).

    ``out[2i] = x[2i] cos - x[2i+1] sin`` and ``out[2i+1] = x[2i+1] cos + x[2i] sin``; computed in
    float32 and cast back, as the reference does for half-precision runs.
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs.unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    out = pairs.flatten(-2) * cos.unsqueeze(2) + rotated * sin.unsqueeze(2)
    return out.to(x.dtype)
