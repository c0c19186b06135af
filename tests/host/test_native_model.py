"""FramePack as a normal ComfyUI model: the ComfyUI path equals the core path bit for bit, the forward goes
through ComfyUI's wrappers with transformer_options reaching the attention, and the step caches are MODEL
patches equal to the sampler's legacy widgets."""

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, STUBS, comfy_python, require_host
from test_host import assert_success, saved_latent, video_graph

require_host()

# One section of each graph below: 1.2 s at window 9, 3 steps.
SEED, STEPS, SECONDS = 5, 3, 1.2

# Runs inside ComfyUI's interpreter (as the server does, on the CPU): the same stub encoders and the tiny
# checkpoint, sampled (1) by framepack_core.generate with TransformerSectionSampler on the core transformer
# (ComfyUI's attention backend, so both paths share it), (2) by the pack's ComfySectionSampler on the native
# ComfyUI model with a DIFFUSION_MODEL wrapper and an attention override that count their calls.
CORE_RUN = r"""
import importlib, json, os, sys
sys.argv = [sys.argv[0], "--cpu"]
sys.path[:0] = [os.environ["PACK_PARENT"], os.environ["STUBS_PARENT"], os.getcwd()]
import utils.install_util  # ComfyUI's own utils package, before comfy puts comfy/ first on the path
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.patcher_extension
from safetensors.torch import save_file

pack = "ComfyUI_FramePack"
core = importlib.import_module(pack + ".framepack_core")
native = importlib.import_module(pack + ".comfy_adapter.native_model")
latents = importlib.import_module(pack + ".comfy_adapter.latents")
sections = importlib.import_module(pack + ".comfy_adapter.section_sampler")
stubs = importlib.import_module("stub_nodes")

seed, steps, seconds, mode, path = (int(os.environ["SEED"]), int(os.environ["STEPS"]), float(os.environ["SECONDS"]),
                                    os.environ["MODE"], os.environ["MODEL"])
text = stubs.FramePackTestTextEncode.execute(1).result[0]
vision = stubs.FramePackTestClipVision.execute(2).result[0]
start = stubs.FramePackTestLatent.execute(3, 1).result[0]
model = core.load_transformer(path, attention=native.comfy_attention)
inputs = core.GenerationInputs(start_latent=latents.latent_frames(start, "start", frames=1),
                               prompts=latents.text_conditioning(text, "positive", model.config),
                               image_embeddings=latents.image_embeddings(vision, "vision", model.config))
settings = core.GenerationSettings(mode=mode, num_sections=core.section_count(seconds), latent_window_size=9,
                                   steps=steps, seed=seed)
video = core.generate(core.TransformerSectionSampler(model), inputs, settings)
calls = {"wrapper": 0, "attention": 0}

def counting_wrapper(executor, *args, **kwargs):
    calls["wrapper"] += 1
    return executor(*args, **kwargs)

def counting_attention(func, *args, **kwargs):
    calls["attention"] += 1
    return func(*args, **kwargs)

patcher = native.load_framepack_model(path).clone()
patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "count", counting_wrapper)
patcher.model_options["transformer_options"] = {"optimized_attention_override": counting_attention}
comfy_video = core.generate(sections.ComfySectionSampler(patcher, sections.framepack_sampler("unipc_bh1"), steps),
                            inputs, settings)
save_file({"core": latents.to_comfy_latent(video)["samples"].contiguous(),
           "comfy": latents.to_comfy_latent(comfy_video)["samples"].contiguous()}, os.environ["OUT"])
print(json.dumps(calls))
"""


def core_run(tmp_path, reference_dir, mode):
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "ComfyUI_FramePack").symlink_to(REPO)
    out = tmp_path / "latents.safetensors"
    env = {**os.environ, "PACK_PARENT": str(tmp_path / "custom"), "STUBS_PARENT": str(STUBS.parent),
           "SEED": str(SEED), "STEPS": str(STEPS), "SECONDS": str(SECONDS), "MODE": mode, "OUT": str(out),
           "MODEL": str(reference_dir / "tiny_framepack.safetensors")}
    result = subprocess.run([comfy_python(), "-c", CORE_RUN], cwd=os.environ["COMFYUI_PATH"], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return load_file(out), json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["inverted_anti_drifting", "vanilla"])
def test_the_comfyui_path_equals_the_core_path_bit_for_bit(server, tmp_path, reference_dir, mode):
    """float32 on the CPU, one attention backend (ComfyUI's): the all-in-one sampler in the host, the same
    sampler's section sampler in-process and framepack_core.generate give the same latents exactly."""
    history = server.run(video_graph(mode, seconds=SECONDS, steps=STEPS, seed=SEED, resume_file="off"))
    assert_success(history)
    host = saved_latent(server, history)
    found, calls = core_run(tmp_path, reference_dir, mode)
    assert host.shape == found["core"].shape == (1, 16, 10, 8, 8)
    assert host.abs().mean() > 0
    assert torch.equal(found["comfy"], found["core"]), float((found["comfy"] - found["core"]).abs().max())
    assert torch.equal(host, found["core"]), float((host - found["core"]).abs().max())
    # Through ComfyUI's DIFFUSION_MODEL wrapper once per model call; transformer_options reach every attention.
    assert calls["wrapper"] == STEPS and calls["attention"] > calls["wrapper"]


def cached_run(server, name, caches=None, patch=None):
    graph = video_graph("vanilla", steps=8, resume_file="off", **(caches or {}))
    graph["save"]["inputs"]["filename_prefix"] = f"latents/native_{name}"
    if patch is not None:
        graph["cache"] = {"class_type": patch[0], "inputs": {"model": ["loader", 0], "threshold": patch[1]}}
        graph["sampler"]["inputs"]["model"] = ["cache", 0]
    history = server.run(graph)
    assert_success(history)
    return saved_latent(server, history)


@pytest.mark.parametrize("node, widget, threshold", [("FramePackTeaCache", "teacache_threshold", 1.0),
                                                     ("FramePackMagCache", "magcache_threshold", 1.0)])
def test_step_cache_node_equals_the_legacy_widget(server, node, widget, threshold):
    plain = cached_run(server, "plain")
    with_widget = cached_run(server, f"{widget}", {widget: threshold})
    with_node = cached_run(server, f"{node}", patch=(node, threshold))
    assert (with_node - plain).abs().max() > 1e-4  # the patch skips steps
    assert torch.equal(with_node, with_widget)


def test_step_cache_nodes_are_listed_and_their_widgets_marked_legacy(server):
    info = server.get("/object_info")
    for node in ("FramePackTeaCache", "FramePackMagCache"):
        assert info[node]["output"] == ["MODEL"] and info[node]["category"] == "FramePack/sampling"
        assert all(spec[1].get("tooltip") for spec in info[node]["input"]["required"].values())
    sampler = info["FramePackSampler"]["input"]
    assert sampler["required"]["teacache_threshold"][1]["tooltip"].startswith("(legacy: use the FramePack TeaCache")
    assert sampler["optional"]["magcache_threshold"][1]["tooltip"].startswith("(legacy: use the FramePack TeaCache")


def test_a_step_cache_node_changes_the_resume_run(server):
    """A saved run without a step cache is not resumed for a graph with one (the fingerprint holds the patch)."""
    folder = server.output_dir / "framepack_resume"
    before = set(folder.glob("framepack_*"))
    graph = video_graph("vanilla", steps=4, resume_file="auto")
    assert_success(server.run(graph))
    graph["cache"] = {"class_type": "FramePackTeaCache", "inputs": {"model": ["loader", 0], "threshold": 1.0}}
    graph["sampler"]["inputs"]["model"] = ["cache", 0]
    assert_success(server.run(graph))
    assert len(set(folder.glob("framepack_*")) - before) == 2
