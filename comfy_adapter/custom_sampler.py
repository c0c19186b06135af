"""FramePack's section loop as a ComfyUI SAMPLER, for SamplerCustomAdvanced with core guiders, noise and sigmas.

Core ComfyUI runs autoregressive video the same way: the SAMPLER's ``sample`` gets the guider-wrapped model
once for the whole video and runs the per-block loop itself, with each block's state in the model options'
``transformer_options``. Here the loop is framepack_core's ``generate`` (plans, context gathering, the section
noise drawn from the seed exactly as the all-in-one FramePack Sampler draws it); each section is sampled by an
inner k-diffusion SAMPLER (FramePack's UniPC or Euler, or any ComfyUI one) through the guider, so CFGGuider's
cfg, BasicGuider, model patches and sampler wrappers all apply. The start latent, image embeddings, end frame
and keyframes ride on the CONDITIONING (``attach_inputs``), as core's ``*ImageToVideo`` nodes attach theirs.
"""

from __future__ import annotations

import logging

import comfy.model_management
import comfy.samplers
import node_helpers
import torch

from ..framepack_core import GenerationInputs, GenerationSettings, InputError, flow_sigmas, generate
from ..framepack_core.engine.conditioning import FPS
from ..framepack_core.engine.schedules import choose_schedule
from ..framepack_core.engine.validation import check_latent_layout, keyframes_by_frame
from .latents import latent_frames, start_image_embeddings, text_conditioning
from .section_sampler import cfg_rescale_function, section_model_options

log = logging.getLogger(__name__)

# CONDITIONING keys: the start image's encoding under core's own key, the pack's model-space latents under its own.
CLIP_VISION_KEY = "clip_vision_output"
START_KEY, END_KEY, KEYFRAMES_KEY = "framepack_start_latent", "framepack_end_latent", "framepack_keyframes"


def attach_inputs(conditioning, distilled_cfg: float, start_latent=None, clip_vision_output=None, end_latent=None,
                  keyframes=None) -> list:
    """The CONDITIONING with FramePack's image inputs and distilled guidance set on every entry (checked here, so a
    wrong latent is reported at this node)."""
    values = {"guidance": distilled_cfg}
    if start_latent is not None:
        values[START_KEY] = latent_frames(start_latent, "start_latent", frames=1)
    if clip_vision_output is not None:
        values[CLIP_VISION_KEY] = clip_vision_output
    if end_latent is not None:
        values[END_KEY] = latent_frames(end_latent, "end_latent", frames=1)
    if keyframes:
        values[KEYFRAMES_KEY] = keyframes_by_frame(
            [(s, latent_frames(latent, f"keyframe at {s}s", frames=1)) for s, latent in keyframes], FPS)
    return node_helpers.conditioning_set_values(conditioning, values)


def framepack_sigmas(latent: dict, steps: int, shift: float, schedule=None) -> torch.Tensor:
    """The sigmas FramePack samples every section of this latent with (shift 0: automatic from the token count)."""
    samples = latent.get("samples") if isinstance(latent, dict) else latent
    check_latent_layout("latent", samples)
    height, width = samples.shape[-2:]
    window = (schedule or choose_schedule()).latent_window_size
    return flow_sigmas(steps, seq_len=window * height * width // 4, shift=shift or None)


class FramePackSectionLoop(comfy.samplers.Sampler):
    """A SAMPLER that generates a whole FramePack video: one inner-SAMPLER run per section, through the guider."""

    def __init__(self, mode: str, schedule, inner_sampler, cfg_rescale: float = 0.0):
        self.mode = mode
        self.schedule = schedule or choose_schedule()  # the mode's released layout, window 9
        self.schedule.for_mode(mode)  # a layout the mode cannot run is reported by the SAMPLER's node
        self.inner_sampler = inner_sampler
        self.cfg_rescale = cfg_rescale

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        check_sampling_inputs(noise, latent_image, denoise_mask)
        config = model_wrap.model_patcher.model.diffusion_model.config
        settings = self.settings(latent_image.shape[2], len(sigmas) - 1, extra_args.get("seed", 0),
                                 getattr(model_wrap, "cfg", 1.0))
        inputs = conditioning_inputs(model_wrap.conds, latent_image.shape, config)
        section_sampler = GuidedSectionSampler(model_wrap, self.inner_sampler, sigmas, extra_args, self.cfg_rescale,
                                               callback, settings.num_sections * settings.steps, disable_pbar)
        return generate(section_sampler, inputs, settings)

    def settings(self, latent_frames: int, steps: int, seed: int, cfg: float) -> GenerationSettings:
        """The run's settings; the sections are the latent's length in whole windows (n windows + the start).

        The guider's cfg is recorded as the real CFG, so a step cache patch knows the steps make two calls.
        """
        window = self.schedule.latent_window_size
        sections = max(round((latent_frames - 1) / window), 1)
        if sections * window + 1 != latent_frames:
            log.info("FramePack: the latent's %d frames make %d sections of %d, %d latent frames", latent_frames,
                     sections, window, sections * window + 1)
        return GenerationSettings(mode=self.mode, num_sections=sections, latent_window_size=window,
                                  schedule=self.schedule, steps=steps, real_cfg=cfg, seed=seed)


def check_sampling_inputs(noise, latent_image, denoise_mask) -> None:
    check_latent_layout("latent_image", latent_image)
    if denoise_mask is not None:
        raise InputError(f"the latent has a noise mask {tuple(denoise_mask.shape)}, which FramePack sections cannot "
                         "use: connect an EmptyHunyuanLatentVideo without SetLatentNoiseMask.")
    if torch.count_nonzero(latent_image):
        raise InputError(f"latent_image {tuple(latent_image.shape)} holds values, but only its size and length are "
                         "used: connect EmptyHunyuanLatentVideo. The start image goes to FramePack Image To Video; "
                         "to extend a video use FramePack Sampler's initial_latents.")
    if not torch.count_nonzero(noise):
        raise InputError("the noise is all zeros (DisableNoise): every FramePack section starts from noise drawn "
                         "from the seed; connect RandomNoise.")


def conditioning_inputs(conds: dict, latent_shape, config) -> GenerationInputs:
    """The engine's inputs from the guider's positive conditioning (attached by FramePack Image To Video) and the
    latent's size. The prompt itself reaches the model through the guider; here it is only checked."""
    positive = conds.get("positive")
    if not positive:
        raise InputError("the guider has no positive conditioning; use CFGGuider or BasicGuider.")
    entry = positive[0]
    start = entry.get(START_KEY)
    if start is None:  # text to video: a zero start latent of the latent's size, as the all-in-one sampler uses
        start = torch.zeros(1, 16, 1, *latent_shape[-2:])
    elif tuple(start.shape[-2:]) != tuple(latent_shape[-2:]):
        raise InputError(f"the start latent is {tuple(start.shape[-2:])} but the latent to sample is "
                         f"{tuple(latent_shape[-2:])} (height, width): give EmptyHunyuanLatentVideo the start "
                         "image's width and height.")
    vision = entry.get(CLIP_VISION_KEY)
    embeddings = start_image_embeddings(vision, "clip_vision_output", config)
    text = text_conditioning([[c.get("cross_attn"), c] for c in positive], "positive", config)
    return GenerationInputs(start_latent=start, prompts=text, image_embeddings=embeddings,
                            end_latent=entry.get(END_KEY), keyframes=entry.get(KEYFRAMES_KEY) or {})


class GuidedSectionSampler:
    """Samples one engine section with the inner SAMPLER through the guider, inside the guider's sample call."""

    def __init__(self, guider, inner_sampler, sigmas, extra_args, cfg_rescale, callback, total_steps, disable_pbar):
        self.guider, self.inner_sampler, self.sigmas = guider, inner_sampler, sigmas
        self.extra_args, self.cfg_rescale = extra_args, cfg_rescale
        self.callback, self.total_steps, self.disable_pbar = callback, total_steps, disable_pbar
        self.config = guider.model_patcher.model.diffusion_model.config  # generate() checks the widths against it

    def __call__(self, job) -> torch.Tensor:
        device = self.sigmas.device
        noise = job.noise.to(device)
        extra_args = dict(self.extra_args, model_options=self.section_options(job, device))
        offset = job.plan.index * job.settings.steps

        def callback(step, denoised, x, _section_steps):
            if self.callback is not None:
                self.callback(offset + step, denoised, x, self.total_steps)

        samples = self.inner_sampler.sample(self.guider, self.sigmas, extra_args, callback, noise,
                                            torch.zeros_like(noise), None, self.disable_pbar)
        comfy.model_management.throw_exception_if_processing_interrupted()
        return samples

    def section_options(self, job, device) -> dict:
        """The run's model options with this section's context (and FramePack's CFG rescale, when set)."""
        options = section_model_options(self.extra_args["model_options"], job, device)
        if self.cfg_rescale:
            options["sampler_cfg_function"] = cfg_rescale_function(self.cfg_rescale)
        return options
