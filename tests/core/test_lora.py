import pytest
import torch
from safetensors.torch import load_file

from framepack_core import InputError
from framepack_core.model.lora import convert_lora


@pytest.fixture(scope="module")
def shapes(tiny_weights_path):
    return {k: tuple(v.shape) for k, v in load_file(tiny_weights_path).items()}


def lora_pair(out_dim, in_dim, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_dim, rank, generator=g), torch.randn(rank, in_dim, generator=g)


def delta(converted, name):
    sd = converted["state_dict"]
    return sd[f"diffusion_model.{name}.lora_up.weight"] @ sd[f"diffusion_model.{name}.lora_down.weight"]


@pytest.mark.parametrize("key, down, up", [
    ("lora_unet_transformer_blocks_0_attn_to_q", "lora_down.weight", "lora_up.weight"),
    ("transformer.transformer_blocks.0.attn.to_q", "lora_A.weight", "lora_B.weight"),
    ("diffusion_model.transformer_blocks.0.attn.to_q", "lora_down.weight", "lora_up.weight"),
])
def test_framepack_named_formats(shapes, key, down, up):
    u, d = lora_pair(32, 32)
    converted = convert_lora({f"{key}.{down}": d, f"{key}.{up}": u, f"{key}.alpha": torch.tensor(2.0)}, shapes)
    torch.testing.assert_close(delta(converted, "transformer_blocks.0.attn.to_q"), u @ d)
    assert converted["state_dict"]["diffusion_model.transformer_blocks.0.attn.to_q.alpha"] == 2.0
    assert converted["unmatched"] == []


def test_original_hunyuan_names_split_fused_layers(shapes):
    qkv_up, qkv_down = lora_pair(96, 32, seed=1)
    lin1_up, lin1_down = lora_pair(96 + 128, 32, seed=2)
    lora = {"lora_unet_double_blocks_1_img_attn_qkv.lora_up.weight": qkv_up,
            "lora_unet_double_blocks_1_img_attn_qkv.lora_down.weight": qkv_down,
            "transformer.single_blocks.0.linear1.lora_B.weight": lin1_up,
            "transformer.single_blocks.0.linear1.lora_A.weight": lin1_down}
    converted = convert_lora(lora, shapes)
    full = qkv_up @ qkv_down
    for i, name in enumerate(["to_q", "to_k", "to_v"]):
        torch.testing.assert_close(delta(converted, f"transformer_blocks.1.attn.{name}"), full[32 * i:32 * (i + 1)])
    torch.testing.assert_close(delta(converted, "single_transformer_blocks.0.proj_mlp"), (lin1_up @ lin1_down)[96:])


def test_partly_matching_lora_reports_the_rest(shapes):
    u, d = lora_pair(32, 32)
    converted = convert_lora({"lora_unet_transformer_blocks_0_attn_to_k.lora_up.weight": u,
                              "lora_unet_transformer_blocks_0_attn_to_k.lora_down.weight": d,
                              "lora_unet_input_blocks_0_proj.lora_up.weight": u,
                              "lora_unet_input_blocks_0_proj.lora_down.weight": d}, shapes)
    assert converted["unmatched"] == ["lora_unet_input_blocks_0_proj"]


def test_lora_for_another_model_is_an_error(shapes):
    u, d = lora_pair(8, 8)
    with pytest.raises(InputError, match="matches no FramePack weight"):
        convert_lora({"lora_unet_input_blocks_1_0_proj_in.lora_up.weight": u,
                      "lora_unet_input_blocks_1_0_proj_in.lora_down.weight": d}, shapes)
