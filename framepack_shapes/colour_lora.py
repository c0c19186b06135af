"""The LoRA experiment: teach the shipped shapes model a behaviour its data never had, and measure it.

    python -m framepack_shapes.colour_lora [--lora models/framepack_shapes_lora/colour_on_bounce.safetensors] \\
        [--clips 8] [--sections 10] [--out models/framepack_shapes_lora]

In the variant world (``world``'s ``colour_on_bounce``) an object takes the next colour of ``BOUNCE_COLOURS`` at
every bounce. For held-out single-object clips that bounce early, the base model and the base model with the
LoRA continue the first frame in every sampling mode; the score is the **changed-colour share**: of the object
pixels (bright) after the clip's first bounce, the fraction whose colour lies more than ``CHANGE_DISTANCE`` from
the start colour (the true variant clip scores about 1, the plain world about 0). Writes ``results.json``,
``results.md`` (that score and the drift scores of ``framepack_shapes.drift`` per mode, with and without the LoRA)
and ``contact_sheet.png`` (the first clip: the variant world's ground truth, then base and LoRA per mode).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from . import world
from .demo import DEFAULT_MODEL, DEFAULT_STEPS, decoded, generate_clip, labelled_sheet, to_images, WINDOW
from .drift import markdown_table, score_video, summarise
from framepack_core.engine.planning import MODES
from framepack_core.model.checkpoint import load_transformer
from framepack_core.training.lora import load_lora_adapters

log = logging.getLogger(__name__)

DEFAULT_LORA = Path(__file__).resolve().parents[1] / "models" / "framepack_shapes_lora" / "colour_on_bounce.safetensors"
OBJECT_BRIGHTNESS = 0.7  # a pixel whose brightest channel is above this (in 0..1) belongs to an object
# RGB distance (0..1 units) from the start colour that counts as another colour: above the tint the small model
# gives an object it keeps (orange drawn a little red or yellow), well below the smallest step of the cycle (0.81).
CHANGE_DISTANCE = 0.4


def first_bounce(spec: world.ClipSpec, frames: int) -> int | None:
    """The first frame at which the clip's (single) object has bounced, or None within ``frames``."""
    [obj] = spec.objects
    t = torch.arange(frames, dtype=torch.float32)
    vx, vy = obj.velocity
    bounces = (world.bounce_count(obj.x, vx, t, obj.radius, world.FRAME_SIZE - obj.radius)
               + world.bounce_count(obj.y, vy, t, obj.radius, world.FRAME_SIZE - obj.radius))
    hits = torch.nonzero(bounces > 0)
    return int(hits[0]) if len(hits) else None


def bouncing_clips(count: int, frames: int) -> list:
    """Held-out variant clips with one object, no occluder, bouncing in the first third of ``frames``.

    White objects are left out: the small model draws them slightly tinted, nearer yellow or cyan than white, which
    the changed-colour share would count as a change."""
    found, seed = [], 0
    while len(found) < count:
        spec = world.sample_clip(seed, "test", colour_on_bounce=True)
        usable = len(spec.objects) == 1 and spec.occluder is None and spec.objects[0].colour != "white"
        bounce = first_bounce(spec, frames) if usable else None
        if bounce is not None and 2 <= bounce <= frames // 3:
            found.append(spec)
        seed += 1
    return found


def changed_colour_share(frames: torch.Tensor, start_colour: str) -> float:
    """Of the object pixels of ``frames`` (T, 3, H, W), the fraction farther than ``CHANGE_DISTANCE`` from
    ``start_colour``."""
    pixels = ((frames + 1) / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    pixels = pixels[pixels.max(dim=1).values > OBJECT_BRIGHTNESS]
    if len(pixels) == 0:
        return 0.0
    distance = (pixels - torch.tensor(world.COLOURS[start_colour])).norm(dim=1)
    return float((distance > CHANGE_DISTANCE).float().mean())


def evaluate(model, lora_model, clips: list, sections: int, steps: int) -> tuple:
    """({row: [(changed-colour share before, after the first bounce) per clip]}, {row: [VideoScores]}, the first
    clip's videos)."""
    frames = sections * WINDOW + 1
    shares, scores, first = {}, {}, None
    for number, spec in enumerate(clips):
        truth = decoded(world.encode_frames(world.render_clip(spec, frames)[None]))
        videos = {"ground_truth": truth}  # of the variant world
        for mode in MODES:
            videos[f"base {mode}"] = decoded(generate_clip(model, spec, mode, sections, steps=steps))
            videos[f"LoRA {mode}"] = decoded(generate_clip(lora_model, spec, mode, sections, steps=steps))
        bounce, colour = first_bounce(spec, frames), spec.objects[0].colour
        for row, video in videos.items():
            share = (changed_colour_share(video[1:bounce], colour), changed_colour_share(video[bounce + 1:], colour))
            shares.setdefault(row, []).append(share)
            scores.setdefault(row, []).append(score_video(video, truth))
        first = first or videos
        log.info("clip %d of %d: %s", number + 1, len(clips), spec.caption)
    return shares, scores, first


def share_table(shares: dict) -> str:
    lines = ["| video | changed-colour share before the first bounce | after it |", "| --- | --- | --- |"]
    for row, values in shares.items():
        before, after = (sum(v[i] for v in values) / len(values) for i in (0, 1))
        lines.append(f"| {row} | {before:.3f} | {after:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m framepack_shapes.colour_lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--lora", type=Path, default=DEFAULT_LORA)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--sections", type=int, default=10)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--out", type=Path, default=DEFAULT_LORA.parent)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, lora_model = load_transformer(args.model), load_transformer(args.model)
    load_lora_adapters(lora_model, args.lora)
    clips = bouncing_clips(args.clips, args.sections * WINDOW + 1)
    with torch.no_grad():
        shares, scores, first = evaluate(model, lora_model, clips, args.sections, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    labelled_sheet({row: to_images(video) for row, video in first.items()}, clips[0].caption).save(
        args.out / "contact_sheet.png")
    summary = summarise(scores)
    settings = {key: value.name if isinstance(value, Path) else value for key, value in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "changed_colour_share": shares,
                                                       "drift": summary}, indent=1))
    (args.out / "results.md").write_text(share_table(shares) + "\n\nDrift (against the variant truth):\n\n"
                                         + markdown_table(summary) + "\n", encoding="utf-8")
    log.info("wrote %s", args.out / "results.md")


if __name__ == "__main__":
    main()
