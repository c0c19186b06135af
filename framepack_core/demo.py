"""Generate videos with the shipped shapes model on any CPU: every sampling mode, one held-out clip.

    python -m framepack_core.demo [--out demo_out] [--clip 0] [--seconds 10] [--steps 10]

The start frame and caption come from a test-split clip of the procedural world (``data``), which the model
never saw. Each mode generates ``section_count(seconds, 3)`` sections with the core engine
(``framepack_core.generate``); the videos play at ``data.FPS`` (7.5 latent frames per second, the project's
30 fps section math with one video frame per latent). Writes ``<mode>.gif`` (and ``ground_truth.gif``),
``comparison.gif`` (truth | vanilla | anti_drifting | inverted side by side) when Pillow is installed, and
always ``contact_sheet.png`` (rows in the same order, columns evenly spaced in time).
"""

from __future__ import annotations

import argparse
import logging
import struct
import time
import zlib
from pathlib import Path

import torch

from . import data
from .checkpoint import load_transformer
from .generate import GenerationInputs, GenerationSettings, TransformerSectionSampler, generate
from .planning import MODES, section_count

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "framepack_shapes" / "framepack_shapes.safetensors"
WINDOW = 3
UPSCALE = 4
SHEET_COLUMNS = 12
ROWS = ("ground_truth",) + MODES


def clip_inputs(spec: data.ClipSpec) -> GenerationInputs:
    """The engine's inputs for a clip: its first frame, caption and start-image tokens."""
    start = data.encode_frames(data.render_clip(spec, 1))
    return GenerationInputs(start_latent=start, prompts=data.encode_caption(spec.caption),
                            image_embeddings=data.image_embeddings(start))


def generate_clip(model, spec: data.ClipSpec, mode: str, num_sections: int, *, steps: int = 10,
                  seed: int = 0, on_section=None) -> torch.Tensor:
    """Latents (1, 16, 3 n + 1, 8, 8) of a clip continued from its first frame and caption by ``model``."""
    settings = GenerationSettings(mode=mode, num_sections=num_sections, latent_window_size=WINDOW, steps=steps,
                                  seed=seed)
    return generate(TransformerSectionSampler(model), clip_inputs(spec), settings, on_section=on_section)


def ground_truth(spec: data.ClipSpec, num_sections: int) -> torch.Tensor:
    """The clip's true latents over the same frames as ``generate_clip``."""
    return data.encode_frames(data.render_clip(spec, num_sections * WINDOW + 1))


def decoded(latents: torch.Tensor) -> torch.Tensor:
    """Latents (1, 16, T, 8, 8) -> frames (T, 3, 32, 32) in [-1, 1]."""
    return data.decode_latents(latents)[0].clamp(-1, 1)


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
    frames = videos[0].shape[0]
    picks = torch.linspace(0, frames - 1, columns).round().long()
    rows = [side_by_side([v[i][None] for i in picks], gap)[0] for v in videos]
    spacer = torch.full((gap, rows[0].shape[1], 3), 255, dtype=torch.uint8)
    return torch.cat([p for r in rows for p in (r, spacer)][:-1], dim=0)


def write_png(path: Path, image: torch.Tensor) -> None:
    """Write an RGB uint8 (H, W, 3) image as PNG with zlib only (no imaging library needed)."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + bytes(row) for row in image.numpy().reshape(height, width * 3))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                     + chunk(b"IEND", b""))


def write_gif(path: Path, video: torch.Tensor, fps: float = data.FPS) -> bool:
    """Write a looping GIF with Pillow; returns False (and writes nothing) when Pillow is not installed."""
    try:
        from PIL import Image
    except ImportError:
        return False
    images = [Image.fromarray(frame.numpy()) for frame in video]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return True


def run_demo(model, spec: data.ClipSpec, out: Path, *, num_sections: int, steps: int, seed: int = 0) -> dict:
    """Generate every mode, write the GIFs and the contact sheet; returns {row name: seconds taken}."""
    out.mkdir(parents=True, exist_ok=True)
    videos, timings = {"ground_truth": to_images(decoded(ground_truth(spec, num_sections)))}, {}
    for mode in MODES:
        began = time.perf_counter()
        videos[mode] = to_images(decoded(generate_clip(model, spec, mode, num_sections, steps=steps, seed=seed)))
        timings[mode] = time.perf_counter() - began
        log.info("%s: %d sections, %d frames in %.1f s", mode, num_sections, videos[mode].shape[0], timings[mode])
    ordered = [videos[name] for name in ROWS]
    gifs = all(write_gif(out / f"{name}.gif", videos[name]) for name in ROWS)
    if gifs:
        write_gif(out / "comparison.gif", side_by_side(ordered))
    else:
        log.warning("Pillow is not installed: no GIFs written, only the contact sheet.")
    write_png(out / "contact_sheet.png", contact_sheet(ordered))
    log.info("wrote %s (rows: %s)", out / "contact_sheet.png", ", ".join(ROWS))
    return timings


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m framepack_core.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="FramePack .safetensors file")
    parser.add_argument("--clip", type=int, default=0, help="held-out (test split) clip number")
    parser.add_argument("--seconds", type=float, default=10.0, help="video length at the project's 30 fps math")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps per section")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest for this size)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_transformer(args.model)
    spec = data.sample_clip(args.clip, split="test")
    sections = section_count(args.seconds, WINDOW)
    log.info("clip %d of the test split: %r; %d sections (%d frames at %.1f fps)", args.clip, spec.caption, sections,
             sections * WINDOW + 1, data.FPS)
    began = time.perf_counter()
    run_demo(model, spec, Path(args.out), num_sections=sections, steps=args.steps, seed=args.seed)
    log.info("done in %.1f s", time.perf_counter() - began)


if __name__ == "__main__":
    main()
