"""FramePack in SamplerCustomAdvanced (FramePack Image To Video, Section Sampler and Sigmas with core's guiders and
noise) against the all-in-one FramePack Sampler: the same settings and seed give the same latents, bit for bit."""

import json
import re
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, TINY_NAME, require_host

require_host()

FRAMES = 37  # pixel frames: 10 latent frames, 3 sections at window 3
STEPS, SEED = 2, 5


def common_nodes() -> dict:
    return {
        "loader": {"class_type": "FramePackModelLoader", "inputs": {"model_name": TINY_NAME, "weight_dtype": "default"}},
        "text": {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 1}},
        "neg": {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 4}},
        "vision": {"class_type": "FramePackTestClipVision", "inputs": {"seed": 2}},
        "start": {"class_type": "FramePackTestLatent", "inputs": {"seed": 3, "frames": 1}},
        "end": {"class_type": "FramePackTestLatent", "inputs": {"seed": 9, "frames": 1}},
        "key_latent": {"class_type": "FramePackTestLatent", "inputs": {"seed": 8, "frames": 1}},
        "keyframes": {"class_type": "FramePackKeyframes", "inputs": {"latent": ["key_latent", 0], "seconds": 0.5}},
        "schedule": {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "default", "latent_window_size": 3, "uniform_kernel": "k2", "uniform_frames": 12, "custom": ""}},
    }


def linked(images) -> dict:
    """{input: node} -> {input: [node, 0]}: the optional image inputs, named alike on both samplers' paths."""
    return {name: [node, 0] for name, node in (images or {}).items()}


def all_in_one_graph(mode, real_cfg=1.0, cfg_rescale=0.0, images=None) -> dict:
    graph = common_nodes()
    graph["sampler"] = {"class_type": "FramePackSampler", "inputs": {
        "model": ["loader", 0], "positive": ["text", 0], "negative": ["neg", 0], "start_latent": ["start", 0],
        "clip_vision_output": ["vision", 0], "schedule": ["schedule", 0], "sampling_mode": mode, "length": FRAMES,
        "length_unit": "frames", "steps": STEPS, "distilled_cfg": 10.0, "real_cfg": real_cfg,
        "cfg_rescale": cfg_rescale, "shift": 0.0, "seed": SEED, "sampler_name": "unipc_bh1",
        "teacache_threshold": 0.0, "resume_file": "off", **linked(images)}}
    graph["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0],
                                                            "filename_prefix": f"latents/all_in_one_{mode}"}}
    return graph


def custom_graph(mode, cfg=1.0, cfg_rescale=0.0, images=None, guider="CFGGuider", noise="RandomNoise") -> dict:
    graph = common_nodes()
    graph.update({
        "conditioning": {"class_type": "FramePackImageToVideo", "inputs": {
            "positive": ["text", 0], "negative": ["neg", 0], "distilled_cfg": 10.0, "start_latent": ["start", 0],
            "clip_vision_output": ["vision", 0], **linked(images)}},
        "latent": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": FRAMES,
                                                                      "batch_size": 1}},
        "noise": {"class_type": noise, "inputs": {"noise_seed": SEED} if noise == "RandomNoise" else {}},
        "section_sampler": {"class_type": "FramePackSectionSampler", "inputs": {
            "sampling_mode": mode, "sampler_name": "unipc_bh1", "cfg_rescale": cfg_rescale,
            "schedule": ["schedule", 0]}},
        "sigmas": {"class_type": "FramePackSigmas", "inputs": {"latent": ["latent", 0], "steps": STEPS, "shift": 0.0,
                                                               "schedule": ["schedule", 0]}},
        "sampler": {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["section_sampler", 0],
            "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0],
                                                        "filename_prefix": f"latents/custom_{mode}"}},
    })
    if guider == "CFGGuider":
        graph["guider"] = {"class_type": "CFGGuider", "inputs": {
            "model": ["loader", 0], "positive": ["conditioning", 0], "negative": ["conditioning", 1], "cfg": cfg}}
    else:
        graph["guider"] = {"class_type": "BasicGuider", "inputs": {"model": ["loader", 0],
                                                                   "conditioning": ["conditioning", 0]}}
    return graph


def latents_of(server, graph) -> torch.Tensor:
    history = server.run(graph)
    assert history["status"]["status_str"] == "success", [m for m in history["status"]["messages"]
                                                          if m[0] == "execution_error"]
    [entry] = history["outputs"]["save"]["latents"]
    return load_file(server.output_dir / entry["subfolder"] / entry["filename"])["latent_tensor"]


def error_of(server, graph) -> str:
    history = server.run(graph)
    assert history["status"]["status_str"] == "error"
    return next(m for m in history["status"]["messages"] if m[0] == "execution_error")[1]["exception_message"]


@pytest.mark.parametrize("mode", ["vanilla", "anti_drifting", "inverted_anti_drifting"])
def test_sampler_custom_advanced_equals_the_all_in_one_sampler(server, mode):
    custom = latents_of(server, custom_graph(mode))
    assert tuple(custom.shape) == (1, 16, 10, 8, 8) and custom[:, :, 1:].abs().mean() > 0
    expected = latents_of(server, all_in_one_graph(mode))
    assert torch.equal(custom, expected), float((custom - expected).abs().max())


def test_real_cfg_rescale_end_frame_and_keyframes_equal_the_all_in_one_sampler(server):
    images = {"end_latent": "end", "keyframes": "keyframes"}
    custom = latents_of(server, custom_graph("anti_drifting", cfg=2.0, cfg_rescale=0.5, images=images))
    expected = latents_of(server, all_in_one_graph("anti_drifting", real_cfg=2.0, cfg_rescale=0.5, images=images))
    assert torch.equal(custom, expected), float((custom - expected).abs().max())
    plain = latents_of(server, custom_graph("anti_drifting"))
    assert (custom - plain).abs().max() > 1e-4  # the guidance, end frame and keyframe do act


def test_basic_guider_equals_the_all_in_one_sampler_without_real_cfg(server):
    custom = latents_of(server, custom_graph("inverted_anti_drifting", guider="BasicGuider"))
    expected = latents_of(server, all_in_one_graph("inverted_anti_drifting"))
    assert torch.equal(custom, expected), float((custom - expected).abs().max())


@pytest.mark.parametrize("patch", ["FramePackTeaCache", "FramePackMagCache"])
def test_step_cache_patches_apply_to_every_section(server, patch):
    graphs = {}
    for name, graph in (("custom", custom_graph("vanilla")), ("all_in_one", all_in_one_graph("vanilla"))):
        graph["cache"] = {"class_type": patch, "inputs": {"model": ["loader", 0], "threshold": 1.0}}
        graph["guider" if name == "custom" else "sampler"]["inputs"]["model"] = ["cache", 0]
        graph["sigmas" if name == "custom" else "sampler"]["inputs"]["steps"] = 8
        graphs[name] = graph
    custom = latents_of(server, graphs["custom"])
    expected = latents_of(server, graphs["all_in_one"])
    assert torch.equal(custom, expected), float((custom - expected).abs().max())
    uncached = custom_graph("vanilla")
    uncached["sigmas"]["inputs"]["steps"] = 8
    assert (custom - latents_of(server, uncached)).abs().max() > 1e-4  # steps were skipped


def test_the_seed_comes_from_the_noise_node(server):
    graph = custom_graph("vanilla")
    graph["noise"]["inputs"]["noise_seed"] = SEED + 1
    assert (latents_of(server, graph) - latents_of(server, custom_graph("vanilla"))).abs().max() > 1e-4


def test_disable_noise_and_a_mismatched_latent_are_reported(server):
    assert "DisableNoise" in error_of(server, custom_graph("vanilla", noise="DisableNoise"))
    graph = custom_graph("vanilla")
    graph["latent"]["inputs"]["width"] = 128
    assert "give EmptyHunyuanLatentVideo the start image's width and height" in error_of(server, graph)
    graph = custom_graph("vanilla")
    graph["sampler"]["inputs"]["latent_image"] = ["key_latent", 0]  # a VAE latent, not an empty one
    assert "holds values, but only its size and length are used" in error_of(server, graph)


def test_one_progress_bar_counts_every_section_step(server, tmp_path):
    """Followed as a user follows it (scripts/queue_workflow.py on the websocket): 2 sections x 2 steps."""
    workflow = tmp_path / "custom_api.json"
    graph = custom_graph("inverted_anti_drifting")
    graph["noise"]["inputs"]["noise_seed"] = 11  # a graph no other test ran: ComfyUI would return a cached result
    graph["latent"]["inputs"]["length"] = 73  # 19 latent frames: 2 sections of the default window 9
    for node in ("section_sampler", "sigmas"):  # only the outputs of SaveLatent are downloaded
        del graph[node]["inputs"]["schedule"]
    del graph["schedule"]
    workflow.write_text(json.dumps(graph))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "queue_workflow.py"), str(workflow), "--server",
                             server.url, "--out", str(tmp_path / "results")],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    progress = re.findall(r"node sampler \(SamplerCustomAdvanced\): (step \d+/\d+)", result.stderr)
    assert progress == [f"step {k}/4" for k in range(1, 5)], result.stderr


def test_interrupt_stops_the_run(server):
    graph = custom_graph("vanilla")
    graph["latent"]["inputs"]["length"] = 145  # 36 sections at window 1, 50 steps each: minutes, unless stopped
    graph["schedule"]["inputs"]["latent_window_size"] = 1
    graph["sigmas"]["inputs"]["steps"] = 50
    answer = server.post("/prompt", {"prompt": graph})
    prompt_id, deadline = answer["prompt_id"], time.time() + 120
    while not server.get("/queue")["queue_running"]:
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.1)
    time.sleep(3)
    server.post("/interrupt", {})
    while prompt_id not in server.get(f"/history/{prompt_id}"):
        assert time.time() < deadline, "the run did not stop"
        time.sleep(0.2)
    messages = server.get(f"/history/{prompt_id}")[prompt_id]["status"]["messages"]
    assert any(m[0] == "execution_interrupted" for m in messages), messages
