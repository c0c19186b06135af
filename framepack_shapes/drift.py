"""Measuring drift on long generated videos of the shapes world (paper section 8.4).

The paper's drift metric for any per-frame metric M is ``|M(first 15 % of frames) - M(last 15 %)|``: a video
that keeps its quality and colours scores near the ground truth's own value. Here M is

- sharpness: the mean absolute Laplacian of the luminance (blur and washed-out frames score low),
- colour statistics: each RGB channel's mean and standard deviation (drift averaged over the six),

and, because the procedural world renders the true continuation of any clip, the error against it
(per-frame RMSE in [0, 1] intensity units) over the first and the last 15 % of the frames.

Two temporal scores, in 0-255 intensity units per pixel and channel, sit beside the truth's own values:

- flicker: the mean absolute change between consecutive frames (the truth changes only where objects move and
  the background pans; fine noise that is drawn anew every frame adds to it), and its excess over the truth's;
- first-frame jump: the mean absolute change from frame 0 (the given start frame) to frame 1 (the first
  generated one), where a model that cannot continue its start frame cleanly shows a visible cut.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch
import torch.nn.functional as F

from . import world
from .demo import decoded, generate_clip, ground_truth

log = logging.getLogger(__name__)

EDGE_FRACTION = 0.15
INTENSITY = 127.5  # frames in [-1, 1] -> 0-255 intensity units
DRIFT_FIELDS = ("sharpness_drift", "colour_drift", "rmse_first", "rmse_last", "sharpness_first", "sharpness_last")
LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpness(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame mean |Laplacian| of the luminance of (T, 3, H, W) frames in [-1, 1] -> (T,)."""
    luminance = frames.mean(dim=1, keepdim=True)
    return F.conv2d(luminance, LAPLACIAN[None, None]).abs().mean(dim=(1, 2, 3))


def colour_statistics(frames: torch.Tensor) -> torch.Tensor:
    """Per-frame mean and standard deviation of each RGB channel -> (T, 6)."""
    return torch.cat([frames.mean(dim=(2, 3)), frames.std(dim=(2, 3))], dim=1)


def edge_frames(count: int) -> int:
    """How many frames make up the first (and the last) 15 % of a video: at least one."""
    return max(1, round(EDGE_FRACTION * count))


def delta_drift(values: torch.Tensor) -> float:
    """``|mean(first 15 %) - mean(last 15 %)|`` of per-frame values (T,) or (T, K) (then averaged over K)."""
    n = edge_frames(values.shape[0])
    return float((values[:n].mean(dim=0) - values[-n:].mean(dim=0)).abs().mean())


def frame_rmse(frames: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-frame RMSE in [0, 1] intensity units (frames in [-1, 1])."""
    return ((frames - truth) / 2).pow(2).mean(dim=(1, 2, 3)).sqrt()


def flicker(frames: torch.Tensor) -> float:
    """Mean absolute change between consecutive frames (T >= 2, [-1, 1]) in 0-255 intensity units."""
    return float(frames.diff(dim=0).abs().mean()) * INTENSITY


def first_frame_jump(frames: torch.Tensor) -> float:
    """Mean absolute change from frame 0 to frame 1 in 0-255 intensity units."""
    return float((frames[1] - frames[0]).abs().mean()) * INTENSITY


@dataclasses.dataclass(frozen=True)
class VideoScores:
    sharpness_drift: float
    colour_drift: float
    rmse_first: float
    rmse_last: float
    sharpness_first: float
    sharpness_last: float
    flicker: float
    flicker_excess: float  # flicker minus the true clip's
    first_jump: float


def score_video(frames: torch.Tensor, truth: torch.Tensor) -> VideoScores:
    """Drift, truth-error and temporal scores of one video (T, 3, H, W) against the true clip, both in [-1, 1]."""
    sharp, error = sharpness(frames), frame_rmse(frames, truth)
    n = edge_frames(frames.shape[0])
    return VideoScores(sharpness_drift=delta_drift(sharp), colour_drift=delta_drift(colour_statistics(frames)),
                       rmse_first=float(error[:n].mean()), rmse_last=float(error[-n:].mean()),
                       sharpness_first=float(sharp[:n].mean()), sharpness_last=float(sharp[-n:].mean()),
                       flicker=flicker(frames), flicker_excess=flicker(frames) - flicker(truth),
                       first_jump=first_frame_jump(frames))


def run_clip(model, spec: world.ClipSpec, modes, num_sections: int, *, steps: int, seed: int = 0) -> dict:
    """{'ground_truth' | mode: decoded frames (T, 3, H, W)} of one held-out clip."""
    videos = {"ground_truth": decoded(ground_truth(spec, num_sections))}
    for mode in modes:
        videos[mode] = decoded(generate_clip(model, spec, mode, num_sections, steps=steps, seed=seed))
        log.info("%s done (%r)", mode, spec.caption)
    return videos


def summarise(scores: dict) -> dict:
    """{row: [VideoScores per clip]} -> {row: {field: (mean, standard error)}}."""
    summary = {}
    for row, items in scores.items():
        summary[row] = {}
        for field in dataclasses.fields(VideoScores):
            values = torch.tensor([getattr(s, field.name) for s in items], dtype=torch.float64)
            spread = float(values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0
            summary[row][field.name] = (float(values.mean()), spread)
    return summary


def markdown_table(summary: dict) -> str:
    """The summary as markdown: the drift table and the temporal table (mean ± standard error over clips; the
    temporal one also as a multiple of the truth's mean when a ``ground_truth`` row is present)."""
    lines = ["| video | " + " | ".join(DRIFT_FIELDS) + " |", "| --- |" + " --- |" * len(DRIFT_FIELDS)]
    for row, values in summary.items():
        cells = [f"{values[f][0]:.4f} ± {values[f][1]:.4f}" for f in DRIFT_FIELDS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + temporal_table(summary)


def temporal_table(summary: dict) -> str:
    truth = summary.get("ground_truth")
    ratio = lambda values, field: (f"{values[field][0] / truth[field][0]:.2f}x"  # noqa: E731
                                   if truth and truth[field][0] > 0 else "–")
    lines = ["Temporal quality (0-255 intensity units per pixel; x truth = the mean as a multiple of the true "
             "clips'):", "", "| video | flicker | x truth | flicker excess over the truth | first-frame jump | x truth |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row, values in summary.items():
        if "flicker" not in values:
            continue  # a results file from before these scores
        cell = lambda field: f"{values[field][0]:.2f} ± {values[field][1]:.2f}"  # noqa: E731
        lines.append(f"| {row} | {cell('flicker')} | {ratio(values, 'flicker')} | {cell('flicker_excess')} "
                     f"| {cell('first_jump')} | {ratio(values, 'first_jump')} |")
    return "\n".join(lines)
