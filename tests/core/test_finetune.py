"""LoRA fine-tuning: musubi-tuner's targets and key format, the file loads as the pack's loader reads it, low-precision
base storage, gradient checkpointing, exact resume, and the colour-on-bounce world the shapes LoRA learns."""

import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from framepack_core.errors import InputError
from framepack_core.model.checkpoint import save_config_metadata
from framepack_core.model.lora import convert_lora, read_lora
from framepack_core.training.lora import LoraAdapters, save_lora, target_modules
from framepack_core.training.objective import flow_matching_loss
from framepack_core.training.trainer import (CHECKPOINT, TrainSettings, draw_step, export_lora, new_model, train)
from framepack_shapes import world
from framepack_shapes.train import ShapesSource

from test_train import TINY

DUAL = {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
        "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"}
SINGLE = {"attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"}


def base_model(seed=3):
    model = new_model(TINY, seed=seed)
    torch.nn.init.normal_(model.proj_out.weight, std=0.02)
    return model


def a_batch(step=0, batch_size=2):
    draw = draw_step(TrainSettings(batch_size=batch_size, max_sections=3), step)
    return ShapesSource().make_batch(draw.plan, draw.group, draw.keys)


def randomise(adapters, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapters.named_parameters():
            param.copy_(0.05 * torch.randn(param.shape, generator=generator))


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    model = base_model()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata=save_config_metadata(TINY))
    return path


def test_targets_are_musubis_framepack_targets():
    names = set(target_modules(base_model()))
    assert names == ({f"transformer_blocks.0.{n}" for n in DUAL} | {f"single_transformer_blocks.0.{n}" for n in SINGLE})


def test_fresh_adapters_change_nothing_and_only_adapters_train():
    model, batch = base_model(), a_batch()
    with torch.no_grad():
        before = flow_matching_loss(model, batch)
    adapters = LoraAdapters(model, rank=4, alpha=4.0)
    with torch.no_grad():
        assert torch.equal(flow_matching_loss(model, batch), before)
    flow_matching_loss(model, batch).backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in adapters.parameters())


def test_saved_lora_has_musubi_keys_and_loads_as_the_pack_loader_reads_it(tmp_path):
    """The file converts with the loader's ``convert_lora``; merging it as ComfyUI does (W + alpha/rank up@down)
    gives the adapted model's output, and reading it back gives the same adapter weights."""
    model, batch = base_model(), a_batch()
    adapters = LoraAdapters(model, rank=4, alpha=2.0)
    randomise(adapters)
    path = tmp_path / "lora.safetensors"
    save_lora(adapters, path)
    tensors = read_lora(path)
    assert "lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight" in tensors
    assert float(tensors["lora_unet_single_transformer_blocks_0_proj_mlp.alpha"]) == 2.0
    with torch.no_grad():
        adapted = model(hidden_states=batch.target, timestep=torch.tensor([500.0]), **batch.model_inputs)

    plain = base_model()
    converted = convert_lora(tensors, {k: tuple(v.shape) for k, v in plain.state_dict().items()})
    assert converted["report"].unmatched == [] and len(converted["report"].applied) == len(DUAL) + len(SINGLE)
    merged = merge(plain, converted["state_dict"])
    with torch.no_grad():
        reference = merged(hidden_states=batch.target, timestep=torch.tensor([500.0]), **batch.model_inputs)
    torch.testing.assert_close(adapted, reference, atol=1e-5, rtol=1e-4)

    again = LoraAdapters(base_model(), rank=4, alpha=2.0)
    again.load_state_dict(tensors)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), adapters.state_dict().values()))


def merge(model, state_dict: dict):
    """Apply a converted LoRA the way ComfyUI does: weight += alpha / rank x up @ down."""
    weights = dict(model.named_parameters())
    with torch.no_grad():
        for key, up in state_dict.items():
            if key.endswith(".lora_up.weight"):
                layer = key[len("diffusion_model."):-len(".lora_up.weight")]
                down = state_dict[key.replace("lora_up", "lora_down")]
                alpha = state_dict[f"diffusion_model.{layer}.alpha"]
                weights[layer + ".weight"] += float(alpha) / down.shape[0] * (up @ down)
    return model


@pytest.mark.parametrize("storage", ["bfloat16", "float8_e4m3fn"])
def test_low_precision_base_storage_computes_in_float32(storage):
    batch = a_batch()
    reference, model = base_model(), base_model()
    LoraAdapters(model, rank=2, alpha=2.0, storage_dtype=storage)
    for name in target_modules(model):
        assert model.get_submodule(name).weight.dtype == getattr(torch, storage)
    with torch.no_grad():
        low, high = (m(hidden_states=batch.target, timestep=torch.tensor([500.0]), **batch.model_inputs)
                     for m in (model, reference))
    assert low.dtype == torch.float32
    error = float((low - high).norm() / high.norm())
    assert 0 < error < (0.02 if storage == "bfloat16" else 0.15)


def test_gradient_checkpointing_gives_the_same_gradients(base_file, tmp_path):
    settings = TrainSettings(steps=2, batch_size=2, max_sections=3, warmup_steps=1, save_every=100,
                             init_weights=str(base_file), lora_rank=2, lora_alpha=2.0)
    plain = train(tmp_path / "plain", TINY, settings, ShapesSource())
    recomputed = train(tmp_path / "ckpt", TINY, settings, ShapesSource(), gradient_checkpointing=True)
    for (name, a), b in zip(plain.trained.trainable().items(), recomputed.trained.trainable().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_an_interrupted_lora_run_resumes_exactly_and_exports_its_ema(base_file, tmp_path):
    settings = TrainSettings(steps=3, batch_size=2, max_sections=3, warmup_steps=1, save_every=100, ema_decay=0.5,
                             init_weights=str(base_file), lora_rank=2, lora_alpha=2.0, learning_rate=3e-3)
    straight = train(tmp_path / "straight", TINY, settings, ShapesSource(True))
    assert train(tmp_path / "resumed", TINY, settings, ShapesSource(True), max_seconds=0).step == 1
    resumed = train(tmp_path / "resumed", TINY, settings, ShapesSource(True))
    for (name, a), b in zip(straight.trained.trainable().items(), resumed.trained.trainable().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    tensors = read_lora(export_lora(resumed, tmp_path / "lora.safetensors"))
    assert all(torch.equal(tensors[name], resumed.ema[name]) for name in resumed.ema)
    assert not torch.equal(tensors["lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight"],
                           resumed.trained.trainable()["lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight"])


def test_bad_lora_settings_are_refused(base_file, tmp_path):
    with pytest.raises(InputError, match="rank"):
        LoraAdapters(base_model(), rank=0, alpha=1.0)
    with pytest.raises(InputError, match="alpha"):
        LoraAdapters(base_model(), rank=2, alpha=0.0)
    with pytest.raises(InputError, match="base_storage"):
        TrainSettings(init_weights=str(base_file), lora_rank=2, base_storage="int4")
    run = train(tmp_path, TINY, TrainSettings(steps=1, batch_size=1, max_sections=2), ShapesSource())
    with pytest.raises(InputError, match="export_model"):
        export_lora(run, tmp_path / "x.safetensors")


def test_colour_on_bounce_changes_the_colour_exactly_at_the_bounce():
    square = world.MovingShape("square", "red", False, 6.0, 22.0, 16.0, "right", "quickly")  # reaches x = 26 at t = 2
    plain = world.ClipSpec((square,), (0.2, 0.2, 0.2), 12.0, None, None)
    variant = dataclasses.replace(plain, colour_on_bounce=True)
    centre = lambda frames, t: frames[t, :, 16, int(22 + 2 * t if t <= 2 else 26 - 2 * (t - 2))]  # noqa: E731
    a, b = world.render_clip(plain, 6), world.render_clip(variant, 6)
    assert torch.equal(a[:2], b[:2])  # the same clip until the object touches the wall at frame 2
    red, cyan = (torch.tensor(world.COLOURS[c]) * 2 - 1 for c in ("red", "cyan"))
    assert all(torch.allclose(centre(a, t), red) for t in range(6))
    assert torch.allclose(centre(b, 1), red) and all(torch.allclose(centre(b, t), cyan) for t in range(2, 6))
    assert world.sample_clip(7) == dataclasses.replace(world.sample_clip(7, colour_on_bounce=True),
                                                       colour_on_bounce=False)
