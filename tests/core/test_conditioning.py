import pytest
import torch

from framepack_core import InputError, TextConditioning, parse_timestamped_prompts
from framepack_core.engine.conditioning import blend, frame_time, interpolation_weight, prompt_for_time


def test_plain_prompt_is_one_entry_from_zero():
    [entry] = parse_timestamped_prompts("  a cat sits  ")
    assert (entry.start, entry.end, entry.text) == (0.0, None, "a cat sits")


def test_timestamped_entries_sorted_with_ranges():
    entries = parse_timestamped_prompts("[2s-4s: the cat jumps] [0s: a cat sits] [5.5s: it sleeps]")
    assert [(e.start, e.end, e.text) for e in entries] == [
        (0.0, None, "a cat sits"), (2.0, 4.0, "the cat jumps"), (5.5, None, "it sleeps")]


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("[1s: late start]", "starts at 1.0s"),
    ("[0s: a] stray [2s: b]", "outside any"),
    ("[0s: a] [2s: ]", "no prompt text"),
    ("[0s: a] [zz: b]", "bad time 'zz'"),
    ("[0s: a] [3s-2s: b]", "ends (2.0s) before it starts"),
    ("[0s: a] [0s: b]", "same time"),
    ("[0s: a] [2s: b", "cannot read"),
])
def test_bad_prompt_text(text, fragment):
    with pytest.raises(InputError) as info:
        parse_timestamped_prompts(text)
    assert fragment in str(info.value)


def test_prompt_selection_with_ranges_and_blending():
    prompts = [(0.0, None, "a"), (2.0, 4.0, "b")]
    assert prompt_for_time(prompts, 1.0) == (0, 1.0)
    assert prompt_for_time(prompts, 3.0) == (1, 1.0)
    assert prompt_for_time(prompts, 4.5) == (0, 1.0)  # after b's end, a returns
    assert prompt_for_time(prompts, 2.25, blend_seconds=1.0) == (1, 0.25)


def test_blend_pads_and_unites_masks():
    a = TextConditioning(torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 3))
    b = TextConditioning(torch.zeros(1, 3, 4), torch.tensor([[True, True, False]]), torch.ones(1, 3))
    mixed = blend(a, b, 0.25)
    assert mixed.text.shape == (1, 3, 4) and mixed.mask.tolist() == [[True, True, False]]
    torch.testing.assert_close(mixed.text[0, :, 0], torch.tensor([0.75, 0.75, 0.0]))
    torch.testing.assert_close(mixed.pooled, torch.full((1, 3), 0.25))


def test_bad_text_conditioning():
    with pytest.raises(InputError, match="CLIPTextEncode"):
        TextConditioning(torch.ones(1, 2, 4), torch.ones(1, 3, dtype=torch.bool), torch.zeros(1, 3))
    with pytest.raises(InputError, match="zero tokens"):
        TextConditioning(torch.ones(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 3))


def test_frame_times_and_interpolation_weights():
    assert frame_time(0) == 0 and frame_time(1) == pytest.approx(1 / 30) and frame_time(10) == pytest.approx(37 / 30)
    assert interpolation_weight(1, 28, 9) == 0 and interpolation_weight(19, 28, 9) == 1
