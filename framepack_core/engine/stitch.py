"""Pixel-space stitching for callers that decode the video section by section (the reference demos' way).

Consecutive section decodes overlap by ``4W - 3`` pixel frames (the causal VAE maps the first latent of a
decode to one frame and every later latent to four); the overlap is cross-faded linearly.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import InputError


def overlap_frames(latent_window_size: int) -> int:
    """Pixel frames two consecutive section decodes share: ``4W - 3``."""
    return 4 * latent_window_size - 3


def soft_append(earlier: torch.Tensor, later: torch.Tensor, overlap: int) -> torch.Tensor:
    """Join two (B, C, T, H, W) clips along T, cross-fading the last ``overlap`` frames of ``earlier``
    into the first ``overlap`` frames of ``later`` (weight of ``earlier`` falls linearly from 1 to 0)."""
    if overlap <= 0:
        return torch.cat([earlier, later], dim=2)
    if earlier.shape[2] < overlap or later.shape[2] < overlap:
        raise ValueError(
            f"cannot cross-fade {overlap} frames: the clips have {earlier.shape[2]} and {later.shape[2]} frames.")
    weights = torch.linspace(1, 0, overlap, dtype=earlier.dtype, device=earlier.device).view(1, 1, -1, 1, 1)
    blended = weights * earlier[:, :, -overlap:] + (1 - weights) * later[:, :, :overlap]
    return torch.cat([earlier[:, :, :-overlap], blended, later[:, :, overlap:]], dim=2)


def frame_range(first_latent: int, end_latent: int) -> tuple[int, int]:
    """Pixel frames [start, end) that a decode of latents [first, end) covers in the whole video.

    Latent 0 is one frame and every later latent four (frames 4l-3 .. 4l); a decode starting at latent a >= 1
    gives one frame for it (its last, 4a), so the decode covers frames 4a .. 4b-4.
    """
    return 4 * first_latent, 4 * end_latent - 3


@dataclasses.dataclass(frozen=True)
class Clip:
    """One section's decode: latents [first, end) of the video, covering pixel frames ``frames``."""

    section: int
    first: int
    end: int

    @property
    def frames(self) -> tuple[int, int]:
        return frame_range(self.first, self.end)


def section_clips(plans) -> list[Clip]:
    """The reference demos' decode windows, in generation order: each section's latents, the latents of the
    section generated before it (they overlap the earlier decode by 4W-3 frames) and the start latent when the
    section touches it. Needs every section to lie next to the one generated before it (vanilla and inverted
    anti-drifting sampling, from one start frame)."""
    clips = []
    for plan, before in zip(plans, [None] + list(plans[:-1])):
        first, end = plan.position, plan.position + plan.latent_window_size
        if before is not None:
            if before.position == end:
                end = before.position + before.latent_window_size
            elif before.position + before.latent_window_size == first:
                first = before.position
            else:
                raise InputError(f"section {plan.index + 1} ({plan.mode}) does not lie next to the section generated "
                                 "before it, so its frames cannot be stitched as they are finished; decode the LATENT "
                                 "output with VAEDecodeTiled, or use vanilla or inverted_anti_drifting sampling.")
        clips.append(Clip(plan.index, 0 if plan.position == 1 else first, end))
    if clips and min(clip.first for clip in clips) != 0:
        raise InputError("the video continues earlier latents (an extended video), whose frames the streaming decode "
                         "does not have; decode the LATENT output with VAEDecodeTiled instead.")
    return clips


def overlap(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return (start, end) if start < end else None


class SectionStitcher:
    """Stitches section decodes into final frames as soon as no later decode will touch them.

    ``add(section, pixels)`` takes the decode of ``clips[section]`` (frames first: (T, ...)) and returns the frames
    that are now final as ``(first_frame, frames)``; the frames a later decode will cross-fade stay pending (at
    most one overlap, 4W-3 frames). The result equals stitching all decodes with ``soft_append`` in the order of
    the reference, whatever the generation order, because each overlap is a cross-fade from the earlier clip in
    time to the later one.
    """

    def __init__(self, clips: list[Clip]):
        self.clips = clips
        self.pending: dict[int, tuple[tuple[int, int], torch.Tensor]] = {}

    def overlaps(self, section: int) -> tuple:
        """(overlap with the clip generated before, overlap with the clip generated after), each or None."""
        frames = self.clips[section].frames
        before = overlap(frames, self.clips[section - 1].frames) if section > 0 else None
        after = overlap(frames, self.clips[section + 1].frames) if section + 1 < len(self.clips) else None
        return before, after

    def final_range(self, section: int) -> tuple[int, int]:
        """The frames that become final when ``section`` is added (empty when start == end)."""
        (start, end), (_, after) = self.clips[section].frames, self.overlaps(section)
        if after is not None:
            start, end = (after[1], end) if after[0] == start else (start, after[0])
        return start, end

    def add(self, section: int, pixels: torch.Tensor) -> tuple[int, torch.Tensor]:
        clip_start, clip_end = self.clips[section].frames
        if pixels.shape[0] != clip_end - clip_start:
            raise InputError(f"the decode of section {section + 1} has {pixels.shape[0]} frames, expected "
                             f"{clip_end - clip_start} for latents {self.clips[section].first}.."
                             f"{self.clips[section].end - 1}; decode with the HunyuanVideo VAE.")
        before, after = self.overlaps(section)
        pixels = pixels.clone()
        if before is not None:
            _, other = self.pending.pop(section - 1)
            mine = pixels[before[0] - clip_start:before[1] - clip_start]
            earlier, later = (other, mine) if self.clips[section - 1].first < self.clips[section].first else (mine, other)
            weights = torch.linspace(1, 0, len(mine), dtype=pixels.dtype).view(-1, *[1] * (pixels.ndim - 1))
            mine.copy_(weights * earlier + (1 - weights) * later)
        if after is not None:
            self.pending[section] = (after, pixels[after[0] - clip_start:after[1] - clip_start].clone())
        start, end = self.final_range(section)
        return start, pixels[start - clip_start:end - clip_start]

    def restore(self, section: int, pixels: torch.Tensor) -> None:
        """After a resume: keep the pending overlap of ``section`` (the last finished) from its decode again."""
        clip_start, _ = self.clips[section].frames
        _, after = self.overlaps(section)
        if after is not None:
            self.pending[section] = (after, pixels[after[0] - clip_start:after[1] - clip_start].clone())

    def unfinished(self) -> list[tuple[int, torch.Tensor]]:
        """The pending frames as they are now (not cross-faded yet): the tail of a cancelled video."""
        return [(frames[0], pixels) for frames, pixels in self.pending.values()]
