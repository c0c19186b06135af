"""The schedule node in a real ComfyUI: its picture appears on the node, and listing it writes nothing."""

import io
import urllib.parse
import urllib.request
from pathlib import Path

from PIL import Image
from safetensors.torch import load_file

from conftest import TINY_NAME, require_host
from framepack_core.engine.schedule_picture import kernel_colour
from framepack_core.engine.schedules import Kernel

require_host()


def schedule_graph(**schedule_inputs) -> dict:
    """The schedule node feeding an anti-drifting run of 2 sections with the tiny model and the stub encoders."""
    return {
        "loader": {"class_type": "FramePackModelLoader", "inputs": {"model_name": TINY_NAME, "weight_dtype": "default"}},
        "text": {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 1}},
        "vision": {"class_type": "FramePackTestClipVision", "inputs": {"seed": 2}},
        "start": {"class_type": "FramePackTestLatent", "inputs": {"seed": 3, "frames": 1}},
        "schedule": {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "default", "latent_window_size": 9, "uniform_kernel": "k2", "uniform_frames": 12,
            "custom": "", **schedule_inputs}},
        "sampler": {"class_type": "FramePackSampler", "inputs": {
            "model": ["loader", 0], "positive": ["text", 0], "start_latent": ["start", 0],
            "clip_vision_output": ["vision", 0], "schedule": ["schedule", 0], "sampling_mode": "anti_drifting",
            "length": 2.4, "length_unit": "seconds", "steps": 1, "distilled_cfg": 10.0, "real_cfg": 1.0,
            "cfg_rescale": 0.0, "shift": 0.0, "seed": 5, "sampler_name": "unipc_bh1", "teacache_threshold": 0.0,
            "resume_file": "off"}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0], "filename_prefix": "schedule"}},
    }


def succeeded(history) -> bool:
    return history["status"]["status_str"] == "success"


def fetch_image(server, entry) -> Image.Image:
    query = urllib.parse.urlencode({key: entry[key] for key in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB")


def files_under(*folders: Path) -> set:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*")}


def test_the_schedule_node_shows_its_picture_and_feeds_the_sampler(server):
    history = server.run(schedule_graph(preview_mode="anti_drifting", preview_seconds=10.0, preview_section=3))
    assert succeeded(history), history["status"]["messages"]
    [saved] = history["outputs"]["save"]["latents"]
    latent = load_file(server.output_dir / saved["subfolder"] / saved["filename"])["latent_tensor"]
    assert tuple(latent.shape) == (1, 16, 19, 8, 8)  # 2 sections of 9 + the start
    [entry] = history["outputs"]["schedule"]["images"]
    assert entry["type"] == "temp"
    picture = fetch_image(server, entry)
    colours = {colour for _, colour in picture.getcolors(maxcolors=1 << 16)}
    assert picture.width == 1200 and {kernel_colour(Kernel.k(k)) for k in (1, 2, 4)} <= colours


def test_an_old_prompt_without_the_picture_inputs_runs_and_a_bad_section_is_explained(server):
    history = server.run(schedule_graph(schedule="uniform", uniform_kernel="k4", uniform_frames=6))
    assert succeeded(history), history["status"]["messages"]
    history = server.run(schedule_graph(preview_section=9))
    assert not succeeded(history)
    [error] = [m[1] for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "preview_section is 9, but a 5 s video at window 9 has 4 section(s)" in error["exception_message"]


def test_listing_the_node_writes_no_file(server):
    before = files_under(server.output_dir, server.output_dir.parent / "user")
    info = server.get("/object_info/FramePackSchedule")["FramePackSchedule"]
    server.get("/object_info")
    assert files_under(server.output_dir, server.output_dir.parent / "user") == before
    optional = info["input"]["optional"]
    assert list(optional) == ["preview_section", "preview_mode", "preview_seconds", "preview_width", "preview_height"]
    assert info["input"]["required"]["latent_window_size"][1]["max"] == 33
