"""The schedule picture: its tiles are the plan's groups, skips and window, and it is drawn where they are."""

import pytest

from framepack_core.engine.planning import MODES, plan_sections
from framepack_core.engine.schedule_picture import (NOISY, Tile, WIDTH, draw_schedule_picture, kernel_colour,
                                                    lighter, section_tiles, tile_boxes)
from framepack_core.engine.schedules import Kernel, noisy_tokens

SCHEDULES = [None, "standard", "uniform:k4:7", "f1k1_tc_f16k4f2k2f1k1_g9_x_f1k1", "ta_f2k8f16k4f2k2f1k1_g9",
             "f2k8f1k1_x_g9_f1k1f2k2f16k4_tc_f1k1"]
K1, K2, K4 = Kernel.k(1), Kernel.k(2), Kernel.k(4)


def test_default_inverted_first_section_tiles():
    """[start k1 | 27 blank | noisy 9 | post k1 | one k2 column | four k4 columns], zeros where nothing exists yet."""
    plan = plan_sections("inverted_anti_drifting", 4, 9)[0]
    assert section_tiles(plan, 76, 80) == [
        Tile("context", 1, 1520, K1, (0,), 0), Tile("blank", 27, 0),
        Tile("noisy", 9, 13680, sources=tuple(range(28, 37))), Tile("context", 1, 1520, K1, (None,), 1),
        Tile("context", 2, 380, K2, (None, None), 2), *[Tile("context", 4, 100, K4, (None,) * 4, 3)] * 4]


@pytest.mark.parametrize("mode, schedule", [(m, s) for m in MODES for s in SCHEDULES
                                             if not (m == "vanilla" and s and "g9_" in s)])
def test_tiles_carry_every_token_and_position_of_the_plan(mode, schedule):
    """The tiles' tokens are the plan's context and noisy tokens; their positions every RoPE position in order."""
    for plan in plan_sections(mode, 5, 9, schedule):
        for height, width in ((76, 80), (7, 5)):
            tiles = section_tiles(plan, height, width)
            assert sum(t.tokens for t in tiles if t.kind == "context") == plan.context_tokens(height, width)
            assert [t.tokens for t in tiles if t.kind == "noisy"] == [noisy_tokens(plan.schedule, height, width)]
        used = plan.latent_indices + [i for g in plan.groups for i in g.indices]
        assert sum(t.positions for t in tiles) == max(used) + 1
        sources = [f for t in tiles if t.kind == "context" for f in t.sources]
        assert sources == [f for g in sorted(plan.groups, key=lambda g: g.indices[0] if g.indices else -1)
                           for f in g.sources]


def test_picture_draws_each_tile_in_its_kernel_colour():
    """Known frames are filled in their kernel's colour, not-yet-generated ones paler, the window in grey."""
    plan = plan_sections("inverted_anti_drifting", 4, 9)[2]
    tiles = section_tiles(plan, 76, 80)
    image = draw_schedule_picture(plan, 76, 80)
    assert image.width == WIDTH and image.mode == "RGB"
    for tile, box in zip(tiles, tile_boxes(tiles)):
        colours = {colour for _, colour in image.crop(box).getcolors(maxcolors=4096)}
        if tile.kind == "noisy":
            assert lighter(NOISY, 0.35) in colours
        elif tile.kind == "context":
            zeros = all(f is None for f in tile.sources)
            assert lighter(kernel_colour(tile.kernel), 0.85 if zeros else 0.35) in colours, tile
        else:
            assert kernel_colour(K1) not in colours and lighter(NOISY, 0.35) not in colours
    assert len({kernel_colour(k) for k in (K1, K2, K4, Kernel.k(8))}) == 4


def test_a_long_layout_widens_the_picture_instead_of_cutting_it():
    plan = plan_sections("vanilla", 3, 9, "f1k1_td_f1000k1_g9")[2]
    tiles = section_tiles(plan, 8, 8)
    assert draw_schedule_picture(plan, 8, 8).width > tile_boxes(tiles)[-1][2] > WIDTH
