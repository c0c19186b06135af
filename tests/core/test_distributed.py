"""Data parallelism: ``torchrun --nproc_per_node 2`` (gloo, CPU) trains the same weights as one process with the
whole batch, gradient accumulation does too, and a run resumes on another number of processes."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from framepack_core.errors import InputError
from framepack_core.model.checkpoint import save_config_metadata
from framepack_core.training.trainer import CHECKPOINT, TrainSettings, export_model, new_model, train
from framepack_shapes.train import ShapesSource

from test_train import TINY

REPO = Path(__file__).resolve().parents[2]
TORCHRUN_TIMEOUT = 400
STEPS = 3


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny base model file and its config file (the LoRA's base)."""
    folder = tmp_path_factory.mktemp("base")
    model = new_model(TINY, seed=3)
    torch.nn.init.normal_(model.proj_out.weight, std=0.02)  # so the adapters get gradients from the first step
    path = folder / "base.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata=save_config_metadata(TINY))
    config = folder / "config.json"
    config.write_text(json.dumps(TINY.to_dict()), encoding="utf-8")
    return path, config


def lora_settings(base_path, steps=STEPS) -> TrainSettings:
    return TrainSettings(steps=steps, batch_size=4, warmup_steps=1, max_sections=3, log_every=1, save_every=100,
                         learning_rate=3e-3, init_weights=str(base_path), lora_rank=2, lora_alpha=2.0,
                         modes=("vanilla", "anti_drifting", "inverted_anti_drifting"))


def cli_flags(settings: TrainSettings) -> list:
    flags = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "modes":
            flags += ["--modes", *value]
        elif field.name != "mode_weights":
            flags += ["--" + field.name.replace("_", "-"), str(value)]
    return flags


def saved_weights(run_dir: Path) -> dict:
    return {k: v for k, v in load_file(run_dir / CHECKPOINT).items() if k.startswith("weights.")}


def assert_same_weights(a: dict, b: dict, atol=2e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-5, msg=key)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_up" in k)  # the LoRA did train


def torchrun(args: list, processes: int):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "framepack_shapes.train", *args]
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT} s:\n{err.stdout}\n{err.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_two_gloo_processes_equal_one_process_with_the_whole_batch(base, tmp_path):
    base_path, config = base
    settings = lora_settings(base_path)
    one = train(tmp_path / "one", TINY, settings, ShapesSource())
    done = torchrun(["--run-dir", str(tmp_path / "two"), "--config", str(config), *cli_flags(settings)], processes=2)
    assert_same_weights(saved_weights(tmp_path / "one"), saved_weights(tmp_path / "two"))
    assert "process 1 of 2" in done.stderr and one.step == STEPS
    # rank 0 alone writes the log: one line per step
    assert len((tmp_path / "two" / "loss_log.tsv").read_text().splitlines()) == 1 + STEPS

    # ... and the 2-process run resumes on 1 process to the weights of a straight 1-process run
    longer = lora_settings(base_path, steps=STEPS + 2)
    train(tmp_path / "one", TINY, longer, ShapesSource())
    train(tmp_path / "two", TINY, longer, ShapesSource())
    assert_same_weights(saved_weights(tmp_path / "one"), saved_weights(tmp_path / "two"))


def test_gradient_accumulation_equals_the_whole_batch(base, tmp_path):
    settings = lora_settings(base[0])
    train(tmp_path / "whole", TINY, settings, ShapesSource())
    train(tmp_path / "accumulated", TINY, settings, ShapesSource(), accumulation=2)
    assert_same_weights(saved_weights(tmp_path / "whole"), saved_weights(tmp_path / "accumulated"))


def test_a_batch_that_does_not_split_over_the_processes_is_refused(base, tmp_path):
    with pytest.raises(InputError, match="multiple of 3"):
        train(tmp_path, TINY, lora_settings(base[0]), ShapesSource(), accumulation=3)


def test_full_training_exports_a_loadable_model_after_a_data_parallel_equal_step(tmp_path):
    """Full training (no LoRA) under the same keyed data: 1 process with accumulation 2 equals 1 with none."""
    settings = TrainSettings(steps=2, batch_size=2, warmup_steps=1, max_sections=2, save_every=100)
    whole = train(tmp_path / "whole", TINY, settings, ShapesSource())
    accumulated = train(tmp_path / "acc", TINY, settings, ShapesSource(), accumulation=2)
    for name, param in whole.model.named_parameters():
        torch.testing.assert_close(param, dict(accumulated.model.named_parameters())[name], atol=2e-6, rtol=1e-5)
    assert export_model(whole, TINY, tmp_path / "m.safetensors").is_file()
