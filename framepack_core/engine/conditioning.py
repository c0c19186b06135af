"""Conditioning that changes over the video: timestamped prompts, prompt blending, image-embedding interpolation.

Times are in seconds of the output video at 30 fps. A section's time is the time of its first pixel frame:
latent frame f >= 1 decodes to pixel frames 4f-3 .. 4f (the causal VAE), so it starts at ``(4f - 3) / fps``.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from ..errors import InputError

FPS = 30.0
# Longer text is refused: no prompt needs it, and the text encoder's tokens are bounded too (see validation).
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


_TIME = re.compile(r"(\d{1,12})(\.\d{1,12})?\s*s?")


def _shown(text: str, limit: int = 80) -> str:
    """``text`` for an error message: quoted, and cut in the middle when long."""
    return repr(text) if len(text) <= limit else repr(text[:limit // 2] + " ... " + text[-limit // 2:])


def _seconds(token: str, entry: str) -> float:
    match = _TIME.fullmatch(token.strip())
    if not match:
        raise InputError(f"bad time {_shown(token)} in prompt entry {_shown(entry)}: write seconds like '2s' or "
                         "'2.5s', e.g. '[0s: a cat sits] [2s-4s: the cat jumps]'.")
    return float(match.group(1) + (match.group(2) or ""))


def _scan_entries(text: str):
    """(entry, time part, prompt) of every '[time: prompt]' entry, in one left-to-right pass.

    Each entry is found with two ``str.find`` calls over its own characters, so the scan is linear in the length
    of the text whatever it holds (the regex it replaces backtracked cubically on runs of unclosed '[').
    """
    position = 0
    while True:
        opening = text.find("[", position)
        if opening < 0:
            trailing = text[position:].strip()
            if trailing:
                raise InputError(f"cannot read {_shown(trailing)} after the last entry as a '[time: prompt]' entry, "
                                 "e.g. '[0s: a cat sits] [2s-4s: the cat jumps]'.")
            return
        between = text[position:opening].strip()
        if between:
            raise InputError(f"text {_shown(between)} is outside any '[time: prompt]' entry; put it inside brackets.")
        closing = text.find("]", opening + 1)
        if closing < 0:
            raise InputError(f"cannot read {_shown(text[opening:])}: the '[' at character {opening + 1} is never "
                             "closed; write entries like '[0s: a cat sits] [2s-4s: the cat jumps]'.")
        entry = text[opening:closing + 1]
        when, colon, prompt = text[opening + 1:closing].partition(":")
        if not colon:
            raise InputError(f"prompt entry {_shown(entry)} has no ':' between its time and its prompt; write "
                             "'[2s: prompt]' or '[2s-4s: prompt]'.")
        yield entry, when.strip(), prompt.strip()
        position = closing + 1


def parse_timestamped_prompts(text: str) -> list[TimedPrompt]:
    """Parse ``[0s: first prompt] [2s-4s: second prompt]`` into TimedPrompts sorted by start time.

    Text without any ``[..: ..]`` entry is one prompt from 0 s. Text outside the entries is not allowed.
    Prompts may hold ':' and '[' but not ']', which closes the entry. Linear time in the text's length.
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
    entries = []
    for entry, when, prompt in _scan_entries(text):
        if not prompt:
            raise InputError(f"prompt entry {_shown(entry)} has no prompt text after the colon.")
        start, _, end = when.partition("-")
        start_s = _seconds(start, entry)
        end_s = _seconds(end, entry) if end else None
        if end_s is not None and end_s <= start_s:
            raise InputError(f"prompt entry {_shown(entry)} ends ({end_s}s) before it starts ({start_s}s).")
        entries.append(TimedPrompt(start_s, end_s, prompt))
    if not entries:
        raise InputError(f"cannot read {_shown(text)} as '[time: prompt]' entries, "
                         "e.g. '[0s: a cat sits] [2s-4s: the cat jumps]'.")
    entries.sort(key=lambda e: e.start)
    if entries[0].start > 0:
        raise InputError(f"the first prompt starts at {entries[0].start}s; one prompt must start at 0s so every "
                         "section has a prompt.")
    starts = [e.start for e in entries]
    if len(set(starts)) != len(starts):
        raise InputError(f"two prompt entries start at the same time ({starts[:20]}); give each a different start.")
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
