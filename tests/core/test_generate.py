"""The section loop: reference parity of the history handling, every mode at length, conditioning over time."""

import dataclasses

import pytest
import torch

from framepack_core import InputError
from framepack_core.engine.generate import (GenerationSettings, GenerationState, TransformerSectionSampler,
                                     generate)
from framepack_core.engine.planning import padding_list
from framepack_core.engine.sampling import FlowDenoiser, flow_sigmas, sample_unipc
from framepack_core.model.transformer import ReferenceArguments
from tests.builders import random_inputs

H, W_LAT = 8, 8


def make_inputs(seed=0, text_len=5, **extra):
    return random_inputs(seed, H, W_LAT, text_len, **extra)


class Recorder:
    """A section sampler that records its jobs and returns a recognisable constant per section."""

    def __init__(self):
        self.jobs = []

    def __call__(self, job):
        self.jobs.append(job)
        return torch.full_like(job.noise, float(len(self.jobs)))


# ------------------------------------------------------------------ parity with the reference demo loops

def reference_sample(model, inputs, W, noise, latent_indices, clean, c2, c4, clean_idx, idx2, idx4, steps):
    cond = {**inputs.prompts.model_inputs(), "image_embeddings": inputs.image_embeddings}
    shared = dict(latent_indices=torch.tensor([latent_indices]), clean_latents=clean,
                  clean_latent_indices=torch.tensor([clean_idx]), clean_latents_2x=c2,
                  clean_latent_2x_indices=torch.tensor([idx2]), clean_latents_4x=c4,
                  clean_latent_4x_indices=torch.tensor([idx4]))
    sigmas = flow_sigmas(steps, seq_len=W * H * W_LAT // 4)
    return sample_unipc(FlowDenoiser(ReferenceArguments(model), cond, shared=shared), noise, sigmas)


def clean_latents(job, proj="proj"):
    """The latents a section packs with one projection (the 1x ``proj`` by default)."""
    [group] = [g for g in job.model_inputs["clean_groups"] if g.proj == proj]
    return group.latents


def test_inverted_loop_matches_the_reference_history_buffer(model):
    """The I2V demo loop: sections from the end, history prepended, start latent prepended at p = 0 (n > 4)."""
    n, W, steps, seed = 5, 3, 2, 7
    inputs = make_inputs()
    start = inputs.start_latent
    rng = torch.Generator().manual_seed(seed)
    history = torch.zeros(1, 16, 19, H, W_LAT)
    total = 0
    for p in padding_list(n):
        idx = list(range(1 + p * W + W + 1 + 2 + 16))
        pre, latent, post = idx[0], idx[1 + p * W:1 + p * W + W], idx[1 + p * W + W:]
        noise = torch.randn(1, 16, W, H, W_LAT, generator=rng)
        out = reference_sample(model, inputs, W, noise, latent, torch.cat([start, history[:, :, :1]], 2),
                               history[:, :, 1:3], history[:, :, 3:19], [pre, post[0]], post[1:3], post[3:19], steps)
        if p == 0:
            out = torch.cat([start, out], 2)
        history = torch.cat([out, history], 2)
        total += out.shape[2]
    expected = history[:, :, :total]
    settings = GenerationSettings(mode="inverted_anti_drifting", num_sections=n, latent_window_size=W, steps=steps,
                                  seed=seed)
    video = generate(TransformerSectionSampler(model), inputs, settings)
    torch.testing.assert_close(video, expected, atol=1e-5, rtol=1e-5)


def test_f1_loop_matches_the_reference_history_buffer(model):
    """The F1 demo loop: history zeros(19) + start, last 19 frames split 16/2/1, new latents appended."""
    n, W, steps, seed = 3, 3, 2, 11
    inputs = make_inputs(1)
    start = inputs.start_latent
    rng = torch.Generator().manual_seed(seed)
    history = torch.cat([torch.zeros(1, 16, 19, H, W_LAT), start], 2)
    for _ in range(n):
        c4, c2, c1 = history[:, :, -19:].split([16, 2, 1], dim=2)
        noise = torch.randn(1, 16, W, H, W_LAT, generator=rng)
        out = reference_sample(model, inputs, W, noise, list(range(20, 20 + W)), torch.cat([start, c1], 2), c2, c4,
                               [0, 19], [17, 18], list(range(1, 17)), steps)
        history = torch.cat([history, out], 2)
    expected = history[:, :, 19:]
    settings = GenerationSettings(mode="vanilla", num_sections=n, latent_window_size=W, steps=steps, seed=seed)
    torch.testing.assert_close(generate(TransformerSectionSampler(model), inputs, settings), expected,
                               atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ length, determinism, resume

@pytest.mark.parametrize("mode", ["vanilla", "anti_drifting", "inverted_anti_drifting"])
def test_fifty_sections_in_every_mode(model, mode):
    settings = GenerationSettings(mode=mode, num_sections=50, steps=1, seed=3)
    done = []
    video = generate(TransformerSectionSampler(model), make_inputs(), settings,
                     on_step=lambda i, total, x: done.append((i, total)))
    assert video.shape == (1, 16, 50 * 9 + 1, H, W_LAT)
    assert torch.isfinite(video).all()
    assert done[-1] == (50, 50) and len(done) == 50
    assert (video[:, :, 1:].flatten(2).abs().sum(-1) > 0).all()  # every frame was written


def test_same_seed_same_video_and_noise_in_generation_order():
    settings = GenerationSettings(mode="inverted_anti_drifting", num_sections=3, latent_window_size=2, steps=1,
                                  seed=5)
    first, second = Recorder(), Recorder()
    generate(first, make_inputs(), settings)
    generate(second, make_inputs(), settings)
    rng = torch.Generator().manual_seed(5)
    for a, b in zip(first.jobs, second.jobs):
        torch.testing.assert_close(a.noise, b.noise, atol=0, rtol=0)
        torch.testing.assert_close(a.noise, torch.randn(1, 16, 2, H, W_LAT, generator=rng), atol=0, rtol=0)


@pytest.mark.parametrize("stop_after", [0, 1, 3])
def test_resume_after_a_cancel_is_bit_identical(model, stop_after):
    settings = GenerationSettings(mode="inverted_anti_drifting", num_sections=5, latent_window_size=2, steps=2,
                                  seed=9)
    full = generate(TransformerSectionSampler(model), make_inputs(), settings)
    saved = {}

    class Cancel(Exception):
        pass

    def on_section(plan, latents, state):
        if plan.index == stop_after:
            saved["state"] = GenerationState(state.video.clone(), state.next_section, state.generator_state.clone())
            raise Cancel

    with pytest.raises(Cancel):
        generate(TransformerSectionSampler(model), make_inputs(), settings, on_section=on_section)
    state = saved["state"]
    before = (state.video.clone(), state.next_section, state.generator_state.clone())
    resumed = generate(TransformerSectionSampler(model), make_inputs(), settings, resume=state)
    torch.testing.assert_close(resumed, full, atol=0, rtol=0)
    # The state is left as it was: resuming from it again gives the same video.
    assert torch.equal(state.video, before[0]) and state.next_section == before[1]
    assert torch.equal(state.generator_state, before[2])
    again = generate(TransformerSectionSampler(model), make_inputs(), settings, resume=state)
    torch.testing.assert_close(again, full, atol=0, rtol=0)


# ------------------------------------------------------------------ conditioning over time

def test_end_latent_fills_the_post_slot_of_the_first_section_only():
    end = torch.full((1, 16, 1, H, W_LAT), 7.0)
    recorder = Recorder()
    settings = GenerationSettings(mode="inverted_anti_drifting", num_sections=3, latent_window_size=2, steps=1)
    generate(recorder, make_inputs(end_latent=end), settings)
    first, second = recorder.jobs[:2]
    assert (clean_latents(first)[:, :, 1] == 7).all()
    assert (clean_latents(second)[:, :, 1] == 1).all()  # the first section's output


def test_end_latent_in_anti_drifting_guides_the_endpoint():
    end = torch.full((1, 16, 1, H, W_LAT), 7.0)
    recorder = Recorder()
    generate(recorder, make_inputs(end_latent=end), GenerationSettings(mode="anti_drifting", num_sections=3, steps=1))
    assert (clean_latents(recorder.jobs[0])[:, :, -1] == 7).all()
    assert not (clean_latents(recorder.jobs[1])[:, :, -1] == 7).any()


def test_keyframes_guide_the_section_whose_next_frame_they_are():
    key = torch.full((1, 16, 1, H, W_LAT), 5.0)
    recorder = Recorder()
    settings = GenerationSettings(mode="inverted_anti_drifting", num_sections=3, latent_window_size=2, steps=1)
    generate(recorder, make_inputs(keyframes={3: key}), settings)
    hits = [job.plan.position for job in recorder.jobs if (clean_latents(job)[:, :, 1] == 5).all()]
    assert hits == [1]  # the section covering frames 1-2: its post slot is frame 3


@pytest.mark.parametrize("keyframes, message", [({0: None}, "outside the video"), ({99: None}, "outside the video")])
def test_keyframes_outside_the_video(keyframes, message):
    key = torch.zeros(1, 16, 1, H, W_LAT)
    with pytest.raises(InputError, match=message):
        generate(Recorder(), make_inputs(keyframes={f: key for f in keyframes}),
                 GenerationSettings(num_sections=2, steps=1))


def test_vanilla_has_no_slot_for_keyframes():
    with pytest.raises(InputError, match="use inverted_anti_drifting or anti_drifting"):
        generate(Recorder(), make_inputs(keyframes={2: torch.zeros(1, 16, 1, H, W_LAT)}),
                 GenerationSettings(mode="vanilla", num_sections=2, steps=1))


def test_mismatched_end_latent_size():
    with pytest.raises(InputError, match="same size"):
        generate(Recorder(), make_inputs(end_latent=torch.zeros(1, 16, 1, H, 10)), GenerationSettings(steps=1))


def test_nan_start_latent():
    inputs = make_inputs()
    inputs.start_latent[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        generate(Recorder(), inputs, GenerationSettings(steps=1))


def test_timed_prompts_switch_and_blend():
    a, b = make_inputs(0).prompts, make_inputs(1, text_len=7).prompts
    inputs = dataclasses.replace(make_inputs(), prompts=[(0.0, None, a), (1.0, None, b)])
    recorder = Recorder()
    settings = GenerationSettings(mode="vanilla", num_sections=4, latent_window_size=2, steps=1,
                                  prompt_blend_seconds=0.5)
    generate(recorder, inputs, settings)
    # Section starts: frames 1, 3, 5, 7 -> 0.033 s, 0.3 s, 0.567 s, 0.833 s ... with W = 2 all before 1 s.
    assert all(job.positive is a for job in recorder.jobs)
    settings = dataclasses.replace(settings, num_sections=10)
    recorder = Recorder()
    generate(recorder, inputs, settings)
    times = [(4 * job.plan.position - 3) / 30 for job in recorder.jobs]
    for job, t in zip(recorder.jobs, times):
        if t < 1.0:
            assert job.positive is a
        elif t >= 1.5:
            assert job.positive is b
        else:
            w = (t - 1.0) / 0.5
            torch.testing.assert_close(job.positive.pooled, torch.lerp(a.pooled, b.pooled, w))
            assert job.positive.text.shape[1] == 7


def test_image_embeddings_interpolate_from_start_to_end():
    inputs = make_inputs()
    inputs.end_image_embeddings = inputs.image_embeddings + 1
    recorder = Recorder()
    generate(recorder, inputs, GenerationSettings(mode="vanilla", num_sections=3, latent_window_size=2, steps=1,
                                                  interpolate_image_embeddings=True))
    shifts = [(job.image_embeddings - inputs.image_embeddings).mean().item() for job in recorder.jobs]
    assert shifts == pytest.approx([0.0, 0.5, 1.0])


def test_video_extension_keeps_the_history_and_appends():
    history = torch.randn(1, 16, 6, H, W_LAT)
    recorder = Recorder()
    inputs = make_inputs(history=history)
    video = generate(recorder, inputs, GenerationSettings(mode="vanilla", num_sections=2, latent_window_size=3,
                                                         steps=1))
    assert video.shape[2] == 6 + 2 * 3
    torch.testing.assert_close(video[:, :, :6], history)
    first = recorder.jobs[0]
    torch.testing.assert_close(clean_latents(first)[:, :, 1], history[:, :, 5])  # 1x = the last history frame
    torch.testing.assert_close(clean_latents(first, "proj_2x"), history[:, :, 3:5])


def test_custom_schedule_with_tails_runs_through_clean_groups(model):
    settings = GenerationSettings(mode="vanilla", num_sections=4, latent_window_size=2, steps=1,
                                  schedule="f1k1_tc_f4k2f1k1_g2")
    recorder = Recorder()
    generate(recorder, make_inputs(), settings)
    assert "clean_groups" in recorder.jobs[-1].model_inputs
    video = generate(TransformerSectionSampler(model), make_inputs(), settings)
    assert torch.isfinite(video).all()
