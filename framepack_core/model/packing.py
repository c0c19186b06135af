"""Packing latents into image-stream tokens with any patchify kernel.

A group of latent frames is patchified by a strided Conv3d whose kernel equals its stride. Latents are
replicate-padded at the end of each axis up to a multiple of the kernel first. Its RoPE is the
full-resolution table of the group's frame indices on the noisy window's post-patch grid, replicate-padded
and average-pooled with the kernel expressed on that grid (kernel / main patch size). Cos and sin are
pooled separately and not renormalised: the paper's "RoPE alignment".

An optional ``pre_pool`` average-pools the latents before patchifying, so compressions beyond the largest
trained projection reuse it (e.g. 8x16x16 = pool 2x2x2, then the 4x8x8 projection).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .rope import rope_table


@dataclasses.dataclass
class CleanGroup:
    """Clean context latents packed with one projection of ``clean_x_embedder``.

    ``proj`` is the projection's name (``proj``, ``proj_2x`` or ``proj_4x``), ``latents`` (B, C, T, H, W),
    ``indices`` (B or 1, T) their RoPE time positions, ``pre_pool`` the average pooling applied first.
    """

    proj: str
    latents: torch.Tensor
    indices: torch.Tensor
    pre_pool: tuple = (1, 1, 1)


@dataclasses.dataclass
class TokenGroup:
    """Tokens of one packed group with their RoPE tables: ``tokens`` (B, N, C), ``cos``/``sin`` (B, N, D)."""

    tokens: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


def pad_to_multiple(x: torch.Tensor, multiple) -> torch.Tensor:
    """Replicate-pad the last three axes of a 5-D tensor at their end to multiples of ``multiple``."""
    pads = []
    for size, m in zip(reversed(x.shape[-3:]), reversed(tuple(multiple))):
        pads += [0, (-size) % m]
    if not any(pads):
        return x
    return F.pad(x, pads, mode="replicate")


def pool_rope(table: torch.Tensor, kernel) -> torch.Tensor:
    """Average-pool a (B, T, H, W, D) RoPE table with ``kernel`` over (T, H, W) after replicate padding."""
    if tuple(kernel) == (1, 1, 1):
        return table
    grid = table.permute(0, 4, 1, 2, 3)
    grid = pad_to_multiple(grid, kernel)
    grid = F.avg_pool3d(grid, kernel_size=kernel, stride=kernel)
    return grid.permute(0, 2, 3, 4, 1)


def flatten_grid(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, T*H*W, C) in (t, h, w) raster order."""
    return x.flatten(2).transpose(1, 2)


def pack_group(proj, latents: torch.Tensor, frame_indices: torch.Tensor, grid_hw, patch, axes_dim, theta,
               pre_pool=(1, 1, 1)) -> TokenGroup:
    """Patchify ``latents`` (B, C, T, H, W) with the strided conv ``proj`` and build its pooled RoPE.

    ``frame_indices`` (B or 1, T) are the RoPE time positions of the latent frames; ``grid_hw`` is the noisy
    window's post-patch (height, width) the RoPE table is laid on; ``patch`` its (t, h, w) patch size.
    """
    kernel = tuple(proj.kernel_size)
    pre_pool = tuple(pre_pool)
    if pre_pool != (1, 1, 1):
        latents = F.avg_pool3d(pad_to_multiple(latents, pre_pool), kernel_size=pre_pool, stride=pre_pool)
    tokens = flatten_grid(proj(pad_to_multiple(latents, kernel)))
    rope_kernel = tuple(k * p // q for k, p, q in zip(kernel, pre_pool, patch))
    cos, sin = rope_table(frame_indices, grid_hw[0], grid_hw[1], axes_dim, theta)
    cos, sin = pool_rope(cos, rope_kernel), pool_rope(sin, rope_kernel)
    return TokenGroup(tokens, cos.flatten(1, 3), sin.flatten(1, 3))
