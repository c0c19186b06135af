"""Sampling FramePack sections through ComfyUI: ModelPatcher, CFGGuider, any SAMPLER, one progress bar."""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..framepack_core import SectionJob, TextConditioning, apply_cfg, sample_euler, sample_unipc, section_step_cache
from .latents import LATENT_FORMAT
from .native_model import SECTION_KEY

log = logging.getLogger(__name__)

SAMPLER_NAMES = ("unipc_bh1", "unipc_bh2", "euler")


def framepack_sampler(name: str):
    """FramePack's own samplers as ComfyUI SAMPLERs (k-diffusion signature)."""
    if name == "euler":
        return comfy.samplers.KSAMPLER(sample_euler)
    return comfy.samplers.KSAMPLER(sample_unipc, extra_options={"variant": name.removeprefix("unipc_")})


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
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def __call__(self, job: SectionJob) -> torch.Tensor:
        settings = job.settings
        patcher = self.model.clone()
        section = dict(job.model_inputs, image_embeddings=job.image_embeddings)
        section["cache"] = section_step_cache(settings)
        options = dict(patcher.model_options.get("transformer_options", {}))
        options[SECTION_KEY] = section
        patcher.model_options["transformer_options"] = options
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

        samples = guider.sample(job.noise, torch.zeros_like(job.noise), self.sampler, job.sigmas,
                                callback=callback, disable_pbar=True, seed=settings.seed)
        comfy.model_management.throw_exception_if_processing_interrupted()
        return LATENT_FORMAT.process_in(samples.float())
