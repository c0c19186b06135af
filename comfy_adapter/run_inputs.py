"""The FramePack sampler's inputs as engine inputs, and the small pieces of its run around ``generate``."""

from __future__ import annotations

import logging

import torch

from ..framepack_core import GenerationInputs, InputError
from ..framepack_core.engine.conditioning import FPS
from ..framepack_core.engine.sampling import require_negative
from ..framepack_core.engine.validation import keyframes_by_frame
from .latents import LATENT_FORMAT, image_embeddings, latent_frames, start_image_embeddings, text_conditioning

log = logging.getLogger(__name__)

# The sampling mode each released checkpoint was trained for.
TRAINED_MODE = {"f1": "vanilla", "i2v": "inverted_anti_drifting"}


def patched_shift(model):
    """The shift set by ModelSamplingSD3 (or similar) on this model, else None (FramePack's automatic shift)."""
    sampling = model.get_model_object("model_sampling")
    if sampling is model.model.framepack_model_sampling:
        return None
    return getattr(sampling, "shift", None)


def warn_on_mode_mismatch(model, mode: str) -> None:
    variant = model.model.model_config.variant
    trained = TRAINED_MODE.get(variant)
    if trained is not None and trained != mode and not (variant == "i2v" and mode == "anti_drifting"):
        log.warning("FramePack: this checkpoint (%s) was trained for %s sampling but %s was chosen; results may drift "
                    "or ignore the start image. Use %s, or load the %s checkpoint.", variant.upper(), trained, mode,
                    trained, "FramePack_F1" if mode == "vanilla" else "FramePackI2V_HY")


def comfy_latent_in_place(video: torch.Tensor) -> dict:
    """``to_comfy_latent`` in the video's own buffer (the same division), so a long video's output does not
    need a second copy of its latents."""
    return {"samples": video.div_(LATENT_FORMAT.scale_factor)}


def chained(*callbacks):
    """One on_section callback calling the given ones (None skipped) in order; None when there are none."""
    present = [callback for callback in callbacks if callback is not None]
    if not present:
        return None
    return lambda *args: [callback(*args) for callback in present]


def history_frames(inputs: GenerationInputs) -> int:
    return 1 if inputs.history is None else inputs.history.shape[2]


def build_inputs(config, positive, negative, start_latent, clip_vision_output, end_latent, end_clip_vision_output,
                 keyframes, prompts, initial_latents, width, height, real_cfg) -> GenerationInputs:
    history = None if initial_latents is None else latent_frames(initial_latents, "initial_latents")
    if start_latent is not None:
        start = latent_frames(start_latent, "start_latent", frames=1)
    elif history is not None:
        start = history[:, :, :1]
    else:
        if width % 16 or height % 16:
            raise InputError(f"text-to-video size {width}x{height} must be multiples of 16; use a FramePack bucket.")
        start = torch.zeros(1, 16, 1, height // 8, width // 8)
    embeddings = start_image_embeddings(clip_vision_output, "clip_vision_output", config)
    require_negative(real_cfg, negative, "connect a negative prompt (for an empty negative, CLIPTextEncode of an "
                     "empty text, as FramePack does; not ConditioningZeroOut), or set real_cfg to 1.")
    timed = [(start_s, end_s, text_conditioning(cond, f"prompt at {start_s}s", config))
             for start_s, end_s, cond in prompts] if prompts else text_conditioning(positive, "positive", config)
    return GenerationInputs(
        start_latent=start, prompts=timed, image_embeddings=embeddings,
        negative=None if negative is None or real_cfg == 1 else text_conditioning(negative, "negative", config),
        end_latent=None if end_latent is None else latent_frames(end_latent, "end_latent", frames=1),
        end_image_embeddings=None if end_clip_vision_output is None else image_embeddings(
            end_clip_vision_output, "end_clip_vision_output", config),
        keyframes=keyframes_by_frame([(s, latent_frames(lat, f"keyframe at {s}s", frames=1))
                                      for s, lat in keyframes or []], FPS),
        history=history)
