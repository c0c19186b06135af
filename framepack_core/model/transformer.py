"""FramePack's packed HunyuanVideo transformer (``HunyuanVideoTransformer3DModelPacked``)."""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import einops
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DualStreamBlock, SingleStreamBlock, TokenRefiner
from .config import CLEAN_PROJECTIONS, FramePackConfig
from ..errors import InputError
from .layers import TimeTextEmbedding, modulate, plain_layer_norm, sdpa_attention
from .packing import CleanGroup, TokenGroup, pack_group
from .rope import rotation_table

class PatchEmbed(nn.Module):
    def __init__(self, in_channels, dim, kernel, dtype=None, device=None, operations=None):
        super().__init__()
        self.proj = operations.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel, dtype=dtype, device=device)


class CleanPatchEmbed(nn.Module):
    """The three clean-latent patchifiers: ``proj`` 1x2x2, ``proj_2x`` 2x4x4, ``proj_4x`` 4x8x8."""

    def __init__(self, in_channels, dim, dtype=None, device=None, operations=None):
        super().__init__()
        # Registered 1x, 2x, 4x: the order of the released checkpoints' keys.
        for projection in reversed(CLEAN_PROJECTIONS):
            kernel = projection.kernel
            setattr(self, projection.name, operations.Conv3d(in_channels, dim, kernel_size=kernel, stride=kernel,
                                                             dtype=dtype, device=device))


class ImageProjection(nn.Module):
    """SigLIP features -> context tokens: Linear -> SiLU -> Linear."""

    def __init__(self, in_dim, dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.up = operations.Linear(in_dim, dim * 3, dtype=dtype, device=device)
        self.down = operations.Linear(dim * 3, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.down(F.silu(self.up(x)))


class OutputNorm(nn.Module):
    """AdaLN-continuous: note (scale, shift) order, unlike the blocks' (shift, scale)."""

    def __init__(self, dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.linear = operations.Linear(dim, 2 * dim, dtype=dtype, device=device)
        self.norm = plain_layer_norm(dim, dtype=dtype, device=device, operations=operations)

    def forward(self, x, temb):
        scale, shift = self.linear(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return modulate(self.norm(x), shift, scale)


class FramePackTransformer(nn.Module):
    """The packed transformer; parameter names equal the released checkpoints' keys.

    ``attention`` is the attention function (``sdpa_attention``'s contract); ``operations`` the namespace
    every Linear / Conv3d / LayerNorm / RMSNorm is built from (``torch.nn`` by default, ``comfy.ops`` in ComfyUI).
    """

    def __init__(self, config: FramePackConfig | None = None, *, attention: Callable | None = None,
                 dtype=None, device=None, operations=None):
        super().__init__()
        config = config or FramePackConfig()
        operations = operations or nn
        self.config = config
        self.attention = attention or sdpa_attention
        self.compute_dtype = dtype if dtype is not None and dtype.is_floating_point and dtype.itemsize > 1 else torch.float32
        kw = dict(dtype=dtype, device=device, operations=operations)
        dim, heads = config.inner_dim, config.num_attention_heads
        self.patch = (config.patch_size_t, config.patch_size, config.patch_size)

        self.x_embedder = PatchEmbed(config.in_channels, dim, self.patch, **kw)
        if config.has_clean_x_embedder:
            self.clean_x_embedder = CleanPatchEmbed(config.in_channels, dim, **kw)
        self.context_embedder = TokenRefiner(config.text_embed_dim, dim, heads, config.num_refiner_layers, **kw)
        if config.has_image_proj:
            self.image_projection = ImageProjection(config.image_proj_dim, dim, **kw)
        self.time_text_embed = TimeTextEmbedding(dim, config.pooled_projection_dim, guidance=config.guidance_embeds, **kw)
        self.transformer_blocks = nn.ModuleList(
            [DualStreamBlock(dim, heads, config.attention_head_dim, config.mlp_ratio, **kw) for _ in range(config.num_layers)])
        self.single_transformer_blocks = nn.ModuleList(
            [SingleStreamBlock(dim, heads, config.attention_head_dim, config.mlp_ratio, **kw)
             for _ in range(config.num_single_layers)])
        self.norm_out = OutputNorm(dim, **kw)
        # The reference runs the output projection in float32 ("high quality fp32 output").
        out_dim = config.out_channels * config.patch_size * config.patch_size * config.patch_size_t
        self.proj_out = operations.Linear(dim, out_dim, dtype=torch.float32, device=device)

    @classmethod
    def from_config(cls, config: Mapping | FramePackConfig, **kwargs) -> "FramePackTransformer":
        """Build from a checkpoint's ``config.json`` dict (keys starting with ``_`` are ignored)."""
        if not isinstance(config, FramePackConfig):
            config = FramePackConfig.from_dict(config)
        return cls(config, **kwargs)

    # ---------------------------------------------------------------- inputs to tokens

    def pack_image_tokens(self, hidden_states, latent_indices=None, clean_groups=()) -> TokenGroup:
        """Noisy and clean latents -> image-stream tokens in the order [clean groups..., noisy], with RoPE."""
        batch, _, frames, height, width = hidden_states.shape
        grid = (frames // self.patch[0], height // self.patch[1], width // self.patch[2])
        cfg = self.config
        if latent_indices is None:
            latent_indices = torch.arange(grid[0], device=hidden_states.device).unsqueeze(0)
        if clean_groups and not cfg.has_clean_x_embedder:
            raise InputError("clean latents were given but this model has no clean_x_embedder (has_clean_x_embedder=False).")
        groups = []
        for group in clean_groups:
            proj = getattr(self.clean_x_embedder, group.proj)
            groups.append(pack_group(proj, group.latents.to(self.compute_dtype), group.indices, grid[1:], self.patch,
                                     cfg.rope_axes_dim, cfg.rope_theta, group.pre_pool))
        check_indices("latent_indices", latent_indices, grid[0], batch)
        groups.append(pack_group(self.x_embedder.proj, hidden_states, latent_indices, grid[1:], self.patch,
                                 cfg.rope_axes_dim, cfg.rope_theta))
        expand = lambda t: t.expand(batch, -1, -1)  # noqa: E731  (indices and clean latents may be shared across the batch)
        return TokenGroup(torch.cat([expand(g.tokens) for g in groups], dim=1),
                          torch.cat([expand(g.cos) for g in groups], dim=1),
                          torch.cat([expand(g.sin) for g in groups], dim=1))

    def encode_context(self, text, text_mask, timestep, image_embeddings, attention=None):
        """Text and image conditioning -> context tokens [image tokens, refined text] and the key mask (or None)."""
        text_mask = text_mask.to(device=text.device, dtype=torch.bool)
        used = text_mask.any(dim=0)
        if not bool(used.all()):
            # Columns no sample uses never influence the valid tokens: drop them (the reference crops at batch 1).
            text, text_mask = text[:, used], text_mask[:, used]
        ctx = self.context_embedder(text.to(self.compute_dtype), timestep, text_mask, attention or self.attention)
        if self.config.has_image_proj:
            if image_embeddings is None:
                raise InputError(
                    "image_embeddings is missing: this FramePack model is conditioned on SigLIP image features "
                    "(CLIPVisionEncode's last_hidden_state of the start image).")
            image_tokens = self.image_projection(image_embeddings.to(self.compute_dtype))
            ctx = torch.cat([image_tokens.expand(ctx.shape[0], -1, -1), ctx], dim=1)
            ones = torch.ones(text_mask.shape[0], image_tokens.shape[1], dtype=torch.bool, device=text_mask.device)
            text_mask = torch.cat([ones, text_mask], dim=1)
        return ctx, text_mask

    # ---------------------------------------------------------------- forward

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                guidance=None, latent_indices=None, clean_groups=(), image_embeddings=None, cache=None,
                transformer_options=None):
        """Predict the flow-matching velocity (B, out_channels, T, H, W), float32, for the noisy window.

        ``clean_groups`` is the packed context: a list of ``CleanGroup`` in sequence order (``reference_forward``
        takes the reference's named clean inputs instead). ``cache`` is an optional step cache (see
        ``framepack_core.engine.step_caches``) deciding whether the blocks run. ``transformer_options`` is passed
        to every attention call (ComfyUI's attention overrides read it); the core's own attention ignores it.
        """
        check_latents("hidden_states", hidden_states, self.config.in_channels, self.patch)
        dtype = self.compute_dtype
        hidden_states = hidden_states.to(dtype)
        batch, _, frames, height, width = hidden_states.shape
        grid = (frames // self.patch[0], height // self.patch[1], width // self.patch[2])
        packed = self.pack_image_tokens(hidden_states, latent_indices, clean_groups)
        timestep = as_batch_vector("timestep", timestep, batch)
        guidance = None if guidance is None else as_batch_vector("guidance", guidance, batch)
        temb = self.time_text_embed(timestep, pooled_projections.to(dtype), guidance)
        attention = self.attention
        if transformer_options is not None:
            attention = functools.partial(attention, transformer_options=transformer_options)
        ctx, ctx_mask = self.encode_context(encoder_hidden_states, encoder_attention_mask, timestep, image_embeddings,
                                            attention)

        # Built once per forward for all blocks: RoPE rotations of [image; context] (identity on the context).
        rope = rotation_table(packed.cos, packed.sin, extra_tokens=ctx.shape[1])
        x = self.run_blocks(packed.tokens, ctx, temb, rope, key_padding_mask(packed.tokens, ctx_mask), cache, attention)

        n_noisy = grid[0] * grid[1] * grid[2]
        x = self.norm_out(x[:, -n_noisy:], temb)
        out = self.proj_out(x.float())
        pt, ph, pw = self.patch
        return einops.rearrange(out, "b (t h w) (c pt ph pw) -> b c (t pt) (h ph) (w pw)",
                                t=grid[0], h=grid[1], w=grid[2], pt=pt, ph=ph, pw=pw)

    def run_blocks(self, x, ctx, temb, rope, mask, cache=None, attention=None):
        """All dual- then single-stream blocks; a step cache may replace them by its stored residual."""
        if cache is not None and self.transformer_blocks:
            if not cache.should_compute(self.transformer_blocks[0].modulated_input(x, temb)):
                return cache.reuse(x)
        x_in, attention = x, attention or self.attention
        for block in self.transformer_blocks:
            x, ctx = block(x, ctx, temb, rope, mask, attention)
        for block in self.single_transformer_blocks:
            x, ctx = block(x, ctx, temb, rope, mask, attention)
        if cache is not None:
            cache.store(x - x_in)
        return x


def key_padding_mask(image_tokens, ctx_mask):
    """Boolean (B, 1, 1, S) mask over [image tokens, context tokens], or None when every key is valid."""
    if bool(ctx_mask.all()):
        return None
    ones = torch.ones(image_tokens.shape[:2], dtype=torch.bool, device=ctx_mask.device)
    return torch.cat([ones, ctx_mask], dim=1)[:, None, None, :]


def as_batch_vector(name, value, batch):
    """A scalar or (B,) tensor -> float (B,) tensor."""
    value = torch.as_tensor(value)
    if value.ndim == 0:
        value = value.expand(batch)
    if value.ndim != 1 or value.shape[0] not in (1, batch):
        raise InputError(f"{name} must be a scalar or a ({batch},) tensor, got shape {tuple(value.shape)}.")
    return value.expand(batch)


def check_latents(name, latents, channels, patch):
    if not torch.is_tensor(latents) or latents.ndim != 5:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise InputError(f"{name} must be a 5-D latent tensor (B, {channels}, T, H, W), got {shape}.")
    if latents.shape[1] != channels:
        raise InputError(
            f"{name} has {latents.shape[1]} channels but the model takes {channels}: pass HunyuanVideo VAE latents.")
    _, _, t, h, w = latents.shape
    if t % patch[0] or h % patch[1] or w % patch[2]:
        raise InputError(
            f"{name} latent size T={t} H={h} W={w} is not a multiple of the patch size {patch}; "
            "resize the image to a FramePack bucket (multiples of 16 pixels) first.")


def check_indices(name, indices, frames, batch):
    if not torch.is_tensor(indices) or indices.ndim != 2 or indices.shape[1] != frames or indices.shape[0] not in (1, batch):
        shape = tuple(indices.shape) if torch.is_tensor(indices) else type(indices).__name__
        raise InputError(f"{name} must be a (1 or {batch}, {frames}) tensor of frame indices, got {shape}.")


class ReferenceArguments:
    """A FramePackTransformer called with the reference's named clean inputs instead of ``clean_groups``.

    ``clean_latents``, ``clean_latent_indices``, ``clean_latents_2x``, ... (each pair optional) become the
    CleanGroups of the reference's order; every other attribute is the model's. The parity tests, the
    diffusers comparison and the benchmarks of the reference's layout call the model through it.
    """

    def __init__(self, model):
        object.__setattr__(self, "model", model)

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __setattr__(self, name, value):
        setattr(self.model, name, value)

    def __call__(self, hidden_states, *args, **kwargs):
        check_latents("hidden_states", hidden_states, self.model.config.in_channels, self.model.patch)
        named = {name: kwargs.pop(name, None) for p in CLEAN_PROJECTIONS for name in (p.latents_arg, p.indices_arg)}
        return self.model(hidden_states, *args, clean_groups=named_clean_groups(named, hidden_states), **kwargs)

    def pack_image_tokens(self, hidden_states, latent_indices=None, **clean) -> TokenGroup:
        return self.model.pack_image_tokens(hidden_states, latent_indices, named_clean_groups(clean, hidden_states))


def named_clean_groups(clean, hidden_states) -> list:
    """The reference's three clean inputs (each optional, latents and indices together) as CleanGroups."""
    groups = []
    for projection in CLEAN_PROJECTIONS:
        latents_name, indices_name = projection.latents_arg, projection.indices_arg
        latents, indices = clean.get(latents_name), clean.get(indices_name)
        if latents is None and indices is None:
            continue
        check_group(latents_name, latents, indices_name, indices, hidden_states)
        groups.append(CleanGroup(projection.name, latents, indices))
    return groups


def check_group(latents_name, latents, indices_name, indices, hidden_states):
    if latents is None or indices is None:
        missing = latents_name if latents is None else indices_name
        raise InputError(f"{missing} is missing: pass {latents_name} and {indices_name} together, or neither.")
    check_latents(latents_name, latents, hidden_states.shape[1], (1, 1, 1))
    if latents.shape[-2:] != hidden_states.shape[-2:] or latents.shape[0] not in (1, hidden_states.shape[0]):
        raise InputError(
            f"{latents_name} has shape {tuple(latents.shape)} but the noisy latents are {tuple(hidden_states.shape)}: "
            "clean latents must share the batch size and the latent height and width.")
    check_indices(indices_name, indices, latents.shape[2], hidden_states.shape[0])
