import pytest
import torch

from framepack_core.errors import InputError
from framepack_core.engine.planning import plan_sections
from framepack_core.engine.stitch import SectionStitcher, overlap_frames, section_clips, soft_append


def clip(frames, value):
    return torch.full((1, 3, frames, 2, 2), float(value))


def test_overlap_rule():
    assert overlap_frames(9) == 33 and overlap_frames(1) == 1


def test_frame_counts_follow_the_reference_rule():
    """33 + 36 (n - 2) + 40 = 36 n + 1 frames for W = 9: first decode 33, middle sections +36, last +40."""
    W, n = 9, 5
    pixels = clip(4 * W - 3, 0)
    for section in range(1, n):
        latents = 2 * W + 1 if section == n - 1 else 2 * W
        pixels = soft_append(clip(4 * latents - 3, section), pixels, overlap_frames(W))
    assert pixels.shape[2] == 36 * n + 1


def test_blend_weights_are_linear():
    out = soft_append(clip(4, 1), clip(4, 0), 3)
    assert out.shape[2] == 5
    torch.testing.assert_close(out[0, 0, :, 0, 0], torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0]))


def test_zero_overlap_concatenates_and_bad_overlap_raises():
    assert soft_append(clip(2, 1), clip(3, 0), 0).shape[2] == 5
    with pytest.raises(ValueError, match="cross-fade"):
        soft_append(clip(2, 1), clip(3, 0), 3)


# ----------------------------------------------------------------------------------------------- streaming

def reference_stitch(mode, plans, decode):
    """The demos' loops (spec 4.5 and 5): inverted prepends each decode, F1 appends it."""
    pixels = None
    for clip in section_clips(plans):
        cur = decode(clip)
        if pixels is None:
            pixels = cur
        elif mode == "vanilla":
            pixels = soft_append(pixels, cur, overlap_frames(plans[0].latent_window_size))
        else:
            pixels = soft_append(cur, pixels, overlap_frames(plans[0].latent_window_size))
    return pixels


def fake_decode(clip):
    """Frames of a decode that depend on the window (as a real decode's do), (1, 1, T, 1, 1)."""
    start, end = clip.frames
    g = torch.Generator().manual_seed(clip.first * 1000 + clip.end)
    return torch.rand((1, 1, end - start, 1, 1), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["vanilla", "inverted_anti_drifting"])
@pytest.mark.parametrize("sections, window", [(1, 9), (2, 9), (5, 9), (7, 2)])
def test_streamed_frames_equal_the_reference_stitching(mode, sections, window):
    plans = plan_sections(mode, sections, window)
    expected = reference_stitch(mode, plans, fake_decode)
    assert expected.shape[2] == 4 * window * sections + 1  # 36 n + 1 for W = 9
    stitcher = SectionStitcher(section_clips(plans))
    video = torch.full_like(expected, float("nan"))
    for clip in stitcher.clips:
        start, frames = stitcher.add(clip.section, fake_decode(clip)[0, 0])
        assert torch.isnan(video[0, 0, start:start + len(frames)]).all(), "a frame was emitted twice"
        video[0, 0, start:start + len(frames)] = frames
        assert len(stitcher.pending) <= 1 and all(len(p) <= overlap_frames(window) for _, p in stitcher.unfinished())
    assert not stitcher.pending
    torch.testing.assert_close(video, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["vanilla", "inverted_anti_drifting"])
def test_a_restored_stitcher_continues_exactly(mode):
    plans = plan_sections(mode, 6, 3)
    clips = section_clips(plans)
    whole = SectionStitcher(clips)
    emitted = [whole.add(c.section, fake_decode(c)[0, 0]) for c in clips]
    resumed = SectionStitcher(clips)
    resumed.restore(2, fake_decode(clips[2])[0, 0])
    for clip in clips[3:]:
        start, frames = resumed.add(clip.section, fake_decode(clip)[0, 0])
        assert start == emitted[clip.section][0] and torch.equal(frames, emitted[clip.section][1])


def test_sections_that_do_not_touch_are_refused():
    with pytest.raises(InputError, match="does not lie next to the section generated before it"):
        section_clips(plan_sections("anti_drifting", 4, 9))
    with pytest.raises(InputError, match="extended video"):
        section_clips(plan_sections("vanilla", 3, 9, history_frames=5))
