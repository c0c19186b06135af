"""Generate videos with the shipped shapes model on any CPU: every sampling mode, one held-out clip.

    python -m framepack_shapes.demo [--out demo_out] [--clip 0] [--seconds 10] [--steps 2]

The start frame and caption come from a test-split clip of the procedural world (``data``), which the model
never saw. Each mode generates ``section_count(seconds, 3)`` sections with the core engine
(``framepack_core.engine.generate``); the videos play at ``world.FPS`` (7.5 latent frames per second, the project's
30 fps section math with one video frame per latent). Writes ``<mode>.gif`` (and ``ground_truth.gif``),
``comparison.gif`` (truth | vanilla | anti_drifting | inverted side by side, labelled with the mode names, the
caption and the time) and ``contact_sheet.png`` (rows in the same order, labelled with the mode names; columns
evenly spaced in time, labelled with the frame time; the caption on top). Needs Pillow (the ``demo`` extra).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from pathlib import Path

import torch

from . import world
from framepack_core.model.checkpoint import load_transformer
from framepack_core.engine.generate import GenerationInputs, GenerationSettings, TransformerSectionSampler, generate
from framepack_core.engine.planning import MODES, section_count

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "framepack_shapes" / "framepack_shapes.safetensors"
WINDOW = 3
UPSCALE = 4
SHEET_COLUMNS = 12
# Sampling steps per section for the shapes model, chosen on the drift bench (bench/results/drift*): with 10 UniPC
# steps the small model draws fine detail it cannot predict from its context anew in every frame (flicker twice
# the truth's); 2 steps stay close to its prediction of the section and flicker 1.4x the truth's, with less drift
# of sharpness and colour. The real model keeps the usual 25.
DEFAULT_STEPS = 2
LABEL_PAD = 4  # pixels around the labels
PROGRESS_SECONDS = 2.0  # at most one progress line per this many seconds and mode
ROWS = ("ground_truth",) + MODES


def clip_inputs(spec: world.ClipSpec) -> GenerationInputs:
    """The engine's inputs for a clip: its first frame, caption and start-image tokens."""
    start = world.encode_frames(world.render_clip(spec, 1))
    return GenerationInputs(start_latent=start, prompts=world.encode_caption(spec.caption),
                            image_embeddings=world.image_embeddings(start))


def generate_clip(model, spec: world.ClipSpec, mode: str, num_sections: int, *, steps: int = DEFAULT_STEPS,
                  seed: int = 0, on_section=None) -> torch.Tensor:
    """Latents (1, 16, 3 n + 1, 8, 8) of a clip continued from its first frame and caption by ``model``."""
    settings = GenerationSettings(mode=mode, num_sections=num_sections, latent_window_size=WINDOW, steps=steps,
                                  seed=seed)
    return generate(TransformerSectionSampler(model), clip_inputs(spec), settings, on_section=on_section)


def ground_truth(spec: world.ClipSpec, num_sections: int) -> torch.Tensor:
    """The clip's true latents over the same frames as ``generate_clip``."""
    return world.encode_frames(world.render_clip(spec, num_sections * WINDOW + 1))


def decoded(latents: torch.Tensor) -> torch.Tensor:
    """Latents (1, 16, T, 8, 8) -> frames (T, 3, 32, 32) in [-1, 1]."""
    return world.decode_latents(latents)[0].clamp(-1, 1)


def to_images(frames: torch.Tensor, upscale: int = UPSCALE) -> torch.Tensor:
    """Frames (T, 3, H, W) in [-1, 1] -> uint8 images (T, H, W, 3), enlarged ``upscale`` times (nearest)."""
    frames = torch.nn.functional.interpolate(frames, scale_factor=upscale, mode="nearest")
    return ((frames + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def side_by_side(videos: list, gap: int = 4) -> torch.Tensor:
    """(T, H, W, 3) videos -> one (T, H, sum W + gaps, 3) video with white gaps."""
    spacer = torch.full((videos[0].shape[0], videos[0].shape[1], gap, 3), 255, dtype=torch.uint8)
    parts = [p for v in videos for p in (v, spacer)][:-1]
    return torch.cat(parts, dim=2)


def contact_sheet(videos: list, columns: int = SHEET_COLUMNS, gap: int = 4) -> torch.Tensor:
    """One row per video, ``columns`` frames evenly spaced from the first to the last, white gaps."""
    picks = frame_picks(videos[0].shape[0], columns)
    rows = [side_by_side([v[i][None] for i in picks], gap)[0] for v in videos]
    spacer = torch.full((gap, rows[0].shape[1], 3), 255, dtype=torch.uint8)
    return torch.cat([p for r in rows for p in (r, spacer)][:-1], dim=0)


def frame_picks(frames: int, columns: int) -> torch.Tensor:
    """The frame numbers of a contact sheet's ``columns``: evenly spaced from the first frame to the last."""
    return torch.linspace(0, frames - 1, columns).round().long()


def annotate(image: torch.Tensor, lines: list, column_labels: list, row_labels: list):
    """A Pillow image of ``image`` (H, W, 3) uint8 with text lines on top, then ``(x centre, text)`` column labels,
    and ``(y centre, text)`` row labels on the left, in Pillow's default font on white margins."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = font.getbbox("Ag")[3] + LABEL_PAD
    left = max((measure.textlength(text, font=font) for _, text in row_labels), default=0)
    left = round(left) + 2 * LABEL_PAD if row_labels else LABEL_PAD
    width = left + image.shape[1] + LABEL_PAD
    wrapped = [piece for line in lines for piece in wrap(line, width - 2 * LABEL_PAD, measure, font)]
    top = LABEL_PAD + line_height * (len(wrapped) + bool(column_labels))
    canvas = Image.new("RGB", (width, top + image.shape[0] + LABEL_PAD), "white")
    canvas.paste(Image.fromarray(image.numpy()), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(wrapped):
        draw.text((LABEL_PAD, LABEL_PAD + i * line_height), line, fill="black", font=font)
    for x, text in column_labels:
        draw.text((left + x, top - LABEL_PAD), text, fill="black", font=font, anchor="ms")
    for y, text in row_labels:
        draw.text((left - LABEL_PAD, top + y), text, fill="black", font=font, anchor="rm")
    return canvas


def wrap(text: str, width: float, measure, font) -> list:
    """``text`` split into lines no wider than ``width`` pixels (at word boundaries)."""
    lines = [""]
    for word in text.split():
        candidate = f"{lines[-1]} {word}".strip()
        if lines[-1] and measure.textlength(candidate, font=font) > width:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def labelled_sheet(videos: dict, caption: str, columns: int = SHEET_COLUMNS, gap: int = 4, fps: float = world.FPS):
    """The contact sheet of ``{row name: (T, H, W, 3) video}`` with the caption, the row names and frame times."""
    first = next(iter(videos.values()))
    frames, height, width = first.shape[:3]
    picks = frame_picks(frames, columns)
    column_labels = [(i * (width + gap) + width / 2, f"{int(p) / fps:.1f} s") for i, p in enumerate(picks)]
    row_labels = [(i * (height + gap) + height / 2, name) for i, name in enumerate(videos)]
    return annotate(contact_sheet(list(videos.values()), columns, gap), [caption], column_labels, row_labels)


def labelled_comparison(videos: dict, caption: str, gap: int = 4, fps: float = world.FPS) -> list:
    """The videos side by side as labelled Pillow frames: the caption and the time on top, the names above."""
    strip = side_by_side(list(videos.values()), gap)
    width = next(iter(videos.values())).shape[2]
    column_labels = [(i * (width + gap) + width / 2, name) for i, name in enumerate(videos)]
    return [annotate(frame, [caption, f"t = {t / fps:.1f} s"], column_labels, []) for t, frame in enumerate(strip)]


def write_gif(path: Path, frames: list, fps: float = world.FPS) -> None:
    """Write Pillow images as a looping GIF."""
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    log.info("wrote %s", path)


def pillow_images(video: torch.Tensor) -> list:
    from PIL import Image

    return [Image.fromarray(frame.numpy()) for frame in video]


def section_progress(mode: str, num_sections: int, began: float):
    """An ``on_section`` callback that logs the mode's progress at most every ``PROGRESS_SECONDS``."""
    last = [began]

    def report(plan, latents, state) -> None:
        now = time.perf_counter()
        done = plan.index + 1
        if now - last[0] >= PROGRESS_SECONDS or done == num_sections:
            log.info("%s: section %d of %d, %.1f s", mode, done, num_sections, now - began)
            last[0] = now

    return report


def run_demo(model, spec: world.ClipSpec, out: Path, *, num_sections: int, steps: int, seed: int = 0) -> dict:
    """Generate every mode, write the GIFs and the labelled contact sheet; returns {row name: seconds taken}."""
    out.mkdir(parents=True, exist_ok=True)
    videos, timings = {"ground_truth": to_images(decoded(ground_truth(spec, num_sections)))}, {}
    for mode in MODES:
        began = time.perf_counter()
        latents = generate_clip(model, spec, mode, num_sections, steps=steps, seed=seed,
                                on_section=section_progress(mode, num_sections, began))
        videos[mode] = to_images(decoded(latents))
        timings[mode] = time.perf_counter() - began
    for name in ROWS:
        write_gif(out / f"{name}.gif", pillow_images(videos[name]))
    write_gif(out / "comparison.gif", labelled_comparison(videos, spec.caption))
    labelled_sheet(videos, spec.caption).save(out / "contact_sheet.png")
    log.info("wrote %s (rows: %s)", out / "contact_sheet.png", ", ".join(ROWS))
    return timings


# ------------------------------------------------------------------------------------------- command line

def positive(kind, what: str, example: str):
    """An argparse type: a number of ``kind`` > 0, else an error naming the value and an example."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive {what}; give e.g. {example}")
        return value

    return parse


def clip_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a clip number; give a whole number >= 0, e.g. --clip 3")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m framepack_shapes.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (created if missing)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="FramePack .safetensors file")
    parser.add_argument("--clip", type=clip_number, default=0,
                        help="which held-out clip: any number >= 0 names a clip of the test split, which the model "
                             "never saw in training (default 0)")
    parser.add_argument("--seconds", type=positive(float, "number of seconds", "--seconds 10"), default=10.0,
                        help="video length at the project's 30 fps section math (default 10)")
    parser.add_argument("--steps", type=positive(int, "whole number of sampling steps", "--steps 2"),
                        default=DEFAULT_STEPS, help=f"sampling steps per section (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive(int, "whole number of threads", "--threads 1"), default=1,
                        help="torch CPU threads (one is fastest for this size)")
    args = parser.parse_args(argv)
    if not Path(args.model).is_file():
        parser.error(f"argument --model: {args.model} is not a file; pass the shipped "
                     f"models/framepack_shapes/framepack_shapes.safetensors or another FramePack .safetensors file")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        if not os.access(args.out, os.W_OK | os.X_OK):
            raise PermissionError("permission denied")
    except OSError as error:
        parser.error(f"argument --out: cannot write to {args.out} ({error.strerror or error}); "
                     "choose a folder you can write to, e.g. --out demo_out")
    return args


def require_pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise SystemExit("python -m framepack_shapes.demo: error: the demo writes its GIFs and labelled contact sheet "
                         "with Pillow, which is not installed; install it with pip install -e '.[demo]' "
                         "(or pip install pillow)") from None


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    require_pillow()
    torch.set_num_threads(args.threads)
    model = load_transformer(args.model)
    spec = world.sample_clip(args.clip, split="test")
    sections = section_count(args.seconds, WINDOW)
    log.info("clip %d of the test split: %r; %d sections (%d frames at %.1f fps)", args.clip, spec.caption, sections,
             sections * WINDOW + 1, world.FPS)
    began = time.perf_counter()
    run_demo(model, spec, Path(args.out), num_sections=sections, steps=args.steps, seed=args.seed)
    log.info("done in %.1f s; the videos are in %s", time.perf_counter() - began, Path(args.out).resolve())


if __name__ == "__main__":
    main()
