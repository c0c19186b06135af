"""Exactness, checked the CPU-independent way: side by side with diffusers' FramePack transformer in one process.

The golden data pins results to the CPU it was made on (about 1e-4 across CPUs, see tests/tolerances.py); the
same weights and inputs run through diffusers' ``HunyuanVideoFramepackTransformer3DModel`` here, on this CPU,
must agree with ours to float32 rounding (measured about 1e-6 on AMD EPYC). diffusers is in the ``test``
extra; without it these tests skip with a message.
"""

import pytest
import torch

from framepack_core import FramePackConfig, flow_sigmas, sample_unipc
from framepack_core.engine.sampling import FlowDenoiser
from framepack_core.model.transformer import ReferenceArguments
from tests.tolerances import SIDE_BY_SIDE

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e '.[test]'): "
                                        "skipping the side-by-side exactness check")

from bench.diffusers_reference import CONDITIONING, load_reference, write_model_folder  # noqa: E402

CASES = ("inverted", "f1")


@pytest.fixture(scope="module")
def model(model):
    """The tiny model, called with the reference's named clean inputs."""
    return ReferenceArguments(model)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_config, tiny_weights_path):
    config = FramePackConfig.from_dict({k: v for k, v in tiny_config.items() if not k.startswith("_")})
    folder = tmp_path_factory.mktemp("diffusers_tiny")
    write_model_folder(config, tiny_weights_path, folder)
    return load_reference(folder)


def case_inputs(golden, case):
    prefix = case + "/"
    return {k[len(prefix):]: v for k, v in golden.items()
            if k.startswith(prefix) and "/intermediate/" not in k and k[len(prefix):] not in ("output", "output_diffusers")}


@pytest.fixture(scope="module")
def golden(reference_dir):
    from safetensors.torch import load_file

    return load_file(reference_dir / "golden_forward.safetensors")


@pytest.mark.parametrize("case", CASES)
def test_forward_equals_diffusers_in_process(model, reference, golden, case):
    inputs = case_inputs(golden, case)
    with torch.no_grad():
        ours, theirs = model(**inputs), reference(**inputs)
    torch.testing.assert_close(ours, theirs, **SIDE_BY_SIDE)


def test_side_by_side_check_can_fail(model, reference, golden):
    """A 1-frame shift of the 4x indices in our call only is far outside the side-by-side bound."""
    inputs = case_inputs(golden, "inverted")
    shifted = {**inputs, "clean_latent_4x_indices": inputs["clean_latent_4x_indices"] + 1}
    with torch.no_grad():
        difference = (model(**shifted) - reference(**inputs)).abs().max().item()
    assert difference > 100 * SIDE_BY_SIDE["atol"]


@pytest.mark.parametrize("case", ["inverted_cfg1", "f1_cfg3"])
def test_sampler_equals_diffusers_driven_sampler(model, reference, golden_sampler, golden_sampler_info, case):
    """The same UniPC run (real CFG and rescale in f1_cfg3) driving either model ends in the same latents."""
    c = {k.split("/", 1)[1]: v for k, v in golden_sampler.items() if k.startswith(case + "/")}
    params = golden_sampler_info["cases"][case]["params"]
    shared = {k: c[k] for k in c if k.endswith("indices") or k.startswith("clean_latents")}

    def conditioning(prefix):
        names = dict(encoder_hidden_states="prompt_embeds", encoder_attention_mask="prompt_embeds_mask",
                     pooled_projections="prompt_poolers")
        return {**{k: c[prefix + v] for k, v in names.items()}, "image_embeddings": c["image_embeddings"]}

    assert set(conditioning("")) == set(CONDITIONING)
    sigmas = flow_sigmas(params["steps"], seq_len=params["seq_len"])

    def final(transformer):
        denoiser = FlowDenoiser(transformer, conditioning(""), conditioning("negative_"), shared=shared,
                                distilled_cfg=params["distilled_guidance_scale"],
                                real_cfg=params["real_guidance_scale"], cfg_rescale=params["guidance_rescale"])
        return sample_unipc(denoiser, c["initial_noise"], sigmas)

    torch.testing.assert_close(final(model), final(reference), **SIDE_BY_SIDE)

