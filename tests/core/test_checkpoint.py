"""Checkpoint formats load to the same model; every kind of bad file gets a clear CheckpointError."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from framepack_core import CheckpointError, CheckpointNotFoundError, load_transformer
from framepack_core.model.checkpoint import INDEX_NAME, save_config_metadata, storage_dtype
from framepack_core.model.transformer import ReferenceArguments
from framepack_core.model.config import FramePackConfig
from tests.tolerances import BFLOAT16_RELATIVE_L2, FLOAT32_RELATIVE_L2

# Relative L2 error of the output against the golden float32 output. float32 and bfloat16 bounds come from the
# cross-CPU measurements in tests/tolerances.py; fp8 weights are upcast and computed in float32, so their
# error (e4m3 ~0.021, e5m2 ~0.045 with random tiny weights, on AMD and Intel alike) gets about 2x headroom.
REL_TOL = {torch.float32: FLOAT32_RELATIVE_L2, torch.bfloat16: BFLOAT16_RELATIVE_L2, torch.float8_e4m3fn: 0.05,
           torch.float8_e5m2: 0.1}


@pytest.fixture(scope="module")
def tiny_state(tiny_weights_path):
    return load_file(tiny_weights_path)


@pytest.fixture(scope="module")
def golden_case(reference_dir):
    golden = load_file(reference_dir / "golden_forward.safetensors")
    args = {k[len("f1/"):]: v for k, v in golden.items() if k.startswith("f1/") and "/intermediate/" not in k}
    args.pop("output_diffusers")
    return args.pop("output"), args


def convert(state, dtype):
    return {k: v.to(storage_dtype(k, v.dtype, dtype)) for k, v in state.items()}


def write_single(path, state, metadata=None):
    save_file(state, str(path), metadata=metadata)
    return path


def write_diffusers_folder(folder, state, config, shards=3):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "HunyuanVideoTransformer3DModelPacked", **config}))
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def relative_error(model, golden_case):
    reference, args = golden_case
    with torch.no_grad():
        out = ReferenceArguments(model)(**args)
    return ((out - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("dtype", list(REL_TOL), ids=str)
def test_single_file_loads_in_every_dtype(tmp_path, tiny_state, golden_case, dtype):
    path = write_single(tmp_path / "framepack.safetensors", convert(tiny_state, dtype))
    model = load_transformer(path)
    stored = {p.dtype for n, p in model.named_parameters() if "transformer_blocks" in n and n.endswith("to_q.weight")}
    assert stored == {dtype}
    assert model.proj_out.weight.dtype == torch.float32
    assert relative_error(model, golden_case) < REL_TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn], ids=str)
def test_sharded_diffusers_folder_loads(tmp_path, tiny_state, tiny_config, golden_case, dtype):
    state = convert(tiny_state, dtype)
    folder = write_diffusers_folder(tmp_path / "FramePackI2V_HY", state, tiny_config)
    model = load_transformer(folder)
    assert model.config == FramePackConfig.from_dict(tiny_config)
    assert relative_error(model, golden_case) < REL_TOL[dtype]
    # The same weights from one file: the folder must load exactly the same parameters, bit for bit.
    single = load_transformer(write_single(tmp_path / "framepack.safetensors", state)).state_dict()
    for name, value in model.state_dict().items():
        assert value.dtype == single[name].dtype and torch.equal(value.float(), single[name].float()), name


def test_fp8_storage_keeps_norms_biases_and_embedders_in_higher_precision(tmp_path, tiny_weights_path):
    model = load_transformer(tiny_weights_path, dtype=torch.float8_e4m3fn)
    for name, param in model.named_parameters():
        block_weight = name.startswith(("transformer_blocks", "single_transformer_blocks")) and name.endswith(".weight") \
            and "norm" not in name
        assert (param.dtype == torch.float8_e4m3fn) == block_weight, name
    assert model.compute_dtype == torch.float32


def test_requested_dtype_converts_weights(tiny_weights_path):
    model = load_transformer(tiny_weights_path, dtype=torch.bfloat16)
    assert model.compute_dtype == torch.bfloat16
    assert {p.dtype for n, p in model.named_parameters() if not n.startswith("proj_out")} == {torch.bfloat16}


def test_config_metadata_overrides_inference(tmp_path, tiny_state, tiny_config):
    config = FramePackConfig.from_dict({**tiny_config, "rope_axes_dim": [2, 8, 6]})
    path = write_single(tmp_path / "m.safetensors", tiny_state, save_config_metadata(config))
    assert load_transformer(path).config.rope_axes_dim == (2, 8, 6)


def test_prefixed_keys_load(tmp_path, tiny_state):
    path = write_single(tmp_path / "m.safetensors", {"model.diffusion_model." + k: v for k, v in tiny_state.items()})
    assert load_transformer(path).config.num_layers == 2


def test_loading_builds_no_second_copy(tiny_weights_path):
    """Parameters are the loaded tensors themselves (assigned), not copies into freshly initialised ones."""
    model = load_transformer(tiny_weights_path)
    assert not any(p.is_meta for p in model.parameters())
    assert all(not p.requires_grad for p in model.parameters())


# ----------------------------------------------------------------------------------------------- bad files

def expect_error(path, *fragments, error=CheckpointError):
    with pytest.raises(error) as info:
        load_transformer(path)
    message = str(info.value)
    assert str(path) in message or path.name in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_path(tmp_path):
    expect_error(tmp_path / "nope.safetensors", "not found", "models/diffusion_models", error=CheckpointNotFoundError)


def test_truncated_file(tmp_path, tiny_weights_path):
    data = tiny_weights_path.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    expect_error(path, "truncated or corrupt", "Download it again")


def test_corrupt_header(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + bytes(64))
    expect_error(path, "truncated or corrupt")


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"\x80\x04not really a pickle")
    expect_error(path, "pickle", ".safetensors")


@pytest.mark.parametrize("keys, fragment", [
    ({"double_blocks.0.img_attn_qkv.weight": (6, 2), "txt_in.individual_token_refiner.blocks.0.norm1.weight": (2,)},
     "plain HunyuanVideo"),
    ({"double_blocks.0.img_attn.qkv.weight": (6, 2), "img_in.weight": (2, 4)}, "Flux"),
    ({"transformer_blocks.0.attn.to_q.lora_A.weight": (4, 2), "transformer_blocks.0.attn.to_q.lora_B.weight": (2, 4)},
     "LoraLoaderModelOnly"),
    ({"encoder.down_blocks.0.resnets.0.conv1.weight": (2, 2, 3, 3), "decoder.conv_out.weight": (3, 2, 3, 3)}, "VAELoader"),
    ({"x_embedder.proj.weight": (4, 16, 1, 2, 2), "transformer_blocks.0.attn.to_q.weight": (4, 4)},
     "without FramePack's clean_x_embedder and image_projection"),
    ({"model.layers.0.mlp.up_proj.weight": (4, 2)}, "not a FramePack transformer"),
])
def test_other_models_are_named(tmp_path, keys, fragment):
    path = write_single(tmp_path / "other.safetensors", {k: torch.zeros(s) for k, s in keys.items()})
    expect_error(path, fragment)


def test_missing_tensor(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["single_transformer_blocks.1.proj_out.weight"]
    expect_error(write_single(tmp_path / "m.safetensors", state), "1 tensor(s) are missing",
                 "single_transformer_blocks.1.proj_out.weight")


def test_wrong_shape(tmp_path, tiny_state, tiny_config):
    state = dict(tiny_state)
    state["transformer_blocks.0.ff.net.2.bias"] = torch.zeros(33)
    folder = write_diffusers_folder(tmp_path / "folder", state, tiny_config)
    expect_error(folder, "wrong shape", "transformer_blocks.0.ff.net.2.bias")


def test_missing_shard(tmp_path, tiny_state, tiny_config):
    folder = write_diffusers_folder(tmp_path / "folder", tiny_state, tiny_config)
    (folder / "diffusion_pytorch_model-00002-of-00003.safetensors").unlink()
    expect_error(folder, "incomplete", "diffusion_pytorch_model-00002-of-00003.safetensors")


def test_folder_without_weights(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    expect_error(folder, "not a diffusers transformer folder")


def test_bad_config_json(tmp_path, tiny_state, tiny_config):
    folder = write_diffusers_folder(tmp_path / "folder", tiny_state, {**tiny_config, "rope_axes_dim": [4, 4, 4]})
    expect_error(folder, "config is unusable", "rope_axes_dim")


PEAK_RSS_SCRIPT = """
import sys, torch
from framepack_core import load_transformer

def status(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field)) * 1024

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS:")
model = load_transformer(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
print((status("VmHWM:") - before) / weights)
"""


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_loading_peak_memory_stays_near_the_weights_size(tmp_path, dtype):
    """Peak RSS of a fresh process while loading a 200 MB fp32 file, relative to the loaded weights' size.

    Measured: ~1.05 for float32 (the weights stay mapped from the file, each read once by the NaN check, so its
    pages count in RSS as page cache) and ~1.26 for bfloat16 (the converted copy plus allocator overhead);
    converting through the memory map instead peaks at ~3.0.
    """
    import subprocess
    import sys

    config = FramePackConfig(num_attention_heads=8, attention_head_dim=64, rope_axes_dim=(16, 24, 24), num_layers=2,
                             num_single_layers=2, text_embed_dim=512)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in __import__("framepack_core").FramePackTransformer(config).state_dict().items()}
    path = tmp_path / "mid.safetensors"
    save_file({k: torch.ones(s) for k, s in shapes.items()}, str(path), metadata=save_config_metadata(config))
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(path), dtype], capture_output=True, text=True,
                            cwd=str(tmp_path), env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 1.5
