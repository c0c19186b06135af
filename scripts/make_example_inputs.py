"""Draws the example workflows' input files: a paper-cut dancer on a hillside, made here, free to use (CC0).

    python scripts/make_example_inputs.py [--out example_workflows/input]

writes ``example.png`` (the start image), ``example_end.png`` (the end frame), ``example_keyframe.png`` (the
keyframe) and, when PyAV is installed (ComfyUI's Python has it), ``example.mp4`` (2 s for the video-extension
workflow: the camera follows the dancer along the hills). The drawing is a pure function of the pose and the
camera position, so the files are the same on every run. Copy them into ``ComfyUI/input/``.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 640
SUPERSAMPLE = 2  # drawn at twice the size and downscaled: smooth edges without an anti-aliasing library
VIDEO_FRAMES, VIDEO_FPS = 60, 30
OUT = Path(__file__).resolve().parents[1] / "example_workflows" / "input"

log = logging.getLogger("make_example_inputs")


def lerp(a: tuple, b: tuple, t: float) -> tuple:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def draw_scene(pose: float, camera: float = 0.0) -> Image.Image:
    """The scene at ``pose`` (0..1: arms raised to the left .. to the right) with the hills shifted by ``camera``
    (pixels; the camera pans right as it grows)."""
    s = SIZE * SUPERSAMPLE
    image = Image.new("RGB", (s, s))
    draw = ImageDraw.Draw(image)
    for y in range(s):  # evening sky: deep blue at the top to warm orange at the horizon
        draw.line([(0, y), (s, y)], fill=lerp((38, 52, 120), (250, 170, 90), min(1.0, y / (0.62 * s))))
    sun_x, sun_y, sun_r = 0.72 * s - 0.2 * camera * SUPERSAMPLE, 0.3 * s, 0.09 * s
    draw.ellipse([sun_x - sun_r, sun_y - sun_r, sun_x + sun_r, sun_y + sun_r], fill=(255, 226, 140))
    hills = ((0.58, 0.05, 3.0, 0.35, (92, 70, 120)), (0.70, 0.04, 5.0, 0.7, (60, 92, 88)),
             (0.82, 0.03, 7.0, 1.0, (34, 60, 52)))
    for height, amplitude, waves, parallax, colour in hills:  # nearer hills move faster when the camera pans
        shift = camera * SUPERSAMPLE * parallax
        points = [(x, s * (height + amplitude * math.sin(2 * math.pi * waves * (x + shift) / s)))
                  for x in range(0, s + 8, 8)]
        draw.polygon([(0, s), *points, (s, s)], fill=colour)
    draw_dancer(draw, 0.5 * s, 0.83 * s, 0.34 * s, pose)
    return image.resize((SIZE, SIZE), Image.LANCZOS)


def draw_dancer(draw: ImageDraw.ImageDraw, x: float, ground: float, height: float, pose: float) -> None:
    """A dancer in a flared dress, standing at ``x`` on ``ground``; ``pose`` swings the arms and the skirt."""
    skin, dress, hair = (240, 200, 170), (200, 40, 70), (50, 30, 30)
    head_r = 0.075 * height
    neck = (x, ground - 0.8 * height)
    waist = (x, ground - 0.52 * height)
    swing = (pose - 0.5) * 0.25 * height
    width = 0.028 * height
    for side in (-1, 1):  # legs
        draw.line([waist, (x + side * 0.07 * height, ground)], fill=skin, width=round(width))
    draw.polygon([(waist[0] - 0.05 * height, waist[1]), (waist[0] + 0.05 * height, waist[1]),
                  (x + 0.2 * height + swing, ground - 0.2 * height),
                  (x - 0.2 * height + swing, ground - 0.17 * height)],
                 fill=dress)
    draw.polygon([(neck[0] - 0.06 * height, neck[1]), (neck[0] + 0.06 * height, neck[1]),
                  (waist[0] + 0.04 * height, waist[1]), (waist[0] - 0.04 * height, waist[1])], fill=dress)
    # Arms: raised on one side, lowered on the other (elevation above the horizontal, pointing outwards).
    for side, angle in ((-1, math.pi - (1.0 - 1.4 * pose)), (1, -0.4 + 1.4 * pose)):
        shoulder = (x + side * 0.055 * height, neck[1] + 0.02 * height)
        elbow = (shoulder[0] + 0.14 * height * math.cos(angle), shoulder[1] - 0.14 * height * math.sin(angle))
        hand = (elbow[0] + 0.13 * height * math.cos(angle + 0.5 * side),
                elbow[1] - 0.13 * height * math.sin(angle + 0.5 * side))
        draw.line([shoulder, elbow, hand], fill=skin, width=round(width), joint="curve")
    head = (x, neck[1] - 1.1 * head_r)
    draw.ellipse([head[0] - 1.15 * head_r, head[1] - 1.2 * head_r, head[0] + 1.15 * head_r, head[1] + 0.7 * head_r],
                 fill=hair)
    draw.ellipse([head[0] - head_r, head[1] - head_r, head[0] + head_r, head[1] + head_r], fill=skin)


def write_video(path: Path) -> bool:
    """``example.mp4``: the camera pans along the hills while the dancer swings her arms. False without PyAV."""
    try:
        import av
    except ImportError:
        log.warning("PyAV is not installed: %s not written (run this with ComfyUI's Python to write it)", path)
        return False
    partial = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"crf": "30"}
        for index in range(VIDEO_FRAMES):
            phase = index / VIDEO_FRAMES
            frame = draw_scene(0.5 + 0.5 * math.sin(2 * math.pi * phase), camera=4.0 * index)
            container.mux(stream.encode(av.VideoFrame.from_image(frame)))
        container.mux(stream.encode())
    partial.replace(path)
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write into (default {OUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, pose in (("example.png", 0.0), ("example_end.png", 1.0), ("example_keyframe.png", 0.6)):
        draw_scene(pose).save(args.out / name, optimize=True)
        log.info("wrote %s", args.out / name)
    if write_video(args.out / "example.mp4"):
        log.info("wrote %s", args.out / "example.mp4")


if __name__ == "__main__":
    main()
