"""The transformer's hyper-parameters, read from a diffusers ``config.json`` or inferred from weights."""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

from ..errors import ConfigError

# Bounds that no real configuration comes near; a damaged config beyond them would allocate without end.
MAX_SIZE = 65536
MAX_LAYERS = 1024


@dataclasses.dataclass(frozen=True)
class CleanProjection:
    """One clean-latent projection of ``clean_x_embedder``: the one mapping from kernel to projection.

    ``label`` is the schedules' and plans' name (``1x``, ``2x``, ``4x``), ``name`` the module's attribute,
    ``kernel`` its patchify kernel, ``latents_arg`` / ``indices_arg`` the reference forward's arguments.
    """

    label: str
    name: str
    kernel: tuple[int, int, int]
    latents_arg: str
    indices_arg: str


# The released checkpoints' projections in the reference's sequence order (most compressed first).
CLEAN_PROJECTIONS = (
    CleanProjection("4x", "proj_4x", (4, 8, 8), "clean_latents_4x", "clean_latent_4x_indices"),
    CleanProjection("2x", "proj_2x", (2, 4, 4), "clean_latents_2x", "clean_latent_2x_indices"),
    CleanProjection("1x", "proj", (1, 2, 2), "clean_latents", "clean_latent_indices"),
)
PROJECTION_BY_LABEL = {p.label: p for p in CLEAN_PROJECTIONS}


@dataclasses.dataclass(frozen=True)
class FramePackConfig:
    """Hyper-parameters of ``HunyuanVideoTransformer3DModelPacked``; defaults are the released 13B model."""

    in_channels: int = 16
    out_channels: int = 16
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    num_layers: int = 20
    num_single_layers: int = 40
    num_refiner_layers: int = 2
    mlp_ratio: float = 4.0
    patch_size: int = 2
    patch_size_t: int = 1
    qk_norm: str = "rms_norm"
    guidance_embeds: bool = True
    text_embed_dim: int = 4096
    pooled_projection_dim: int = 768
    rope_theta: float = 256.0
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)
    has_image_proj: bool = True
    image_proj_dim: int = 1152
    has_clean_x_embedder: bool = True

    def __post_init__(self):
        axes = self.rope_axes_dim
        if isinstance(axes, (list, tuple)) and all(is_int(d) for d in axes):
            object.__setattr__(self, "rope_axes_dim", tuple(axes))
        self.validate()

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def mlp_dim(self) -> int:
        return int(self.inner_dim * self.mlp_ratio)

    def validate(self) -> None:
        sizes = ("in_channels", "out_channels", "num_attention_heads", "attention_head_dim", "patch_size",
                 "patch_size_t", "text_embed_dim", "pooled_projection_dim", "image_proj_dim")
        for name in sizes:
            check_int(name, getattr(self, name), 1, MAX_SIZE)
        for name in ("num_layers", "num_single_layers", "num_refiner_layers"):
            check_int(name, getattr(self, name), 0, MAX_LAYERS)
        for name in ("guidance_embeds", "has_image_proj", "has_clean_x_embedder"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"config field {name!r} must be true or false, got {getattr(self, name)!r}.")
        for name, high in (("mlp_ratio", 64), ("rope_theta", 1e9)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= high:
                raise ConfigError(f"config field {name!r} must be a number above 0 and at most {high:g}, got {value!r}.")
        axes = self.rope_axes_dim
        if not isinstance(axes, tuple) or len(axes) != 3 or not all(is_int(d) and d > 0 and d % 2 == 0 for d in axes):
            raise ConfigError(f"rope_axes_dim must be three positive even numbers (time, y, x), got {axes!r}.")
        if sum(axes) != self.attention_head_dim:
            raise ConfigError(
                f"rope_axes_dim {axes} sums to {sum(axes)} but attention_head_dim is "
                f"{self.attention_head_dim}; they must be equal because RoPE rotates every head channel.")
        if self.qk_norm != "rms_norm":
            raise ConfigError(f"qk_norm {self.qk_norm!r} is not supported; FramePack checkpoints use 'rms_norm'.")
        if self.in_channels != 16:
            raise ConfigError(
                f"in_channels is {self.in_channels}; FramePack's clean-latent embedders take HunyuanVideo's 16 latent "
                "channels, so in_channels must be 16.")
        if self.inner_dim > MAX_SIZE:
            raise ConfigError(f"num_attention_heads x attention_head_dim = {self.inner_dim} is larger than any "
                              f"FramePack model ({MAX_SIZE} at most); the config is damaged.")

    @classmethod
    def from_dict(cls, config: Mapping) -> "FramePackConfig":
        """Build from a checkpoint's ``config.json`` dict; keys starting with ``_`` are metadata and ignored."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"a model config must be a dict, got {type(config).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in config.items() if not k.startswith("_")}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ConfigError(
                f"config has fields this FramePack transformer does not know: {unknown}. "
                f"Known fields: {sorted(known)}. Is this the config of a FramePack transformer?")
        try:
            return cls(**fields)
        except TypeError as err:
            raise ConfigError(f"invalid FramePack config: {err}") from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rope_axes_dim"] = list(self.rope_axes_dim)
        return out


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value, low: int, high: int) -> None:
    if not is_int(value) or not low <= value <= high:
        raise ConfigError(f"config field {name!r} must be an integer from {low} to {high}, got {value!r}.")


def default_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """RoPE split for a head size when no config says it.

    HunyuanVideo's 128 channels split (16, 56, 56); other sizes follow the (d/4, 3d/8, 3d/8) split of
    small test models, each rounded down to an even number with the remainder on the x axis.
    """
    if head_dim == 128:
        return (16, 56, 56)
    t = (head_dim // 4) // 2 * 2
    y = ((head_dim - t) // 2) // 2 * 2
    return (t, y, head_dim - t - y)


_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks|context_embedder\.token_refiner\.refiner_blocks)\.(\d+)\.")


def infer_config(shapes: Mapping[str, Sequence[int]]) -> FramePackConfig:
    """Infer the hyper-parameters from parameter names and shapes (a state dict's or a file header's)."""

    def shape(key: str, rank: int = 2) -> Sequence[int]:
        if key not in shapes:
            raise ConfigError(f"cannot infer the config: tensor {key!r} is missing.")
        if len(shapes[key]) != rank:
            raise ConfigError(f"tensor {key!r} has shape {list(shapes[key])}, not the {rank}-D shape of a FramePack "
                              "transformer's weight.")
        return shapes[key]

    conv = shape("x_embedder.proj.weight", rank=5)
    inner, in_channels, patch_t, patch, _ = conv
    norm_q = "transformer_blocks.0.attn.norm_q.weight"
    head_dim = shape(norm_q if norm_q in shapes else "single_transformer_blocks.0.attn.norm_q.weight", rank=1)[0]
    if head_dim <= 0 or inner % head_dim:
        raise ConfigError(f"the attention head size {head_dim} does not divide the model width {inner}; the tensor "
                          "shapes are inconsistent.")
    counts = {"transformer_blocks": 0, "single_transformer_blocks": 0, "context_embedder.token_refiner.refiner_blocks": 0}
    for key in shapes:
        match = _BLOCK.match(key)
        if match:
            counts[match.group(1)] = max(counts[match.group(1)], int(match.group(2)) + 1)
    if "transformer_blocks.0.ff.net.0.proj.weight" in shapes:
        mlp_dim = shape("transformer_blocks.0.ff.net.0.proj.weight")[0]
    else:
        mlp_dim = shape("single_transformer_blocks.0.proj_mlp.weight")[0]
    has_image_proj = "image_projection.up.weight" in shapes
    if patch <= 0 or patch_t <= 0:
        raise ConfigError(f"x_embedder.proj.weight has shape {list(conv)}: its kernel must be positive.")
    return FramePackConfig(
        in_channels=in_channels,
        out_channels=shape("proj_out.weight")[0] // (patch * patch * patch_t),
        num_attention_heads=inner // head_dim,
        attention_head_dim=head_dim,
        num_layers=counts["transformer_blocks"],
        num_single_layers=counts["single_transformer_blocks"],
        num_refiner_layers=counts["context_embedder.token_refiner.refiner_blocks"],
        mlp_ratio=mlp_dim / inner,
        patch_size=patch,
        patch_size_t=patch_t,
        guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in shapes,
        text_embed_dim=shape("context_embedder.proj_in.weight")[1],
        pooled_projection_dim=shape("time_text_embed.text_embedder.linear_1.weight")[1],
        rope_axes_dim=default_rope_axes(head_dim),
        has_image_proj=has_image_proj,
        image_proj_dim=shape("image_projection.up.weight")[1] if has_image_proj else 1152,
        has_clean_x_embedder="clean_x_embedder.proj.weight" in shapes,
    )

