"""Reliability inside a real ComfyUI: what POST /prompt lets through, special files and links in the model
folders, LoRA files that do not fit, and the start-image encoder against core's CLIPVisionEncode."""

import json
import math
import os
import subprocess
import time

import pytest

from conftest import REPO, TINY_NAME, comfy_python, require_host
from test_host import assert_success, video_graph

require_host()


def error_of(history) -> str:
    assert history["status"]["status_str"] == "error", history["status"]
    errors = [m for m in history["status"]["messages"] if m[0] == "execution_error"]
    return errors[0][1]["exception_message"]


def run_nan(server, graph):
    """POST /prompt with NaN in a float widget: ComfyUI's min/max validation passes it (NaN fails every comparison)."""
    body = json.dumps({"prompt": graph})  # json writes NaN, and ComfyUI's JSON reader accepts it
    assert "NaN" in body
    return server.run(graph)


# ----------------------------------------------------------------------------------------------- 1. NaN via the API

@pytest.mark.parametrize("field", ["distilled_cfg", "real_cfg", "cfg_rescale", "teacache_threshold", "shift",
                                   "prompt_blend_seconds", "magcache_threshold"])
def test_nan_floats_through_post_prompt_are_refused(server, field):
    message = error_of(run_nan(server, video_graph("vanilla", **{field: math.nan})))
    assert field in message and "nan" in message.lower()


def test_nan_length_is_refused(server):
    message = error_of(run_nan(server, video_graph("vanilla", seconds=math.nan)))
    assert "seconds must be a finite number" in message


def test_nan_lora_strength_and_keyframe_time_are_refused(server):
    graph = video_graph("vanilla")
    graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
        "model": ["loader", 0], "lora_name": "framepack_musubi.safetensors", "strength": math.nan}}
    graph["sampler"]["inputs"]["model"] = ["lora", 0]
    assert "strength must be a finite number" in error_of(run_nan(server, graph))
    graph = keyframe_graph([math.nan])
    assert "keyframe" in error_of(run_nan(server, graph)).lower()


def test_nan_in_the_single_frame_sampler_and_colour_match(server):
    graph = video_graph("vanilla")
    graph["sampler"] = {"class_type": "FramePackSingleFrameSampler", "inputs": {
        "model": ["loader", 0], "positive": ["text", 0], "start_latent": ["start", 0],
        "clip_vision_output": ["vision", 0], "target_index": 5, "steps": 2, "distilled_cfg": math.nan, "seed": 1,
        "sampler_name": "unipc_bh1"}}
    assert "distilled_cfg must be a finite number" in error_of(run_nan(server, graph))
    graph = {
        "image": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 2, "color": 99}},
        "match": {"class_type": "FramePackColorMatch", "inputs": {"images": ["image", 0], "reference": ["image", 0],
                                                                  "strength": math.nan}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["match", 0]}},
    }
    assert "strength must be a finite number" in error_of(run_nan(server, graph))


def keyframe_graph(times):
    graph = video_graph("inverted_anti_drifting", seconds=3.0)
    previous = None
    for i, seconds in enumerate(times):
        graph[f"key{i}"] = {"class_type": "FramePackKeyframes", "inputs": {
            "latent": ["start", 0], "seconds": seconds, **({"keyframes": [previous, 0]} if previous else {})}}
        previous = f"key{i}"
    graph["sampler"]["inputs"]["keyframes"] = [previous, 0]
    return graph


@pytest.mark.parametrize("times, fragment", [([1.0, 1.03], "both land on latent frame 8"),
                                             ([0.3, 0.9], "fall in one section")])
def test_keyframes_that_would_drop_one_are_refused(server, times, fragment):
    assert fragment in error_of(server.run(keyframe_graph(times)))


def test_start_latent_batch_is_refused(server):
    graph = video_graph("vanilla")
    graph["batch"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": ["start", 0], "amount": 2}}
    graph["sampler"]["inputs"]["start_latent"] = ["batch", 0]
    assert "batch of 2 latents" in error_of(server.run(graph))


# ----------------------------------------------------------------------------------------------- LoRA files

def lora_graph(name):
    graph = video_graph("vanilla")
    graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
        "model": ["loader", 0], "lora_name": name, "strength": 1.0}}
    graph["sampler"]["inputs"]["model"] = ["lora", 0]
    return graph


@pytest.fixture
def lora_file(server):
    made = []

    def make(name, writer):
        path = server.models_dir / "loras" / name
        writer(path)
        made.append(path)
        time.sleep(0.05)  # a new folder mtime, so ComfyUI's cached file list is refreshed
        return name

    yield make
    for path in made:
        path.unlink()


def test_truncated_lora_file_is_a_clear_error(server, lora_file):
    whole = (server.models_dir / "loras" / "framepack_musubi.safetensors").read_bytes()
    name = lora_file("truncated.safetensors", lambda p: p.write_bytes(whole[:len(whole) // 2]))
    assert "truncated or corrupt" in error_of(server.run(lora_graph(name)))


def test_lora_that_fits_no_weight_by_shape_is_refused(server, lora_file):
    import torch
    from safetensors.torch import save_file

    name = lora_file("wrong_size.safetensors", lambda p: save_file({
        "lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight": torch.ones(64, 4),
        "lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight": torch.ones(4, 64)}, str(p)))
    message = error_of(server.run(lora_graph(name)))
    assert "0 of 1 layers applied" in message and "do not fit" in message


def test_fifo_lora_is_refused_at_once(server, lora_file):
    name = lora_file("fifo.safetensors", os.mkfifo)
    assert "not a regular file" in error_of(server.run(lora_graph(name), timeout=60))


# ----------------------------------------------------------------------------------------------- 4. model folders

def test_fifo_model_is_refused_not_reported_missing(server):
    path = server.models_dir / "diffusion_models" / "fifo.safetensors"
    os.mkfifo(path)
    try:
        time.sleep(0.05)
        graph = video_graph("vanilla")
        graph["loader"]["inputs"]["model_name"] = "fifo.safetensors"
        assert "not a regular file" in error_of(server.run(graph, timeout=60))
    finally:
        path.unlink()


def test_symlink_loop_under_diffusers_does_not_hang_the_listing(server, tiny_diffusers):
    loop = server.models_dir / "diffusers" / "loop"
    loop.mkdir()
    (loop / "again").symlink_to(loop)
    (loop / "up").symlink_to(server.models_dir / "diffusers")
    try:
        start = time.time()
        options = server.get("/object_info/FramePackModelLoader")["FramePackModelLoader"]["input"]["required"]
        assert time.time() - start < 20
        assert "diffusers/tiny" in str(options["model_name"]) and TINY_NAME in str(options["model_name"])
    finally:
        (loop / "again").unlink()
        (loop / "up").unlink()
        loop.rmdir()


@pytest.fixture
def tiny_diffusers(server, reference_dir):
    folder = server.models_dir / "diffusers" / "tiny"
    folder.mkdir()
    (folder / "diffusion_pytorch_model.safetensors").symlink_to(reference_dir / "tiny_framepack.safetensors")
    (folder / "config.json").write_text((reference_dir / "tiny_framepack_config.json").read_text())
    yield folder
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def test_index_shard_outside_the_folder_is_refused(server, tiny_diffusers, tmp_path):
    (tiny_diffusers / "diffusion_pytorch_model.safetensors").unlink()
    (tiny_diffusers / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"x_embedder.proj.weight": "../../diffusion_models/" + TINY_NAME}}))
    graph = video_graph("vanilla")
    graph["loader"]["inputs"]["model_name"] = "diffusers/tiny"
    assert "outside the model folder" in error_of(server.run(graph))


# ----------------------------------------------------------------------------------------------- 7. wiring

ENCODE_CHECK = r"""
import importlib, json, os, sys
sys.argv = [sys.argv[0], "--cpu"]
sys.path[:0] = [os.environ["PACK_PARENT"], os.getcwd()]
import utils.install_util  # ComfyUI's own utils package, before comfy puts comfy/ first on the path
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.clip_vision
import nodes as core_nodes
encode = importlib.import_module("ComfyUI_FramePack.nodes.encode")
from ComfyUI_FramePack.framepack_core import InputError

config = {"num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 24, "image_size": 384,
          "intermediate_size": 48, "model_type": "siglip_vision_model", "num_attention_heads": 2,
          "num_hidden_layers": 2, "patch_size": 14, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
path = os.path.join(os.environ["WORK"], "siglip_tiny.json")
open(path, "w").write(json.dumps(config))
vision = comfy.clip_vision.ClipVisionModel(path)
torch.manual_seed(0)
vision.load_sd({k: torch.randn_like(v) * 0.3 for k, v in vision.get_sd().items()})

class RecordingVAE:
    def encode(self, pixels):
        self.pixels = pixels
        return pixels.mean(-1)[:, None, None].repeat(1, 16, 1, 1, 1)[..., ::8, ::8]

image = torch.rand(1, 480, 640, 4, generator=torch.Generator().manual_seed(1))
vae = RecordingVAE()
latent, encoded = encode.FramePackEncodeStartImage.execute(image, vae, vision).result
ours = encoded["last_hidden_state"]
none = core_nodes.CLIPVisionEncode().encode(vision, image, "none")[0]["last_hidden_state"]
center = core_nodes.CLIPVisionEncode().encode(vision, image, "center")[0]["last_hidden_state"]
refused = []
for bad in (torch.rand(2, 480, 640, 3), torch.rand(1, 100, 100, 3)):
    try:
        encode.FramePackEncodeStartImage.execute(bad, vae, vision)
    except InputError as err:
        refused.append(str(err)[:80])
print(json.dumps({"tokens": ours.shape[1], "equal_none": bool(torch.equal(ours, none)),
                  "center_difference": float((ours - center).norm() / center.norm()),
                  "vae_channels": vae.pixels.shape[-1], "latent_shape": list(latent["samples"].shape),
                  "refused": refused}))
"""


def test_encode_start_image_uses_no_centre_crop(tmp_path):
    """The node with a real (tiny, random) SigLIP of ComfyUI's: equal to CLIPVisionEncode crop 'none', unlike 'center'."""
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "ComfyUI_FramePack").symlink_to(REPO)
    result = subprocess.run([comfy_python(), "-c", ENCODE_CHECK], cwd=os.environ["COMFYUI_PATH"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PACK_PARENT": str(tmp_path / "custom"),
                                                         "WORK": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["tokens"] == 729 and found["equal_none"]
    assert found["center_difference"] > 0.05  # what a default-wired CLIPVisionEncode would change
    assert found["vae_channels"] == 3 and found["latent_shape"] == [1, 16, 1, 60, 80]
    assert len(found["refused"]) == 2 and "batch" in found["refused"][0] and "16" in found["refused"][1]


def test_encode_start_image_node_is_registered_with_tooltips(server):
    node = server.get("/object_info/FramePackEncodeStartImage")["FramePackEncodeStartImage"]
    assert set(node["input"]["required"]) == {"image", "vae", "clip_vision"}
    assert node["output"] == ["LATENT", "CLIP_VISION_OUTPUT"] and all(node["output_tooltips"])
    assert "crop" in node["description"]


def test_sampler_tooltips_say_what_cannot_be_checked(server):
    inputs = server.get("/object_info/FramePackSampler")["FramePackSampler"]["input"]
    assert "TextEncodeHunyuanVideo_ImageToVideo" in inputs["required"]["positive"][1]["tooltip"]
    assert "ConditioningZeroOut" in inputs["optional"]["negative"][1]["tooltip"]


def test_real_cfg_without_negative_gives_framepacks_advice(server):
    message = error_of(server.run(video_graph("vanilla", real_cfg=2.0)))
    assert "CLIPTextEncode of an empty text" in message


def test_a_good_graph_still_runs(server):
    assert_success(server.run(video_graph("vanilla")))

