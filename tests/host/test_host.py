"""The pack inside a real ComfyUI: node registration, and whole graphs queued through the HTTP API."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TINY_F1_NAME, TINY_NAME, comfy_python, require_host
from workflows import EXAMPLES, check_api_workflow, check_workflow, examples

require_host()

PACK_NODES = {"FramePackModelLoader", "FramePackLoraLoader", "FramePackBucket", "FramePackSchedule", "FramePackSampler",
              "FramePackTimestampedPrompts", "FramePackKeyframes", "FramePackSingleFrameSampler", "FramePackColorMatch",
              "FramePackEncodeStartImage", "FramePackVideoOutput", "FramePackImageToVideo", "FramePackSectionSampler",
              "FramePackSigmas"}


def test_pack_imports_and_registers_every_node(server):
    log = server.log_path.read_text()
    assert "IMPORT FAILED" not in log, log[-3000:]
    info = server.get("/object_info")
    assert PACK_NODES <= set(info)
    for node_id in PACK_NODES:
        node = info[node_id]
        assert node["category"].startswith("FramePack/"), node_id
        assert node["description"], node_id
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert all(node["output_tooltips"]), node_id


def test_loader_lists_the_model_folder(server):
    options = server.get("/object_info/FramePackModelLoader")["FramePackModelLoader"]["input"]["required"]
    assert TINY_NAME in options["model_name"][0] or TINY_NAME in str(options["model_name"])


def video_graph(mode, seconds=1.2, **sampler_inputs):
    graph = {
        "loader": {"class_type": "FramePackModelLoader", "inputs": {"model_name": TINY_NAME, "weight_dtype": "default"}},
        "text": {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 1}},
        "vision": {"class_type": "FramePackTestClipVision", "inputs": {"seed": 2}},
        "start": {"class_type": "FramePackTestLatent", "inputs": {"seed": 3, "frames": 1}},
        "sampler": {"class_type": "FramePackSampler", "inputs": {
            "model": ["loader", 0], "positive": ["text", 0], "start_latent": ["start", 0],
            "clip_vision_output": ["vision", 0], "sampling_mode": mode, "length": seconds, "length_unit": "seconds",
            "steps": 2, "distilled_cfg": 10.0, "real_cfg": 1.0, "cfg_rescale": 0.0, "shift": 0.0, "seed": 5,
            "sampler_name": "unipc_bh1", "teacache_threshold": 0.0, **sampler_inputs}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0], "filename_prefix": f"latents/{mode}"}},
    }
    return graph


def saved_latent(server, history, node="save"):
    [entry] = history["outputs"][node]["latents"]
    path = server.output_dir / entry["subfolder"] / entry["filename"]
    return load_file(path)["latent_tensor"]


def assert_success(history):
    status = history["status"]
    assert status["status_str"] == "success", status["messages"]


@pytest.mark.parametrize("mode", ["inverted_anti_drifting", "vanilla", "anti_drifting"])
def test_every_sampling_mode_through_the_api(server, mode):
    history = server.run(video_graph(mode))
    assert_success(history)
    latent = saved_latent(server, history)
    assert tuple(latent.shape) == (1, 16, 10, 8, 8)  # 1.2 s -> 1 section of 9 latents + the start frame
    assert latent.isfinite().all() and latent[:, :, 1:].abs().mean() > 0


def test_schedule_prompts_keyframes_and_end_frame(server):
    graph = video_graph("inverted_anti_drifting", seconds=3.0, prompt_blend_seconds=0.5)
    graph["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
        "schedule": "default", "latent_window_size": 3, "uniform_kernel": "k2", "uniform_frames": 12, "custom": ""}}
    graph["clip"] = {"class_type": "FramePackTestClip", "inputs": {}}
    graph["prompts"] = {"class_type": "FramePackTimestampedPrompts", "inputs": {
        "clip": ["clip", 0], "text": "[0s: a cat sits] [1s-2s: the cat jumps]"}}
    graph["key_latent"] = {"class_type": "FramePackTestLatent", "inputs": {"seed": 8, "frames": 1}}
    graph["keyframes"] = {"class_type": "FramePackKeyframes", "inputs": {"latent": ["key_latent", 0], "seconds": 1.0}}
    graph["end"] = {"class_type": "FramePackTestLatent", "inputs": {"seed": 9, "frames": 1}}
    graph["sampler"]["inputs"].update(schedule=["schedule", 0], prompts=["prompts", 0], keyframes=["keyframes", 0],
                                      end_latent=["end", 0])
    history = server.run(graph)
    assert_success(history)
    assert tuple(saved_latent(server, history).shape) == (1, 16, 3 * 8 + 1, 8, 8)  # 3 s at W = 3 -> 8 sections


def test_custom_schedule_and_real_cfg(server):
    graph = video_graph("vanilla", seconds=1.0, real_cfg=2.0, cfg_rescale=0.5)
    graph["neg"] = {"class_type": "FramePackTestTextEncode", "inputs": {"seed": 4}}
    graph["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
        "schedule": "custom", "latent_window_size": 2, "uniform_kernel": "k2", "uniform_frames": 12,
        "custom": "f1k1_tc_f4k2f1k1_g2"}}
    graph["sampler"]["inputs"].update(negative=["neg", 0], schedule=["schedule", 0])
    history = server.run(graph)
    assert_success(history)
    assert saved_latent(server, history).shape[2] == 2 * 4 + 1


def test_step_caches_skip_steps_and_refuse_to_combine(server):
    latents = {}
    for name, caches in (("plain", {}), ("teacache", {"teacache_threshold": 1.0}), ("magcache", {"magcache_threshold": 1.0})):
        graph = video_graph("vanilla", steps=8, **caches)
        graph["save"]["inputs"]["filename_prefix"] = f"latents/cache_{name}"
        history = server.run(graph)
        assert_success(history)
        latents[name] = saved_latent(server, history)
    for name in ("teacache", "magcache"):
        change = float((latents[name] - latents["plain"]).norm() / latents["plain"].norm())
        assert 1e-4 < change < 0.5, (name, change)
    history = server.run(video_graph("vanilla", teacache_threshold=0.1, magcache_threshold=0.1))
    assert history["status"]["status_str"] == "error"
    errors = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "choose one step cache" in errors[0][1]["exception_message"]


def test_single_frame_sampler(server):
    graph = video_graph("vanilla")
    graph["ref"] = {"class_type": "FramePackTestLatent", "inputs": {"seed": 6, "frames": 1}}
    graph["sampler"] = {"class_type": "FramePackSingleFrameSampler", "inputs": {
        "model": ["loader", 0], "positive": ["text", 0], "start_latent": ["start", 0],
        "clip_vision_output": ["vision", 0], "target_index": 5, "steps": 2, "distilled_cfg": 10.0, "seed": 1,
        "sampler_name": "unipc_bh1", "reference_latent": ["ref", 0], "reference_index": 10}}
    history = server.run(graph)
    assert_success(history)
    assert tuple(saved_latent(server, history).shape) == (1, 16, 1, 8, 8)


def test_bad_schedule_string_is_reported_clearly(server):
    graph = video_graph("vanilla")
    graph["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
        "schedule": "custom", "latent_window_size": 9, "uniform_kernel": "k2", "uniform_frames": 12,
        "custom": "f1k1_td_f16k3_g9"}}
    graph["sampler"]["inputs"]["schedule"] = ["schedule", 0]
    history = server.run(graph)
    assert history["status"]["status_str"] == "error"
    errors = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    message = errors[0][1]["exception_message"]
    assert "invalid frame schedule" in message and "^" in message


def test_bucket_and_colour_nodes(server):
    graph = {
        "image": {"class_type": "EmptyImage", "inputs": {"width": 200, "height": 100, "batch_size": 3, "color": 1234}},
        "bucket": {"class_type": "FramePackBucket", "inputs": {"image": ["image", 0], "resolution": 640,
                                                               "upscale_method": "bilinear"}},
        "match": {"class_type": "FramePackColorMatch", "inputs": {"images": ["bucket", 0], "reference": ["bucket", 0],
                                                                  "strength": 0.5}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["match", 0]}},
    }
    history = server.run(graph)
    assert_success(history)


def test_loras_in_both_key_formats_give_the_same_model(server):
    plain = saved_latent(server, server.run(video_graph("vanilla")))
    core_graph = video_graph("vanilla")
    core_graph["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["loader", 0], "lora_name": "framepack_musubi.safetensors", "strength_model": 1.0}}
    core_graph["sampler"]["inputs"]["model"] = ["lora", 0]
    ours_graph = video_graph("vanilla")
    ours_graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
        "model": ["loader", 0], "lora_name": "hunyuan_original_names.safetensors", "strength": 1.0}}
    ours_graph["sampler"]["inputs"]["model"] = ["lora", 0]
    with_core, with_ours = (saved_latent(server, server.run(g)) for g in (core_graph, ours_graph))
    assert (with_core - plain).abs().max() > 1e-3
    assert (with_core - with_ours).abs().max() < 1e-5


def test_lora_of_another_model_is_reported(server):
    graph = video_graph("vanilla")
    graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
        "model": ["loader", 0], "lora_name": "sdxl_style.safetensors", "strength": 1.0}}
    graph["sampler"]["inputs"]["model"] = ["lora", 0]
    history = server.run(graph)
    assert history["status"]["status_str"] == "error"
    errors = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    assert "matches no FramePack weight" in errors[0][1]["exception_message"]


EXAMPLE_NAMES = list(examples())


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_example_workflow_is_valid(server, name):
    workflow = json.loads((EXAMPLES / f"{name}.json").read_text())
    assert check_workflow(workflow, server.get("/object_info")) == []
    assert (EXAMPLES / f"{name}.jpg").is_file(), "every example has a same-name thumbnail"
    used = {node["type"] for node in workflow["nodes"]}
    assert used & PACK_NODES and "MarkdownNote" in used


def test_example_workflows_are_listed_as_templates(server):
    templates = server.get("/workflow_templates")
    assert set(templates["ComfyUI-FramePack"]) == set(EXAMPLE_NAMES)


def test_examples_open_in_the_real_frontend_without_missing_nodes(server):
    if shutil.which("chromium") is None:
        pytest.skip("the frontend check needs Debian's chromium (apt-get install chromium)")
    files = [str(EXAMPLES / f"{name}.json") for name in EXAMPLE_NAMES]
    result = subprocess.run([comfy_python(), str(Path(__file__).parent / "frontend_check.py"), "--server", server.url,
                             *files], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {f"{name}.json" for name in EXAMPLE_NAMES}
    for name, found in report.items():
        assert found == {"missing": [], "errors": [], "dialog": []}, name


def test_model_sampling_sd3_sets_the_shift(server):
    patched = video_graph("vanilla")
    patched["shift_node"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["loader", 0], "shift": 3.0}}
    patched["sampler"]["inputs"]["model"] = ["shift_node", 0]
    manual = video_graph("vanilla", shift=3.0)
    auto = video_graph("vanilla")
    via_node, via_input, automatic = (saved_latent(server, server.run(g)) for g in (patched, manual, auto))
    assert (via_node - via_input).abs().max() == 0
    assert (via_node - automatic).abs().max() > 1e-4


def test_torch_compile_model_wraps_the_transformer(server):
    compiled = video_graph("vanilla")
    compiled["compile"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["loader", 0], "backend": "inductor"}}
    compiled["sampler"]["inputs"]["model"] = ["compile", 0]
    history = server.run(compiled, timeout=600)
    assert_success(history)
    plain = saved_latent(server, server.run(video_graph("vanilla")))
    assert (saved_latent(server, history) - plain).abs().max() < 1e-3


def test_cancel_keeps_finished_sections_and_resume_is_bit_identical(server):
    def graph(resume_file):
        g = video_graph("inverted_anti_drifting", seconds=4.0, steps=8, resume_file=resume_file)
        g["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "default", "latent_window_size": 2, "uniform_kernel": "k2", "uniform_frames": 12, "custom": ""}}
        g["sampler"]["inputs"]["schedule"] = ["schedule", 0]
        return g

    folder = server.output_dir / "framepack_resume"
    before = set(folder.glob("framepack_*"))
    answer = server.post("/prompt", {"prompt": graph("auto")})
    deadline = time.time() + 120
    while not {p.parent for p in folder.glob("framepack_*/section_*.safetensors")} - before:
        assert time.time() < deadline, "no section was saved"
        time.sleep(0.02)
    server.post("/interrupt", {})
    while answer["prompt_id"] not in server.get(f"/history/{answer['prompt_id']}"):
        time.sleep(0.2)
    history = server.get(f"/history/{answer['prompt_id']}")[answer["prompt_id"]]
    assert history["status"]["status_str"] == "error"  # interrupted
    assert any(m[0] == "execution_interrupted" for m in history["status"]["messages"])
    [saved] = set(folder.glob("framepack_*")) - before
    resumed_history = server.run(graph("auto"))
    assert_success(resumed_history)
    assert len(list(saved.glob("section_*.safetensors"))) == 15, "a finished run keeps its sections (4 s, window 2)"
    uninterrupted = saved_latent(server, server.run(graph("off")))
    assert (saved_latent(server, resumed_history) - uninterrupted).abs().max() == 0


def test_mode_that_does_not_match_the_checkpoint_is_warned_about(server):
    graph = video_graph("inverted_anti_drifting")
    graph["loader"]["inputs"]["model_name"] = TINY_F1_NAME
    assert_success(server.run(graph))
    assert "trained for vanilla sampling but inverted_anti_drifting was chosen" in server.log_path.read_text()


SAVED = Path(__file__).resolve().parents[1] / "data" / "saved_workflows"


@pytest.mark.parametrize("name", sorted(p.stem for p in SAVED.glob("*.json") if not p.stem.endswith("_api")))
def test_workflows_saved_by_the_previous_release_still_load(server, name):
    """The example workflows exactly as the previous release shipped them (UI and API format), against today's
    nodes: every node, link and widget value is still accepted (new optional inputs take their defaults)."""
    object_info = server.get("/object_info")
    assert check_workflow(json.loads((SAVED / f"{name}.json").read_text()), object_info) == []
    assert check_api_workflow(json.loads((SAVED / f"{name}_api.json").read_text()), object_info) == []
