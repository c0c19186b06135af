"""Resume files: a cancelled run continues bit-identically; a wrong, damaged or half-written file is refused."""

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from framepack_core import load_transformer
from framepack_core.conditioning import TextConditioning
from framepack_core.errors import InputError, ResumeError
from framepack_core.generate import (GenerationInputs, GenerationSettings, TransformerSectionSampler, generate,
                                     initial_state)
from framepack_core.resume import ResumeWriter, fingerprint, load_resume, save_resume

SETTINGS = GenerationSettings(mode="inverted_anti_drifting", num_sections=5, latent_window_size=2, steps=2, seed=9)


class Cancel(Exception):
    """What a UI's cancel button raises from a callback."""


def make_inputs(seed=0, size=8):
    g = torch.Generator().manual_seed(seed)
    cond = TextConditioning(torch.randn(1, 5, 32, generator=g), torch.ones(1, 5, dtype=torch.bool),
                            torch.randn(1, 16, generator=g))
    return GenerationInputs(start_latent=torch.randn(1, 16, 1, size, size, generator=g), prompts=cond,
                            image_embeddings=torch.randn(1, 6, 24, generator=g))


@pytest.fixture(scope="module")
def uninterrupted(model):
    return generate(TransformerSectionSampler(model), make_inputs(), SETTINGS)


@pytest.fixture(scope="module")
def identity(model):
    return fingerprint(model, make_inputs())


@pytest.fixture
def saved(tmp_path, identity):
    """A valid resume file of the first state (no section done yet): cheap to write and to load."""
    inputs = make_inputs()
    path = tmp_path / "run.resume.safetensors"
    save_resume(path, initial_state(inputs, SETTINGS.plans(), SETTINGS), SETTINGS, identity)
    return path


# ----------------------------------------------------------------------------------------------- cancel, resume

def cancel_at_section(index):
    """(on_section, on_step) callbacks that cancel when section ``index`` is done."""
    def on_section(plan, latents, state):
        if plan.index == index:
            raise Cancel
    return on_section, None


def cancel_in_section(index, step):
    """A cancel from the step callback in the middle of a section, after the previous section's file."""
    def on_step(done, total, denoised):
        if done == index * SETTINGS.steps + step:
            raise Cancel
    return None, on_step


@pytest.mark.parametrize("cancel, done", [(cancel_at_section(0), 1), (cancel_at_section(2), 3),
                                          (cancel_at_section(3), 4), (cancel_in_section(4, 1), 4)],
                         ids=["after-section-0", "after-section-2", "after-section-3", "mid-section-4"])
def test_cancelled_run_resumes_bit_identically(tmp_path, model, uninterrupted, identity, cancel, done):
    path = tmp_path / "run.resume.safetensors"
    on_section, on_step = cancel
    with pytest.raises(Cancel):
        generate(TransformerSectionSampler(model), make_inputs(), SETTINGS,
                 on_section=ResumeWriter(path, SETTINGS, identity, on_section), on_step=on_step)
    state = load_resume(path, SETTINGS, fingerprint(model, make_inputs()))
    assert state.next_section == done
    resumed = generate(TransformerSectionSampler(model), make_inputs(), SETTINGS, resume=state,
                       on_section=ResumeWriter(path, SETTINGS, identity))
    torch.testing.assert_close(resumed, uninterrupted, atol=0, rtol=0)
    assert load_resume(path, SETTINGS, identity).next_section == SETTINGS.num_sections
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_file_layout_is_plain_safetensors(saved):
    tensors = load_file(saved)
    assert {k: v.dtype for k, v in tensors.items()} == {"video": torch.float32, "generator_state": torch.uint8}
    with safe_open(str(saved), "pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["settings"])["schedule"] == "f1k1_x_g2_f1k1f2k2f16k4_td"
    assert metadata["format"] == "framepack_resume" and metadata["version"] == "1"


# ----------------------------------------------------------------------------------------------- mismatches

@pytest.mark.parametrize("change, fragment", [
    ({"seed": 10}, "seed: 9 in the file, 10 now"),
    ({"steps": 3}, "steps: 2 in the file, 3 now"),
    ({"mode": "anti_drifting"}, "mode: 'inverted_anti_drifting' in the file, 'anti_drifting' now"),
    ({"sampler": "euler"}, "sampler: 'unipc_bh1' in the file, 'euler' now"),
    ({"distilled_cfg": 6.0}, "distilled_cfg: 10.0 in the file, 6.0 now"),
    ({"num_sections": 6}, "num_sections: 5 in the file, 6 now"),
    ({"latent_window_size": 3}, "latent_window_size: 2 in the file, 3 now"),
])
def test_other_settings_are_named_with_both_values(saved, identity, change, fragment):
    with pytest.raises(ResumeError) as info:
        load_resume(saved, dataclasses.replace(SETTINGS, **change), identity)
    assert fragment in str(info.value) and saved.name in str(info.value)


def test_equivalent_schedule_spellings_match(saved, identity):
    """The schedule is compared by its canonical text: the default name and its paper string are the same run."""
    spelled = dataclasses.replace(SETTINGS, schedule="f1k1_x_g2_f1k1f2k2f16k4_td", latent_window_size=None)
    assert load_resume(saved, spelled, identity).next_section == 0


def test_other_model_or_conditioning_is_refused(saved, model, tiny_weights_path):
    others = [fingerprint(model, make_inputs(seed=1)), fingerprint(load_transformer(tiny_weights_path,
                                                                                   dtype=torch.bfloat16), make_inputs())]
    for other in others:
        with pytest.raises(ResumeError, match="another model or other conditioning"):
            load_resume(saved, SETTINGS, other)


def test_fingerprint_sees_every_conditioning_input_and_the_weights(model, identity):
    assert fingerprint(model, make_inputs()) == identity
    timed = dataclasses.replace(make_inputs(), prompts=[(0.0, None, make_inputs().prompts)])
    variants = [timed, dataclasses.replace(make_inputs(), end_latent=torch.zeros(1, 16, 1, 8, 8)),
                dataclasses.replace(make_inputs(), keyframes={3: torch.zeros(1, 16, 1, 8, 8)}),
                dataclasses.replace(make_inputs(), negative=make_inputs(seed=2).prompts),
                dataclasses.replace(make_inputs(), image_embeddings=make_inputs().image_embeddings + 1e-6)]
    prints = {fingerprint(model, inputs) for inputs in variants}
    assert len(prints) == len(variants) and identity not in prints
    weight = model.transformer_blocks[0].attn.to_q.weight
    original = weight.clone()
    with torch.no_grad():
        weight[-1, -1] += 1  # inside the sampled tail of a large matrix
    try:
        assert fingerprint(model, make_inputs()) != identity
    finally:
        with torch.no_grad():
            weight.copy_(original)
    assert fingerprint(model, make_inputs()) == identity


# ----------------------------------------------------------------------------------------------- damaged files

def expect_error(path, fragment, settings=SETTINGS, identity=None):
    with pytest.raises(ResumeError) as info:
        load_resume(path, settings, identity or "0" * 64)
    assert str(path) in str(info.value) and fragment in str(info.value), str(info.value)


def test_missing_file(tmp_path):
    expect_error(tmp_path / "absent.safetensors", "not found")


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, 0.999])
def test_truncated_file(saved, keep):
    data = saved.read_bytes()
    saved.write_bytes(data[:int(keep * len(data)) if isinstance(keep, float) else keep])
    expect_error(saved, "truncated or corrupt")


def test_flipped_data_byte_fails_the_checksum(saved, identity):
    data = bytearray(saved.read_bytes())
    data[-100] ^= 0x01
    saved.write_bytes(bytes(data))
    expect_error(saved, "do not match the checksum", identity=identity)


def test_pickle_file_is_refused(saved):
    torch.save({"video": torch.zeros(3)}, saved)
    expect_error(saved, "not a readable safetensors file")


def test_other_safetensors_files_are_refused(tmp_path, tiny_weights_path, saved):
    expect_error(tiny_weights_path, "is not a FramePack resume file")
    tensors = load_file(saved)
    with safe_open(str(saved), "pt") as handle:
        metadata = handle.metadata()
    path = tmp_path / "future.safetensors"
    save_file(tensors, str(path), metadata={**metadata, "version": "2"})
    expect_error(path, "format version '2'")
    save_file({**tensors, "extra": torch.zeros(1)}, str(path), metadata=metadata)
    expect_error(path, "holds tensors ['extra', 'generator_state', 'video']")
    save_file({**tensors, "video": tensors["video"].half()}, str(path), metadata=metadata)
    expect_error(path, "tensor 'video' is F16, expected F32")
    save_file({**tensors, "generator_state": tensors["generator_state"][:10]}, str(path), metadata=metadata)
    expect_error(path, "generator state has shape (10,)")
    save_file(tensors, str(path), metadata={**metadata, "next_section": "-1"})
    expect_error(path, "metadata 'next_section' is '-1'")
    save_file(tensors, str(path), metadata={**metadata, "settings": "[1, 2]"})
    expect_error(path, "'settings' is not a JSON object")


def test_states_outside_the_plan_are_refused(tmp_path, identity):
    inputs = make_inputs()
    state = initial_state(inputs, SETTINGS.plans(), SETTINGS)
    path = tmp_path / "r.safetensors"
    save_resume(path, dataclasses.replace(state, next_section=6), SETTINGS, identity)
    expect_error(path, "section 6 is next, but the settings plan 5 sections", identity=identity)
    longer = torch.cat([state.video, state.video[:, :, :1]], dim=2)  # reads as 2 history frames: not inverted
    save_resume(path, dataclasses.replace(state, video=longer), SETTINGS, identity)
    expect_error(path, "does not fit the settings", identity=identity)


# ----------------------------------------------------------------------------------------------- atomic writes

@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupt"])
def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(saved, identity, monkeypatch, failure):
    before = saved.read_bytes()
    state = initial_state(make_inputs(), SETTINGS.plans(), SETTINGS)
    state.next_section = 3

    def fsync_fails(descriptor):
        assert len(list(saved.parent.iterdir())) == 2  # the temporary file exists beside the target
        raise failure

    monkeypatch.setattr(os, "fsync", fsync_fails)
    with pytest.raises(ResumeError if isinstance(failure, OSError) else KeyboardInterrupt) as info:
        save_resume(saved, state, SETTINGS, identity)
    monkeypatch.undo()
    if isinstance(failure, OSError):
        assert "No space left" in str(info.value) and "previous resume file" in str(info.value)
    assert saved.read_bytes() == before
    assert list(saved.parent.iterdir()) == [saved]
    assert load_resume(saved, SETTINGS, identity).next_section == 0


def test_resume_state_of_another_run_is_refused_by_generate(identity):
    state = initial_state(make_inputs(size=10), SETTINGS.plans(), SETTINGS)
    with pytest.raises(InputError, match="resume with the inputs and settings of the interrupted run"):
        generate(lambda job: job.noise, make_inputs(), SETTINGS, resume=state)
