"""FramePack as a native ComfyUI model: the core transformer behind ComfyUI's BaseModel and ModelPatcher.

ComfyUI's model management then owns device placement and low-VRAM partial loading (the layers are
built from ``comfy.ops``), attention goes through ``optimized_attention`` (so ``--use-sage-attention`` and
friends apply), and core nodes such as LoraLoaderModelOnly and TorchCompileModel work on it.
"""

from __future__ import annotations

import dataclasses
import logging

import comfy.conds
import comfy.latent_formats
import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.supported_models_base
import torch

from ..framepack_core import FramePackTransformer, load_transformer
from ..framepack_core.model.checkpoint import block_weight_dtype, open_checkpoint, parameter_count

log = logging.getLogger(__name__)

# The per-section inputs (indices, clean latents, image embeddings, step cache) travel in
# ``transformer_options[SECTION_KEY]`` of a cloned ModelPatcher: they are shared by the positive and negative
# calls and change every section, like EasyCache's state does.
SECTION_KEY = "framepack_section"
WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}


def comfy_attention(q, k, v, mask=None):
    """The core's attention contract on top of ComfyUI's selected backend (boolean mask -> additive)."""
    if mask is not None:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
    return comfy.ldm.modules.attention.optimized_attention(q, k, v, q.shape[1], mask=mask, skip_reshape=True)


class ComfyFramePackTransformer(FramePackTransformer):
    """The core transformer with ComfyUI's ``diffusion_model(x, t, context=..., **conds)`` calling convention."""

    @property
    def dtype(self):
        """Storage dtype of the blocks' weights (ComfyUI reads ``diffusion_model.dtype``)."""
        return self.x_embedder.proj.weight.dtype if not self.transformer_blocks else \
            self.transformer_blocks[0].attn.to_q.weight.dtype

    def forward(self, x, timestep, context=None, attention_mask=None, y=None, guidance=None, control=None,
                transformer_options=None, **kwargs):
        section = dict((transformer_options or {}).get(SECTION_KEY) or {})
        if not section:
            raise RuntimeError("the FramePack model was called without its section inputs: sample it with the "
                               "FramePack sampler nodes, not with KSampler.")
        dtype = self.compute_dtype
        batch = x.shape[0]
        if attention_mask is None:
            attention_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        # The reference feeds timestep and guidance in the compute dtype (10000 -> 9984 in bf16).
        timestep = timestep.to(dtype).float()
        guidance = None if guidance is None else (guidance.float() * 1000.0).to(dtype).float().expand(batch)
        cache = section.pop("cache", None)
        inputs = {k: to_device(v, x.device) for k, v in section.items()}
        return super().forward(x, timestep, context, attention_mask.bool(), y, guidance, cache=cache, **inputs)


def to_device(value, device):
    """Section inputs to the sampling device (tensors, and the tensors inside CleanGroups)."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, list):
        return [dataclasses.replace(g, latents=g.latents.to(device), indices=g.indices.to(device)) for g in value]
    return value


class FramePackBaseModel(comfy.model_base.HunyuanVideo):
    """ComfyUI model wrapper: flow matching, HunyuanVideo latent format, FramePack's conditioning keys.

    It is a HunyuanVideo model to ComfyUI (FramePack is one), which also gives it ComfyUI's LoRA key maps for
    diffusers-named (``transformer.``) and generic (``diffusion_model.``) LoRAs of these parameter names.
    """

    def __init__(self, model_config, transformer, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = transformer

    def extra_conds(self, **kwargs):
        out = {}
        cross_attn = kwargs.get("cross_attn")
        if cross_attn is not None:
            # CONDRegular, not CONDCrossAttn: prompts of different lengths are never padded by repetition.
            out["c_crossattn"] = comfy.conds.CONDRegular(cross_attn)
        attention_mask = kwargs.get("attention_mask")
        if attention_mask is not None:
            out["attention_mask"] = comfy.conds.CONDRegular(attention_mask)
        pooled = kwargs.get("pooled_output")
        if pooled is not None:
            out["y"] = comfy.conds.CONDRegular(pooled)
        guidance = kwargs.get("guidance", 10.0)
        if guidance is not None:
            out["guidance"] = comfy.conds.CONDRegular(torch.FloatTensor([guidance]))
        return out


class FramePackModelConfig(comfy.supported_models_base.BASE):
    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.HunyuanVideo
    # The capped shift of every 640-class bucket; the FramePack sampler computes its own schedule.
    sampling_settings = {"shift": 7.0}
    memory_usage_factor = 2.2
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, framepack_config):
        super().__init__({"disable_unet_model_creation": True})
        self.framepack_config = framepack_config


def load_framepack_model(path, weight_dtype: str = "default") -> comfy.model_patcher.ModelPatcher:
    """Load a FramePack checkpoint (file or diffusers folder) as a ComfyUI MODEL, dtypes chosen the way
    ComfyUI's UNETLoader chooses them."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    supported = FramePackModelConfig.supported_inference_dtypes
    source = open_checkpoint(path)
    file_dtype = block_weight_dtype(source)
    storage = WEIGHT_DTYPES[weight_dtype] or comfy.model_management.unet_dtype(
        load_device, parameter_count(source), supported, weight_dtype=file_dtype)
    compute = comfy.model_management.unet_manual_cast(storage, load_device, supported) or storage
    operations = comfy.ops.pick_operations(storage, compute, load_device=load_device,
                                           fp8_optimizations=weight_dtype == "fp8_e4m3fn_fast")
    transformer = load_transformer(path, dtype=None if storage == file_dtype else storage, device=offload_device,
                                   operations=operations, attention=comfy_attention, model_class=ComfyFramePackTransformer)
    transformer.compute_dtype = compute
    config = FramePackModelConfig(transformer.config)
    config.set_inference_dtype(storage, None if compute == storage else compute)
    log.info("FramePack transformer %s: weights %s, compute %s", path, storage, compute)
    model = FramePackBaseModel(config, transformer, device=offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
