"""Golden parity of the transformer against the two reference implementations (float32, CPU)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from framepack_core import FramePackConfig, FramePackTransformer, InputError, load_transformer
from framepack_core.model.transformer import ReferenceArguments
from tests.tolerances import FORWARD as TOL

CASES = ("inverted", "f1")


@pytest.fixture(scope="module")
def model(model):
    """The tiny model, called with the reference's named clean inputs."""
    return ReferenceArguments(model)


@pytest.fixture(scope="module")
def golden(reference_dir):
    return load_file(reference_dir / "golden_forward.safetensors")


def case_inputs(golden, case):
    prefix = case + "/"
    skip = ("output", "output_diffusers")
    return {k[len(prefix):]: v for k, v in golden.items()
            if k.startswith(prefix) and "/intermediate/" not in k and k[len(prefix):] not in skip}


def expected(golden, case, name):
    return golden[f"{case}/intermediate/{name}"]


@pytest.mark.parametrize("case", CASES)
def test_output_matches_reference(model, golden, case):
    with torch.no_grad():
        out = model(**case_inputs(golden, case))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, golden[f"{case}/output"], **TOL)


@pytest.mark.parametrize("case", CASES)
def test_embeddings_match_reference(model, golden, case):
    args = case_inputs(golden, case)
    with torch.no_grad():
        temb = model.time_text_embed(args["timestep"], args["pooled_projections"], args["guidance"])
        image_tokens = model.image_projection(args["image_embeddings"])
        ctx, _ = model.encode_context(args["encoder_hidden_states"], args["encoder_attention_mask"],
                                      args["timestep"], args["image_embeddings"])
    torch.testing.assert_close(temb, expected(golden, case, "temb"), **TOL)
    torch.testing.assert_close(image_tokens, expected(golden, case, "image_tokens"), **TOL)
    torch.testing.assert_close(ctx[:, image_tokens.shape[1]:], expected(golden, case, "context_tokens"), **TOL)


@pytest.mark.parametrize("case", CASES)
def test_packed_tokens_and_rope_match_reference(model, golden, case):
    args = case_inputs(golden, case)
    clean = {k: v for k, v in args.items() if k.startswith("clean_")}
    with torch.no_grad():
        packed = model.pack_image_tokens(args["hidden_states"], args["latent_indices"], **clean)
    torch.testing.assert_close(packed.tokens, expected(golden, case, "packed_tokens"), **TOL)
    torch.testing.assert_close(packed.cos[0], expected(golden, case, "rope_cos"), **TOL)
    torch.testing.assert_close(packed.sin[0], expected(golden, case, "rope_sin"), **TOL)


@pytest.mark.parametrize("case", CASES)
def test_every_block_matches_reference(model, golden, case):
    captured = {}
    hooks = [block.register_forward_hook(lambda mod, inp, out, name=f"double_block_{i}": captured.__setitem__(name, out))
             for i, block in enumerate(model.transformer_blocks)]
    hooks += [block.register_forward_hook(lambda mod, inp, out, name=f"single_block_{i}": captured.__setitem__(name, out))
              for i, block in enumerate(model.single_transformer_blocks)]
    try:
        with torch.no_grad():
            model(**case_inputs(golden, case))
    finally:
        for hook in hooks:
            hook.remove()
    assert len(captured) == 4
    for name, (hidden, context) in captured.items():
        torch.testing.assert_close(hidden, expected(golden, case, f"{name}_hidden"), **TOL)
        torch.testing.assert_close(context, expected(golden, case, f"{name}_context"), **TOL)


def test_padded_text_rows_do_not_affect_the_output(model, golden):
    args = case_inputs(golden, "inverted")
    noisy = args["encoder_hidden_states"].clone()
    noisy[:, int(args["encoder_attention_mask"].sum()):] = 1e3
    with torch.no_grad():
        torch.testing.assert_close(model(**{**args, "encoder_hidden_states": noisy}), model(**args), atol=0, rtol=0)


def test_small_input_changes_are_detected(model, golden):
    """The parity tests can fail: a 1-frame shift of the 4x indices moves the output well past the tolerance."""
    args = case_inputs(golden, "inverted")
    shifted = {**args, "clean_latent_4x_indices": args["clean_latent_4x_indices"] + 1}
    with torch.no_grad():
        out = model(**shifted)
    assert (out - golden["inverted/output"]).abs().max() > 1e-3


def test_batch_with_different_text_lengths_matches_single_runs(model, golden):
    """Batch 2 with text lengths 17 and 9 (key-padding mask) equals two batch-1 runs."""
    args = case_inputs(golden, "inverted")
    second_mask = args["encoder_attention_mask"].clone()
    second_mask[:, 9:] = False
    gen = torch.Generator().manual_seed(0)
    second = {k: (torch.randn(v.shape, generator=gen) if k in ("hidden_states", "pooled_projections", "image_embeddings")
                  else v) for k, v in args.items()}
    second["encoder_attention_mask"] = second_mask
    second["timestep"] = torch.tensor([400.0])
    batched = {k: torch.cat([args[k], second[k]]) if not k.endswith("indices") else args[k] for k in args}
    with torch.no_grad():
        out = model(**batched)
        torch.testing.assert_close(out[:1], model(**args), **TOL)
        torch.testing.assert_close(out[1:], model(**second), **TOL)


def test_clean_groups_are_optional(model, golden):
    args = case_inputs(golden, "f1")
    minimal = {k: v for k, v in args.items() if not k.startswith("clean_")}
    with torch.no_grad():
        out = model(**minimal)
    assert out.shape == args["hidden_states"].shape and torch.isfinite(out).all()
    assert (out - golden["f1/output"]).abs().max() > 1e-3


def test_half_group_is_an_error(model, golden):
    args = case_inputs(golden, "f1")
    args.pop("clean_latent_2x_indices")
    with pytest.raises(InputError, match="clean_latent_2x_indices is missing"):
        model(**args)


def test_latent_size_not_multiple_of_patch_is_an_error(model, golden):
    args = case_inputs(golden, "f1")
    args["hidden_states"] = args["hidden_states"][..., :7]
    with pytest.raises(InputError, match="bucket"):
        model(**args)


def test_full_size_model_matches_manifest(reference_dir):
    manifest = json.loads((reference_dir / "framepack_i2v_hy_keys.json").read_text())
    config = json.loads((reference_dir / "framepack_i2v_hy_config.json").read_text())
    with torch.device("meta"):
        model = FramePackTransformer.from_config(config)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {name: shape for name, shape in manifest}
    assert sum(v.numel() for v in model.state_dict().values()) == 12_874_314_816
    assert model.config == FramePackConfig()


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 0.25), (torch.float16, 0.05)])
def test_half_precision_runs_close_to_float32(tiny_weights_path, golden, dtype, tol):
    model = ReferenceArguments(load_transformer(tiny_weights_path, dtype=dtype))
    assert model.proj_out.weight.dtype == torch.float32
    with torch.no_grad():
        out = model(**case_inputs(golden, "f1"))
    assert out.dtype == torch.float32
    reference = golden["f1/output"]
    assert ((out - reference).abs().max() / reference.abs().max()).item() < tol
