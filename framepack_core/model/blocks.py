"""Transformer blocks: the token refiner, the dual-stream and the single-stream blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import AdaModulation, FeedForward, TimeTextEmbedding, gated, modulate, plain_layer_norm
from .rope import apply_rope


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, S, heads*D) -> (B, S, heads, D)."""
    return x.unflatten(-1, (heads, -1))


class RefinerAttention(nn.Module):
    """Plain multi-head self-attention of the token refiner (no qk-norm, no RoPE)."""

    def __init__(self, dim, heads, dtype=None, device=None, operations=None):
        super().__init__()
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_k = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_v = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim, dtype=dtype, device=device), nn.Dropout(0.0)])

    def forward(self, x, mask, attention):
        q, k, v = (split_heads(proj(x), self.heads).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))
        return self.to_out[0](attention(q, k, v, mask))


class RefinerBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.norm1 = operations.LayerNorm(dim, elementwise_affine=True, eps=1e-6, dtype=dtype, device=device)
        self.attn = RefinerAttention(dim, heads, **kw)
        self.norm2 = operations.LayerNorm(dim, elementwise_affine=True, eps=1e-6, dtype=dtype, device=device)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), activation=F.silu, **kw)
        self.norm_out = AdaModulation(dim, 2, **kw)

    def forward(self, x, temb, mask, attention):
        gate_msa, gate_mlp = self.norm_out(temb)
        x = gated(x, self.attn(self.norm1(x), mask, attention), gate_msa)
        return gated(x, self.ff(self.norm2(x)), gate_mlp)


class TokenRefinerStack(nn.Module):
    def __init__(self, dim, heads, layers, mlp_ratio, dtype=None, device=None, operations=None):
        super().__init__()
        self.refiner_blocks = nn.ModuleList(
            [RefinerBlock(dim, heads, mlp_ratio, dtype=dtype, device=device, operations=operations) for _ in range(layers)])


class TokenRefiner(nn.Module):
    """HunyuanVideo's ``context_embedder``: refines the LLM text states, conditioned on the timestep and their masked mean."""

    def __init__(self, text_dim, dim, heads, layers, mlp_ratio=4.0, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.time_text_embed = TimeTextEmbedding(dim, text_dim, guidance=False, **kw)
        self.proj_in = operations.Linear(text_dim, dim, dtype=dtype, device=device)
        self.token_refiner = TokenRefinerStack(dim, heads, layers, mlp_ratio, **kw)

    def forward(self, text, timestep, mask, attention):
        weights = mask.to(torch.float32).unsqueeze(-1)
        pooled = ((text.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)).to(text.dtype)
        temb = self.time_text_embed(timestep, pooled)
        x = self.proj_in(text)
        # Valid tokens attend to valid tokens; key 0 is always allowed so padded rows are never fully masked.
        attend = mask[:, None, :, None] & mask[:, None, None, :]
        attend[:, :, :, 0] = True
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, attend, attention)
        return x


class QKNormAttention(nn.Module):
    """Projections and per-head RMS norms of the dual/single-stream attention (the attention itself is joint)."""

    def __init__(self, dim, heads, head_dim, dual, dtype=None, device=None, operations=None):
        super().__init__()
        self.heads = heads
        linear = lambda: operations.Linear(dim, dim, dtype=dtype, device=device)  # noqa: E731
        rms = lambda: operations.RMSNorm(head_dim, eps=1e-6, elementwise_affine=True, dtype=dtype, device=device)  # noqa: E731
        self.to_q, self.to_k, self.to_v = linear(), linear(), linear()
        self.norm_q, self.norm_k = rms(), rms()
        if dual:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = linear(), linear(), linear()
            self.norm_added_q, self.norm_added_k = rms(), rms()
            self.to_out = nn.ModuleList([linear(), nn.Dropout(0.0)])
            self.to_add_out = linear()

    def qkv(self, x, q_proj, k_proj, v_proj, q_norm, k_norm):
        q = q_norm(split_heads(q_proj(x), self.heads))
        k = k_norm(split_heads(k_proj(x), self.heads))
        return q, k, split_heads(v_proj(x), self.heads)

    # q, k and v live only inside these two methods, so they are freed before the MLP allocates its much
    # larger intermediates (the blocks' peak memory).

    def attend_joint(self, x, ctx, rope, mask, attention):
        """Joint attention of the image stream ``x`` and the context stream ``ctx`` (image tokens first).

        ``rope``: rotations of the joint sequence, identity on the context (see ``rotation_table``): the joint
        q and k are built anyway, and rotating them whole saves a separate pass over the image part.
        """
        q, k, v = self.joint_qkv(x, ctx)
        return joint_attention(attention, apply_rope(q, rope), apply_rope(k, rope), v, mask)

    def joint_qkv(self, x, ctx):
        """q, k, v of both streams, each joined into [image; context] (the per-stream parts freed on return)."""
        image = self.qkv(x, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        context = self.qkv(ctx, self.add_q_proj, self.add_k_proj, self.add_v_proj, self.norm_added_q, self.norm_added_k)
        return tuple(torch.cat(pair, 1) for pair in zip(image, context))

    def attend_single(self, x, rope, mask, attention):
        """Self-attention of the joint sequence ``x``; ``rope`` is identity on its context part."""
        q, k, v = self.qkv(x, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        return joint_attention(attention, apply_rope(q, rope), apply_rope(k, rope), v, mask)


def joint_attention(attention, q, k, v, mask):
    """Attention over (B, S, heads, D) inputs; returns (B, S, heads*D)."""
    return attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)


class DualStreamBlock(nn.Module):
    """MMDiT block: image and text streams with their own weights, joint attention (image tokens first)."""

    def __init__(self, dim, heads, head_dim, mlp_ratio, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.norm1 = AdaModulation(dim, 6, **kw)
        self.norm1_context = AdaModulation(dim, 6, **kw)
        self.attn = QKNormAttention(dim, heads, head_dim, dual=True, **kw)
        self.layer_norm = plain_layer_norm(dim, **kw)
        self.ff = FeedForward(dim, int(dim * mlp_ratio), **kw)
        self.ff_context = FeedForward(dim, int(dim * mlp_ratio), **kw)

    def modulated_input(self, x, temb):
        """The first adaptive norm's output of the image stream (TeaCache's change detector)."""
        shift, scale = self.norm1(temb)[:2]
        return modulate(self.layer_norm(x), shift, scale)

    def forward(self, x, ctx, temb, rope, mask, attention):
        """``rope``: rotations of the joint [image; context] sequence (see ``QKNormAttention.attend_joint``)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.norm1(temb)
        cshift1, cscale1, cgate1, cshift2, cscale2, cgate2 = self.norm1_context(temb)
        x, ctx = self.attention_residual(x, ctx, (shift1, scale1, gate1), (cshift1, cscale1, cgate1), rope, mask,
                                         attention)
        x = gated(x, self.ff(modulate(self.layer_norm(x), shift2, scale2)), gate2)
        ctx = gated(ctx, self.ff_context(modulate(self.layer_norm(ctx), cshift2, cscale2)), cgate2)
        return x, ctx

    def attention_residual(self, x, ctx, modulation, context_modulation, rope, mask, attention):
        """Both streams plus their gated joint-attention outputs (the attention output is freed on return)."""
        (shift, scale, gate), (cshift, cscale, cgate) = modulation, context_modulation
        a = self.attn
        out = a.attend_joint(modulate(self.layer_norm(x), shift, scale), modulate(self.layer_norm(ctx), cshift, cscale),
                             rope, mask, attention)
        n_img = x.shape[1]
        return gated(x, a.to_out[0](out[:, :n_img]), gate), gated(ctx, a.to_add_out(out[:, n_img:]), cgate)


class SingleStreamBlock(nn.Module):
    """Single-stream block on [image; text]: parallel attention and MLP, one output projection."""

    def __init__(self, dim, heads, head_dim, mlp_ratio, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        mlp_dim = int(dim * mlp_ratio)
        self.norm = AdaModulation(dim, 3, **kw)
        self.layer_norm = plain_layer_norm(dim, **kw)
        self.attn = QKNormAttention(dim, heads, head_dim, dual=False, **kw)
        self.proj_mlp = operations.Linear(dim, mlp_dim, dtype=dtype, device=device)
        self.proj_out = operations.Linear(dim + mlp_dim, dim, dtype=dtype, device=device)

    def forward(self, x, ctx, temb, rope, mask, attention):
        """``rope``: rotations of [image; context], identity on the context, so q and k rotate whole."""
        n_img = x.shape[1]
        s = torch.cat([x, ctx], dim=1)
        shift, scale, gate = self.norm(temb)
        mixed = self.attention_and_mlp(modulate(self.layer_norm(s), shift, scale), rope, mask, attention)
        s = gated(s, self.proj_out(mixed), gate)
        return s[:, :n_img], s[:, n_img:]

    def attention_and_mlp(self, sn, rope, mask, attention):
        """[attention | GELU MLP] of the modulated sequence, proj_out's input (their intermediates freed on return)."""
        out = self.attn.attend_single(sn, rope, mask, attention)
        return torch.cat([out, F.gelu(self.proj_mlp(sn), approximate="tanh")], dim=-1)
