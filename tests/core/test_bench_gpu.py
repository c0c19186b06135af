"""The GPU benchmark's dry run: the same script on the CPU at a tiny size, so it cannot rot before a GPU is lent."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu.bench_gpu import COMFY_ROW, ROWS

REPO = Path(__file__).resolve().parents[2]
# Rows that need something the test machine may lack; every other row must run in the dry run.
OPTIONAL = {"forward, diffusers bf16": "diffusers", COMFY_ROW: "ComfyUI"}


def dry_run(python: str, out: Path, *extra) -> dict:
    done = subprocess.run([python, "-m", "bench.gpu.bench_gpu", "--dry-run", "--out", str(out), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "gpu.md").read_text().count("\n| ") == len(ROWS) + 1  # header + one line per row
    return json.loads((out / "gpu.json").read_text())


def check_rows(report: dict, must_run=()) -> None:
    assert report["dry_run"] is True and list(report["rows"]) == list(ROWS)
    assert report["flops_per_forward"] > 0 and math.isfinite(report["matmul_tflops"])
    for name, row in report["rows"].items():
        if "skip_reason" in row:
            assert name in OPTIONAL and name not in must_run, (name, row["skip_reason"])
            assert row["skip_reason"].strip()
            continue
        for key in ("s_per_forward", "s_per_frame", "mfu"):
            assert math.isfinite(row[key]) and row[key] > 0, (name, key, row[key])
        assert row["output_finite"], name
        if name.startswith("section"):
            assert row["computed_steps"] + row["skipped_steps"] == report["setup"]["steps"]
            if "Cache" in name:
                assert row["skipped_steps"] > 0, name  # the step caches really skip in the dry run
            else:
                assert row["skipped_steps"] == 0, name


def test_dry_run_writes_every_row(tmp_path):
    report = dry_run(sys.executable, tmp_path)
    check_rows(report)
    assert "no --comfyui" in report["rows"][COMFY_ROW]["skip_reason"]


def test_dry_run_through_comfyui(tmp_path):
    """The 6 GiB row's code path (the pack's loader and sampler inside ComfyUI), when a host is set up."""
    comfyui, venv = os.environ.get("COMFYUI_PATH"), os.environ.get("COMFYUI_VENV")
    if not (comfyui and venv):
        pytest.skip("COMFYUI_PATH / COMFYUI_VENV not set: skipping the dry run through ComfyUI")
    report = dry_run(str(Path(venv) / "bin" / "python"), tmp_path, "--comfyui", comfyui)
    check_rows(report, must_run=(COMFY_ROW,))
    assert report["rows"][COMFY_ROW]["computed_steps"] == report["setup"]["steps"]
