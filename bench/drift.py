"""Drift of the shipped shapes model in the three sampling modes (an experiment, not a test).

    python3 -m bench.drift [--clips 16] [--sections 30] [--steps 2] [--out bench/results] [--baseline FILE]

Generates ``--sections`` sections (3 latent frames each, so 3 n + 1 frames; 30 sections = 12 s at the
project's 30 fps section math) from the first frame and caption of ``--clips`` held-out clips in vanilla,
anti_drifting and inverted_anti_drifting mode, and scores every video with ``framepack_shapes.drift``:
Delta-drift of sharpness and colour statistics (first vs last 15 % of frames) and the RMSE against the
clip's true continuation, the temporal flicker and the first-frame jump, and the object tracks and occlusion of
``framepack_shapes.motion``. The ground truth's own scores are the reference row (moving objects change the
statistics a little even without drift). ``--baseline`` takes the ``drift.json`` of another model measured with
the same settings (the previous shipped model's is ``bench/results/drift_previous_model/drift.json``) and puts
its rows beside this model's, labelled with ``--baseline-label`` and its sampling steps.

Writes ``drift.json``, ``drift.md`` (the table), ``drift.png`` (per-frame sharpness and error, averaged over
clips) and ``drift_sheet.png`` (the first clip: rows truth, vanilla, anti_drifting, inverted) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import time
from pathlib import Path

import torch

from bench.common import write_results
from framepack_core import load_transformer
from framepack_shapes import world
from framepack_shapes.demo import DEFAULT_MODEL, DEFAULT_STEPS, labelled_sheet, to_images
from framepack_shapes.drift import (frame_rmse, markdown_table, run_clip, score_video, sharpness, summarise)
from framepack_shapes.motion import MotionScore, score_motion
from framepack_core.engine.planning import MODES

ROWS = ("ground_truth",) + MODES
SAME_SETTINGS = ("clips", "sections", "seed")  # what a baseline must share to be compared (steps may differ)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--clips", type=int, default=16, help="held-out clips (test split numbers 0 .. clips-1)")
    parser.add_argument("--sections", type=int, default=30)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--baseline", help="drift.json of another model (same settings) to show beside this one")
    parser.add_argument("--baseline-label", default="previous model", help="how the baseline's rows are labelled")
    return parser.parse_args(argv)


def plot(curves: dict, path: Path, frames: int) -> None:
    """Per-frame sharpness and truth error averaged over clips, one line per mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    t = torch.arange(frames) / world.FPS
    for row in ROWS:
        style = dict(color="black", linestyle="--") if row == "ground_truth" else {}
        left.plot(t, curves[row]["sharpness"], label=row, **style)
        if row != "ground_truth":
            right.plot(t, curves[row]["rmse"], label=row)
    edge = round(0.15 * frames) / world.FPS
    for axis, title in ((left, "sharpness (mean |Laplacian| of luminance)"), (right, "RMSE against the true clip")):
        axis.axvspan(0, edge, color="grey", alpha=0.15)
        axis.axvspan(t[-1] - edge, t[-1], color="grey", alpha=0.15)
        axis.set_xlabel(f"seconds ({world.FPS:g} frames/s; shaded: first and last 15 %)")
        axis.set_title(title)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


TRACK_FIELDS = ("early_error", "early_static_error", "track_error", "static_error", "lost_fraction")


def motion_table(motion: dict) -> str:
    """Object-track scores per mode (``framepack_shapes.motion``), means over clips; occlusion summed over clips."""
    lines = ["Object tracks (px; `static` = an object that never moves; errors over the first 13 frames and the whole "
             "video) and occlusion (of the frames where the truth hides the object behind the bar, those in which "
             "the object is drawn over the bar):", "",
             "| mode | " + " | ".join(TRACK_FIELDS) + " | moved_as_captioned | object over the bar |",
             "| --- |" + " --- |" * (len(TRACK_FIELDS) + 2)]
    for mode, items in motion.items():
        cells = [f"{sum(getattr(s, f) for s in items) / len(items):.2f}" for f in TRACK_FIELDS]
        cells.append(f"{sum(s.moved_as_captioned for s in items)} / {len(items)}")
        cells.append(f"{sum(s.shown_over_bar for s in items)} / {sum(s.hidden_frames for s in items)} frames")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def with_baseline(rows: dict, baseline: dict, label: str) -> dict:
    """This model's rows with the baseline's row of each mode just before it (the truth stays on its own)."""
    merged = {}
    for row, value in rows.items():
        if row in baseline and row != "ground_truth":
            merged[f"{row}, {label}"] = baseline[row]
        merged[row] = value
    return merged


def load_baseline(args) -> dict | None:
    """The ``--baseline`` results, checked (before anything runs) to come from the same settings."""
    if not args.baseline:
        return None
    baseline = json.loads(Path(args.baseline).read_text(encoding="utf-8"))
    if {k: baseline["args"][k] for k in SAME_SETTINGS} != {k: vars(args)[k] for k in SAME_SETTINGS}:
        raise SystemExit(f"--baseline {args.baseline} was measured with other settings ({baseline['args']}); "
                         f"measure both models with the same {', '.join(SAME_SETTINGS)}.")
    return baseline


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    baseline = load_baseline(args)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_transformer(args.model)
    scores = {row: [] for row in ROWS}
    motion = {mode: [] for mode in MODES}
    sums = {row: {"sharpness": 0.0, "rmse": 0.0} for row in ROWS}
    began = time.perf_counter()
    for clip in range(args.clips):
        spec = world.sample_clip(clip, split="test")
        videos = run_clip(model, spec, MODES, args.sections, steps=args.steps, seed=args.seed)
        truth = videos["ground_truth"]
        for row in ROWS:
            scores[row].append(score_video(videos[row], truth))
            sums[row]["sharpness"] += sharpness(videos[row]) / args.clips
            sums[row]["rmse"] += frame_rmse(videos[row], truth) / args.clips
        for mode in MODES:
            motion[mode].append(score_motion(videos[mode], truth, spec, window=3))
        if clip == 0:
            labelled_sheet({r: to_images(videos[r]) for r in ROWS}, spec.caption, columns=16).save(out / "drift_sheet.png")
    frames = 3 * args.sections + 1
    summary = summarise(scores)
    motion_per_clip = {mode: [dataclasses.asdict(s) for s in items] for mode, items in motion.items()}
    label = baseline and f"{args.baseline_label}, {baseline['args']['steps']} steps"
    if baseline:
        summary = with_baseline(summary, baseline["summary"], label)
        motion_per_clip = with_baseline(motion_per_clip, baseline["motion_per_clip"], label)
        motion = {mode: [MotionScore(**s) for s in items] for mode, items in motion_per_clip.items()}
    table = markdown_table(summary) + "\n\n" + motion_table(motion)
    seconds = time.perf_counter() - began
    header = (f"Drift of `{Path(args.model).name}`: {args.clips} held-out clips, {args.sections} sections "
              f"({frames} frames), {args.steps} UniPC steps per section, seed {args.seed}; mean ± standard error "
              f"over clips; RMSE in [0, 1] intensity units. {seconds:.0f} s on {platform.processor() or 'CPU'}, "
              f"{args.threads} thread(s)." + (f" Rows marked '{label}' come from {args.baseline}." if baseline else ""))
    plot({row: {k: v.tolist() for k, v in sums[row].items()} for row in ROWS}, out / "drift.png", frames)
    write_results("drift", out, {
        "args": vars(args), "seconds": seconds, "summary": summary,
        "per_clip": {row: [dataclasses.asdict(s) for s in items] for row, items in scores.items()},
        "motion_per_clip": motion_per_clip,
    }, header + "\n\n" + table + "\n")
    logging.info("\n%s\n%s", header, table)


if __name__ == "__main__":
    main()
