"""Resume files: a cancelled run continues bit-identically; a wrong, damaged or half-written file is refused."""

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from framepack_core import load_transformer
from framepack_core.errors import InputError, ResumeError
from framepack_core.engine.generate import (GenerationSettings, TransformerSectionSampler, generate,
                                     initial_state)
from framepack_core.engine.resume import ResumeWriter, encoded, fingerprint, load_resume, prune_runs, save_resume
from tests.builders import noise_sampler, random_inputs

SETTINGS = GenerationSettings(mode="inverted_anti_drifting", num_sections=5, latent_window_size=2, steps=2, seed=9)


class Cancel(Exception):
    """What a UI's cancel button raises from a callback."""


def make_inputs(seed=0, size=8):
    return random_inputs(seed, size, size)


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


def run_writer(folder, model_identity, on_section=None, settings=SETTINGS, inputs=None, **options):
    start = initial_state(inputs or make_inputs(), settings.plans(), settings)
    return ResumeWriter(folder, settings, model_identity, start, on_section=on_section, **options)


@pytest.mark.parametrize("cancel, done", [(cancel_at_section(0), 1), (cancel_at_section(2), 3),
                                          (cancel_at_section(3), 4), (cancel_in_section(4, 1), 4)],
                         ids=["after-section-0", "after-section-2", "after-section-3", "mid-section-4"])
def test_cancelled_run_resumes_bit_identically(tmp_path, model, uninterrupted, identity, cancel, done):
    folder = tmp_path / "framepack_run"
    on_section, on_step = cancel
    with pytest.raises(Cancel):
        generate(TransformerSectionSampler(model), make_inputs(), SETTINGS,
                 on_section=run_writer(folder, identity, on_section), on_step=on_step)
    state = load_resume(folder, SETTINGS, fingerprint(model, make_inputs()))
    assert state.next_section == done
    writer = ResumeWriter(folder, SETTINGS, identity, state)
    resumed = generate(TransformerSectionSampler(model), make_inputs(), SETTINGS, resume=state, on_section=writer)
    torch.testing.assert_close(resumed, uninterrupted, atol=0, rtol=0)
    assert load_resume(folder, SETTINGS, identity).next_section == SETTINGS.num_sections
    assert sorted(p.name for p in folder.iterdir()) == ["run.safetensors"] + [
        f"section_{i:05d}.safetensors" for i in range(SETTINGS.num_sections)]


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


# ----------------------------------------------------------------------------------------------- run folders

LONG_FIELDS = dict(mode="vanilla", num_sections=60, latent_window_size=2, steps=1, seed=4)
LONG = GenerationSettings(**LONG_FIELDS)


def test_a_section_writes_the_same_few_bytes_at_section_5_and_section_50(tmp_path):
    folder = tmp_path / "framepack_long"
    writer = run_writer(folder, "cd" * 32, settings=LONG)
    header = (folder / "run.safetensors").stat()
    generate(noise_sampler, make_inputs(), LONG, on_section=writer)
    sizes = {i: (folder / f"section_{i:05d}.safetensors").stat().st_size for i in (5, 50)}
    assert sizes[5] == sizes[50]
    latent_bytes = 16 * 2 * 8 * 8 * 4
    assert latent_bytes < sizes[5] < latent_bytes + 16_000  # the latents, the generator state and a small header
    assert (folder / "run.safetensors").stat().st_mtime_ns == header.st_mtime_ns  # written once, never again
    state = load_resume(folder, LONG, "cd" * 32)
    assert state.next_section == LONG.num_sections
    torch.testing.assert_close(state.video, generate(noise_sampler, make_inputs(), LONG), atol=0, rtol=0)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "other-run", "empty"])
def test_a_torn_last_piece_is_dropped_and_computed_again(tmp_path, damage, caplog):
    folder, identity = tmp_path / "framepack_torn", "cd" * 32
    settings = dataclasses.replace(LONG, num_sections=6)
    with pytest.raises(Cancel):
        generate(noise_sampler, make_inputs(), settings,
                 on_section=run_writer(folder, identity, cancel_at_section(3)[0], settings=settings))
    last = folder / "section_00003.safetensors"
    data = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(data[:len(data) // 2])
    elif damage == "flipped":
        last.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif damage == "other-run":
        other = tmp_path / "framepack_other"
        generate(noise_sampler, make_inputs(seed=5), settings,
                 on_section=run_writer(other, identity, settings=settings, inputs=make_inputs(seed=5)))
        last.write_bytes((other / last.name).read_bytes())
    else:
        last.write_bytes(b"")
    (folder / ".section_00004.safetensors.x1y2.partial").write_bytes(b"half a write")
    state = load_resume(folder, settings, identity)
    assert state.next_section == 3
    assert "Section 4 is computed again" in caplog.text and str(last) in caplog.text
    resumed = generate(noise_sampler, make_inputs(), settings, resume=state,
                       on_section=ResumeWriter(folder, settings, identity, state))
    torch.testing.assert_close(resumed, generate(noise_sampler, make_inputs(), settings), atol=0, rtol=0)
    assert not list(folder.glob("*.partial"))
    assert load_resume(folder, settings, identity).next_section == 6


KILLED_RUN = """
import sys, torch
sys.path.insert(0, {repo!r})
from framepack_core import GenerationSettings, ResumeWriter, generate
from framepack_core.engine.generate import initial_state
from tests.builders import noise_sampler, random_inputs
settings = GenerationSettings(**{fields!r})
writer = ResumeWriter({folder!r}, settings, "cd" * 32, initial_state(random_inputs(), settings.plans(), settings))
generate(noise_sampler, random_inputs(), settings, on_section=lambda *a: (writer(*a), print("section", flush=True)))
"""


def test_a_process_killed_while_writing_leaves_a_resumable_run(tmp_path):
    """SIGKILL at arbitrary moments of a run (most of its time is spent writing): what is left always resumes."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[2])
    expected = generate(noise_sampler, make_inputs(), LONG)
    for attempt, delay in enumerate((0.0, 0.013, 0.031)):
        folder = tmp_path / f"framepack_killed_{attempt}"
        process = subprocess.Popen([sys.executable, "-c", KILLED_RUN.format(repo=repo, folder=str(folder), fields=LONG_FIELDS)],
                                   stdout=subprocess.PIPE, cwd=repo)
        for _ in range(3 + 7 * attempt):
            assert process.stdout.readline() == b"section\n"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = load_resume(folder, LONG, "cd" * 32)
        assert state.next_section >= 3 + 7 * attempt
        resumed = generate(noise_sampler, make_inputs(), LONG, resume=state,
                           on_section=ResumeWriter(folder, LONG, "cd" * 32, state))
        torch.testing.assert_close(resumed, expected, atol=0, rtol=0)


def test_a_nan_video_is_refused_rather_than_resumed(tmp_path, identity):
    """A state saved by a version without per-section checks, or from a NaN the checks cannot see."""
    folder = tmp_path / "framepack_nan"
    with pytest.raises(Cancel):
        generate(noise_sampler, make_inputs(), SETTINGS, on_section=run_writer(folder, identity,
                                                                               cancel_at_section(1)[0]))
    piece = folder / "section_00001.safetensors"
    tensors = load_file(piece)
    with safe_open(str(piece), "pt") as handle:
        metadata = {k: v for k, v in handle.metadata().items() if k != "checksum"}
    data, _ = encoded(metadata, latents=tensors["latents"] * float("nan"), generator_state=tensors["generator_state"])
    piece.write_bytes(data)
    with pytest.raises(ResumeError, match="holds NaN or infinite latents") as info:
        load_resume(folder, SETTINGS, identity)
    assert str(folder) in str(info.value)
    state = initial_state(make_inputs(), SETTINGS.plans(), SETTINGS)
    state.video[0, 0, 3] = float("inf")
    with pytest.raises(InputError, match="NaN or infinite latents"):
        generate(noise_sampler, make_inputs(), SETTINGS, resume=state)


def test_a_single_file_state_is_read_and_continued_in_a_run_folder(tmp_path, model, uninterrupted, identity):
    legacy, folder = tmp_path / "framepack_old.safetensors", tmp_path / "framepack_run"

    def save_then_cancel(plan, latents, state):
        save_resume(legacy, state, SETTINGS, identity)
        cancel_at_section(1)[0](plan, latents, state)

    with pytest.raises(Cancel):
        generate(TransformerSectionSampler(model), make_inputs(), SETTINGS, on_section=save_then_cancel)
    state = load_resume(legacy, SETTINGS, identity)
    assert state.next_section == 2
    with pytest.raises(Cancel):
        generate(TransformerSectionSampler(model), make_inputs(), SETTINGS, resume=state,
                 on_section=ResumeWriter(folder, SETTINGS, identity, state, on_section=cancel_at_section(3)[0]))
    continued = load_resume(folder, SETTINGS, identity)
    assert continued.next_section == 4 and sorted(p.name for p in folder.glob("section_*")) == [
        "section_00002.safetensors", "section_00003.safetensors"]
    resumed = generate(TransformerSectionSampler(model), make_inputs(), SETTINGS, resume=continued)
    torch.testing.assert_close(resumed, uninterrupted, atol=0, rtol=0)


@pytest.mark.parametrize("on_failure", ["continue", "stop"])
def test_a_folder_that_cannot_be_written(tmp_path, identity, monkeypatch, caplog, on_failure):
    """A file where the folder should be, or a disk that refuses writes: named, and continue or stop as chosen."""
    blocked = tmp_path / "framepack_resume"
    blocked.write_text("not a folder")
    folder = blocked / "framepack_run"
    if on_failure == "stop":
        with pytest.raises(ResumeError, match="cannot create the resume folder") as info:
            run_writer(folder, identity, on_failure=on_failure)
        assert str(folder) in str(info.value) and "turn resuming off" in str(info.value)
        writer = run_writer(tmp_path / "framepack_ok", identity, on_failure=on_failure)
        monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(13, "Read-only")))
        with pytest.raises(ResumeError, match="Read-only") as info:
            generate(noise_sampler, make_inputs(), SETTINGS, on_section=writer)
        assert "framepack_ok" in str(info.value)
        return
    video = generate(noise_sampler, make_inputs(), SETTINGS, on_section=run_writer(folder, identity))
    torch.testing.assert_close(video, generate(noise_sampler, make_inputs(), SETTINGS), atol=0, rtol=0)
    assert caplog.text.count("the run goes on without saving") == 1 and str(folder) in caplog.text


def test_retention_keeps_the_newest_finished_and_unfinished_runs(tmp_path, identity):
    short = dataclasses.replace(LONG, num_sections=2)
    runs = []
    for number in range(5):
        folder = tmp_path / f"framepack_{number}"
        finished = number % 2 == 0
        on_section = None if finished else cancel_at_section(0)[0]
        try:
            generate(noise_sampler, make_inputs(), short,
                     on_section=run_writer(folder, identity, on_section, settings=short))
        except Cancel:
            pass
        os.utime(folder / "run.safetensors", (1000 + number, 1000 + number))
        for piece in folder.glob("section_*"):
            os.utime(piece, (1000 + number, 1000 + number))
        runs.append(folder)
    (tmp_path / "framepack_unrelated").mkdir()
    removed = prune_runs(tmp_path, keep_finished=1, keep_unfinished=1, keep=(runs[0],))
    assert sorted(p.name for p in removed) == ["framepack_1", "framepack_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["framepack_0", "framepack_3", "framepack_4",
                                                         "framepack_unrelated"]
