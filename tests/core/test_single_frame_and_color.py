import pytest
import torch

from framepack_core import GenerationSettings, InputError, TextConditioning, TransformerSectionSampler, load_transformer
from framepack_core.engine.color import match_colors
from framepack_core.engine.single_frame import SingleFrameRequest, sample_single_frame, single_frame_inputs


def latent(value=0.0, size=(8, 8)):
    return torch.full((1, 16, 1) + size, value)


def test_single_frame_layout_and_masks():
    mask = torch.zeros(16, 16)
    mask[:, :8] = 1
    inputs = single_frame_inputs(SingleFrameRequest([latent(1), latent(2)], [0, 10], target_index=1,
                                                    masks=[None, mask], use_2x=True))
    assert inputs["latent_indices"].tolist() == [[1]]
    two_x, one_x = inputs["clean_groups"]  # no 4x group, and the reference's order
    assert (two_x.proj, one_x.proj) == ("proj_2x", "proj")
    assert one_x.indices.tolist() == [[0, 10]] and two_x.indices.tolist() == [[11, 12]]
    assert (one_x.latents[0, :, 1, :, :4] == 2).all() and (one_x.latents[0, :, 1, :, 4:] == 0).all()


@pytest.mark.parametrize("request_args, message", [
    (dict(controls=[latent()], control_indices=[0, 1]), "one index each"),
    (dict(controls=[latent(), latent(size=(8, 10))], control_indices=[0, 9]), "same bucket size"),
    (dict(controls=[latent()], control_indices=[0], target_index=0), "equals a control index"),
])
def test_single_frame_bad_requests(request_args, message):
    with pytest.raises(InputError, match=message):
        single_frame_inputs(SingleFrameRequest(**request_args))


def test_single_frame_sampling_with_the_tiny_model(tiny_weights_path):
    model = load_transformer(tiny_weights_path)
    text = TextConditioning(torch.randn(1, 4, 32), torch.ones(1, 4, dtype=torch.bool), torch.randn(1, 16))
    out = sample_single_frame(TransformerSectionSampler(model), SingleFrameRequest([latent(0.5)], [0], 9), text,
                              torch.randn(1, 6, 24), GenerationSettings(steps=3, seed=1))
    again = sample_single_frame(TransformerSectionSampler(model), SingleFrameRequest([latent(0.5)], [0], 9), text,
                                torch.randn(1, 6, 24).zero_() + 0, GenerationSettings(steps=3, seed=1))
    assert out.shape == (1, 16, 1, 8, 8) and torch.isfinite(out).all()
    assert not torch.equal(out, again)  # the image embeddings matter


def test_color_matching_pulls_statistics_to_the_reference():
    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(1, 16, 16, 3, generator=gen) * 0.5 + 0.25
    drifted = (reference * 0.6 + 0.3).expand(4, -1, -1, -1).clone()
    matched = match_colors(drifted, reference)
    assert (matched.mean() - reference.mean()).abs() < (drifted.mean() - reference.mean()).abs() / 5
    torch.testing.assert_close(match_colors(drifted, reference, strength=0.0), drifted)
    with pytest.raises(InputError, match="strength"):
        match_colors(drifted, reference, strength=2)
