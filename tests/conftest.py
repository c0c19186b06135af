"""Shared fixtures: the reference data folder and the tiny reference model."""

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# The golden vectors were computed with one CPU thread, and the tests' tiny tensors run fastest on one.
torch.set_num_threads(1)


# The golden data the tests use is part of the repository (see tests/data/reference/README.md).
REFERENCE_DIR = REPO / "tests" / "data" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "golden_forward.safetensors").is_file():
        pytest.fail(f"reference data missing from {REFERENCE_DIR}: the checkout is incomplete (git status shows it)")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def tiny_config(reference_dir) -> dict:
    return json.loads((reference_dir / "tiny_framepack_config.json").read_text())


@pytest.fixture(scope="session")
def tiny_weights_path(reference_dir) -> Path:
    return reference_dir / "tiny_framepack.safetensors"


@pytest.fixture(scope="module")
def model(tiny_weights_path):
    """The tiny reference model, loaded once per test module."""
    from framepack_core import load_transformer

    return load_transformer(tiny_weights_path)


@pytest.fixture(scope="module")
def args(reference_dir) -> dict:
    """The golden F1 case's forward arguments (without its expected outputs)."""
    from safetensors.torch import load_file

    golden = load_file(reference_dir / "golden_forward.safetensors")
    out = {k[3:]: v for k, v in golden.items() if k.startswith("f1/") and "/intermediate/" not in k}
    out.pop("output"), out.pop("output_diffusers")
    return out


@pytest.fixture(scope="session")
def golden_sampler(reference_dir) -> dict:
    """The reference sampler vectors (sigmas, every step's model output and x, final latents) per case."""
    from safetensors.torch import load_file

    return load_file(reference_dir / "golden_sampler.safetensors")


@pytest.fixture(scope="session")
def golden_sampler_info(reference_dir) -> dict:
    return json.loads((reference_dir / "golden_sampler.json").read_text())
