"""End-to-end sampler parity: tiny transformer + FlowDenoiser + UniPC reproduce the reference's final latents."""

import pytest
import torch

from framepack_core.engine.sampling import FlowDenoiser, flow_sigmas, sample_unipc
from framepack_core.model.transformer import ReferenceArguments
from tests.tolerances import SAMPLER as TOL

CASES = ("inverted_cfg1", "f1_cfg3")
SHARED = ("latent_indices", "clean_latents", "clean_latent_indices", "clean_latents_2x", "clean_latent_2x_indices",
          "clean_latents_4x", "clean_latent_4x_indices")


@pytest.fixture(scope="module")
def model(model):
    """The tiny model, called with the reference's named clean inputs."""
    return ReferenceArguments(model)


def conditioning(c, prefix):
    """Positive (prefix "") or negative ("negative_") conditioning keywords of a golden_sampler case."""
    return dict(encoder_hidden_states=c[prefix + "prompt_embeds"],
                encoder_attention_mask=c[prefix + "prompt_embeds_mask"],
                pooled_projections=c[prefix + "prompt_poolers"], image_embeddings=c["image_embeddings"])


@pytest.mark.parametrize("case", CASES)
def test_unipc_with_tiny_model_matches_reference(golden_sampler, golden_sampler_info, model, case):
    """Every step's state and x0, and the final latents, match the reference run (real CFG and rescale in f1_cfg3)."""
    c = {k.split("/", 1)[1]: v for k, v in golden_sampler.items() if k.startswith(case + "/")}
    params = golden_sampler_info["cases"][case]["params"]
    denoiser = FlowDenoiser(model, conditioning(c, ""), conditioning(c, "negative_"),
                            shared={name: c[name] for name in SHARED},
                            distilled_cfg=params["distilled_guidance_scale"],
                            real_cfg=params["real_guidance_scale"], cfg_rescale=params["guidance_rescale"])
    sigmas = flow_sigmas(params["steps"], seq_len=params["seq_len"])
    steps_seen = {}
    result = sample_unipc(denoiser, c["initial_noise"], sigmas, callback=lambda d: steps_seen.__setitem__(d["i"], d))

    assert sorted(steps_seen) == list(range(params["steps"]))
    for i, d in steps_seen.items():
        torch.testing.assert_close(d["x"], c["step_x"][i], **TOL)
        torch.testing.assert_close(d["denoised"], c["step_denoised"][i], **TOL)
    torch.testing.assert_close(result, c["final_latents"], **TOL)
