"""FramePack's resolution buckets: (height, width) pairs of about 640x640 pixels, scaled to any base size."""

from __future__ import annotations

from ..errors import InputError

# The reference's 640-class buckets, (height, width), landscape ones first; their transposes are also buckets.
BASE_640 = ((416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640))


def buckets(resolution: int = 640) -> list[tuple[int, int]]:
    """All buckets for a base resolution: the 640 list scaled by resolution / 640, rounded to multiples of 16."""
    if not isinstance(resolution, int) or not 128 <= resolution <= 2048:
        raise InputError(f"bucket resolution must be an integer from 128 to 2048, got {resolution!r}; "
                         "FramePack was trained at 640.")
    scale = resolution / 640
    out = []
    for h, w in BASE_640 + tuple((w, h) for h, w in reversed(BASE_640)):
        size = (max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16))
        if size not in out:
            out.append(size)
    return out


def nearest_bucket(height: int, width: int, resolution: int = 640) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest to height:width (|h * bw - w * bh| smallest; ties: the later one)."""
    if height <= 0 or width <= 0:
        raise InputError(f"image size must be positive, got {height}x{width}.")
    best, best_metric = None, None
    for bh, bw in buckets(resolution):
        metric = abs(height * bw - width * bh)
        if best_metric is None or metric <= best_metric:
            best, best_metric = (bh, bw), metric
    return best
