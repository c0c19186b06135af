import pytest
import torch

from framepack_core.stitch import overlap_frames, soft_append


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
