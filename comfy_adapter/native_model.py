"""FramePack as a native ComfyUI model: the core transformer behind ComfyUI's BaseModel and ModelPatcher.

ComfyUI's model management then owns device placement and low-VRAM partial loading (the layers are
built from ``comfy.ops``), attention goes through ``optimized_attention`` (so ``--use-sage-attention`` and
friends apply), and core nodes such as LoraLoaderModelOnly and TorchCompileModel work on it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import comfy.conds
import comfy.latent_formats
import comfy.ldm.modules.attention
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import comfy.supported_models_base
import torch

from ..framepack_core import FramePackTransformer, load_transformer
from ..framepack_core.engine.sampling import guidance_input, time_inputs
from ..framepack_core.engine.step_caches import StepCache
from ..framepack_core.model.checkpoint import block_weight_dtype, open_checkpoint, parameter_count

log = logging.getLogger(__name__)

# One section's context travels in ``transformer_options[SECTION_KEY]`` as one SectionContext: it is shared by
# the positive and negative calls and changes every section, like EasyCache's state; it is moved to the load
# device once per section (``SectionContext.to``), not on every call. This also works inside one sampler call
# that runs many sections (SamplerCustomAdvanced), where only the model options can change between sections.
SECTION_KEY = "framepack_section"
WEIGHT_DTYPES = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                 "fp8_e5m2": torch.float8_e5m2}


@dataclasses.dataclass
class SectionContext:
    """What the FramePack model takes besides ComfyUI's conds: the section's latent indices, its packed
    clean context, the image embeddings and the section's step cache (None: every step computes)."""

    latent_indices: torch.Tensor
    clean_groups: list
    image_embeddings: torch.Tensor
    cache: StepCache | None = None

    def to(self, device) -> "SectionContext":
        groups = [dataclasses.replace(g, latents=g.latents.to(device), indices=g.indices.to(device))
                  for g in self.clean_groups]
        return SectionContext(self.latent_indices.to(device), groups, self.image_embeddings.to(device), self.cache)


def comfy_attention(q, k, v, mask=None, transformer_options=None):
    """The core's attention contract on top of ComfyUI's selected backend (boolean mask -> additive)."""
    if mask is not None:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
    return comfy.ldm.modules.attention.optimized_attention(q, k, v, q.shape[1], mask=mask, skip_reshape=True,
                                                           transformer_options=transformer_options or {})


class ComfyFramePackTransformer(FramePackTransformer):
    """The core transformer with ComfyUI's ``diffusion_model(x, t, context=..., **conds)`` calling convention.

    ``compute_dtype`` is ComfyUI's choice (manual cast for fp8 weights), given when the model is built.
    """

    def __init__(self, config, *, compute_dtype=None, **kwargs):
        super().__init__(config, **kwargs)
        if compute_dtype is not None:
            self.compute_dtype = compute_dtype

    @property
    def dtype(self):
        """Storage dtype of the blocks' weights (ComfyUI reads ``diffusion_model.dtype``)."""
        return self.x_embedder.proj.weight.dtype if not self.transformer_blocks else \
            self.transformer_blocks[0].attn.to_q.weight.dtype

    def forward(self, x, timestep, context=None, attention_mask=None, y=None, guidance=None, control=None,
                transformer_options={}, **kwargs):  # noqa: B006  (ComfyUI's signature: never mutated here)
        """Through ComfyUI's DIFFUSION_MODEL wrappers, as core models are (model patches can wrap it)."""
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, attention_mask, y, guidance, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, attention_mask, y, guidance, control, transformer_options, **kwargs):
        section = transformer_options.get(SECTION_KEY)
        if section is None:
            raise RuntimeError("the FramePack model was called without its section inputs: sample it with the "
                               "FramePack sampler nodes, not with KSampler.")
        if attention_mask is None:
            attention_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
        timestep, guidance = time_inputs(timestep, guidance, self.compute_dtype)
        if guidance is not None:
            guidance = guidance.expand(x.shape[0])
        return super().forward(x, timestep, context, attention_mask.bool(), y, guidance,
                               latent_indices=section.latent_indices, clean_groups=section.clean_groups,
                               image_embeddings=section.image_embeddings, cache=section.cache,
                               transformer_options=transformer_options)


class FramePackBaseModel(comfy.model_base.HunyuanVideo):
    """ComfyUI model wrapper: flow matching, HunyuanVideo latent format, FramePack's conditioning keys.

    It is a HunyuanVideo model to ComfyUI (FramePack is one), which also gives it ComfyUI's LoRA key maps for
    diffusers-named (``transformer.``) and generic (``diffusion_model.``) LoRAs of these parameter names.
    """

    def __init__(self, model_config, transformer, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = transformer
        # FramePack's own model_sampling: a different one on the MODEL was set by a node (ModelSamplingSD3).
        self.framepack_model_sampling = self.model_sampling

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
            # Scaled here as the core sampler scales it; ComfyUI casts conds to the compute dtype.
            out["guidance"] = comfy.conds.CONDRegular(guidance_input(guidance))
        return out


class FramePackModelConfig(comfy.supported_models_base.BASE):
    unet_config = {"disable_unet_model_creation": True}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.HunyuanVideo
    # The capped shift of every 640-class bucket; the FramePack sampler computes its own schedule.
    sampling_settings = {"shift": 7.0}
    memory_usage_factor = 2.2
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]

    def __init__(self, framepack_config, variant: str | None = None):
        super().__init__({"disable_unet_model_creation": True})
        self.framepack_config = framepack_config
        # Which released checkpoint this is ("i2v", "f1", or None when unknown), for the sampler's mode check.
        self.variant = variant


def load_framepack_model(path, weight_dtype: str = "default", variant: str | None = None
                         ) -> comfy.model_patcher.ModelPatcher:
    """Load a FramePack checkpoint (file or diffusers folder) as a ComfyUI MODEL, dtypes chosen the way
    ComfyUI's UNETLoader chooses them; ``variant`` names the released checkpoint ("i2v", "f1") if known."""
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
                                   operations=operations, attention=comfy_attention,
                                   model_class=functools.partial(ComfyFramePackTransformer, compute_dtype=compute))
    config = FramePackModelConfig(transformer.config, variant)
    config.set_inference_dtype(storage, None if compute == storage else compute)
    log.info("FramePack transformer %s: weights %s, compute %s", path, storage, compute)
    model = FramePackBaseModel(config, transformer, device=offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)
