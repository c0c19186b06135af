"""Bad input to the core API: one test per case, each checking that the message names the input, the value
and what to do. Cases already tested elsewhere are not repeated here:

- odd latent size at the model (test_model_parity::test_latent_size_not_multiple_of_patch_is_an_error),
  half of a clean group (test_model_parity::test_half_group_is_an_error)
- end latent of another size (test_generate::test_mismatched_end_latent_size), keyframes outside the video
  and in vanilla mode (test_generate::test_keyframes_outside_the_video, test_vanilla_has_no_slot_for_keyframes),
  NaN start latent (test_generate::test_nan_start_latent)
- section_count with zero, negative, NaN, infinite, over-an-hour, non-number seconds and zero fps, plan_sections
  with 0 / -1 / 2.5 / "3" / None sections, window size 0 and unknown modes (test_planning::test_bad_arguments,
  test_section_count_errors_and_frame_counts)
- schedule string errors (test_schedules::test_malformed_schedules_point_at_the_bad_token, 22 strings;
  test_vanilla_rejects_future_context, test_window_size_agreement)
- timestamped prompt text (test_conditioning::test_bad_prompt_text), malformed text conditioning
  (test_conditioning::test_bad_text_conditioning), real CFG without a negative at the denoiser
  (test_sampling::test_flow_denoiser_needs_negative_for_real_cfg)
- every bad checkpoint file (test_checkpoint: missing, truncated, corrupt header, pickle, other models, missing
  tensor, wrong shape, missing shard, empty folder, bad config)
"""

import dataclasses

import pytest
import torch

from framepack_core import FramePackError, InputError, load_transformer
from framepack_core.engine.generate import GenerationSettings, TransformerSectionSampler, generate
from framepack_core.engine.planning import PlanError
from framepack_core.engine.schedules import ScheduleError
from tests.builders import random_inputs, random_prompt

H = W = 8
QUICK = GenerationSettings(num_sections=2, latent_window_size=2, steps=1)  # 5 latent frames: the video ends at 0.57 s


def make_inputs(**changes):
    return random_inputs(height=H, width=W, **changes)


def latent(value=0.0, channels=16, frames=1, height=H, width=W):
    return torch.full((1, channels, frames, height, width), value)


def no_sampling(job):
    raise AssertionError("the input should have been refused before sampling")


def expect(error, fragments, inputs=None, settings=QUICK, sampler=no_sampling):
    """generate(...) raises ``error`` whose message contains every fragment (the input, its value, the fix)."""
    with pytest.raises(error) as info:
        generate(sampler, inputs or make_inputs(), settings)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


# ----------------------------------------------------------------------------------------------- sizes

def test_odd_latent_size_points_to_the_bucket_node():
    expect(InputError, ["(9, 8)", "must be even", "FramePack bucket node"], make_inputs(start_latent=latent(height=9)))


def test_start_latent_of_several_frames():
    expect(InputError, ["start_latent", "(1, 16, 3, 8, 8)", "VAE-encode a single image"],
           make_inputs(start_latent=latent(frames=3)))


def test_start_latent_with_the_wrong_channel_count():
    expect(InputError, ["start_latent", "(1, 4, 1, 8, 8)", "(1, 16, 1, H, W)"], make_inputs(start_latent=latent(channels=4)))


def test_model_input_with_the_wrong_channel_count(model):
    with pytest.raises(InputError) as info:
        model(hidden_states=torch.zeros(1, 4, 1, H, W), timestep=torch.tensor([500.0]), **random_prompt().model_inputs(),
              image_embeddings=torch.zeros(1, 6, 24))
    assert "hidden_states has 4 channels but the model takes 16" in str(info.value)
    assert "HunyuanVideo VAE latents" in str(info.value)


def test_keyframe_of_another_size():
    expect(InputError, ["keyframe at frame 3", "(1, 16, 1, 8, 10)", "same size", "one bucket"],
           make_inputs(keyframes={3: latent(width=10)}))


def test_history_of_another_size():
    expect(InputError, ["history", "(1, 16, 4, 6, 8)", "same size"], make_inputs(history=latent(frames=4, height=6)),
           dataclasses.replace(QUICK, mode="vanilla"))


def test_keyframe_at_a_fractional_frame():
    expect(InputError, ["keyframe at latent frame 2.5", "outside the video (frames 1..4)"],
           make_inputs(keyframes={2.5: latent()}))


def test_end_latent_in_vanilla_mode():
    expect(InputError, ["end frame needs a context slot", "vanilla", "use inverted_anti_drifting or anti_drifting"],
           make_inputs(end_latent=latent()), dataclasses.replace(QUICK, mode="vanilla"))


# ----------------------------------------------------------------------------------------------- times and lengths

def test_prompt_starting_after_the_video_ends():
    timed = [(0.0, None, random_prompt()), (2.0, None, random_prompt(1))]
    expect(InputError, ["a prompt starts at 2 s", "the video ends at 0.57 s", "more sections"],
           make_inputs(prompts=timed))


def test_prompts_not_starting_at_zero():
    expect(InputError, ["must start at 0 s"], make_inputs(prompts=[(0.5, None, random_prompt())]))


def test_timed_prompt_entries_of_the_wrong_form():
    expect(InputError, ["prompts must be one TextConditioning or a list of (start_s, end_s or None, TextConditioning)",
                        "list"], make_inputs(prompts=[(0.0, random_prompt())]))


@pytest.mark.parametrize("sections", [0, -3])
def test_zero_or_negative_sections(sections):
    expect(InputError, [f"num_sections must be an integer from 1 to 27000, got {sections}"],
           settings=dataclasses.replace(QUICK, num_sections=sections))


def test_absurd_number_of_sections_is_refused_before_planning():
    expect(InputError, ["got 1000000000", "27000 is an hour-long video", "section_count"],
           settings=dataclasses.replace(QUICK, num_sections=10**9))


@pytest.mark.parametrize("window, error, fragment", [
    (0, InputError, "latent_window_size must be an integer from 1 to 33, got 0"),
    (-2, InputError, "latent_window_size must be an integer from 1 to 33, got -2"),
    (300, InputError, "latent_window_size must be an integer from 1 to 33, got 300. FramePack uses 9"),
])
def test_latent_window_size_out_of_range(window, error, fragment):
    expect(error, [fragment], settings=dataclasses.replace(QUICK, latent_window_size=window))


def test_schedule_error_surfaces_from_generate():
    expect(ScheduleError, ["invalid frame schedule 'f1k1_q_g2'", "unknown token 'q'", "^"],
           settings=dataclasses.replace(QUICK, schedule="f1k1_q_g2"))


@pytest.mark.parametrize("steps", [0, 2.5, 5000])
def test_steps_out_of_range(steps):
    expect(InputError, [f"steps must be an integer from 1 to 1000, got {steps!r}"],
           settings=dataclasses.replace(QUICK, steps=steps))


# ----------------------------------------------------------------------------------------------- values

NAN, INF = float("nan"), float("inf")


def with_bad_value(tensor, value):
    tensor = tensor.clone()
    tensor.view(-1)[0] = value
    return tensor


@pytest.mark.parametrize("name, inputs", [
    ("image_embeddings", lambda: make_inputs(image_embeddings=with_bad_value(make_inputs().image_embeddings, INF))),
    ("end_image_embeddings", lambda: make_inputs(end_image_embeddings=with_bad_value(torch.zeros(1, 6, 24), NAN))),
    ("end_latent", lambda: make_inputs(end_latent=latent(INF))),
    ("keyframe at frame 3", lambda: make_inputs(keyframes={3: latent(NAN)})),
    ("history", lambda: make_inputs(history=latent(NAN, frames=3))),
    ("the text of the prompt at 0 s", lambda: make_inputs(prompts=dataclasses.replace(
        random_prompt(), text=with_bad_value(random_prompt().text, NAN)))),
    ("the pooled vector of the prompt at 0.3 s", lambda: make_inputs(prompts=[(0.0, None, random_prompt()), (0.3, None, dataclasses.replace(
        random_prompt(), pooled=with_bad_value(random_prompt().pooled, -INF)))])),
    ("the negative prompt", lambda: make_inputs(negative=dataclasses.replace(
        random_prompt(), text=with_bad_value(random_prompt().text, NAN)))),
], ids=lambda value: value if isinstance(value, str) else "")
def test_nan_or_inf_inputs(name, inputs):
    settings = dataclasses.replace(QUICK, mode="vanilla") if name == "history" else QUICK
    expect(InputError, [name, "NaN or infinite", "fp16 can overflow"], inputs(), settings)


# ----------------------------------------------------------------------------------------------- missing conditioning

def test_missing_image_embeddings(model):
    expect(InputError, ["image_embeddings is missing", "CLIPVisionEncode"], make_inputs(image_embeddings=None),
           sampler=TransformerSectionSampler(model))


def test_end_image_embeddings_without_start_ones():
    expect(InputError, ["end_image_embeddings has shape (1, 6, 24) but image_embeddings is None",
                        "same CLIP vision model"],
           make_inputs(image_embeddings=None, end_image_embeddings=torch.zeros(1, 6, 24)))


def test_end_image_embeddings_of_another_shape():
    expect(InputError, ["end_image_embeddings has shape (1, 7, 24) but image_embeddings is (1, 6, 24)"],
           make_inputs(end_image_embeddings=torch.zeros(1, 7, 24)))


def test_real_cfg_without_a_negative_prompt(model):
    expect(InputError, ["real_cfg is 3.0, which needs negative conditioning", "pass negative or set real_cfg to 1"],
           settings=dataclasses.replace(QUICK, real_cfg=3.0), sampler=TransformerSectionSampler(model))


def test_missing_prompts():
    expect(InputError, ["prompts must be one TextConditioning", "NoneType"], make_inputs(prompts=None))


def test_unknown_sampler():
    expect(InputError, ["sampler 'dpm'", "choose one of unipc_bh1, unipc_bh2, euler"],
           settings=dataclasses.replace(QUICK, sampler="dpm"))


def test_every_error_here_is_a_value_error():
    """The nodes catch FramePackError; it is a ValueError so plain callers can too."""
    assert issubclass(FramePackError, ValueError) and issubclass(PlanError, FramePackError)
    assert issubclass(ScheduleError, FramePackError) and issubclass(InputError, FramePackError)


@pytest.mark.parametrize("dtype", ["bf16", torch.int8])
def test_load_transformer_with_a_non_float_dtype(tiny_weights_path, dtype):
    with pytest.raises(FramePackError, match="dtype"):
        load_transformer(tiny_weights_path, dtype=dtype)
