"""The procedural shapes world: deterministic clips, the fixed latent codec, captions and image tokens."""

import math

import pytest
import torch

from framepack_core import InputError
from framepack_shapes import drift, world


def test_clips_are_deterministic_and_splits_differ():
    assert world.sample_clip(3) == world.sample_clip(3)
    assert torch.equal(world.render_clip(world.sample_clip(3), 5), world.render_clip(world.sample_clip(3), 5))
    assert world.sample_clip(3, "train") != world.sample_clip(3, "test")
    assert world.sample_clip(3) != world.sample_clip(4)


def test_render_continues_a_clip_exactly():
    """Frames rendered later are the clip's true continuation (the drift experiment's reference)."""
    spec = world.sample_clip(11, "test")
    whole = world.render_clip(spec, 20)
    assert torch.allclose(world.render_clip(spec, 8, start=12), whole[12:], atol=1e-6)
    assert whole.shape == (20, 3, world.FRAME_SIZE, world.FRAME_SIZE)
    assert whole.min() >= -1 and whole.max() <= 1


def test_objects_move_as_captioned():
    square = world.MovingShape("square", "red", False, 4.0, 16.0, 16.0, "left", "slowly")
    spec = world.ClipSpec((square,), (0.2, 0.2, 0.2), 10.0, None, None)
    assert spec.caption == "red square moves left slowly"
    frames = (world.render_clip(spec, 4) + 1) / 2
    redness = (frames[:, 0] - frames[:, 1]).clamp(min=0)  # zero on the grey background
    x = torch.arange(world.FRAME_SIZE, dtype=torch.float32) + 0.5
    centroid = (redness * x).sum(dim=(1, 2)) / redness.sum(dim=(1, 2))
    assert torch.allclose(centroid.diff(), torch.full((3,), -world.SPEEDS["slowly"]), atol=0.05)


def test_bounce_stays_inside_and_reflects():
    t = torch.arange(0, 100, dtype=torch.float32)
    path = world.bounce(5.0, 1.0, t, 2.0, 10.0)
    assert float(path.min()) >= 2 and float(path.max()) <= 10
    assert float(path[5]) == 10.0 and float(path[6]) == 9.0


def test_codec_basis_is_orthonormal_and_round_trips():
    basis = world.codec_basis().flatten(1)
    assert torch.allclose(basis @ basis.T, torch.eye(world.LATENT_CHANNELS), atol=1e-5)
    latents = torch.randn(2, 16, 3, world.LATENT_SIZE, world.LATENT_SIZE)
    frames = world.decode_latents(latents)
    assert frames.shape == (2, 3, 3, world.FRAME_SIZE, world.FRAME_SIZE)
    assert torch.allclose(world.encode_frames(frames), latents, atol=1e-4)


def test_codec_keeps_rendered_frames_recognisable():
    frames = world.render_clip(world.sample_clip(5), 6)
    decoded = world.decode_latents(world.encode_frames(frames))[0]
    psnr = 10 * math.log10(4 / float((decoded - frames).pow(2).mean()))
    assert psnr > 25


def test_latent_constants_still_normalise_the_training_clips():
    """Zero mean, unit overall variance; the coarse channels keep more variance than the fine ones."""
    mean, std = world.latent_statistics(range(40))
    shift, scale = torch.tensor(world.LATENT_SHIFT), torch.tensor(world.LATENT_SCALE)
    assert ((mean - shift) / scale).abs().max() < 0.3
    assert 0.8 < float((std / scale).pow(2).mean().sqrt()) < 1.25
    assert std[0] > 3 * std[9]  # luminance DC vs the finest luminance detail


def test_bad_shapes_are_reported():
    with pytest.raises(InputError, match="frames"):
        world.encode_frames(torch.zeros(2, 3, 16, 16))
    with pytest.raises(InputError, match="latents"):
        world.decode_latents(torch.zeros(1, 12, 1, 8, 8))
    with pytest.raises(InputError, match="split"):
        world.sample_clip(0, "validation")


def test_captions_encode_deterministically_with_word_order():
    a = world.encode_caption("red square moves left slowly")
    b = world.encode_caption("Red square moves LEFT slowly.")
    assert torch.equal(a.text, b.text) and torch.equal(a.pooled, b.pooled)
    assert a.text.shape == (1, 5, world.TEXT_DIM) and a.pooled.shape == (1, world.TEXT_DIM)
    swapped = world.encode_caption("square red moves left slowly")
    assert torch.allclose(a.pooled, swapped.pooled) and not torch.allclose(a.text, swapped.text)
    batch = world.batch_captions(["red square moves left slowly", "blue circle moves up"])
    assert batch.text.shape == (2, 5, world.TEXT_DIM) and batch.mask.sum().item() == 9
    with pytest.raises(InputError, match="no words"):
        world.encode_caption("...")


def test_image_embeddings_are_the_start_latent_patches():
    latent = torch.randn(2, 16, 1, world.LATENT_SIZE, world.LATENT_SIZE)
    tokens = world.image_embeddings(latent)
    assert tokens.shape == (2, 16, world.IMAGE_TOKEN_DIM)
    assert torch.equal(tokens.flatten().sort().values, latent.flatten().sort().values)


# ------------------------------------------------------------------ drift metrics (framepack_shapes.drift)

def test_delta_drift_compares_the_first_and_last_15_percent():
    assert drift.delta_drift(torch.ones(20)) == 0
    ramp = torch.arange(20, dtype=torch.float32)  # first 3 frames mean 1, last 3 mean 18
    assert drift.delta_drift(ramp) == pytest.approx(17.0)
    assert drift.delta_drift(torch.stack([ramp, -ramp], dim=1)) == pytest.approx(17.0)


def test_sharpness_drops_when_frames_blur():
    frames = world.render_clip(world.sample_clip(2), 2)
    blurred = torch.nn.functional.avg_pool2d(frames, 3, stride=1, padding=1, count_include_pad=False)
    assert (drift.sharpness(blurred) < 0.7 * drift.sharpness(frames)).all()


def test_the_truth_scores_no_error():
    frames = world.render_clip(world.sample_clip(2), 20)
    scores = drift.score_video(frames, frames)
    assert scores.rmse_first == scores.rmse_last == 0
    assert scores.sharpness_drift >= 0 and scores.colour_drift >= 0


def test_flicker_and_first_frame_jump_in_intensity_units():
    frames = torch.zeros(5, 3, 4, 4)
    frames[1:] = 0.2  # one step of 0.2 in [-1, 1] = 25.5 of 255, then still
    assert drift.first_frame_jump(frames) == pytest.approx(25.5)
    assert drift.flicker(frames) == pytest.approx(25.5 / 4)
    assert drift.flicker(torch.zeros(3, 3, 4, 4)) == 0


def test_noise_drawn_anew_every_frame_is_flicker_over_the_truth():
    truth = world.render_clip(world.sample_clip(2), 12)
    noisy = truth + 0.05 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(0))
    assert drift.score_video(truth, truth).flicker_excess == 0
    scores = drift.score_video(noisy, truth)
    # |a - b| of two independent N(0, 0.05) is 0.05 * 2 / sqrt(pi) on average: about 7.2 of 255
    assert scores.flicker_excess == pytest.approx(0.05 * 2 / math.sqrt(math.pi) * 127.5, rel=0.25)
    assert scores.first_jump > drift.first_frame_jump(truth) + 4


def test_temporal_table_gives_multiples_of_the_truth():
    scores = {"ground_truth": [drift.VideoScores(*[0.0] * 6, flicker=4.0, flicker_excess=0.0, first_jump=2.0)],
              "vanilla": [drift.VideoScores(*[0.0] * 6, flicker=6.0, flicker_excess=2.0, first_jump=5.0)]}
    table = drift.temporal_table(drift.summarise(scores))
    assert "| vanilla | 6.00 ± 0.00 | 1.50x | 2.00 ± 0.00 | 5.00 ± 0.00 | 2.50x |" in table


def test_a_baseline_row_sits_before_the_same_mode():
    from bench.drift import with_baseline

    merged = with_baseline({"ground_truth": 0, "vanilla": 1, "anti_drifting": 2},
                           {"ground_truth": 9, "vanilla": 3, "anti_drifting": 4}, "old")
    assert list(merged.items()) == [("ground_truth", 0), ("vanilla, old", 3), ("vanilla", 1),
                                    ("anti_drifting, old", 4), ("anti_drifting", 2)]
