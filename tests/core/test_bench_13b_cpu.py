"""bench.bench_13b_cpu at the tiny size: the loaders, the section, the time split and the memory checks run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import bench_13b_cpu
from bench.make_checkpoint import load_config, write_single_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fp8_file(tmp_path_factory, reference_dir):
    path = tmp_path_factory.mktemp("cpu13b") / "tiny_fp8.safetensors"
    write_single_file(load_config(reference_dir / "tiny_framepack_config.json"), path, "fp8")
    return path


def check_row(row):
    assert "skip_reason" not in row, row.get("skip_reason")
    assert row["output_finite"] and row["steps"] == 2
    for key in ("load_s", "section_s", "s_per_forward", "gemm_s", "casts_s", "live_tensor_peak_mib"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["s_per_block"]["dual"] > 0 and row["s_per_block"]["single"] > 0
    assert row["context_tokens"] == 729 + 256  # the real context's length, at the tiny model's widths


def test_core_path_in_process(fp8_file):
    row = bench_13b_cpu.measure("core", fp8_file, None, steps=2)
    check_row(row)
    assert row["storage_dtype"] == "torch.float8_e4m3fn" and row["compute_dtype"] == "torch.bfloat16"
    # memory_model's activation formula against the live-tensor peak of a real forward at these token counts.
    assert 0.75 < row["live_tensor_peak_mib"] / (row["predicted_activation_mib"] + row["one_weight_cast_mib"]) < 1.33


def test_a_path_that_cannot_fit_is_refused(fp8_file, monkeypatch):
    monkeypatch.setattr(bench_13b_cpu.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000))
    with pytest.raises(SystemExit, match="GiB of RAM available now; not run"):
        bench_13b_cpu.check_memory("core", fp8_file)


def run_main(python, fp8_file, out, *extra):
    done = subprocess.run([python, "-m", "bench.bench_13b_cpu", "--file", str(fp8_file), "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "cpu_13b.json").read_text())


def test_report_in_a_child_process(fp8_file, tmp_path):
    report = run_main(sys.executable, fp8_file, tmp_path)
    assert [row["path"] for row in report["rows"]] == ["core"]
    check_row(report["rows"][0])
    assert report["parameters"] == 330_912 and "| core |" in (tmp_path / "cpu_13b.md").read_text()


def test_through_the_pack_loader_node_in_comfyui(fp8_file, tmp_path):
    comfyui, venv = os.environ.get("COMFYUI_PATH"), os.environ.get("COMFYUI_VENV")
    if not (comfyui and venv):
        pytest.skip("COMFYUI_PATH / COMFYUI_VENV not set: skipping the ComfyUI loader paths")
    python = str(Path(venv) / "bin" / "python")
    report = run_main(python, fp8_file, tmp_path, "--comfyui", comfyui, "--comfy-python", python)
    assert [row["path"] for row in report["rows"]] == list(bench_13b_cpu.PATHS)
    for row in report["rows"]:
        check_row(row)
