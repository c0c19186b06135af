"""Object tracks of shapes videos: found where the world draws them, and scored against the true clip."""

import dataclasses
import math

import torch

from framepack_shapes import motion, world


def square_clip(direction="right", speed="quickly", x=12.0):
    square = world.MovingShape("square", "yellow", False, 5.0, x, 16.0, direction, speed)
    return world.ClipSpec((square,), (0.2, 0.25, 0.3), 12.0, "up", None)


def test_track_follows_the_drawn_object_over_a_textured_panning_background():
    spec = square_clip()
    track = motion.object_centroids(world.render_clip(spec, 6), "yellow")
    true_x = 12.0 + world.SPEEDS["quickly"] * torch.arange(6.0)
    assert torch.allclose(track[:, 0], true_x, atol=0.1) and torch.allclose(track[:, 1], torch.full((6,), 16.0), atol=0.1)


def test_track_survives_the_latent_codec():
    spec = world.sample_clip(0, "test")
    frames = world.render_clip(spec, 8)
    decoded = world.decode_latents(world.encode_frames(frames))[0]
    colour = spec.objects[0].colour
    error = (motion.object_centroids(decoded, colour) - motion.object_centroids(frames, colour)).norm(dim=1)
    assert float(error.max()) < 0.5


def test_a_missing_object_has_no_track():
    empty = world.render_clip(world.ClipSpec((), (0.2, 0.2, 0.2), 12.0, None, None), 2)
    assert motion.object_centroids(empty, "red").isnan().all()


def test_the_true_video_scores_perfectly_and_a_frozen_one_as_the_static_baseline():
    spec = square_clip()
    truth = world.render_clip(spec, 10)
    perfect = motion.score_motion(truth, truth, spec, window=3)
    assert perfect.track_error < 1e-5 and perfect.moved_as_captioned and perfect.lost_fraction == 0
    frozen = motion.score_motion(truth[:1].expand(10, -1, -1, -1), truth, spec, window=3, early=5)
    assert math.isclose(frozen.track_error, frozen.static_error, rel_tol=1e-4)
    assert math.isclose(frozen.early_error, frozen.early_static_error, rel_tol=1e-4)
    assert frozen.early_static_error < frozen.static_error  # the object gets further away over the whole clip
    assert frozen.static_error > 1 and not frozen.moved_as_captioned


def test_moving_the_wrong_way_is_not_moving_as_captioned():
    spec, backwards = square_clip("right", x=16.0), square_clip("left", x=16.0)
    score = motion.score_motion(world.render_clip(backwards, 10), world.render_clip(spec, 10), spec, window=3)
    assert not score.moved_as_captioned and score.track_error > score.static_error


def test_a_lost_object_scores_like_a_static_one():
    spec = square_clip()
    truth = world.render_clip(spec, 10)
    lost = world.render_clip(world.ClipSpec((), spec.background, 12.0, "up", None), 10)
    score = motion.score_motion(lost, truth, spec, window=3, early=4)
    assert score.lost_fraction == 1 and not score.moved_as_captioned
    assert (score.track_error, score.early_error) == (score.static_error, score.early_static_error)


def bar_clip(orientation="vertical", position=16.0):
    square = world.MovingShape("square", "yellow", False, 5.0, 6.0, 16.0, "right", "quickly")
    return world.ClipSpec((square,), (0.2, 0.25, 0.3), 12.0, None, (orientation, position))


def test_the_truth_keeps_the_object_behind_the_bar_even_through_the_codec():
    spec = bar_clip()
    truth = world.render_clip(spec, 12)
    hidden, shown = motion.occlusion_counts(truth, spec)
    assert hidden >= 3 and shown == 0
    decoded = world.decode_latents(world.encode_frames(truth))[0].clamp(-1, 1)
    assert motion.occlusion_counts(decoded, spec) == (hidden, 0)


def test_an_object_drawn_over_the_bar_is_counted():
    spec = bar_clip()
    in_front = world.render_clip(dataclasses.replace(spec, occluder=None), 12)
    hidden, shown = motion.occlusion_counts(in_front, spec)
    assert shown == hidden >= 3
    score = motion.score_motion(in_front, world.render_clip(spec, 12), spec, window=3)
    assert (score.hidden_frames, score.shown_over_bar) == (hidden, shown)


def test_clips_without_a_bar_have_no_occlusion_frames():
    spec = square_clip()
    assert motion.occlusion_counts(world.render_clip(spec, 6), spec) == (0, 0)
