"""Training on the shapes world: the objective learns, runs resume exactly, and the shipped model generates."""

import dataclasses

import pytest
import torch

from framepack_core import FramePackConfig, InputError, load_transformer, plan_sections
from framepack_shapes import world
from framepack_shapes.demo import DEFAULT_MODEL, generate_clip
from framepack_core.engine.planning import MODES
from framepack_core.training.objective import flow_matching_loss, motion_weights, sample_times
from framepack_core.training.trainer import (LOSS_LOG, TrainSettings, draw_step, export_model, new_model, train,
                                             train_step)
from framepack_shapes.train import ShapesSource, make_batch

TINY = FramePackConfig(num_attention_heads=2, attention_head_dim=16, rope_axes_dim=(4, 6, 6), num_layers=1,
                       num_single_layers=1, num_refiner_layers=1, text_embed_dim=world.TEXT_DIM,
                       pooled_projection_dim=world.TEXT_DIM, image_proj_dim=world.IMAGE_TOKEN_DIM, guidance_embeds=False)
SETTINGS = TrainSettings(steps=4, batch_size=2, max_sections=4, warmup_steps=2, log_every=2, save_every=100)
SOURCE = ShapesSource()


def sample_batch(settings, step=0):
    draw = draw_step(settings, step)
    return SOURCE.make_batch(draw.plan, draw.group, draw.keys)


def fixed_loss(model, batch):
    with torch.no_grad():
        return float(flow_matching_loss(model, batch))


def test_batches_use_the_inference_packing():
    batch = sample_batch(SETTINGS, step=1)
    plan = batch.plan
    assert batch.target.shape == (2, 16, 3, world.LATENT_SIZE, world.LATENT_SIZE)
    assert batch.model_inputs["latent_indices"].tolist() == [plan.latent_indices]
    assert batch.model_inputs["image_embeddings"].shape == (2, 16, world.IMAGE_TOKEN_DIM)


def clean_frames(inputs: dict) -> list:
    """Every clean context frame (B, C, H, W) of the model inputs, in the named or the grouped layout."""
    tensors = [group.latents for group in inputs.get("clean_groups") or []]
    tensors += [inputs[name] for name in ("clean_latents", "clean_latents_2x", "clean_latents_4x") if name in inputs]
    return [tensor[:, :, i] for tensor in tensors for i in range(tensor.shape[2])]


def test_inverted_batch_context_is_the_future_of_the_window():
    """An inverted section's 'post' clean latent is the true frame right after its window."""
    plan = plan_sections("inverted_anti_drifting", 3, 3)[1]
    specs = [world.sample_clip(0), world.sample_clip(1)]
    batch = make_batch(plan, specs)
    video = world.encode_frames(torch.stack([world.render_clip(s, plan.total_latent_frames) for s in specs]))
    post = plan.position + 3
    assert any(torch.equal(frame, video[:, :, post]) for frame in clean_frames(batch.model_inputs))
    assert torch.equal(batch.target, video[:, :, plan.position:post])


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    batch = sample_batch(dataclasses.replace(SETTINGS, batch_size=4), step=2)
    model = new_model(TINY, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = fixed_loss(model, batch)
    for step in range(25):
        noisy = dataclasses.replace(batch, keys=[key + step % 3 for key in batch.keys])  # three noise draws
        train_step(model, optimizer, list(model.parameters()), [noisy], 3e-3, SETTINGS)
    assert fixed_loss(model, batch) < 0.7 * before


def test_an_interrupted_run_resumes_to_the_same_parameters(tmp_path):
    straight = train(tmp_path / "straight", TINY, SETTINGS, SOURCE)
    interrupted = train(tmp_path / "resumed", TINY, SETTINGS, SOURCE, max_seconds=0)  # stops (and saves) after one step
    assert interrupted.step == 1
    resumed = train(tmp_path / "resumed", TINY, SETTINGS, SOURCE)
    assert resumed.step == straight.step == SETTINGS.steps
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)
    log_lines = (tmp_path / "resumed" / LOSS_LOG).read_text().splitlines()
    assert log_lines[0].split("\t") == ["step", "loss", "lr", "elapsed_s"] and len(log_lines) == 3


def test_resuming_with_other_settings_is_refused(tmp_path):
    train(tmp_path, TINY, SETTINGS, SOURCE)
    with pytest.raises(InputError, match="same settings"):
        train(tmp_path, TINY, dataclasses.replace(SETTINGS, batch_size=3), SOURCE)


def test_exported_weights_load_with_load_transformer(tmp_path):
    run = train(tmp_path / "run", TINY, dataclasses.replace(SETTINGS, steps=1), SOURCE)
    model = load_transformer(export_model(run, TINY, tmp_path / "tiny.safetensors"))
    assert model.config == TINY
    assert all(torch.equal(p, run.ema[name]) for name, p in model.state_dict().items())


def test_settings_are_checked():
    with pytest.raises(InputError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(InputError, match="modes"):
        TrainSettings(modes=("forward",))
    with pytest.raises(InputError, match="motion_weight must be >= 0"):
        TrainSettings(motion_weight=-1.0)
    with pytest.raises(InputError, match="time_shift must be > 0"):
        TrainSettings(time_shift=0.0)
    with pytest.raises(InputError, match="low_noise_fraction must be in"):
        TrainSettings(low_noise_fraction=1.5)
    with pytest.raises(InputError, match="mode_weights"):
        TrainSettings(modes=("vanilla", "anti_drifting"), mode_weights=(1.0,))
    with pytest.raises(InputError, match="init_weights"):
        TrainSettings(lora_rank=4)


def test_mode_weights_set_how_often_each_layout_trains():
    settings = dataclasses.replace(SETTINGS, modes=MODES, mode_weights=(3.0, 0.0, 1.0))
    modes = [draw_step(settings, step).plan.mode for step in range(400)]
    assert modes.count(MODES[1]) == 0
    assert 2.2 < modes.count(MODES[0]) / modes.count(MODES[2]) < 4.2


def test_motion_weights_emphasise_the_moving_object():
    square = world.MovingShape("square", "red", False, 6.0, 16.0, 16.0, "right", "quickly")
    still = world.ClipSpec((square,), (0.2, 0.2, 0.2), 12.0, None, None)  # plain still background
    batch = make_batch(plan_sections("vanilla", 2, 3)[1], [still])
    weights = motion_weights(batch, 4.0)
    frames = torch.cat([batch.previous, batch.target], dim=2)
    static = frames.diff(dim=2).abs().amax(dim=1, keepdim=True) < 1e-6
    assert torch.allclose(weights[static], torch.ones(())) and float(weights.max()) > 5
    model = new_model(TINY, seed=0)
    with torch.no_grad():
        plain, weighted = (float(flow_matching_loss(model, batch, motion_weight=w)) for w in (0.0, 4.0))
    assert plain != weighted


def test_time_shift_moves_training_towards_high_noise():
    plain, shifted = (sample_times(20000, 48, torch.Generator().manual_seed(0), shift) for shift in (1.0, 3.0))
    assert float((plain > 0.9).float().mean()) < 0.06 < 0.2 < float((shifted > 0.9).float().mean())
    assert 0 < float(shifted.min()) and float(shifted.max()) < 1


def test_low_noise_fraction_keeps_training_at_low_noise():
    shifted, mixed = (sample_times(20000, 48, torch.Generator().manual_seed(0), 3.0, fraction) for fraction in (0.0, 0.5))
    plain = sample_times(20000, 48, torch.Generator().manual_seed(0), 1.0)
    low = lambda t: float((t < 0.3).float().mean())  # noqa: E731
    assert low(shifted) < 0.02 and low(mixed) == pytest.approx(0.5 * low(plain) + 0.5 * low(shifted), abs=0.02)
    assert float((mixed > 0.9).float().mean()) > 0.1  # half the samples still train at high noise


def test_a_fine_tune_starts_from_the_given_weights(tmp_path):
    source = train(tmp_path / "source", TINY, dataclasses.replace(SETTINGS, steps=1, seed=5), SOURCE)  # another init
    path = export_model(source, TINY, tmp_path / "source.safetensors")
    tuned = train(tmp_path / "tuned", TINY, dataclasses.replace(SETTINGS, init_weights=str(path)), SOURCE, max_seconds=0)
    fresh = train(tmp_path / "fresh", TINY, SETTINGS, SOURCE, max_seconds=0)
    # after one step from the source weights the model is close to them, and far from a fresh start
    distance = lambda run: sum(float((p.detach() - source.ema[n]).abs().sum()) for n, p in run.model.named_parameters())  # noqa: E731
    assert distance(tuned) < 0.1 * distance(fresh)


def test_a_fine_tune_of_another_config_is_refused(tmp_path):
    source = train(tmp_path / "source", TINY, dataclasses.replace(SETTINGS, steps=1), SOURCE)
    path = export_model(source, TINY, tmp_path / "source.safetensors")
    other = dataclasses.replace(TINY, num_layers=2)
    with pytest.raises(InputError, match="another config"):
        train(tmp_path / "tuned", other, dataclasses.replace(SETTINGS, init_weights=str(path)), SOURCE)


@pytest.fixture(scope="module")
def shipped_model():
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"the shipped model {DEFAULT_MODEL} is missing; train it with python -m framepack_shapes.train")
    return load_transformer(DEFAULT_MODEL)


def test_shipped_model_is_small_and_self_describing(shipped_model):
    assert DEFAULT_MODEL.stat().st_size <= 20 * 2 ** 20
    assert shipped_model.config.text_embed_dim == world.TEXT_DIM


@pytest.mark.parametrize("mode", MODES)
def test_shipped_model_generates_one_section_in_every_mode(shipped_model, mode):
    latents = generate_clip(shipped_model, world.sample_clip(0, "test"), mode, 1, steps=2)
    assert latents.shape == (1, 16, 4, world.LATENT_SIZE, world.LATENT_SIZE)
    assert torch.isfinite(latents).all()
