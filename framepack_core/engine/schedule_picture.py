"""A picture of one section's packed context: what a frame schedule does, drawn rather than written.

Left to right in RoPE order, every history frame is a tile coloured by its patchify kernel, with a patch grid
as coarse as the kernel (a k2 tile spans the two frames one token column covers), the video frame it is taken
from above it (a dash: not generated yet, zeros) and its tokens below; skips are blank positions, and the noisy
window is the section being generated. Beneath: one line per packed group, and the context's tokens against
the noisy window's. Drawn with Pillow (ComfyUI's own dependency; the test and demo extras have it).
"""

from __future__ import annotations

import dataclasses
import math

from PIL import Image, ImageDraw, ImageFont

from .planning import SectionPlan
from .schedules import Kernel, noisy_tokens

WIDTH = 1200
MARGIN = 24
TILES_TOP = 118  # below the title lines and the frame labels
TILE_HEIGHT = 64
MAX_CELL = 26  # pixels per RoPE position; narrower when the layout has many positions
BLANK_CELLS = 3  # a skip is drawn this wide whatever its length, its length written in it
# Kernel colours by compression (log2 of latent pixels per token relative to k1, in steps of 3: k1, k2, k4, k8+).
PALETTE = ((59, 111, 182), (42, 157, 143), (233, 162, 59), (209, 73, 91), (120, 81, 169))
NOISY = (90, 90, 90)
INK, FAINT, PAPER = (30, 30, 30), (150, 150, 150), (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class Tile:
    """One piece of a section's RoPE sequence: ``kind`` 'context' (one token column of a group: ``sources`` are
    its video frames, None = zeros), 'blank' (a skip's positions) or 'noisy' (the generated window)."""

    kind: str
    positions: int
    tokens: int
    kernel: Kernel | None = None
    sources: tuple = ()
    group: int | None = None


def section_tiles(plan: SectionPlan, height: int, width: int) -> list[Tile]:
    """The plan's groups, skips and window as tiles in RoPE order; their tokens add up to the section's."""
    # An 'ta' tail with nothing to append yet has no position: it shows as a blank one.
    pieces = [(group.indices[0], number, group) for number, group in enumerate(plan.groups) if group.indices]
    pieces.append((plan.latent_indices[0], None, None))
    tiles, at = [], 0
    for start, number, group in sorted(pieces, key=lambda piece: piece[0]):
        if start > at:
            tiles.append(Tile("blank", start - at, 0))
        if group is None:
            window = plan.latent_window_size
            tiles.append(Tile("noisy", window, noisy_tokens(plan.schedule, height, width),
                              sources=tuple(range(plan.position, plan.position + window))))
            at = start + window
        else:
            tiles += group_tiles(group, number, height, width)
            at = start + len(set(group.indices))
    return tiles


def group_tiles(group, number: int, height: int, width: int) -> list[Tile]:
    """One tile per token column of a group; a tail ('ta'/'tc') sits at one position and is one tile."""
    if group.placement == "tail":
        return [Tile("context", 1, group.tokens(height, width), group.kernel, tuple(group.sources), number)]
    t = group.kernel.t
    chunks = [tuple(group.sources[i:i + t]) for i in range(0, len(group.sources), t)]
    per_chunk = group.kernel.tokens(1, height, width)
    return [Tile("context", len(chunk), per_chunk, group.kernel, chunk, number) for chunk in chunks]


def kernel_colour(kernel: Kernel) -> tuple:
    level = round(math.log2(kernel.t * kernel.h * kernel.w // 4) / 3)
    return PALETTE[min(level, len(PALETTE) - 1)]


def lighter(colour: tuple, amount: float = 0.75) -> tuple:
    return tuple(round(c + (255 - c) * amount) for c in colour)


def frame_label(sources: tuple) -> str:
    known = [f for f in sources if f is not None]
    if not known:
        return "-"
    return str(known[0]) if len(known) == 1 else f"{known[0]}-{known[-1]}"


def draw_schedule_picture(plan: SectionPlan, height: int, width: int) -> Image.Image:
    """The picture of ``plan``'s section for a latent of ``height`` x ``width`` (pixels / 8), as an RGB image."""
    tiles = section_tiles(plan, height, width)
    font, small, title = (ImageFont.load_default(size) for size in (13, 11, 16))
    rows = summary_rows(plan, tiles, height, width)
    bars_top = TILES_TOP + TILE_HEIGHT + 56 + 18 * len(rows)
    boxes = tile_boxes(tiles)
    image = Image.new("RGB", (max(WIDTH, boxes[-1][2] + MARGIN), bars_top + 110), PAPER)  # wider past ~570 positions
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 14), f"FramePack schedule {plan.schedule.text}", fill=INK, font=title)
    padding = "" if plan.padding is None else f" (padding p = {plan.padding})"
    draw.text((MARGIN, 40), f"{plan.mode}, section {plan.index + 1} of {plan.num_sections} in generation order"
                            f"{padding}; latent {height}x{width} ({8 * width}x{8 * height} px); RoPE order left to "
                            "right, above each tile the video latent it holds", fill=INK, font=font)
    for tile, box in zip(tiles, boxes):
        draw_tile(image, draw, tile, box, small)
    y = TILES_TOP + TILE_HEIGHT + 40
    for text, colour in rows:
        draw.rectangle((MARGIN, y + 3, MARGIN + 10, y + 13), fill=colour)
        draw.text((MARGIN + 18, y), text, fill=INK, font=font)
        y += 18
    context = plan.context_tokens(height, width)
    appends = any(group.placement == "tail" and group.reduce is None for group in plan.groups)
    draw_bars(draw, bars_top, context, noisy_tokens(plan.schedule, height, width), appends, font)
    return image


def tile_boxes(tiles: list) -> list[tuple]:
    """Each tile's (left, top, right, bottom) in the picture: a cell per RoPE position, skips BLANK_CELLS wide."""
    widths = [BLANK_CELLS if tile.kind == "blank" else tile.positions for tile in tiles]
    cell = max(2, min(MAX_CELL, (WIDTH - 2 * MARGIN) // sum(widths)))
    boxes, x = [], MARGIN
    for w in widths:
        boxes.append((x, TILES_TOP, x + cell * w - 1, TILES_TOP + TILE_HEIGHT))
        x += cell * w
    return boxes


def draw_tile(image, draw, tile: Tile, box: tuple, font) -> None:
    left, top, right, bottom = box
    if tile.kind == "blank":
        draw.rectangle(box, outline=FAINT)
        draw.text(((left + right) // 2, (top + bottom) // 2), f"{tile.positions}\nblank", fill=FAINT, font=font,
                  anchor="mm", align="center")
        return
    kernel = Kernel.k(1) if tile.kind == "noisy" else tile.kernel
    base = NOISY if tile.kind == "noisy" else kernel_colour(kernel)
    zeros = tile.kind == "context" and all(f is None for f in tile.sources)
    draw.rectangle(box, fill=lighter(base, 0.85 if zeros else 0.35), outline=base)
    spacing = 3  # pixels per latent pixel pair: a k1 patch is 3 px square, a k4 one 12 px
    for gx in range(left, right, max(2, spacing * kernel.w // 2)):
        draw.line((gx, top, gx, bottom), fill=base)
    for gy in range(top, bottom, max(2, spacing * kernel.h // 2)):
        draw.line((left, gy, right, gy), fill=base)
    if tile.kind == "noisy":
        label = f"noisy: latents {tile.sources[0]}-{tile.sources[-1]}"
        draw.text(((left + right) // 2, (top + bottom) // 2), label, fill=INK, font=font, anchor="mm",
                  stroke_width=2, stroke_fill=PAPER)
    else:
        vertical_text(image, frame_label(tile.sources), ((left + right) // 2, top - 3), font, "bottom")
    vertical_text(image, f"{tile.tokens}", ((left + right) // 2, bottom + 4), font, "top")


def vertical_text(image, text: str, at: tuple, font, side: str) -> None:
    """Text turned 90 degrees, centred on x, its end at y (side 'bottom': above y; 'top': below y)."""
    x0, y0, x1, y1 = font.getbbox(text)
    label = Image.new("L", (x1 + 2, y1 + 2), 0)
    ImageDraw.Draw(label).text((1, 1), text, fill=255, font=font)
    label = label.rotate(90, expand=True)
    x = at[0] - label.width // 2
    y = at[1] - label.height if side == "bottom" else at[1]
    image.paste(Image.new("RGB", label.size, INK), (x, y), label)


def summary_rows(plan: SectionPlan, tiles: list, height: int, width: int) -> list[tuple[str, tuple]]:
    """One line per packed group in RoPE order: placement, frames, kernel and its projection, tokens."""
    rows = []
    for number, group in enumerate(plan.groups):
        frames = [f for tile in tiles if tile.group == number for f in tile.sources]
        known = [f for f in frames if f is not None]
        filled = f"{len(known)} of them generated so far" if len(known) < len(frames) else "all generated"
        pool = "" if group.pre_pool == (1, 1, 1) else f", pre-pooled {'x'.join(map(str, group.pre_pool))}"
        what = {"tail": "tail (one position)", "after_skip": "after a skip", "anchor": "anchor",
                "adjacent": "next to the window"}[group.placement]
        reduce = ", averaged into one frame" if group.reduce == "mean" else ""
        rows.append((f"{group.side} side, {what}: {len(frames)} frame(s) with kernel {group.kernel.name} "
                     f"({'x'.join(map(str, group.kernel.size))}, projection {group.proj}{pool}{reduce}), {filled}: "
                     f"{group.tokens(height, width)} tokens", kernel_colour(group.kernel)))
    return rows


def draw_bars(draw, top: int, context: int, noisy: int, appends: bool, font) -> None:
    """Context tokens against the noisy window's, to scale."""
    longest = WIDTH - 2 * MARGIN - 330
    scale = longest / max(context, noisy)
    for row, (name, tokens, colour) in enumerate((("packed context", context, PALETTE[0]),
                                                  ("noisy window", noisy, NOISY))):
        y = top + 26 * row
        draw.text((MARGIN, y + 2), f"{name}: {tokens:,} tokens", fill=INK, font=font)
        draw.rectangle((MARGIN + 230, y, MARGIN + 230 + max(1, round(tokens * scale)), y + 18), fill=colour)
    share = context / (context + noisy)
    growth = "grows with the video (its 'ta' tail appends every earlier frame)" if appends else \
        "stays this size in every section, however long the video grows"
    draw.text((MARGIN, top + 60), f"{context + noisy:,} image tokens per step, {share:.0%} of them context "
                                  f"(plus the image embedding and text tokens); the context {growth}", fill=INK,
              font=font)
