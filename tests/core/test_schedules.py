"""Frame schedules: the paper-notation parser, named schedules, kernels and token counts."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framepack_core.errors import FramePackError
from framepack_core.engine import generate as generate_module
from framepack_core.engine import schedules
from framepack_core.engine.conditioning import TextConditioning
from framepack_core.engine.generate import GenerationInputs, GenerationSettings, generate, initial_state, validate_run
from framepack_core.engine.planning import plan_sections
from framepack_core.engine.resume import settings_record
from framepack_core.engine.schedules import (ALLOWED, MAX_LATENT_WINDOW_SIZE, MODES, Kernel, ModeError, Schedule,
                                             ScheduleChoice, ScheduleError, Segment, choose_schedule, context_tokens,
                                             get_schedule, noisy_tokens, parse_schedule)

EXAMPLES = {
    "td_f16k4f2k2f1k1_g9": [("td", "left", ""), ("f16k4", "left", "adjacent"), ("f2k2", "left", "adjacent"),
                            ("f1k1", "left", "adjacent"), ("g9", "window", "")],
    "td_f16k4f4k2f1k1_g9_x_f1k1": [("td", "left", ""), ("f16k4", "left", "adjacent"), ("f4k2", "left", "adjacent"),
                                   ("f1k1", "left", "adjacent"), ("g9", "window", ""), ("x", "right", ""),
                                   ("f1k1", "right", "after_skip")],
    "f1k1_x_g9_f1k1f2k2f16k4_td": [("f1k1", "left", "after_skip"), ("x", "left", ""), ("g9", "window", ""),
                                   ("f1k1", "right", "adjacent"), ("f2k2", "right", "adjacent"),
                                   ("f16k4", "right", "adjacent"), ("td", "right", "")],
    "f1k1_td_f16k4f2k2f1k1_g9": [("f1k1", "left", "anchor"), ("td", "left", ""), ("f16k4", "left", "adjacent"),
                                 ("f2k2", "left", "adjacent"), ("f1k1", "left", "adjacent"), ("g9", "window", "")],
}


@pytest.mark.parametrize("text", list(EXAMPLES))
def test_paper_examples_parse(text):
    """The four paper / reference layouts parse to the expected segments and print back unchanged."""
    schedule = parse_schedule(text)
    assert [(s.token, s.side, s.placement) for s in schedule.segments] == EXAMPLES[text]
    assert schedule.text == text and schedule.latent_window_size == 9 and schedule.tail == "td"


def test_kernels_map_to_the_released_projections():
    """k1/k2/k4 use their projection directly; larger kernels pre-pool and reuse the nearest projection."""
    table = {
        Kernel.k(1): ("1x", "proj", (1, 1, 1), (1, 1, 1)), Kernel.k(2): ("2x", "proj_2x", (1, 1, 1), (2, 2, 2)),
        Kernel.k(4): ("4x", "proj_4x", (1, 1, 1), (4, 4, 4)), Kernel.k(8): ("4x", "proj_4x", (2, 2, 2), (8, 8, 8)),
        Kernel.k(16): ("4x", "proj_4x", (4, 4, 4), (16, 16, 16)), Kernel(1, 4, 4): ("1x", "proj", (1, 2, 2), (1, 2, 2)),
        Kernel(8, 2, 2): ("1x", "proj", (8, 1, 1), (8, 1, 1)), Kernel(4, 16, 4): ("2x", "proj_2x", (2, 4, 1), (4, 8, 2)),
    }
    for kernel, (proj, name, pre_pool, rope_pool) in table.items():
        assert (kernel.proj, kernel.proj_name, kernel.pre_pool, kernel.rope_pool) == (proj, name, pre_pool, rope_pool)
        projection_kernel = {"1x": (1, 2, 2), "2x": (2, 4, 4), "4x": (4, 8, 8)}[proj]
        assert tuple(p * q for p, q in zip(kernel.pre_pool, projection_kernel)) == kernel.size
    assert parse_schedule("f2k8f4k1h4w4_g").groups[0].kernel == Kernel(8, 16, 16)
    assert parse_schedule("f2k8f4k1h4w4_g").groups[1].kernel.name == "k1h4w4"


# Spec 2.5: (latent H, W) -> (1x with 2 frames, 2x with 2 frames, 4x with 16 frames, noisy W=9).
TOKEN_TABLE = [((52, 120), 3120, 390, 420, 14040), ((56, 108), 3024, 378, 392, 13608), ((60, 104), 3120, 390, 416, 14040),
               ((64, 96), 3072, 384, 384, 13824), ((68, 88), 2992, 374, 396, 13464), ((72, 84), 3024, 378, 396, 13608),
               ((76, 80), 3040, 380, 400, 13680)]


@pytest.mark.parametrize("size, t1, t2, t4, noisy", TOKEN_TABLE)
def test_context_tokens_match_the_spec_table(size, t1, t2, t4, noisy):
    """Both released layouts have 1x(2) + 2x(2) + 4x(16) context tokens as tabulated in spec 2.5."""
    for mode in ("vanilla", "inverted_anti_drifting"):
        schedule = get_schedule("default", mode, 9)
        assert context_tokens(schedule, *size) == t1 + t2 + t4
        assert noisy_tokens(schedule, *size) == noisy
        assert plan_sections(mode, 3, 9)[1].image_tokens(*size) == t1 + t2 + t4 + noisy


def test_golden_forward_token_counts():
    """The golden forward cases have 528 (inverted, 3x24x16) and 176 (F1, 3x8x16) image-stream tokens."""
    inverted, f1 = get_schedule(None, "inverted_anti_drifting", 3), get_schedule(None, "vanilla", 3)
    assert context_tokens(inverted, 24, 16) + noisy_tokens(inverted, 24, 16) == 528
    assert context_tokens(f1, 8, 16) + noisy_tokens(f1, 8, 16) == 176


def test_named_schedules():
    """default = inverted (start kept at k1), standard drops the start anchor, uniform packs at one kernel."""
    assert get_schedule("default", "inverted_anti_drifting").text == "f1k1_x_g9_f1k1f2k2f16k4_td"
    assert get_schedule(None, "vanilla", 5).text == "f1k1_td_f16k4f2k2f1k1_g5"
    assert get_schedule("inverted", "anti_drifting").text == "f1k1_td_f16k4f2k2f1k1_g9_x_f1k1"
    assert get_schedule("standard", "vanilla").text == "td_f16k4f2k2f1k1_g9"
    assert get_schedule("Standard", "inverted_anti_drifting").text == "g9_f1k1f2k2f16k4_td"
    assert get_schedule("uniform", "vanilla").text == "f1k2_td_f12k2_g9"
    assert get_schedule("uniform:k4:8", "inverted_anti_drifting").text == "f1k4_x_g9_f8k4_td"
    assert get_schedule("uniform", "vanilla", kernel="k1", frames=3).text == "f1k1_td_f3k1_g9"
    with pytest.raises(ScheduleError, match="not a power of two"):
        get_schedule("uniform:k3", "vanilla")
    with pytest.raises(ModeError, match="vanilla, anti_drifting, inverted_anti_drifting"):
        get_schedule("default", "forward")


def test_window_size_agreement():
    """gN defines the window when none is given, must agree with an explicit one, and a bare g takes it."""
    assert parse_schedule("td_f16k4_g5").latent_window_size == 5
    assert parse_schedule("td_f16k4_g", 7).latent_window_size == 7
    assert parse_schedule("td_f16k4_g").latent_window_size == 9
    assert get_schedule("td_f16k4_g5", "vanilla").latent_window_size == 5
    with pytest.raises(ScheduleError, match=r"g5 generates 5 latent frames but latent_window_size is 9") as err:
        get_schedule("td_f16k4_g5", "vanilla", 9)
    assert "    td_f16k4_g5\n             ^^" in str(err.value)
    schedule = parse_schedule("td_f16k4_g5")
    assert get_schedule(schedule, "vanilla") is schedule
    with pytest.raises(ScheduleError, match="latent_window_size is 9"):
        get_schedule(schedule, "vanilla", 9)


def test_vanilla_rejects_future_context():
    """Vanilla generates forward, so groups after the window are refused with the position pointed at."""
    with pytest.raises(ScheduleError, match="vanilla mode generates forward") as err:
        get_schedule("f1k1_x_g9_f1k1f2k2f16k4_td", "vanilla")
    assert "\n              ^" in str(err.value)


def test_schedule_objects_validate_and_tails():
    """Schedules built from segments are validated; tc/ta tails get their kernels and token counts."""
    with pytest.raises(ScheduleError, match="in the middle"):
        Schedule((Segment("generate", 9), Segment("tail", tail="td")))
    with pytest.raises(ScheduleError, match="disagrees with latent_window_size"):
        Schedule((Segment("generate", 5),), 9)
    tc = parse_schedule("f1k1_tc_f16k4f2k2f1k1_g9")
    assert tc.tail == "tc" and tc.tail_kernel("left") == Kernel.k(4) and tc.tail_kernel("right") is None
    assert context_tokens(tc, 60, 104) == context_tokens(parse_schedule("f1k1_td_f16k4f2k2f1k1_g9"), 60, 104) + 8 * 13
    ta = parse_schedule("ta_f2k2_g9")
    assert ta.tail_kernel("left") == Kernel(1, 32, 32)
    assert context_tokens(ta, 64, 96, tail_frames=5) == context_tokens(ta, 64, 96) + 5 * 2 * 3


MALFORMED = [
    ("", "the schedule is empty", 0),
    ("td_f16k4f2k2f1k1_q9", "unknown token 'q9'", 17),
    ("td_f16k3_g9", "kernel size 3 in 'f16k3' is not a power of two", 7),
    ("td_f16k0_g9", "is not a power of two", 7),
    ("td_f0k4_g9", "frame count 0 is zero frames", 4),
    ("f1k1_x_g0", "window size 0 is zero frames", 8),
    ("td_f16k4f2k2f1k1", "no generated window", 16),
    ("g9_f1k1_g9", "appears twice", 8),
    ("f16k4_td_g9", "tail 'td' in the middle", 6),
    ("td_g9", "tail 'td' in the middle", 0),
    ("g9_x_tc", "tail 'tc' in the middle", 5),
    ("td_f1k1_td_f16k4_g9", "second tail 'td'", 0),
    ("f1k1_x_td_f16k4_g9", "'x' cannot follow a tail", 5),
    ("td_x_f16k4_g9", "tail 'td' in the middle", 0),
    ("x_x_g9", "two skips in a row", 0),
    ("g9_x", "'x' with no group beyond it", 3),
    ("f1k1__g9", "empty token", 5),
    ("_g9", "empty token", 0),
    ("f16k4f2_g9", "cannot read 'f2'", 5),
    ("f99999999k1_g9", "frame count 99999999 is out of range", 1),
    ("f1k1h1w2_g9", "h and w must be at least 2", 4),
    ("td_f16k4_g999", "window size 999 is out of range", 10),
]


@pytest.mark.parametrize("text, problem, column", MALFORMED)
def test_malformed_schedules_point_at_the_bad_token(text, problem, column):
    """Each malformed string raises ScheduleError quoting it, naming the problem, with a caret under the token."""
    with pytest.raises(ScheduleError) as err:
        parse_schedule(text)
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert message.startswith(f"invalid frame schedule {text!r}: ") and problem in message.splitlines()[0]
    assert f"(at character {column + 1})" in message
    assert f"\n    {text}\n    {' ' * column}^" in message
    assert ALLOWED in message


VALID = list(EXAMPLES) + ["f1k1_tc_f16k4f2k2f1k1_g9_x_f1k1f2k2", "f1k8_ta_f4k1h4w4_g_x_f1k1_x_f1k1"]


def _plan_or_fail(schedule):
    for mode in MODES:
        try:
            plans = plan_sections(mode, 3, schedule=schedule)
        except FramePackError:
            continue
        assert len({sum(len(g.indices) for g in p.groups) for p in plans}) == 1 or \
            "ta" in (schedule.side_tail("left"), schedule.side_tail("right"))
        windows = (range(p.position, p.position + p.latent_window_size) for p in plans)
        assert sorted(f for w in windows for f in w) == list(range(1, plans[0].total_latent_frames))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="fkgxtdac0123456789_", max_size=30))
def test_fuzz_random_strings(text):
    """Random strings over the notation's alphabet either parse (and plan) or raise ScheduleError."""
    try:
        schedule = parse_schedule(text)
    except ScheduleError:
        return
    assert parse_schedule(schedule.text).text == schedule.text
    _plan_or_fail(schedule)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 40), st.sampled_from("fkgxtdac0123456789_"),
                                                  st.sampled_from(["insert", "delete", "replace"])), max_size=4))
def test_fuzz_mutated_valid_strings(text, edits):
    """Small mutations of valid schedules either parse (and plan) or raise ScheduleError, never anything else."""
    chars = list(text)
    for at, char, op in edits:
        at = at % (len(chars) + 1)
        if op == "insert":
            chars.insert(at, char)
        elif chars and at < len(chars):
            chars[at:at + 1] = [] if op == "delete" else [char]
    try:
        schedule = parse_schedule("".join(chars))
    except ScheduleError:
        return
    _plan_or_fail(schedule)


def test_a_schedule_choice_is_parsed_once_and_looked_up_per_mode(monkeypatch):
    """choose_schedule parses every mode's layout when it is made; for_mode and get_schedule never parse again."""
    uniform = choose_schedule("uniform", 9, kernel="k4", frames=8)
    custom = choose_schedule("f1k1_td_f16k4f2k2f1k1_g5")
    monkeypatch.setattr(schedules, "parse_schedule", lambda *args, **kwargs: pytest.fail("parsed again"))
    for mode in MODES:
        assert uniform.for_mode(mode) is get_schedule(uniform, mode, 9)
        assert get_schedule(custom, mode).text == "f1k1_td_f16k4f2k2f1k1_g5"
    assert uniform.name == "uniform" and uniform.latent_window_size == 9 and custom.latent_window_size == 5
    assert uniform.for_mode("inverted_anti_drifting").text == "f1k4_x_g9_f8k4_td"
    with pytest.raises(ScheduleError, match="generates 5 latent frames but latent_window_size is 9"):
        get_schedule(custom, "vanilla", 9)


def test_a_schedule_choice_names_the_same_layouts_as_the_strings():
    """Every named schedule and the old 'uniform:kM:N' text resolve to the same Schedule per mode as before."""
    for name in ("default", "standard", "inverted", "uniform"):
        for mode in MODES:
            assert choose_schedule(name, 5).for_mode(mode) == get_schedule(name, mode, 5)
    for mode in MODES:
        assert choose_schedule("uniform", 9, kernel="k4", frames=7).for_mode(mode).text == \
            get_schedule("uniform:k4:7", mode).text
    choice = choose_schedule("f1k1_x_g9_f1k1f2k2f16k4_td")
    with pytest.raises(ScheduleError, match="vanilla mode generates forward"):
        choice.for_mode("vanilla")
    with pytest.raises(ScheduleError, match="one Schedule per mode"):
        ScheduleChoice("custom", (parse_schedule("td_f16k4_g9"),))


def test_the_window_limit_is_one_constant():
    """The core refuses what the node's widget cannot set: windows above MAX_LATENT_WINDOW_SIZE."""
    assert parse_schedule(f"td_f16k4_g{MAX_LATENT_WINDOW_SIZE}").latent_window_size == MAX_LATENT_WINDOW_SIZE
    with pytest.raises(ScheduleError, match=f"window size {MAX_LATENT_WINDOW_SIZE + 1} is out of range"):
        parse_schedule(f"td_f16k4_g{MAX_LATENT_WINDOW_SIZE + 1}")
    with pytest.raises(ScheduleError, match=f"use 1 to {MAX_LATENT_WINDOW_SIZE}"):
        choose_schedule("default", MAX_LATENT_WINDOW_SIZE + 1)


def test_settings_plan_once_and_record_the_schedule_text_as_before(monkeypatch):
    """A run plans once (loop, resume state and record share it); the resume record of a ScheduleChoice is the
    one its old string gave, so runs saved before keep their settings record."""
    calls = []
    real = generate_module.plan_sections
    monkeypatch.setattr(generate_module, "plan_sections", lambda *a, **k: calls.append(a) or real(*a, **k))
    choice = choose_schedule("uniform", 3, kernel="k4", frames=7)
    settings = GenerationSettings(mode="anti_drifting", num_sections=3, latent_window_size=3, schedule=choice, steps=1)
    prompt = TextConditioning(torch.zeros(1, 5, 32), torch.ones(1, 5, dtype=torch.bool), torch.zeros(1, 16))
    inputs = GenerationInputs(torch.zeros(1, 16, 1, 8, 8), prompt, torch.zeros(1, 6, 24))
    plans = validate_run(lambda job: job.noise, inputs, settings)
    initial_state(inputs, settings.plans(), settings)
    generate(lambda job: job.noise, inputs, settings)
    record = settings_record(settings)
    assert len(calls) == 1 and settings.plans() == plans and plans[0].schedule is choice.for_mode("anti_drifting")
    old = GenerationSettings(mode="anti_drifting", num_sections=3, latent_window_size=3, schedule="uniform:k4:7",
                             steps=1)
    assert record == settings_record(old)
    assert (record["schedule"], record["latent_window_size"]) == ("f1k4_td_f7k4_g3_x_f1k4", 3)
