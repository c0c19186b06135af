"""Does a generated shapes video move as captioned? Object tracks against the procedural world's truth.

The first object of a clip is found in every frame by its colour (pixels within ``COLOUR_TOLERANCE`` of the
caption's colour); its track is the centroid of those pixels. A generated video is scored against the clip's
true continuation by the mean distance between the two tracks, next to the same distance for an object that
stays where it started (the ``static`` baseline, what a model that ignores the caption and the history's
motion produces). ``moved_as_captioned`` says whether the object ends the first section displaced the way the
caption makes it move: its displacement, projected on the true one, is at least half the true displacement.

Occlusion: in clips with a grey bar, ``hidden_frames`` counts the frames in which the truth hides part of the
first object behind the bar (at least ``MIN_PIXELS`` of the object's own pixels fall under the bar's opaque
core), and ``shown_over_bar`` how many of those frames show the object's colour there instead, i.e. draw the
object in front of the bar (the truth scores 0).
"""

from __future__ import annotations

import dataclasses

import torch

from . import world

COLOUR_TOLERANCE = 0.3  # RGB distance in [0, 1] units; backgrounds stay below 0.33 per channel
MIN_PIXELS = 4


def colour_mask(frames: torch.Tensor, colour: str) -> torch.Tensor:
    """(T, H, W) bool: the pixels of frames (T, 3, H, W) in [-1, 1] within ``COLOUR_TOLERANCE`` of ``colour``."""
    target = torch.tensor(world.COLOURS[colour])[None, :, None, None]
    return ((frames + 1) / 2 - target).norm(dim=1) < COLOUR_TOLERANCE


def object_centroids(frames: torch.Tensor, colour: str) -> torch.Tensor:
    """(T, 2) x, y pixel centroid of the pixels of ``colour`` in frames (T, 3, H, W) in [-1, 1]; NaN where absent."""
    mask = colour_mask(frames, colour).float()
    coords = torch.arange(frames.shape[-1], dtype=torch.float32) + 0.5
    count = mask.sum(dim=(1, 2))
    x = (mask * coords[None, None, :]).sum(dim=(1, 2)) / count
    y = (mask * coords[None, :, None]).sum(dim=(1, 2)) / count
    track = torch.stack([x, y], dim=1)
    track[count < MIN_PIXELS] = float("nan")
    return track


@dataclasses.dataclass(frozen=True)
class MotionScore:
    """One clip's mean track errors (px) over the first ``early`` frames and the whole video, next to those of a
    static object; the fraction of frames where the object is lost; whether the first section moved as captioned."""

    early_error: float
    early_static_error: float
    track_error: float
    static_error: float
    lost_fraction: float
    moved_as_captioned: bool
    hidden_frames: int = 0
    shown_over_bar: int = 0


def score_motion(frames: torch.Tensor, truth: torch.Tensor, spec: world.ClipSpec, window: int,
                 early: int = 13) -> MotionScore:
    """Scores a generated video (T, 3, H, W) against the true one; ``window`` frames make a section."""
    colour = spec.objects[0].colour
    generated, true = object_centroids(frames, colour), object_centroids(truth, colour)
    start = true[0]
    found = ~generated.isnan().any(dim=1)
    true_step = true[window] - start
    moved = bool(found[window]) and float((generated[window] - start) @ true_step) >= 0.5 * float(true_step @ true_step)
    early_error, early_static = mean_errors(generated[:early], true[:early], start)
    track_error, static_error = mean_errors(generated, true, start)
    hidden, shown = occlusion_counts(frames, spec)
    return MotionScore(early_error, early_static, track_error, static_error, float(1 - found.float().mean()), moved,
                       hidden, shown)


def occlusion_counts(frames: torch.Tensor, spec: world.ClipSpec) -> tuple:
    """(frames where the truth hides the first object behind the bar, those of them where ``frames`` show it)."""
    if spec.occluder is None:
        return 0, 0
    obj = spec.objects[0]
    coords = torch.arange(world.FRAME_SIZE, dtype=torch.float32) + 0.5
    y, x = coords[:, None], coords[None, :]
    t = torch.arange(frames.shape[0], dtype=torch.float32)[:, None, None]
    behind = (world.draw_object(obj, t, y, x)[0] >= 0.5) & (world.occluder_alpha(spec.occluder, y, x) >= 1)
    hidden = behind.sum(dim=(1, 2)) >= MIN_PIXELS
    shown = (colour_mask(frames, obj.colour) & behind).sum(dim=(1, 2)) >= MIN_PIXELS
    return int(hidden.sum()), int((hidden & shown).sum())


def mean_errors(generated: torch.Tensor, true: torch.Tensor, start: torch.Tensor) -> tuple:
    """(mean distance of the generated track to the true one, the same for an object staying at ``start``).

    Frames where the generated object is lost count with the static baseline's error, so losing the object
    never scores better than keeping it still."""
    known = ~true.isnan().any(dim=1)
    static = (start[None] - true[known]).norm(dim=1)
    distance = (generated[known] - true[known]).norm(dim=1)
    distance = torch.where(distance.isnan(), static, distance)
    return float(distance.mean()), float(static.mean())
