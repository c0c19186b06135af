"""Sampling FramePack sections through ComfyUI: ModelPatcher, CFGGuider, any SAMPLER, one progress bar."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..framepack_core import SectionJob, TextConditioning, apply_cfg, section_step_cache
from ..framepack_core.engine.generate import SAMPLER_FUNCTIONS
from ..framepack_core.engine.validation import SAMPLERS
from ..framepack_core.engine.step_caches import StepCacheChoice
from .native_model import SECTION_KEY, SectionContext

log = logging.getLogger(__name__)

SAMPLER_NAMES = SAMPLERS
# A FramePack TeaCache / MagCache node's choice, in the model's transformer_options.
STEP_CACHE_KEY = "framepack_step_cache"


def framepack_sampler(name: str):
    """FramePack's own samplers as ComfyUI SAMPLERs (k-diffusion signature)."""
    function, options = SAMPLER_FUNCTIONS[name]
    return comfy.samplers.KSAMPLER(function, extra_options=options)


def section_model_options(model_options: dict, job: SectionJob, device) -> dict:
    """A copy of ``model_options`` whose transformer_options carry the section's context to the FramePack model.

    The context (latent indices, clean groups, image embeddings, the section's step cache) is moved to
    ``device`` here, once per section. Both the all-in-one sampler and the SamplerCustomAdvanced sampler use it.
    """
    options = comfy.model_patcher.create_model_options_clone(model_options)
    transformer_options = options.setdefault("transformer_options", {})
    cache = section_step_cache(job.settings, transformer_options.get(STEP_CACHE_KEY))
    inputs = job.model_inputs
    context = SectionContext(inputs["latent_indices"], inputs["clean_groups"], job.image_embeddings, cache)
    transformer_options[SECTION_KEY] = context.to(device)
    return options


def with_step_cache(model, choice: StepCacheChoice):
    """A clone of a FramePack MODEL whose sections use the step cache ``choice`` (TeaCache / MagCache nodes)."""
    patched = model.clone()
    patched.model_options["transformer_options"] = dict(patched.model_options.get("transformer_options", {}))
    patched.model_options["transformer_options"][STEP_CACHE_KEY] = choice
    return patched


def step_cache_choice(model) -> StepCacheChoice | None:
    return model.model_options.get("transformer_options", {}).get(STEP_CACHE_KEY)


def comfy_conditioning(text: TextConditioning, distilled_cfg: float) -> list:
    options = {"pooled_output": text.pooled, "guidance": distilled_cfg}
    if not bool(text.mask.all()):
        options["attention_mask"] = text.mask
    return [[text.text, options]]


def cfg_rescale_function(rescale: float):
    """FramePack's CFG rescale on the velocity, as a ComfyUI sampler_cfg_function."""
    def rescaled(args):
        # args["cond"] / ["uncond"] are x - denoised = sigma * velocity: the std ratio is the same.
        return apply_cfg(args["cond"], args["uncond"], args["cond_scale"], rescale)
    return rescaled


class ComfySectionSampler:
    """A framepack_core section sampler running on a ComfyUI MODEL with a ComfyUI SAMPLER."""

    def __init__(self, model, sampler, total_steps: int):
        self.model = model
        self.sampler = sampler
        self.progress = comfy.utils.ProgressBar(total_steps)
        self.previewer = latent_preview.get_previewer(model.load_device, model.get_model_object("latent_format"))

    def __call__(self, job: SectionJob) -> torch.Tensor:
        settings = job.settings
        patcher = self.model.clone()
        patcher.model_options = section_model_options(patcher.model_options, job, patcher.load_device)
        sampled = {}
        patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, "framepack_model_space",
                                     keep_model_space(sampled))
        if settings.cfg_rescale:
            patcher.set_model_sampler_cfg_function(cfg_rescale_function(settings.cfg_rescale))
        positive = comfy_conditioning(job.positive, settings.distilled_cfg)
        negative = comfy_conditioning(job.negative or job.positive, settings.distilled_cfg)
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(positive, negative)
        guider.set_cfg(settings.real_cfg)
        offset = 0 if job.plan is None else job.plan.index * settings.steps

        def callback(step, denoised, x, total):
            preview = None
            if self.previewer is not None:
                preview = self.previewer.decode_latent_to_preview_image("JPEG", denoised)
            self.progress.update_absolute(offset + step + 1, None, preview)
            if job.step_callback is not None:
                job.step_callback({"i": step, "denoised": denoised, "x": x})

        guider.sample(job.noise, torch.zeros_like(job.noise), self.sampler, job.sigmas,
                      callback=callback, disable_pbar=True, seed=settings.seed)
        comfy.model_management.throw_exception_if_processing_interrupted()
        return sampled["samples"].float()


def keep_model_space(into: dict):
    """A SAMPLER_SAMPLE wrapper keeping the sampler's latents as sampled, in model space.

    The section loop keeps the video in model space for the whole run (the LATENT is scaled once on the way
    in and once on the way out); the guider's ``process_latent_out`` result is not used, so a section's
    latents are not scaled out and in again.
    """
    def wrapper(executor, *args, **kwargs):
        into["samples"] = executor(*args, **kwargs)
        return into["samples"]
    return wrapper
