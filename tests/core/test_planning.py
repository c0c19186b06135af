"""Section plans: reference index layouts, history sources, coverage, causality and constant context length."""

import math

import pytest

from framepack_core.engine.planning import (MODES, ModeError, PlanError, latent_frame_count, padding_list, pixel_frame_count,
                                     plan_sections, section_count)
from framepack_core.engine.schedules import ScheduleError

ZEROS = [None]


def split(sizes):
    """torch.arange(sum(sizes)).split(sizes), as lists."""
    out, at = [], 0
    for size in sizes:
        out.append(list(range(at, at + size)))
        at += size
    return out


def slot(plan, proj):
    """(RoPE indices, source frames) of one of the reference's three context tensors, read from the plan's groups."""
    groups = [g for g in plan.groups if g.proj == proj and g.placement != "tail"]
    return [i for g in groups for i in g.indices], [f for g in groups for f in g.sources]


def positions(plan):
    """Every RoPE position the section uses: its window and its context groups."""
    return plan.latent_indices + [i for g in plan.groups for i in g.indices]


def blanks(plan):
    """The positions left blank by skips: the gaps between the used ones."""
    used = set(positions(plan))
    return [i for i in range(max(used) + 1) if i not in used]


def context_positions(plan):
    return sum(len(g.indices) for g in plan.groups)


def window(plan):
    """Video frames of the section's W generated latents."""
    return list(range(plan.position, plan.position + plan.latent_window_size))


def reference_paddings(n):
    paddings = list(reversed(range(n)))
    return [3] + [2] * (n - 3) + [1, 0] if n > 4 else paddings


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("w", [9, 3])
def test_inverted_layouts_and_history_match_the_reference(n, w):
    """Indices from arange(1 + pW + W + 1 + 2 + 16) split [1, pW, W, 1, 2, 16]; content from the prepended history."""
    plans = plan_sections("inverted_anti_drifting", n, w)
    assert [p.padding for p in plans] == reference_paddings(n) == padding_list(n)
    history, generated = ["zero"] * 19, 0  # spec 4.4, with frames labelled by their final-video number
    for plan, p in zip(plans, reference_paddings(n)):
        pre, blank, latent, post, two, four = split([1, p * w, w, 1, 2, 16])
        assert plan.latent_indices == latent and blanks(plan) == blank
        label = lambda xs: [None if x == "zero" else x for x in xs]  # noqa: E731
        assert slot(plan, "1x") == (pre + post, [0] + label(history[0:1]))
        assert slot(plan, "2x") == (two, label(history[1:3]))
        assert slot(plan, "4x") == (four, label(history[3:19]))
        assert plan.reference_compatible
        result = ([0] if p == 0 else []) + window(plan)  # the last section (p = 0) also outputs the start latent
        history, generated = result + history, generated + len(result)
    assert history[:generated] == list(range(latent_frame_count(n, w)))


def test_worked_example_n4():
    """Spec 4.3's table for n = 4, W = 9, verbatim (S1 = frames 28..36, S2 = 19..27, S3 = 10..18)."""
    s1, s2, s3 = list(range(28, 37)), list(range(19, 28)), list(range(10, 19))
    table = [  # p, blank, noisy, post, 2x, 4x, post content, 2x content, 4x content
        (3, (1, 27), (28, 36), 37, (38, 39), (40, 55), ZEROS, ZEROS * 2, ZEROS * 16),
        (2, (1, 18), (19, 27), 28, (29, 30), (31, 46), s1[:1], s1[1:3], s1[3:9] + ZEROS * 10),
        (1, (1, 9), (10, 18), 19, (20, 21), (22, 37), s2[:1], s2[1:3], s2[3:9] + s1 + ZEROS),
        (0, None, (1, 9), 10, (11, 12), (13, 28), s3[:1], s3[1:3], s3[3:9] + s2 + s1[:1]),
    ]
    span = lambda r: list(range(r[0], r[1] + 1)) if r else []  # noqa: E731
    plans = plan_sections("inverted_anti_drifting", 4)
    for step, (plan, row) in enumerate(zip(plans, table), start=1):
        p, blank, noisy, post, two, four, c_post, c_two, c_four = row
        assert plan.index == step - 1 and plan.padding == p
        assert blanks(plan) == span(blank) and plan.latent_indices == span(noisy)
        assert slot(plan, "1x") == ([0, post], [0] + c_post)
        assert slot(plan, "2x") == (span(two), c_two) and slot(plan, "4x") == (span(four), c_four)
    assert max(max(positions(p)) for p in plans) == 55
    assert [p.position for p in plans] == [28, 19, 10, 1]


def test_golden_forward_layouts():
    """The golden forward cases: inverted W=3 p=1 and F1 W=3."""
    inverted = plan_sections("inverted_anti_drifting", 2, 3)[0]
    assert inverted.padding == 1
    assert (inverted.latent_indices, *(slot(inverted, p)[0] for p in ("1x", "2x", "4x"))) == \
        ([4, 5, 6], [0, 7], [8, 9], list(range(10, 26)))
    for f1 in plan_sections("vanilla", 3, 3):
        assert (f1.latent_indices, *(slot(f1, p)[0] for p in ("1x", "2x", "4x"))) == \
            ([20, 21, 22], [0, 19], [17, 18], list(range(1, 17)))


@pytest.mark.parametrize("w", [1, 2, 3, 5, 9, 16, 33])
def test_vanilla_f1_layouts_and_history(w):
    """F1: arange(1 + 16 + 2 + 1 + W) split [1, 16, 2, 1, W]; content = last 19 of zeros(19) + start + sections."""
    n = 4
    history = ["zero"] * 19 + [0]  # spec 5, frames labelled by their final-video number
    start, four, two, one, latent = split([1, 16, 2, 1, w])
    label = lambda xs: [None if x == "zero" else x for x in xs]  # noqa: E731
    for plan in plan_sections("vanilla", n, w):
        c4, c2, c1 = history[-19:-3], history[-3:-1], history[-1:]
        assert plan.latent_indices == latent and slot(plan, "1x") == (start + one, [0] + label(c1))
        assert slot(plan, "2x") == (two, label(c2)) and slot(plan, "4x") == (four, label(c4))
        assert blanks(plan) == [] and plan.padding is None and plan.reference_compatible
        history += window(plan)
    assert history[-(n * w + 1):] == list(range(latent_frame_count(n, w)))
    assert slot(plan_sections("vanilla", 1, w)[0], "1x")[1] == [0, 0]  # the start fills the 1x slot at first


def _check_coverage_and_causality(plans):
    assert sorted(f for p in plans for f in window(p)) == list(range(1, plans[0].total_latent_frames))
    done = {0}
    for plan in plans:
        required = {f for g in plan.groups for f in g.sources if f is not None}
        assert required <= done, (plan.index, sorted(required - done))
        done |= set(window(plan))


@pytest.mark.parametrize("mode", MODES)
def test_every_frame_generated_once_and_only_known_frames_used(mode):
    """Every mode produces each video latent exactly once; context only uses frame 0 and earlier sections."""
    for n in range(1, 51):
        for w in (9, 4):
            _check_coverage_and_causality(plan_sections(mode, n, w))


def test_anti_drifting_plan():
    """Anti-drifting: the end first, then forward filling with the endpoint after a bounded skip."""
    plans = plan_sections("anti_drifting", 6, 9)
    assert [p.position for p in plans] == [46, 1, 10, 19, 28, 37]
    end, first, last = plans[0], plans[1], plans[-1]
    assert slot(end, "1x")[1] == [0, None, None]
    assert slot(first, "1x") == ([0, 19, 29 + 27], [0, 0, 46])
    assert slot(last, "1x") == ([0, 19, 29], [0, 36, 46])
    assert blanks(plans[3]) == list(range(29, 29 + 18))  # gap of 2 sections, under the 3W cap
    assert max(max(positions(p)) for p in plans) == 29 + 27
    assert slot(plan_sections("anti_drifting", 6, 9, max_blank=0)[1], "1x")[0] == [0, 19, 29]
    assert [p.position for p in plan_sections("anti_drifting", 1)] == [1]


CUSTOM = ["standard", "uniform", "uniform:k4:7", "f1k1_tc_f16k4f2k2f1k1_g9_x_f1k1", "f2k8f1k1_x_g9_f1k1f2k2f16k4_tc_f1k1"]


@pytest.mark.parametrize("mode, schedule", [(m, s) for m in MODES for s in [None] + CUSTOM
                                             if not (m == "vanilla" and s and "g9_" in s)])  # vanilla: no future
def test_context_length_is_constant(mode, schedule):
    """Section 1 and section 500 have the same context tokens, index positions and index range bound."""
    plans = plan_sections(mode, 500, 9, schedule)
    first, last = plans[0], plans[-1]
    for h, w in ((60, 104), (24, 16), (7, 5)):
        assert first.context_tokens(h, w) == last.context_tokens(h, w) == plans[250].context_tokens(h, w)
    assert len({context_positions(p) for p in plans}) == 1
    assert max(max(positions(p)) for p in plans) <= context_positions(first) + 9 + 3 * 9 + 2


def test_custom_schedules_drive_the_layout():
    """A k8 group goes to the 4x slot with pre-pool recorded; tails and pre-pools make a plan non-reference."""
    plan = plan_sections("vanilla", 3, 9, "f1k1_td_f2k8f16k4f2k2f1k1_g9")[2]
    assert slot(plan, "4x")[0] == list(range(1, 19)) and plan.latent_indices == list(range(22, 31))
    assert [g.pre_pool for g in plan.groups if g.proj == "4x"] == [(2, 2, 2), (1, 1, 1)]
    assert not plan.reference_compatible
    tc = plan_sections("vanilla", 5, 9, "f1k1_tc_f16k4f2k2f1k1_g9")
    assert [g.sources for g in tc[0].groups if g.placement == "tail"] == [[None]]
    assert [g.sources for g in tc[4].groups if g.placement == "tail"] == [list(range(1, 18))]
    assert tc[4].groups[1].indices == [1] and tc[4].latent_indices[0] == 21 and not tc[4].reference_compatible
    ta = plan_sections("vanilla", 5, 9, "ta_f16k4f2k2f1k1_g9")
    assert ta[0].context_tokens(64, 96) < ta[4].context_tokens(64, 96)  # append grows by one pooled frame each
    assert plan_sections("vanilla", 2, schedule="td_f16k4f2k2f1k1_g5")[1].position == 6
    with pytest.raises(ScheduleError, match="g5 generates 5 latent frames"):
        plan_sections("vanilla", 2, 9, "td_f16k4f2k2f1k1_g5")


def test_bad_arguments():
    """Unknown modes list the valid ones; counts must be positive integers."""
    with pytest.raises(ModeError, match="valid modes are: vanilla, anti_drifting, inverted_anti_drifting"):
        plan_sections("forward", 3)
    for bad in (0, -1, 2.5, "3", None):
        with pytest.raises(PlanError, match="num_sections"):
            plan_sections("vanilla", bad)
    with pytest.raises(PlanError, match="latent_window_size"):
        plan_sections("vanilla", 2, 0)
    with pytest.raises(ValueError):
        plan_sections("vanilla", 2, schedule="f1k1_x_g9_f1k1")


@pytest.mark.parametrize("seconds, sections", [(1, 1), (5, 4), (10, 8), (60, 50), (120, 100), (0.1, 1),
                                               (3.0, 2), (1.8, 2), (4.2, 4)])
def test_section_count(seconds, sections):
    """max(round(seconds * 30 / 36), 1) with banker's rounding: 3 s -> 2.5 -> 2, 1.8 s -> 1.5 -> 2."""
    assert section_count(seconds) == sections


def test_section_count_errors_and_frame_counts():
    """Bad durations raise PlanError; 9n + 1 latents and 36n + 1 pixel frames (spec 4.1)."""
    for bad in (0, -5, math.nan, math.inf, 3601, "5", None, True):
        with pytest.raises(PlanError, match="seconds"):
            section_count(bad)
    with pytest.raises(PlanError, match="fps"):
        section_count(5, fps=0)
    assert section_count(5, latent_window_size=5) == 8
    assert [(latent_frame_count(n), pixel_frame_count(n)) for n in (1, 4, 8, 50)] == \
        [(10, 37), (37, 145), (73, 289), (451, 1801)]
    assert pixel_frame_count(2, 3) == 25
