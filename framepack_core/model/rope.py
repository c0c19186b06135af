"""Three-axis rotary position embedding (time, y, x) in HunyuanVideo's interleaved-pair convention.

Tables are float32 and kept as separate cos / sin tensors of shape ``(B, T, H, W, head_dim)``; each
frequency appears twice (channels 2i and 2i+1), the time axis first, then y, then x. Packing pools and
concatenates them per token; the blocks multiply by factors built from them once per forward.
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


def rotation_table(cos: torch.Tensor, sin: torch.Tensor, extra_tokens: int = 0) -> torch.Tensor:
    """cos / sin tables (B, S, D) -> the float32 factors ``apply_rope`` multiplies by, (2, B, S + extra_tokens, 1, D).

    ``[0]`` is cos, ``[1]`` is sin with the sign of the pair rotation (-sin on channel 2i, +sin on 2i+1).
    The ``extra_tokens`` appended at the end are identity rotations (cos 1, sin 0): the blocks rotate the
    joint [image; context] sequence in one call, and ``x * 1 + y * 0`` leaves the context tokens bit for
    bit unchanged. Pooled tables keep their unnormalised values, as the reference uses them.
    """
    sign = torch.tensor([-1.0, 1.0], device=sin.device).repeat(sin.shape[-1] // 2)
    table = torch.stack([cos.float(), sin.float() * sign])
    if extra_tokens:
        identity = torch.zeros(2, table.shape[1], extra_tokens, table.shape[3], dtype=table.dtype, device=table.device)
        identity[0] = 1
        table = torch.cat([table, identity], dim=2)
    return table.unsqueeze(3)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` (B, S, heads, D) by ``table`` (see ``rotation_table``).

    ``out[2i] = x[2i] cos - x[2i+1] sin`` and ``out[2i+1] = x[2i+1] cos + x[2i] sin``, computed in float32
    and cast back, as the reference does for half-precision runs; the same products summed in the same
    order, so float32 results equal the reference's bit for bit. Real arithmetic only (complex tensors are
    missing on some backends); two full-size float32 temporaries instead of the reference's five, as new
    buffers, not the arithmetic, are what this memory-bound step pays for.
    """
    return rotate_pairs(x.float(), table).to(x.dtype)


def rotate_pairs(x32: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` in float32 (its own function: a half-precision x's float32 copy is freed before the cast back)."""
    pairs = x32.unflatten(-1, (-1, 2))
    # (x[2i+1], x[2i]) in a fresh buffer, so scaling it in place is safe (stack is faster than flip on CPU).
    swapped = torch.stack([pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x32 * table[0]).add_(swapped.mul_(table[1]))
