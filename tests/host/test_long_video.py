"""Long videos in the real host: streaming decode to an MP4, cancel and resume, and the saved runs' safety rules."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TINY_NAME, comfy_python, require_host
from test_host import assert_success, saved_latent, video_graph

require_host()

WINDOW = 2
READ_MP4 = """
import av, hashlib, json, sys
with av.open(sys.argv[1]) as container:
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    print(json.dumps({"frames": len(frames), "size": list(frames[0].shape) if frames else None,
                      "hashes": [hashlib.sha256(f.tobytes()).hexdigest() for f in frames],
                      "metadata": dict(container.metadata)}))
"""


def test_video_output_node_is_registered_with_tooltips(server):
    node = server.get("/object_info/FramePackVideoOutput")["FramePackVideoOutput"]
    assert node["category"] == "FramePack/video" and node["description"]
    assert all(spec[1].get("tooltip") for spec in node["input"]["required"].values())
    sampler = server.get("/object_info/FramePackSampler")["FramePackSampler"]
    assert sampler["output"] == ["LATENT", "VIDEO"]
    assert list(sampler["input"]["optional"])[-1] == "video_output"  # last: saved workflows keep their values


def read_mp4(path) -> dict:
    """Decode an MP4 with the host's PyAV (what ComfyUI itself reads videos with)."""
    result = subprocess.run([comfy_python(), "-c", READ_MP4, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def streaming_graph(mode, seconds, resume_file="auto", prefix="video/long", steps=2):
    graph = video_graph(mode, seconds=seconds, steps=steps, resume_file=resume_file)
    graph["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
        "schedule": "default", "latent_window_size": WINDOW, "uniform_kernel": "k2", "uniform_frames": 12,
        "custom": ""}}
    graph["sampler"]["inputs"]["schedule"] = ["schedule", 0]
    graph["vae"] = {"class_type": "FramePackTestVideoVAE", "inputs": {"seed": 0, "width": 8}}
    graph["video_output"] = {"class_type": "FramePackVideoOutput", "inputs": {
        "vae": ["vae", 0], "filename_prefix": prefix, "crf": 18, "pixel_format": "yuv420p", "tile_size": 0}}
    graph["sampler"]["inputs"]["video_output"] = ["video_output", 0]
    graph["save_video"] = {"class_type": "SaveVideo", "inputs": {
        "video": ["sampler", 1], "filename_prefix": prefix + "_saved", "format": "auto", "codec": "auto"}}
    return graph


def output_videos(server, pattern):
    return sorted((server.output_dir / "video").glob(pattern))


def frames_of_sections(sections):
    return 4 * WINDOW * sections + 1


@pytest.mark.parametrize("mode", ["vanilla", "inverted_anti_drifting"])
def test_cancelled_streaming_run_leaves_a_playable_video_and_resumes_to_the_same_video(server, mode):
    seconds = 3.2  # 12 sections of 2 latents
    prefix = f"video/long_{mode}"
    folder = server.output_dir / "framepack_resume"
    before = set(folder.glob("framepack_*"))
    answer = server.post("/prompt", {"prompt": streaming_graph(mode, seconds, prefix=prefix, steps=4)})
    deadline = time.time() + 180
    while max((len(list(run.glob("section_*"))) for run in set(folder.glob("framepack_*")) - before), default=0) < 3:
        assert time.time() < deadline, "the run did not finish three sections"
        time.sleep(0.05)
    if mode == "vanilla":  # the live file plays while the run goes on (two sections at least have their parts)
        [live] = output_videos(server, f"long_{mode}_live_*.mp4")
        assert read_mp4(live)["frames"] >= 4 * WINDOW + 3  # 4 + 4W final frames, less the last one in the muxer
    server.post("/interrupt", {})
    while answer["prompt_id"] not in server.get(f"/history/{answer['prompt_id']}"):
        time.sleep(0.2)
    [run] = set(folder.glob("framepack_*")) - before
    finished = len(list(run.glob("section_*.safetensors")))
    assert 3 <= finished < 12
    [partial] = output_videos(server, f"long_{mode}_partial_*.mp4")
    assert f"the video so far is {partial}" in server.log_path.read_text()
    partial_video = read_mp4(partial)
    expected = frames_of_sections(finished) - (1 if mode == "inverted_anti_drifting" else 0) * 4
    assert partial_video["frames"] == expected, (finished, partial_video["frames"])
    assert not output_videos(server, f"long_{mode}_live_*.mp4"), "the live file is removed when the run stops"

    resumed = server.run(streaming_graph(mode, seconds, prefix=prefix, steps=4))
    assert_success(resumed)
    assert f"resuming {run}" in server.log_path.read_text()
    uninterrupted = server.run(streaming_graph(mode, seconds, resume_file="off", prefix=prefix + "_off", steps=4))
    assert_success(uninterrupted)
    [resumed_file] = output_videos(server, f"long_{mode}_0*.mp4")
    [plain_file] = output_videos(server, f"long_{mode}_off_0*.mp4")
    resumed_video, plain_video = read_mp4(resumed_file), read_mp4(plain_file)
    assert resumed_video["frames"] == plain_video["frames"] == frames_of_sections(12)
    assert resumed_video["hashes"] == plain_video["hashes"], "the resumed video differs from an uninterrupted one"
    assert resumed_video["size"] == [64, 64, 3]
    assert json.loads(resumed_video["metadata"]["prompt"])["sampler"]["class_type"] == "FramePackSampler"
    [saved] = output_videos(server, f"long_{mode}_saved_0*.mp4")  # SaveVideo of the VIDEO output
    assert read_mp4(saved)["hashes"] == plain_video["hashes"]
    ui = resumed["outputs"]["sampler"]["images"][0]
    assert ui["filename"] == resumed_file.name and ui["type"] == "output"


def test_a_streamed_video_has_the_frames_of_its_latents(server):
    history = server.run(streaming_graph("vanilla", 1.2, resume_file="off", prefix="video/whole"))
    assert_success(history)
    [path] = output_videos(server, "whole_0*.mp4")
    latent_frames = saved_latent(server, history).shape[2]  # 1.2 s: 4 sections of 2 latents and the start
    assert latent_frames == 1 + 4 * WINDOW and read_mp4(path)["frames"] == 4 * latent_frames - 3


def test_video_output_without_video_output_input_is_reported_before_sampling(server):
    graph = streaming_graph("vanilla", 1.2, resume_file="off")
    del graph["sampler"]["inputs"]["video_output"]
    history = server.run(graph)
    assert history["status"]["status_str"] == "error"
    message = json.dumps(history["status"]["messages"])
    assert "no FramePack Video Output is connected" in message


def test_listing_never_writes_and_a_blocked_resume_folder_is_named(server):
    """A file where output/framepack_resume should be: the node list still loads; runs continue or stop as chosen."""
    folder = server.output_dir / "framepack_resume"
    moved = server.output_dir / "framepack_resume.moved"
    shutil.move(folder, moved) if folder.exists() else None
    folder.write_text("a file in the way")
    try:
        info = server.get("/object_info")
        assert "FramePackSampler" in info and folder.is_file()
        graph = video_graph("vanilla", resume_file="auto")
        assert_success(server.run(graph))
        log = server.log_path.read_text()
        assert "the run goes on without saving its sections" in log and str(folder) in log
        graph["sampler"]["inputs"]["resume_write_failure"] = "stop"
        history = server.run(graph)
        assert history["status"]["status_str"] == "error"
        message = json.dumps(history["status"]["messages"])
        assert "cannot create the resume folder" in message and "framepack_resume" in message
    finally:
        folder.unlink()
        if moved.exists():
            shutil.move(moved, folder)


def variants():
    """Graph changes that change the result; each must give a run folder of its own."""
    def sampler_node(graph, node):
        graph["select"] = node
        graph["sampler"]["inputs"]["sampler"] = ["select", 0]

    def lora(graph, strength):
        graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
            "model": ["loader", 0], "lora_name": "framepack_musubi.safetensors", "strength": strength}}
        graph["sampler"]["inputs"]["model"] = ["lora", 0]

    def schedule(graph, kernel):
        graph["schedule"] = {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "uniform", "latent_window_size": 9, "uniform_kernel": kernel, "uniform_frames": 12,
            "custom": ""}}
        graph["sampler"]["inputs"]["schedule"] = ["schedule", 0]

    return {
        "connected sampler": lambda g: sampler_node(g, {"class_type": "KSamplerSelect",
                                                        "inputs": {"sampler_name": "euler"}}),
        "another connected sampler": lambda g: sampler_node(g, {"class_type": "KSamplerSelect",
                                                                "inputs": {"sampler_name": "heun"}}),
        "sampler options": lambda g: sampler_node(g, {"class_type": "SamplerEulerAncestral",
                                                      "inputs": {"eta": 0.5, "s_noise": 1.0}}),
        "other sampler options": lambda g: sampler_node(g, {"class_type": "SamplerEulerAncestral",
                                                            "inputs": {"eta": 1.0, "s_noise": 1.0}}),
        "schedule": lambda g: schedule(g, "k2"),
        "other schedule": lambda g: schedule(g, "k4"),
        "teacache": lambda g: g["sampler"]["inputs"].update(teacache_threshold=0.1),
        "magcache": lambda g: g["sampler"]["inputs"].update(magcache_threshold=0.1),
        "lora": lambda g: lora(g, 1.0),
        "lora strength": lambda g: lora(g, 0.5),
        "model file": lambda g: g["loader"]["inputs"].update(model_name="framepack_changed.safetensors"),
    }


def test_everything_that_changes_the_result_gets_its_own_saved_run(server):
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(server.models_dir / "diffusion_models" / TINY_NAME)
    name = next(k for k in weights if k.endswith("to_q.weight"))
    weights[name] = weights[name] + torch.randn_like(weights[name]) * 0.01  # a fine-tune changes the whole matrix
    save_file(weights, str(server.models_dir / "diffusion_models" / "framepack_changed.safetensors"))
    folder = server.output_dir / "framepack_resume"
    seen = {}
    for label, change in {"plain": lambda g: None, **variants()}.items():
        graph = video_graph("vanilla", seconds=1.2, steps=1, resume_file="auto")
        change(graph)
        before = set(folder.glob("framepack_*"))
        status = server.run(graph)["status"]
        assert status["status_str"] == "success", (label, [m for m in status["messages"] if m[0] == "execution_error"])
        new = set(folder.glob("framepack_*")) - before
        assert len(new) == 1, f"{label}: no run folder of its own (it resumed {sorted(seen)})"
        seen[label] = new.pop().name
    assert len(set(seen.values())) == len(seen)


def test_another_sampler_never_resumes_a_cancelled_run(server):
    def graph(sampler_name, resume_file):
        g = video_graph("vanilla", seconds=3.2, steps=3, resume_file=resume_file)
        g["select"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler_name}}
        g["sampler"]["inputs"]["sampler"] = ["select", 0]
        return g

    folder = server.output_dir / "framepack_resume"
    before = set(folder.glob("framepack_*"))
    answer = server.post("/prompt", {"prompt": graph("euler", "auto")})
    deadline = time.time() + 120
    while not any(p.glob("section_*") for p in set(folder.glob("framepack_*")) - before):
        assert time.time() < deadline
        time.sleep(0.05)
    server.post("/interrupt", {})
    while answer["prompt_id"] not in server.get(f"/history/{answer['prompt_id']}"):
        time.sleep(0.2)
    other = server.run(graph("heun", "auto"))
    assert_success(other)
    plain = server.run(graph("heun", "off"))
    assert (saved_latent(server, other) - saved_latent(server, plain)).abs().max() == 0


def test_a_finished_run_is_returned_at_once_after_a_later_node_failed(server):
    """The sampler's work survives a crash downstream: queued again, the saved run gives the same latents."""
    graph = video_graph("vanilla", seconds=1.2, steps=2, resume_file="auto")
    graph["sampler"]["inputs"]["seed"] = 77
    first = server.run(graph)
    assert_success(first)
    log_before = len(server.log_path.read_text())
    graph["save"]["inputs"]["filename_prefix"] = "latents/again"  # a new output node run, same sampler inputs
    server.post("/free", {"unload_models": True, "free_memory": True})  # drop ComfyUI's cache, as a restart would
    time.sleep(1)
    again = server.run(graph)
    assert_success(again)
    assert "resuming" in server.log_path.read_text()[log_before:]
    assert (saved_latent(server, again) - saved_latent(server, first)).abs().max() == 0


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium for the frontend check (apt-get install chromium)")
def test_the_growing_video_plays_in_the_real_frontend_while_later_sections_sample(server, tmp_path):
    """At the third section the sampler node plays the live MP4; after the run the same node shows the whole video."""
    prompt = tmp_path / "streaming.json"
    prompt.write_text(json.dumps(streaming_graph("vanilla", seconds=10, resume_file="off", prefix="video/watched")))
    result = subprocess.run([comfy_python(), str(Path(__file__).parent / "frontend_stream_check.py"), "--server",
                             server.url, "--prompt", str(prompt), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["status"] == "success"
    live = [v for v in report["during"]["videos"] if "_live" in v["src"]]
    assert live and live[0]["ready"] >= 2 and live[0]["advanced"], report["during"]
    final = [v for v in report["after"]["videos"] if "watched" in v["src"] and "_live" not in v["src"]]
    assert final and final[0]["ready"] >= 1 and final[0]["duration"] > live[0]["duration"], report["after"]
