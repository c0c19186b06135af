"""The shapes LoRA in a real ComfyUI: loaded with FramePackLoraLoader onto the shipped shapes model, it makes the
objects change colour when they bounce, as trained (``framepack_shapes.colour_lora``), in every sampling mode; core
``LoraLoaderModelOnly`` reads the same file to the same video."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, require_host, running_server

require_host()

from framepack_shapes import world  # noqa: E402
from framepack_shapes.colour_lora import DEFAULT_LORA, bouncing_clips, changed_colour_share, first_bounce  # noqa: E402
from framepack_shapes.demo import DEFAULT_MODEL  # noqa: E402

SHAPES_NODES = Path(__file__).resolve().parent / "shapes_nodes"
SECONDS, FRAMES = 4.0, 31  # 10 sections of 3 latent frames after the start frame
CLIPS = (0, 1, 2)


@pytest.fixture(scope="module")
def shapes_server(tmp_path_factory):
    """A ComfyUI with the shapes model, the shapes LoRA and the shapes conditioning node."""
    root = tmp_path_factory.mktemp("comfy_shapes")
    models, output, nodes = root / "models", root / "output", root / "custom_nodes"
    for folder in (models / "diffusion_models", models / "loras", output, nodes, root / "user", root / "input"):
        folder.mkdir(parents=True)
    shutil.copy(DEFAULT_MODEL, models / "diffusion_models" / DEFAULT_MODEL.name)
    shutil.copy(DEFAULT_LORA, models / "loras" / DEFAULT_LORA.name)
    (nodes / "ComfyUI-FramePack").symlink_to(REPO)
    (nodes / "framepack_shapes_test_nodes").symlink_to(SHAPES_NODES)
    config = root / "extra_model_paths.yaml"
    config.write_text(f"shapes_tests:\n    base_path: {root}\n    custom_nodes: custom_nodes\n"
                      "    diffusion_models: models/diffusion_models\n    loras: models/loras\n")
    with running_server(root, config, models, ready_node="FramePackTestShapesClip") as server:
        yield server


def shapes_graph(mode: str, clip: int, lora: str | None) -> dict:
    """The shapes model (+ the LoRA through ``lora``: the pack's loader or core's) continuing a held-out clip."""
    graph = {
        "loader": {"class_type": "FramePackModelLoader", "inputs": {"model_name": DEFAULT_MODEL.name,
                                                                    "weight_dtype": "default"}},
        "clip": {"class_type": "FramePackTestShapesClip", "inputs": {"clip": clip, "frames": FRAMES}},
        "schedule": {"class_type": "FramePackSchedule", "inputs": {
            "schedule": "default", "latent_window_size": 3, "uniform_kernel": "k4", "uniform_frames": 16, "custom": ""}},
        "sampler": {"class_type": "FramePackSampler", "inputs": {
            "model": ["loader", 0], "positive": ["clip", 0], "start_latent": ["clip", 1],
            "clip_vision_output": ["clip", 2], "sampling_mode": mode, "length": SECONDS, "length_unit": "seconds",
            "steps": 2, "distilled_cfg": 10.0, "real_cfg": 1.0, "cfg_rescale": 0.0, "shift": 0.0, "seed": 0,
            "sampler_name": "unipc_bh1", "teacache_threshold": 0.0, "schedule": ["schedule", 0]}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0],
                                                        "filename_prefix": f"shapes/{mode}_{clip}_{lora}"}},
    }
    if lora == "pack":
        graph["lora"] = {"class_type": "FramePackLoraLoader", "inputs": {
            "model": ["loader", 0], "lora_name": DEFAULT_LORA.name, "strength": 1.0}}
    elif lora == "core":
        graph["lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
            "model": ["loader", 0], "lora_name": DEFAULT_LORA.name, "strength_model": 1.0}}
    if lora:
        graph["sampler"]["inputs"]["model"] = ["lora", 0]
    return graph


def generated_frames(server, mode: str, clip: int, lora: str | None) -> torch.Tensor:
    history = server.run(shapes_graph(mode, clip, lora))
    assert history["status"]["status_str"] == "success", history["status"]["messages"]
    [entry] = history["outputs"]["save"]["latents"]
    latents = load_file(server.output_dir / entry["subfolder"] / entry["filename"])["latent_tensor"]
    assert latents.shape == (1, world.LATENT_CHANNELS, FRAMES, world.LATENT_SIZE, world.LATENT_SIZE)
    return world.decode_latents(latents)[0].clamp(-1, 1)


def colour_shares(frames: torch.Tensor, clip: int) -> tuple:
    """(changed-colour share before the clip's first bounce, after it)."""
    spec = bouncing_clips(clip + 1, FRAMES)[clip]
    bounce, colour = first_bounce(spec, FRAMES), spec.objects[0].colour
    return changed_colour_share(frames[1:bounce], colour), changed_colour_share(frames[bounce + 1:], colour)


@pytest.mark.parametrize("mode", ["vanilla", "anti_drifting", "inverted_anti_drifting"])
def test_the_lora_makes_objects_change_colour_when_they_bounce(shapes_server, mode):
    base = [colour_shares(generated_frames(shapes_server, mode, clip, None), clip) for clip in CLIPS]
    tuned = [colour_shares(generated_frames(shapes_server, mode, clip, "pack"), clip) for clip in CLIPS]
    after_base, after_tuned = (sum(s[1] for s in shares) / len(CLIPS) for shares in (base, tuned))
    # The shipped model keeps the start colour; with the LoRA it changes after the bounce (measured over 8 clips by
    # framepack_shapes.colour_lora: 0.00 without, 0.25-0.51 with, depending on the mode).
    assert after_base < 0.25, base
    assert after_tuned > after_base + 0.1, (base, tuned)


def test_core_lora_loader_reads_the_file_to_the_same_video(shapes_server):
    pack = generated_frames(shapes_server, "vanilla", 0, "pack")
    core = generated_frames(shapes_server, "vanilla", 0, "core")
    base = generated_frames(shapes_server, "vanilla", 0, None)
    torch.testing.assert_close(core, pack, atol=1e-4, rtol=1e-4)
    assert float((pack - base).abs().mean()) > 0.01
