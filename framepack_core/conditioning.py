"""Conditioning that changes over the video: timestamped prompts, prompt blending, image-embedding interpolation.

Times are in seconds of the output video at 30 fps. A section's time is the time of its first pixel frame:
latent frame f >= 1 decodes to pixel frames 4f-3 .. 4f (the causal VAE), so it starts at ``(4f - 3) / fps``.
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch

from .errors import InputError

FPS = 30.0
# Longer text is refused: the entry regex backtracks quadratically on unclosed '[' runs (20k chars: ~4 s).
MAX_PROMPT_CHARS = 10_000


@dataclasses.dataclass(frozen=True)
class TextConditioning:
    """One encoded prompt: LLM states (1, L, D), their boolean mask (1, L) and the pooled CLIP vector (1, P)."""

    text: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self):
        if self.text.ndim != 3 or self.mask.shape != self.text.shape[:2] or self.pooled.ndim != 2:
            raise InputError(
                f"text conditioning must be states (B, L, D) with a (B, L) mask and a (B, P) pooled vector; got "
                f"{tuple(self.text.shape)}, {tuple(self.mask.shape)} and {tuple(self.pooled.shape)}. "
                "Encode the prompt with CLIPTextEncode on a hunyuan_video DualCLIPLoader.")
        if not bool(self.mask.any()):
            raise InputError("the prompt encodes to zero tokens; give a prompt (an empty text still has tokens).")

    def model_inputs(self) -> dict:
        return {"encoder_hidden_states": self.text, "encoder_attention_mask": self.mask,
                "pooled_projections": self.pooled}


def blend(a: TextConditioning, b: TextConditioning, alpha: float) -> TextConditioning:
    """``(1 - alpha) a + alpha b``; the shorter prompt is zero-padded and the masks are united."""
    length = max(a.text.shape[1], b.text.shape[1])

    def pad(c: TextConditioning):
        extra = length - c.text.shape[1]
        return (torch.nn.functional.pad(c.text, (0, 0, 0, extra)), torch.nn.functional.pad(c.mask, (0, extra)))

    (ta, ma), (tb, mb) = pad(a), pad(b)
    return TextConditioning(torch.lerp(ta.float(), tb.float(), alpha).to(a.text.dtype), ma | mb,
                            torch.lerp(a.pooled.float(), b.pooled.float(), alpha).to(a.pooled.dtype))


@dataclasses.dataclass(frozen=True)
class TimedPrompt:
    """A prompt active from ``start`` seconds (until the next one starts, or ``end`` when given)."""

    start: float
    end: float | None
    text: str


_ENTRY = re.compile(r"\[\s*([^\]:]*?)\s*:\s*([^\]]*?)\s*\]", re.S)
_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*s?$")


def _seconds(token: str, entry: str) -> float:
    match = _TIME.match(token.strip())
    if not match:
        raise InputError(f"bad time {token!r} in prompt entry {entry!r}: write seconds like '2s' or '2.5s', "
                         "e.g. '[0s: a cat sits] [2s-4s: the cat jumps]'.")
    return float(match.group(1))


def parse_timestamped_prompts(text: str) -> list[TimedPrompt]:
    """Parse ``[0s: first prompt] [2s-4s: second prompt]`` into TimedPrompts sorted by start time.

    Text without any ``[..: ..]`` entry is one prompt from 0 s. Text outside the entries is not allowed.
    """
    if not isinstance(text, str):
        raise InputError(f"timestamped prompts must be text, got {type(text).__name__}.")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"the prompt text is {len(text)} characters long, more than the {MAX_PROMPT_CHARS} "
                         "this parser accepts; shorten it.")
    if "[" not in text:
        if not text.strip():
            raise InputError("the prompt is empty; write a prompt or '[0s: ...] [2s: ...]' entries.")
        return [TimedPrompt(0.0, None, text.strip())]
    entries, last = [], 0
    for match in _ENTRY.finditer(text):
        between = text[last:match.start()].strip()
        if between:
            raise InputError(f"text {between!r} is outside any '[time: prompt]' entry; put it inside brackets.")
        last = match.end()
        when, prompt = match.group(1), match.group(2)
        if not prompt:
            raise InputError(f"prompt entry {match.group(0)!r} has no prompt text after the colon.")
        start, _, end = when.partition("-")
        start_s = _seconds(start, match.group(0))
        end_s = _seconds(end, match.group(0)) if end else None
        if end_s is not None and end_s <= start_s:
            raise InputError(f"prompt entry {match.group(0)!r} ends ({end_s}s) before it starts ({start_s}s).")
        entries.append(TimedPrompt(start_s, end_s, prompt))
    trailing = text[last:].strip()
    if trailing or not entries:
        raise InputError(f"cannot read {trailing or text!r} as '[time: prompt]' entries, "
                         "e.g. '[0s: a cat sits] [2s-4s: the cat jumps]'.")
    entries.sort(key=lambda e: e.start)
    if entries[0].start > 0:
        raise InputError(f"the first prompt starts at {entries[0].start}s; one prompt must start at 0s so every "
                         "section has a prompt.")
    starts = [e.start for e in entries]
    if len(set(starts)) != len(starts):
        raise InputError(f"two prompt entries start at the same time ({starts}); give each a different start.")
    return entries


def frame_time(frame: int, fps: float = FPS) -> float:
    """Start time in seconds of latent frame ``frame`` (frame 0 is the start image at 0 s)."""
    return max(4 * frame - 3, 0) / fps


def prompt_for_time(prompts: list, seconds: float, blend_seconds: float = 0.0):
    """Index of the active prompt at ``seconds`` and the blend weight towards it (1 = fully active).

    ``prompts`` are (start, end, value) sorted by start. Within ``blend_seconds`` after a prompt starts, the
    weight rises linearly from the previous prompt; after an ``end`` the previous prompt returns.
    """
    active = 0
    for i, (start, end, _) in enumerate(prompts):
        if start <= seconds and (end is None or seconds < end):
            active = i
    start = prompts[active][0]
    if blend_seconds > 0 and active > 0 and seconds - start < blend_seconds:
        return active, (seconds - start) / blend_seconds
    return active, 1.0


def interpolation_weight(position: int, total_frames: int, latent_window_size: int) -> float:
    """0 for the first section in time, 1 for the last: the image-embedding interpolation weight."""
    last = total_frames - latent_window_size
    return 0.0 if last <= 1 else min(max((position - 1) / (last - 1), 0.0), 1.0)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if tensor is not None and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise InputError(f"{name} contains NaN or infinite values; check the node that produced it "
                         "(a VAE or encoder run in fp16 can overflow: try bf16 or fp32).")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
