"""The HTTP API as users queue generations: the API-format example workflows and scripts/queue_workflow.py,
run as a user runs it (a subprocess) against the real ComfyUI with the tiny model."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from conftest import REPO, TINY_NAME, comfy_python, require_host
from workflows import API_EXAMPLES, EXAMPLES, FRONTEND_NODES, api_workflow, check_api_workflow, check_workflow, examples

require_host()

CLIENT = REPO / "scripts" / "queue_workflow.py"
INPUTS = EXAMPLES / "input"
# Where each loader of the examples finds its file: the test server gets empty placeholders there, enough for
# ComfyUI's validation (the real files are gigabytes); loading one then fails, which ends the run early.
PLACEHOLDER_FOLDERS = {"VAELoader": "vae", "CLIPVisionLoader": "clip_vision", "DualCLIPLoader": "text_encoders"}
MEDIA_INPUTS = {"LoadImage": "image", "LoadVideo": "file"}
EXIT_REFUSED, EXIT_FAILED = 3, 4  # the client's exit codes (see its --help)


def run_client(server, workflow, *arguments, out, timeout=600):
    return subprocess.run([sys.executable, str(CLIENT), str(workflow), "--server", server.url, "--out", str(out),
                           *arguments], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.mark.parametrize("name", list(examples()))
def test_every_example_has_an_api_twin_that_matches_it(object_info, name):
    ui = json.loads((EXAMPLES / f"{name}.json").read_text())
    api = json.loads((API_EXAMPLES / f"{name}_api.json").read_text())
    assert check_workflow(ui, object_info) == []
    assert check_api_workflow(api, object_info) == []
    assert api == api_workflow(ui, object_info), "the API file is out of date: rerun tests/host/workflows.py"
    assert not {node["class_type"] for node in api.values()} & set(FRONTEND_NODES)
    ui_ids = {str(node["id"]) for node in ui["nodes"] if node["type"] not in FRONTEND_NODES}
    assert set(api) == ui_ids, "--set names nodes by their UI numbers"


def test_api_twins_are_what_the_real_frontend_exports(server):
    if shutil.which("chromium") is None:
        pytest.skip("the frontend check needs Debian's chromium (apt-get install chromium)")
    names = list(examples())
    result = subprocess.run([comfy_python(), str(Path(__file__).parent / "frontend_check.py"), "--server", server.url,
                             "--api", *(str(EXAMPLES / f"{name}.json") for name in names)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name in names:
        exported = report[f"{name}.json"]["api"]  # Workflow > Export (API) of the UI workflow
        assert exported == json.loads((API_EXAMPLES / f"{name}_api.json").read_text()), name


def test_api_check_catches_broken_prompts(object_info):
    good = json.loads((API_EXAMPLES / "framepack_image_to_video_api.json").read_text())
    sampler = next(key for key, node in good.items() if node["class_type"] == "FramePackSampler")
    breakages = {
        "is required but missing": lambda p: p[sampler]["inputs"].pop("steps"),
        "outside [1, 200]": lambda p: p[sampler]["inputs"].update(steps=0),
        "is not one of": lambda p: p[sampler]["inputs"].update(sampling_mode="sideways"),
        "accepts LATENT but node 1 output 0 is IMAGE": lambda p: p[sampler]["inputs"].update(start_latent=["1", 0]),
        "which is missing or unknown": lambda p: p[sampler]["inputs"].update(model=["99", 0]),
        "unknown input 'stepz'": lambda p: p[sampler]["inputs"].update(stepz=3),
        "unknown type": lambda p: p[sampler].update(class_type="FramePackSamplr"),
    }
    for problem, breakage in breakages.items():
        prompt = json.loads(json.dumps(good))
        breakage(prompt)
        found = check_api_workflow(prompt, object_info)
        assert any(problem in p for p in found), (problem, found)


def test_example_inputs_are_shipped_and_small():
    used = {node["inputs"][name] for path in API_EXAMPLES.glob("*_api.json")
            for node in json.loads(path.read_text()).values()
            for kind, name in MEDIA_INPUTS.items() if node["class_type"] == kind}
    assert {"example.png", "example_end.png", "example_keyframe.png", "example.mp4"} <= used
    for name in used:  # whatever a workflow loads is shipped
        assert (INPUTS / name).is_file() and (INPUTS / name).stat().st_size < 300_000, name
    for name in {"example.png", "example_end.png", "example_keyframe.png"}:
        with Image.open(INPUTS / name) as image:
            assert image.size == (640, 640) and image.mode == "RGB"


@pytest.mark.parametrize("name", list(examples()))
def test_api_example_is_accepted_by_comfyui_through_the_client(server, tmp_path, name):
    """Queued with the tiny model and the shipped inputs: ComfyUI's /prompt validation accepts it (exit code 4,
    not 3), and the run gets as far as loading one of the placeholder files."""
    prompt = json.loads((API_EXAMPLES / f"{name}_api.json").read_text())
    overrides = []
    for node_id, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in PLACEHOLDER_FOLDERS:
            for value in inputs.values():
                if isinstance(value, str) and value.endswith(".safetensors"):
                    (server.models_dir / PLACEHOLDER_FOLDERS[kind] / value).touch()
        elif kind == "FramePackModelLoader":
            overrides += ["--set", f"{node_id}.model_name={TINY_NAME}"]
        elif kind in MEDIA_INPUTS:
            overrides += ["--set", f"{node_id}.{MEDIA_INPUTS[kind]}={INPUTS / inputs[MEDIA_INPUTS[kind]]}"]
    result = run_client(server, API_EXAMPLES / f"{name}_api.json", *overrides, out=tmp_path)
    assert result.returncode == EXIT_FAILED, result.stderr
    assert "queued prompt" in result.stderr and "refused" not in result.stderr
    failed = re.search(r"execution failed in node \S+ \((\w+)\)", result.stderr)
    assert failed and failed.group(1) in PLACEHOLDER_FOLDERS, result.stderr


def tiny_graph():
    """A FramePack generation with the tiny model and the stub encoders (2 sections of 3 steps), and the
    bucket of an uploaded image, so the run outputs a latent file and a PNG."""
    return {
        "loader": {"class_type": "FramePackModelLoader", "inputs": {"model_name": TINY_NAME,
                                                                   "weight_dtype": "default"}},
        "text": {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 1}},
        "vision": {"class_type": "FramePackTestClipVision", "inputs": {"seed": 2}},
        "start": {"class_type": "FramePackTestLatent", "inputs": {"seed": 3, "frames": 1}},
        "schedule": {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "default", "latent_window_size": 3, "uniform_kernel": "k2", "uniform_frames": 12,
            "custom": ""}},
        "sampler": {"class_type": "FramePackSampler", "inputs": {
            "model": ["loader", 0], "positive": ["text", 0], "start_latent": ["start", 0],
            "clip_vision_output": ["vision", 0], "schedule": ["schedule", 0], "sampling_mode": "inverted_anti_drifting",
            "length": 1.0, "length_unit": "seconds", "steps": 3, "distilled_cfg": 10.0, "real_cfg": 1.0,
            "cfg_rescale": 0.0, "shift": 0.0, "seed": 5, "sampler_name": "unipc_bh1", "teacache_threshold": 0.0,
            "resume_file": "off"}},  # never a finished run returned at once: the progress must show
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0],
                                                        "filename_prefix": "latents/client"}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "not_uploaded_yet.png"}},
        "bucket": {"class_type": "FramePackBucket", "inputs": {"image": ["image", 0], "resolution": 128,
                                                               "upscale_method": "bilinear"}},
        "save_image": {"class_type": "SaveImage", "inputs": {"images": ["bucket", 0],
                                                             "filename_prefix": "client/bucket"}},
    }


@pytest.fixture
def tiny_workflow(tmp_path):
    path = tmp_path / "tiny_api.json"
    path.write_text(json.dumps(tiny_graph()))
    return path


def test_client_queues_follows_progress_and_downloads_the_outputs(server, tmp_path, tiny_workflow):
    out = tmp_path / "results"
    result = run_client(server, tiny_workflow, "--set", "sampler.seed=77", "--set",
                        f"image.image={INPUTS / 'example.png'}", out=out)
    assert result.returncode == 0, result.stderr
    log = result.stderr
    assert "uploaded" in log and "executing node sampler (FramePackSampler)" in log
    progress = re.findall(r"node sampler \(FramePackSampler\): (section \d/\d step \d/\d)", log)
    assert progress == [f"section {s}/2 step {k}/3" for s in (1, 2) for k in (1, 2, 3)], log
    downloaded = [Path(line) for line in result.stdout.splitlines()]
    assert sorted(p.relative_to(out).parts[0] for p in downloaded) == ["client", "latents"]
    latent_file = next(p for p in downloaded if p.suffix == ".latent")
    server_file = server.output_dir / latent_file.relative_to(out)
    assert latent_file.read_bytes() == server_file.read_bytes()
    latent = load_file(latent_file)["latent_tensor"]
    assert tuple(latent.shape) == (1, 16, 2 * 3 + 1, 8, 8) and latent.isfinite().all()
    with Image.open(next(p for p in downloaded if p.suffix == ".png")) as image:
        assert image.size == (128, 128)  # the square bucket of the uploaded 640 x 640 image at resolution 128
    prompt_id = re.search(r"queued prompt (\S+)", log).group(1)
    queued = server.get(f"/history/{prompt_id}")[prompt_id]["prompt"][2]
    assert queued["sampler"]["inputs"]["seed"] == 77 and queued["image"]["inputs"]["image"] == "example.png"


def test_refused_prompt_exits_with_the_servers_validation_error(server, tmp_path, tiny_workflow):
    result = run_client(server, tiny_workflow, "--set", "sampler.steps=0", out=tmp_path / "results")
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert "the server refused the prompt" in result.stderr
    assert "node sampler (FramePackSampler): Value 0 smaller than min of 1: steps" in result.stderr
    assert not (tmp_path / "results").exists()


def test_failed_execution_exits_with_the_servers_exception(server, tmp_path, tiny_workflow):
    result = run_client(server, tiny_workflow, "--set", "schedule.schedule=custom", "--set",
                        "schedule.custom=f1k1_td_f16k3_g9", "--set", f"image.image={INPUTS / 'example.png'}",
                        out=tmp_path / "results")
    assert result.returncode == EXIT_FAILED, result.stderr
    assert re.search(r"execution failed in node \w+ \(FramePack\w+\): .*invalid frame schedule", result.stderr)
    assert not (tmp_path / "results").exists()


def test_unknown_input_is_refused_before_anything_is_queued(server, tmp_path, tiny_workflow):
    result = run_client(server, tiny_workflow, "--set", "sampler.sead=1", out=tmp_path)
    assert result.returncode == 2
    assert "node sampler (FramePackSampler) has no input 'sead'" in result.stderr and "seed" in result.stderr
    assert "queued" not in result.stderr
