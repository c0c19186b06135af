"""diffusers' ``HunyuanVideoFramepackTransformer3DModel`` behind this project's forward keywords.

Used by the side-by-side benchmark (``bench.bench_reference``) and the in-process parity test
(``tests/core/test_diffusers_parity.py``): the same inputs and the same sampler drive both implementations.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from framepack_core import FramePackConfig
from framepack_core.model.config import CLEAN_PROJECTIONS

# Our forward keywords -> diffusers' (index tensors there are 1-D and shared across the batch).
REFERENCE_ARGUMENTS = {
    "image_embeddings": "image_embeds", "latent_indices": "indices_latents",
    "clean_latents": "latents_clean", "clean_latent_indices": "indices_latents_clean",
    "clean_latents_2x": "latents_history_2x", "clean_latent_2x_indices": "indices_latents_history_2x",
    "clean_latents_4x": "latents_history_4x", "clean_latent_4x_indices": "indices_latents_history_4x",
}
CONDITIONING = ("encoder_hidden_states", "encoder_attention_mask", "pooled_projections", "image_embeddings")


class ReferenceModel:
    """diffusers' model behind our forward keywords, so the same inputs and the same sampler drive both."""

    def __init__(self, model):
        self.model = model

    def parameters(self):
        return self.model.parameters()

    def __call__(self, **kwargs):
        args = {}
        named = named_clean_inputs(kwargs.pop("clean_groups", ()))
        for name, value in {**kwargs, **named}.items():
            if name.endswith("indices"):
                if value.shape[0] != 1:
                    raise ValueError(f"diffusers shares {name} across the batch; got shape {tuple(value.shape)}")
                value = value[0]
            args[REFERENCE_ARGUMENTS.get(name, name)] = value
        return self.model(**args, return_dict=False)[0]


def named_clean_inputs(groups) -> dict:
    """The engine's CleanGroups as the reference's named clean inputs (one group per projection, no pre-pool)."""
    named = {}
    for projection in CLEAN_PROJECTIONS:
        members = [g for g in groups if g.proj == projection.name]
        if len(members) > 1 or any(tuple(g.pre_pool) != (1, 1, 1) for g in members):
            raise ValueError(f"diffusers takes one unpooled {projection.name} group, got {len(members)}: "
                             "use a layout of the reference (a released schedule).")
        if members:
            named[projection.latents_arg], named[projection.indices_arg] = members[0].latents, members[0].indices
    return named


def write_model_folder(config: FramePackConfig, weights: Path, folder: Path) -> None:
    """A diffusers model folder (``config.json`` + the weights, linked) for ``from_pretrained``."""
    folder.mkdir(parents=True, exist_ok=True)
    config_dict = {"_class_name": "HunyuanVideoFramepackTransformer3DModel", **config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config_dict, indent=1))
    link = folder / "diffusion_pytorch_model.safetensors"
    if not link.exists():
        link.symlink_to(weights.resolve())


def load_reference(folder: Path) -> ReferenceModel:
    """diffusers' model from a folder written by ``write_model_folder``, float32, in eval mode."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel
    model = HunyuanVideoFramepackTransformer3DModel.from_pretrained(folder, torch_dtype=torch.float32)
    return ReferenceModel(model.eval().requires_grad_(False))
