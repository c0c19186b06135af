"""Conversions between ComfyUI's values (CONDITIONING, LATENT, CLIP_VISION_OUTPUT) and framepack_core's inputs.

Every malformed input gets an InputError naming the input, what was found and which node produces the right
thing, instead of an index error deep in the sampler.
"""

from __future__ import annotations

import comfy.latent_formats
import torch

from ..framepack_core import InputError, TextConditioning
from ..framepack_core.engine.validation import SIGLIP_TOKENS, check_image_embeddings, check_latent_layout, check_text

LATENT_FORMAT = comfy.latent_formats.HunyuanVideo()


def text_conditioning(conditioning, name: str, config) -> TextConditioning:
    """One CONDITIONING entry from CLIPTextEncode (hunyuan_video) -> TextConditioning."""
    if not isinstance(conditioning, list) or not conditioning:
        raise InputError(f"{name} is empty or not a CONDITIONING; connect CLIPTextEncode (DualCLIPLoader type "
                         "hunyuan_video).")
    if len(conditioning) > 1:
        raise InputError(f"{name} holds {len(conditioning)} prompts, FramePack takes one per conditioning. For "
                         "prompts that change over the video use the FramePack Timestamped Prompts node.")
    entry = conditioning[0]
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not torch.is_tensor(entry[0]):
        raise InputError(f"{name} is not a CONDITIONING entry ([tensor, options]); connect CLIPTextEncode.")
    states, options = entry
    pooled = options.get("pooled_output")
    if states.ndim != 3 or states.shape[-1] != config.text_embed_dim:
        raise InputError(f"{name} has text states of shape {tuple(states.shape)} but this FramePack model takes "
                         f"{config.text_embed_dim}-wide LLaMA states: encode with DualCLIPLoader type hunyuan_video "
                         "(llava_llama3 + clip_l).")
    if not torch.is_tensor(pooled) or pooled.shape[-1] != config.pooled_projection_dim:
        got = tuple(pooled.shape) if torch.is_tensor(pooled) else None
        raise InputError(f"{name} has no {config.pooled_projection_dim}-wide CLIP-L pooled output (got {got}): "
                         "encode with DualCLIPLoader type hunyuan_video.")
    mask = options.get("attention_mask")
    if mask is not None and (not torch.is_tensor(mask) or mask.numel() != states.shape[0] * states.shape[1]):
        got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise InputError(f"{name}'s attention mask {got} does not match its text states {tuple(states.shape)}; "
                         "encode the prompt again with CLIPTextEncode.")
    mask = torch.ones(states.shape[:2], dtype=torch.bool) if mask is None else mask.bool().reshape(states.shape[:2])
    cond = TextConditioning(states.float(), mask, pooled.reshape(-1, pooled.shape[-1]).float())
    check_text(name, cond, config)
    return cond


def image_embeddings(clip_vision_output, name: str, config) -> torch.Tensor:
    """CLIPVisionEncode's SigLIP output -> (1, tokens, image_proj_dim)."""
    states = getattr(clip_vision_output, "last_hidden_state", None)
    if states is None and isinstance(clip_vision_output, dict):
        states = clip_vision_output.get("last_hidden_state")
    if not torch.is_tensor(states) or states.ndim != 3 or states.shape[-1] != config.image_proj_dim:
        got = tuple(states.shape) if torch.is_tensor(states) else type(clip_vision_output).__name__
        raise InputError(f"{name} is not a SigLIP image encoding with {config.image_proj_dim} channels (got {got}); "
                         "use CLIPVisionLoader with sigclip_vision_patch14_384 and FramePack Encode Start Image "
                         "(or CLIPVisionEncode with crop none).")
    check_image_embeddings(name, states, config)
    return states.float()


def start_image_embeddings(clip_vision_output, name: str, config) -> torch.Tensor:
    """The start image's embeddings, or zeros of SigLIP's token count without one (text to video, as FramePack's
    demo runs it)."""
    if clip_vision_output is None:
        return torch.zeros(1, SIGLIP_TOKENS, config.image_proj_dim)
    return image_embeddings(clip_vision_output, name, config)


def latent_frames(latent, name: str, frames: int | None = None) -> torch.Tensor:
    """A ComfyUI LATENT (HunyuanVideo VAE) -> model-space latents (1, 16, T, H, W)."""
    samples = latent.get("samples") if isinstance(latent, dict) else latent
    check_latent_layout(name, samples, frames)
    return LATENT_FORMAT.process_in(samples.float())


def to_comfy_latent(video: torch.Tensor) -> dict:
    """Model-space latents -> a ComfyUI LATENT for VAEDecode(Tiled)."""
    return {"samples": LATENT_FORMAT.process_out(video)}
