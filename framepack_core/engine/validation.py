"""Checks of what the Python API and the nodes are given: types, ranges, batch sizes, widths and costs.

One layer for both: ``generate`` checks its ``GenerationSettings`` and ``GenerationInputs`` here, and the nodes
check what ComfyUI hands them with the same functions, so a value is refused with the same sentence wherever it
comes from. Every error says what is wrong, the value and what to do. NaN fails every comparison, so ranges
are checked as ``low <= value <= high`` (False for NaN), never as ``value < low or value > high``.
Cost checks run before any work: a bad setting fails at once with its estimated cost, not after minutes.
"""

from __future__ import annotations

import logging
import math
import os

import torch

from .conditioning import FPS, TextConditioning, frame_time
from ..errors import InputError, NumericalError
from ..numerics import finite
from .planning import MAX_SECONDS, section_count
from .schedules import MAX_LATENT_WINDOW_SIZE, Schedule, ScheduleChoice

log = logging.getLogger(__name__)

SAMPLERS = ("unipc_bh1", "unipc_bh2", "euler")
# The most sections any duration the nodes accept can need (an hour at the smallest window); more is a typo
# that would otherwise spend minutes planning and allocate the video buffer before failing.
MAX_SECTIONS = section_count(MAX_SECONDS, latent_window_size=1)
# FramePack's image encoder, SigLIP so400m patch14 at 384 px: 27 x 27 patch tokens of width 1152. A model whose
# image projection takes 1152 channels was trained on exactly these tokens; other SigLIPs of that width (the
# 224 px one: 256 tokens) would be accepted silently by the shapes alone.
SIGLIP_WIDTH, SIGLIP_TOKENS = 1152, 729
# Text tokens: the refiner attends over all of them (L^2 scores per head); FramePack's demo crops at 256.
MAX_TEXT_TOKENS = 4096
# Per packed group, the RoPE table padded to the kernel's multiples (cos, sin and their angles, float32): at most
# this, and at most MAX_ROPE_PADDING times the group's own size once it exceeds ROPE_PADDING_FREE_BYTES (a kernel
# far larger than the latent pads a few real positions to millions: k512 on an 8x8 latent, 69 GB at head size 128).
MAX_GROUP_ROPE_BYTES = 8 * 2**30
MAX_ROPE_PADDING = 8
ROPE_PADDING_FREE_BYTES = 256 * 2**20
# Image tokens per section above which a run is warned about (the 640 buckets have about 16k).
WARN_SECTION_TOKENS = 65536
REAL_HEAD_DIM = 128


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_number(name: str, value, low: float, high: float, hint: str = "") -> float:
    """A finite real number (not a bool) in [low, high]; NaN and inf are refused."""
    if not is_number(value) or not low <= value <= high:
        raise InputError(f"{name} must be a finite number from {low:g} to {high:g}, got {value!r}.{hint}")
    return float(value)


def check_integer(name: str, value, low: int, high: int, hint: str = "") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} must be an integer from {low} to {high}, got {value!r}.{hint}")
    return value


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}.")
    return value


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if tensor is not None and tensor.is_floating_point() and not finite(tensor):
        raise InputError(f"{name} contains NaN or infinite values; check the node that produced it "
                         "(a VAE or encoder run in fp16 can overflow: try bf16 or fp32).")


def check_section_output(plan, latents: torch.Tensor) -> None:
    """A section's sampled latents must be finite (one reduction per section: well under 1 % of a step)."""
    if not finite(latents):
        frames = f"{plan.position}..{plan.position + plan.latent_window_size - 1}"
        raise NumericalError(
            f"section {plan.index + 1} of {plan.num_sections} (latent frames {frames}) came out of the sampler with "
            "NaN or infinite values, so the video would be broken from here on. The model's output is not finite: "
            "fp16 overflow, a LoRA at too high a strength, or damaged weights. Try bf16 weights, a lower LoRA "
            "strength or lower guidance; the sections finished before it are kept in the resume file.")


# ------------------------------------------------------------------------------------------- settings

def check_settings(settings) -> None:
    """Every field of a GenerationSettings: type, range, NaN (the nodes' ranges, a little wider)."""
    if settings.sampler not in SAMPLERS:
        raise InputError(f"sampler {settings.sampler!r} is unknown; choose one of {', '.join(SAMPLERS)}.")
    check_integer("num_sections", settings.num_sections, 1, MAX_SECTIONS,
                  f" {MAX_SECTIONS} is an hour-long video at the smallest window; compute it from the duration with "
                  "section_count(seconds, latent_window_size).")
    if settings.latent_window_size is not None:
        check_integer("latent_window_size", settings.latent_window_size, 1, MAX_LATENT_WINDOW_SIZE,
                      " FramePack uses 9 (33 video frames per section).")
    if settings.schedule is not None and not isinstance(settings.schedule, (str, Schedule, ScheduleChoice)):
        raise InputError(f"schedule must be None, a name, a paper-notation string, a Schedule or a ScheduleChoice "
                         f"(the schedule node's output), got {type(settings.schedule).__name__}: "
                         f"{settings.schedule!r:.80}.")
    check_integer("steps", settings.steps, 1, 1000, " FramePack uses 25.")
    check_number("distilled_cfg", settings.distilled_cfg, 0, 100, " FramePack uses 10.")
    check_number("real_cfg", settings.real_cfg, 0, 100, " 1 = off, FramePack's default.")
    check_number("cfg_rescale", settings.cfg_rescale, 0, 1, " 0 = off.")
    if settings.shift is not None:
        check_number("shift", settings.shift, 1e-3, 100, " None = FramePack's automatic shift from the token count.")
    check_integer("seed", settings.seed, 0, 2**64 - 1, " Seeds are whole numbers (torch takes 64 bits).")
    for name in ("teacache_threshold", "magcache_threshold"):
        value = getattr(settings, name)
        if not is_number(value) or not 0 <= value <= 1:
            raise InputError(f"{name} must be >= 0 and at most 1 (0 = off; 0.15 is a usual TeaCache value, 0.1 "
                             f"MagCache; 1 already skips most steps), got {value!r}.")
    if settings.teacache_threshold > 0 and settings.magcache_threshold > 0:
        raise InputError(f"teacache_threshold ({settings.teacache_threshold}) and magcache_threshold "
                         f"({settings.magcache_threshold}) are both set; choose one step cache and set the other to 0.")
    check_number("prompt_blend_seconds", settings.prompt_blend_seconds, 0, MAX_SECONDS, " 0 = switch at once.")
    check_flag("interpolate_image_embeddings", settings.interpolate_image_embeddings)


# ------------------------------------------------------------------------------------------- tensors

def check_latent(name: str, latent, size: tuple, frames: int | None = None) -> None:
    """A (1, 16, T, H, W) latent of the start latent's size; ``frames`` fixes T (one image = one frame)."""
    check_latent_layout(name, latent, frames)
    if tuple(latent.shape[-2:]) != tuple(size):
        raise InputError(f"{name} has shape {tuple(latent.shape)} but the start latent's size is {tuple(size)}: "
                         "every image must be encoded at the same size (use one bucket for all of them).")


def check_latent_layout(name: str, latent, frames: int | None = None) -> None:
    """A (1, 16, T, H, W) latent, of ``frames`` frames when given (one image = one frame)."""
    if not torch.is_tensor(latent) or latent.ndim != 5 or latent.shape[1] != 16:
        got = tuple(latent.shape) if torch.is_tensor(latent) else type(latent).__name__
        raise InputError(f"{name} must be a latent (1, 16, T, H, W), got {got}; VAE-encode it with the "
                         "HunyuanVideo VAE.")
    if latent.shape[0] != 1:
        raise InputError(f"{name} holds a batch of {latent.shape[0]} latents {tuple(latent.shape)}; FramePack makes "
                         "one video from one image: pass one (e.g. LatentFromBatch), or run the graph once per image.")
    if frames is not None and latent.shape[2] != frames:
        raise InputError(f"{name} has {latent.shape[2]} latent frames {tuple(latent.shape)} but must have {frames}: "
                         "VAE-encode a single image.")


def history_frames(history) -> int:
    """Latent frames of an existing video to extend (1: none, the start latent alone)."""
    if history is None:
        return 1
    if not torch.is_tensor(history) or history.ndim != 5 or history.shape[1] != 16 or history.shape[2] < 1:
        got = tuple(history.shape) if torch.is_tensor(history) else type(history).__name__
        raise InputError(f"history must be the latents (1, 16, T, H, W) of the video to extend, got {got}; pass the "
                         "video's LATENT (VAEEncode of its frames, or a FramePack sampler's output).")
    return history.shape[2]


def check_image_embeddings(name: str, embeddings, config=None) -> None:
    """(1, tokens, width): one image; width = the model's image_proj_dim; 729 tokens for FramePack's SigLIP."""
    if embeddings is None and config is not None and config.has_image_proj:
        raise InputError(f"{name} is missing but this FramePack model has an image projection: connect the start "
                         "image's CLIPVisionEncode output (or FramePack Encode Start Image).")
    if embeddings is None:
        return
    if not torch.is_tensor(embeddings) or embeddings.ndim != 3:
        got = tuple(embeddings.shape) if torch.is_tensor(embeddings) else type(embeddings).__name__
        raise InputError(f"{name} must be image embeddings (1, tokens, width), got {got}; encode the image with "
                         "CLIPVisionEncode (SigLIP) or FramePack Encode Start Image.")
    if embeddings.shape[0] != 1:
        raise InputError(f"{name} holds a batch of {embeddings.shape[0]} image encodings; FramePack takes one image "
                         "per video: encode one image.")
    width = embeddings.shape[2]
    if config is not None and width != config.image_proj_dim:
        raise InputError(f"{name} is {width} channels wide {tuple(embeddings.shape)} but this FramePack model's image "
                         f"projection takes {config.image_proj_dim}: use CLIPVisionLoader with "
                         "sigclip_vision_patch14_384 (the encoder FramePack was trained with).")
    if width == SIGLIP_WIDTH and embeddings.shape[1] != SIGLIP_TOKENS:
        raise InputError(f"{name} has {embeddings.shape[1]} image tokens but FramePack's SigLIP "
                         f"(sigclip_vision_patch14_384) gives {SIGLIP_TOKENS} (27 x 27 patches at 384 px); another "
                         "SigLIP of width 1152 was connected. Load sigclip_vision_patch14_384.")


def check_text(name: str, cond: TextConditioning, config=None) -> None:
    """One prompt: batch 1, the model's text and pooled widths, a bounded token count, finite values."""
    if cond.text.shape[0] != 1 or cond.pooled.shape[0] != 1:
        raise InputError(f"{name} holds a batch of {cond.text.shape[0]} prompts {tuple(cond.text.shape)}; FramePack "
                         "takes one prompt per conditioning: for prompts that change over time use timed prompts "
                         "(FramePack Timestamped Prompts).")
    if config is not None:
        for what, width, expected in (("text states", cond.text.shape[2], config.text_embed_dim),
                                      ("pooled vector", cond.pooled.shape[1], config.pooled_projection_dim)):
            if width != expected:
                raise InputError(f"{name}'s {what} are {width} wide but this FramePack model takes {expected}: encode "
                                 "with CLIPTextEncode on DualCLIPLoader type hunyuan_video (llava_llama3 + clip_l).")
    tokens = cond.text.shape[1]
    if tokens > MAX_TEXT_TOKENS:
        raise InputError(f"{name} has {tokens} text tokens, more than the {MAX_TEXT_TOKENS} accepted: the text "
                         f"refiner's attention alone would need about {tokens ** 2 * 4 / 2**30:.1f} GiB per head "
                         "(FramePack's demo uses at most 256 tokens). Shorten the prompt.")
    check_finite(f"the text of {name}", cond.text)
    check_finite(f"the pooled vector of {name}", cond.pooled)


def check_same_widths(named: list) -> None:
    """Prompts that are blended or batched together must have the same widths (one text encoder for all)."""
    first_name, first = named[0]
    for name, cond in named[1:]:
        if cond.text.shape[2] != first.text.shape[2] or cond.pooled.shape[1] != first.pooled.shape[1]:
            raise InputError(f"{name} is {cond.text.shape[2]} / {cond.pooled.shape[1]} wide (text / pooled) but "
                             f"{first_name} is {first.text.shape[2]} / {first.pooled.shape[1]}: encode every prompt "
                             "with the same text encoder (DualCLIPLoader type hunyuan_video).")


def check_model_widths(inputs, config) -> None:
    """Widths of every input against the model config (when the section sampler knows its model)."""
    check_image_embeddings("image_embeddings", inputs.image_embeddings, config)
    if inputs.end_image_embeddings is not None:
        check_image_embeddings("end_image_embeddings", inputs.end_image_embeddings, config)
    for start, _, cond in inputs.timed_prompts():
        check_text(f"the prompt at {start:g} s", cond, config)
    if inputs.negative is not None:
        check_text("the negative prompt", inputs.negative, config)


# ------------------------------------------------------------------------------------------- keyframes

def keyframes_by_frame(entries, fps: float = FPS) -> dict:
    """[(seconds, latent), ...] -> {latent frame: latent}; two keyframes on one latent frame are an error.

    Latent frame f >= 1 covers pixel frames 4f-3 .. 4f, so times closer than 4 frames (0.13 s) can share one.
    """
    frames: dict = {}
    for seconds, latent in entries:
        check_number("a keyframe's time (seconds)", seconds, 0, MAX_SECONDS)
        frame = max(1, round((seconds * fps + 3) / 4))
        if frame in frames:
            raise InputError(f"the keyframes at {frames[frame][0]:g} s and {seconds:g} s both land on latent frame "
                             f"{frame} (one latent frame covers 4 video frames, {4 / fps:.3f} s; the first is at "
                             f"{1 / fps:.3f} s): move them at least {4 / fps:.2f} s apart, or remove one.")
        frames[frame] = (seconds, latent)
    return {frame: latent for frame, (_, latent) in frames.items()}


def check_keyframe_sections(keyframes: dict, plans: list, has_end: bool) -> None:
    """Each section is pulled towards one image (its one target slot): two targets in a section are an error.

    The generation loop would use the later keyframe (or the keyframe instead of the end frame) and drop the other
    without a word.
    """
    used = set()
    for plan in plans:
        end = plan.position + plan.latent_window_size
        inside = sorted(f for f in keyframes if plan.position < f <= end)
        used.update(inside)
        if has_end and end == plan.total_latent_frames and inside:
            raise InputError(f"the keyframe at latent frame {inside[-1]} ({frame_time(inside[-1]):.2f} s) lies in the "
                             f"last section (frames {plan.position + 1}..{end}), which is already pulled towards the "
                             "end frame: move the keyframe earlier, or drop the end frame.")
        if len(inside) > 1:
            a, b = inside[0], inside[1]
            raise InputError(f"the keyframes at latent frames {a} ({frame_time(a):.2f} s) and {b} ({frame_time(b):.2f} "
                             f"s) fall in one section (frames {plan.position + 1}..{end}), which can be pulled towards "
                             f"one image only: move them at least one section ({4 * plan.latent_window_size / FPS:.2f}"
                             " s) apart, or use a smaller latent_window_size.")
    unused = sorted(set(keyframes) - used)
    if unused:
        earliest = min(plan.position for plan in plans) + 1
        raise InputError(f"the keyframe at latent frame {unused[0]} ({frame_time(unused[0]):.2f} s) is before the "
                         f"earliest frame a section can be pulled towards, frame {earliest} "
                         f"({frame_time(earliest):.2f} s), so it would be ignored: move it later (the start image "
                         "already fixes the beginning).")


# ------------------------------------------------------------------------------------------- costs

def physical_memory() -> int:
    """Bytes of RAM of this machine (64 GiB when the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def group_rope_positions(group, height: int, width: int) -> tuple[int, int]:
    """(positions, padded positions) of one packed group's RoPE table on the post-patch grid."""
    t, h, w = group.kernel.rope_pool
    frames, rows, columns = len(group.indices), height // 2, width // 2
    padded = math.ceil(frames / t) * t * math.ceil(rows / h) * h * math.ceil(columns / w) * w
    return frames * rows * columns, padded


def check_costs(plans: list, height: int, width: int, config=None) -> None:
    """Refuse, before any work, a video whose buffers cannot fit; warn about very long sections."""
    first = plans[0]
    frames = first.total_latent_frames
    video_bytes = frames * 16 * height * width * 4
    pixels_bytes = (4 * (frames - 1) + 1) * (8 * height) * (8 * width) * 3 * 4
    memory = physical_memory()
    if video_bytes > memory // 2:
        raise InputError(f"the video's latents alone need {gib(video_bytes)} ({frames} latent frames of "
                         f"{height}x{width}, i.e. {8 * width}x{8 * height} px), more than half of this machine's "
                         f"{gib(memory)}; decoding would need {gib(pixels_bytes)} more. Make the video shorter or "
                         "smaller, or split it into several runs (extend with initial_latents).")
    head_dim = REAL_HEAD_DIM if config is None else config.attention_head_dim
    groups = {(g.kernel, len(g.indices)): g for plan in plans for g in plan.groups}
    for group in groups.values():
        positions, padded = group_rope_positions(group, height, width)
        cost = 3 * padded * head_dim * 4
        wasteful = cost > ROPE_PADDING_FREE_BYTES and padded > MAX_ROPE_PADDING * positions
        if cost > MAX_GROUP_ROPE_BYTES or wasteful:
            raise InputError(f"the schedule's group of {len(group.indices)} frames with kernel {group.kernel.size} "
                             f"needs a RoPE table of about {gib(cost)} on this {height}x{width} latent (padded to the "
                             f"kernel's multiples: {padded / positions:.0f}x the group's own {positions} positions, "
                             f"head size {head_dim}); at most {gib(MAX_GROUP_ROPE_BYTES)} and {MAX_ROPE_PADDING}x "
                             "padding are allowed: use smaller kernels (k1, k2, k4, k8) or fewer frames per group.")
    tokens = max(plan.image_tokens(height, width) for plan in (first, plans[-1]))
    if tokens > WARN_SECTION_TOKENS:
        log.warning("FramePack: each section attends over about %d image tokens (the 640 buckets have about 16k); "
                    "a step costs roughly %.0fx one at 640. Use a smaller resolution or schedule if this is too slow.",
                    tokens, (tokens / 16000) ** 2)
