"""Building blocks shared by the transformer: embeddings, feed-forwards, norms and the attention call.

Module and attribute names follow the released checkpoints' state-dict keys exactly (for example
``ff.net.0.proj`` and ``attn.to_out.0``), so weights load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Default attention: q, k, v (B, heads, S, D) -> (B, S, heads*D).

    ``mask`` is a boolean tensor broadcastable to (B, heads, S_q, S_k), True where attending is allowed.
    Any function with this contract can be injected (ComfyUI passes ``optimized_attention``).
    """
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


def timestep_sinusoid(timesteps: torch.Tensor, channels: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of ``timesteps`` (B,), in float32 (flip_sin_to_cos, shift 0)."""
    half = channels // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class MLPEmbedder(nn.Module):
    """Linear -> SiLU -> Linear (diffusers' TimestepEmbedding / PixArtAlphaTextProjection layout)."""

    def __init__(self, in_dim, out_dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.linear_1 = operations.Linear(in_dim, out_dim, dtype=dtype, device=device)
        self.linear_2 = operations.Linear(out_dim, out_dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeTextEmbedding(nn.Module):
    """temb = MLP(sinusoid(timestep)) [+ MLP(sinusoid(guidance))] + MLP(pooled text)."""

    def __init__(self, dim, pooled_dim, guidance=True, dtype=None, device=None, operations=None):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim, dtype=dtype, device=device, operations=operations)
        self.guidance_embedder = MLPEmbedder(256, dim, dtype=dtype, device=device, operations=operations) if guidance else None
        self.text_embedder = MLPEmbedder(pooled_dim, dim, dtype=dtype, device=device, operations=operations)

    def forward(self, timestep, pooled, guidance=None):
        temb = self.timestep_embedder(timestep_sinusoid(timestep).to(pooled.dtype))
        if self.guidance_embedder is not None:
            if guidance is None:
                raise ValueError("this model is guidance-distilled: pass `guidance` (distilled CFG scale x 1000).")
            temb = temb + self.guidance_embedder(timestep_sinusoid(guidance).to(pooled.dtype))
        return temb + self.text_embedder(pooled)


class ActProjection(nn.Module):
    """``net.0`` of a feed-forward: a Linear followed by its activation."""

    def __init__(self, dim_in, dim_out, activation, dtype=None, device=None, operations=None):
        super().__init__()
        self.proj = operations.Linear(dim_in, dim_out, dtype=dtype, device=device)
        self.activation = activation

    def forward(self, x):
        return self.activation(self.proj(x))


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class FeedForward(nn.Module):
    """``net = [ActProjection, Dropout, Linear]`` with GELU(tanh) (blocks) or SiLU (token refiner)."""

    def __init__(self, dim, hidden, activation=gelu_tanh, dtype=None, device=None, operations=None):
        super().__init__()
        self.net = nn.ModuleList([
            ActProjection(dim, hidden, activation, dtype=dtype, device=device, operations=operations),
            nn.Dropout(0.0),
            operations.Linear(hidden, dim, dtype=dtype, device=device),
        ])

    def forward(self, x):
        for layer in self.net:
            x = layer(x)
        return x


class AdaModulation(nn.Module):
    """``linear(SiLU(temb))`` split into ``chunks`` vectors of shape (B, 1, dim) for adaptive norms and gates."""

    def __init__(self, dim, chunks, dtype=None, device=None, operations=None):
        super().__init__()
        self.chunks = chunks
        self.linear = operations.Linear(dim, chunks * dim, dtype=dtype, device=device)

    def forward(self, temb):
        return self.linear(F.silu(temb)).unsqueeze(1).chunk(self.chunks, dim=-1)


def modulate(x, shift, scale):
    """``x * (1 + scale) + shift`` as one fused multiply-add pass over x (no full-size temporary)."""
    return torch.addcmul(shift, x, 1 + scale)


def gated(x, update, gate):
    """The gated residual ``x + update * gate`` in one pass."""
    return torch.addcmul(x, update, gate)


def plain_layer_norm(dim, dtype=None, device=None, operations=None):
    """Non-affine LayerNorm (eps 1e-6) of the adaptive norms; torch computes its statistics in float32."""
    return operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
