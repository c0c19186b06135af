"""bench.make_checkpoint: random-weight checkpoints of the released layout, written tensor by tensor."""

import json

import pytest
import torch
from safetensors import safe_open

from bench.bench_forward import f1_inputs
from bench.make_checkpoint import (CheckpointWriteError, load_config, random_tensor, tensor_plan, write_diffusers_folder,
                                   write_single_file)
from bench.memory_model import LiveTensorBytes
from framepack_core import FramePackConfig, load_transformer
from framepack_core.model.checkpoint import storage_dtype
from framepack_core.model.transformer import ReferenceArguments

# Narrow but deep: the 13B model's 20 + 40 blocks at width 64, to follow activations through every block.
DEEP = dict(num_attention_heads=2, attention_head_dim=32, num_layers=20, num_single_layers=40, num_refiner_layers=2,
            text_embed_dim=48, pooled_projection_dim=16, image_proj_dim=24, rope_axes_dim=(8, 12, 12))


@pytest.fixture(scope="module")
def tiny(tiny_config):
    return FramePackConfig.from_dict({k: v for k, v in tiny_config.items() if not k.startswith("_")})


def test_plan_of_the_released_config_is_the_reference_manifest(reference_dir):
    manifest = json.loads((reference_dir / "framepack_i2v_hy_keys.json").read_text())
    plan = tensor_plan(load_config(reference_dir / "framepack_i2v_hy_config.json"))
    assert [[name, list(shape)] for name, shape in plan] == manifest
    assert len(plan) == 1274
    assert sum(torch.Size(shape).numel() for _, shape in plan) == 12_874_314_816


def test_fp8_file_loads_with_the_repack_dtypes(tmp_path, tiny):
    path = tmp_path / "tiny_fp8.safetensors"
    result = write_single_file(tiny, path, "fp8", seed=3)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny_fp8.safetensors"]  # no partial file left
    plan = dict(tensor_plan(tiny))
    with safe_open(str(path), framework="pt") as handle:
        stored = {name: handle.get_slice(name).get_dtype() for name in handle.keys()}
    fp8 = {name for name, dtype in stored.items() if dtype == "F8_E4M3"}
    assert fp8 == {n for n in plan if n.startswith(("transformer_blocks.", "single_transformer_blocks."))
                   and n.endswith(".weight") and "norm" not in n}
    assert set(stored.values()) == {"F8_E4M3", "BF16"}
    assert result["parameters"] == sum(torch.Size(s).numel() for s in plan.values())

    model = load_transformer(path)
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == plan
    for name, tensor in state.items():
        file_dtype = torch.float8_e4m3fn if name in fp8 else torch.bfloat16
        assert tensor.dtype == storage_dtype(name, file_dtype, None), name
    assert model.compute_dtype == torch.bfloat16
    # What was written is the recipe's tensor in the stored dtype.
    name = "transformer_blocks.1.attn.to_q.weight"
    expected = random_tensor(name, plan[name], seed=3).to(torch.float8_e4m3fn)
    assert torch.equal(state[name].view(torch.uint8), expected.view(torch.uint8))
    # The pack's loader asks for fp8 storage explicitly (weight_dtype fp8_e4m3fn): the same tensors come back.
    again = load_transformer(path, dtype=torch.float8_e4m3fn).state_dict()
    assert all(again[k].dtype == v.dtype for k, v in state.items())


def test_diffusers_folder_equals_the_bf16_file(tmp_path, tiny):
    folder = tmp_path / "tiny_diffusers"
    write_diffusers_folder(tiny, folder, seed=1, shard_bytes=40_000)
    index = json.loads((folder / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    single = tmp_path / "tiny_bf16.safetensors"
    write_single_file(tiny, single, "bf16", seed=1)
    a, b = load_transformer(folder).state_dict(), load_transformer(single).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_transformer(folder).config == tiny


def test_writer_holds_one_tensor_not_the_model(tmp_path):
    config = FramePackConfig(**DEEP)
    plan = tensor_plan(config)
    largest = max(torch.Size(s).numel() for _, s in plan) * 4
    total = sum(torch.Size(s).numel() for _, s in plan) * 4
    counter = LiveTensorBytes(set())
    with counter:
        write_single_file(config, tmp_path / "deep.safetensors", "fp8")
    # One float32 tensor and its stored copy; the whole model is 23x the largest tensor here.
    assert total > 20 * largest
    assert 0 < counter.peak <= 2 * largest


def test_activations_stay_bounded_through_sixty_blocks(tmp_path):
    config = FramePackConfig(**DEEP)
    path = tmp_path / "deep_fp8.safetensors"
    write_single_file(config, path, "fp8")
    model = load_transformer(path)
    norms = []
    for block in list(model.transformer_blocks) + list(model.single_transformer_blocks):
        block.register_forward_hook(lambda module, args, out: norms.append(out[0].float().pow(2).mean().sqrt().item()))
    inputs = f1_inputs(config)
    with torch.inference_mode():
        out = ReferenceArguments(model)(**inputs)
    assert len(norms) == 60
    assert torch.isfinite(out).all() and all(n == n for n in norms)
    # The residual stream's RMS stays within a small factor of the first block's through all 60 blocks.
    assert 0.5 < min(norms) / norms[0] and max(norms) / norms[0] < 4, norms
    assert 0.1 < out.std().item() < 10


def test_existing_target_is_refused_and_a_failed_write_leaves_nothing(tmp_path, tiny):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"mine")
    with pytest.raises(CheckpointWriteError, match="already exists"):
        write_single_file(tiny, path)
    assert path.read_bytes() == b"mine"

    def failing(name, shape):
        if name.startswith("single_transformer_blocks"):
            raise KeyboardInterrupt
        return torch.zeros(shape)

    target = tmp_path / "interrupted.safetensors"
    with pytest.raises(KeyboardInterrupt):
        write_single_file(tiny, target, make=failing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
