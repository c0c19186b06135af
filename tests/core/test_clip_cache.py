"""Real-clip datasets: 30 fps resampling, buckets, resumable caching through stand-in encoders, batches the trainer
trains on, and PyAV decoding of a generated clip (when PyAV is installed)."""

import json
import logging

import pytest
import torch
from safetensors.torch import save_file

from framepack_core import FramePackConfig
from framepack_core.engine.planning import plan_sections
from framepack_core.errors import InputError
from framepack_core.model.checkpoint import save_config_metadata
from framepack_core.model.lora import read_lora
from framepack_core.training.__main__ import main
from framepack_core.training.data import (CachedClips, StandInEncoders, cache_dataset, read_video, resample_indices,
                                          to_bucket)
from framepack_core.training.trainer import TrainSettings, draw_step, new_model, train

ENCODERS = StandInEncoders()
CONFIG = FramePackConfig(num_attention_heads=2, attention_head_dim=16, rope_axes_dim=(4, 6, 6), num_layers=1,
                         num_single_layers=1, num_refiner_layers=1, text_embed_dim=ENCODERS.text_dim,
                         pooled_projection_dim=ENCODERS.pooled_dim, image_proj_dim=ENCODERS.image_dim,
                         guidance_embeds=False)


def moving_clip(frames=40, height=96, width=128, fps=24.0):
    """A bright square moving right over a dark background, as uint8 frames and timestamps."""
    video = torch.full((frames, height, width, 3), 30, dtype=torch.uint8)
    for t in range(frames):
        video[t, 30:60, 10 + 2 * t:40 + 2 * t] = torch.tensor([220, 60, 40], dtype=torch.uint8)
    return video, torch.arange(frames, dtype=torch.float64) / fps


class Reader:
    """A stand-in for PyAV: every file is the generated clip; counts what it decodes."""

    def __init__(self):
        self.read = []

    def __call__(self, path):
        self.read.append(path.name)
        return moving_clip()


def clip_folder(tmp_path, names=("walk", "wave")):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.mp4").write_bytes(b"")
        (folder / f"{name}.txt").write_text(f"a red square moves right in {name}", encoding="utf-8")
    return folder


def test_resampling_to_30_fps_repeats_or_drops_frames_by_time():
    assert resample_indices(torch.arange(5, dtype=torch.float64) / 24).tolist() == [0, 0, 1, 2, 3, 4]
    assert resample_indices(torch.arange(7, dtype=torch.float64) / 60).tolist() == [0, 2, 4, 6]
    assert resample_indices(torch.arange(4, dtype=torch.float64) / 30).tolist() == [0, 1, 2, 3]


def test_frames_go_to_the_nearest_bucket():
    frames = to_bucket(moving_clip(frames=2, height=96, width=128)[0], 128)
    assert frames.shape[:2] == (2, 3) and frames.shape[2] < frames.shape[3]  # landscape stays landscape
    assert frames.shape[2] % 16 == 0 and frames.shape[3] % 16 == 0
    assert -1 <= float(frames.min()) and float(frames.max()) <= 1


def test_caching_is_resumable_and_logs_progress(tmp_path, caplog):
    folder, cache = clip_folder(tmp_path), tmp_path / "cache"
    reader = Reader()
    with caplog.at_level(logging.INFO):
        files = cache_dataset(folder, cache, ENCODERS, resolution=128, clip_frames=21, reader=reader)
    assert reader.read == ["walk.mp4", "wave.mp4"] and "cached 2 of 2 videos" in caplog.text
    assert len(files) == 4  # 40 frames at 24 fps = 49 at 30 fps: two clips of 21 frames per video
    first = files[0].stat().st_mtime_ns
    assert cache_dataset(folder, cache, ENCODERS, resolution=128, clip_frames=21, reader=reader) == files
    assert reader.read == ["walk.mp4", "wave.mp4"] and files[0].stat().st_mtime_ns == first  # nothing redone
    files[3].unlink()
    (cache / "wave.done.json").unlink()  # an interrupted video: only its missing clip is encoded again
    cache_dataset(folder, cache, ENCODERS, resolution=128, clip_frames=21, reader=reader)
    assert reader.read[-1] == "wave.mp4" and files[3].is_file() and files[0].stat().st_mtime_ns == first


def test_cached_clips_give_batches_the_trainer_trains_on(tmp_path):
    cache = tmp_path / "cache"
    cache_dataset(clip_folder(tmp_path), cache, ENCODERS, resolution=128, clip_frames=21, reader=Reader())
    source = CachedClips(cache, ENCODERS.name)
    settings = TrainSettings(steps=2, batch_size=2, max_sections=1, latent_window_size=3, warmup_steps=1,
                             save_every=100)
    draw = draw_step(settings, 0)
    batch = source.make_batch(draw.plan, draw.group, draw.keys)
    latents = source.clips[0].latent_frames
    assert latents == 6 and batch.target.shape[:3] == (2, 16, 3)
    assert batch.model_inputs["image_embeddings"].shape == (2, 16, ENCODERS.image_dim)
    run = train(tmp_path / "run", CONFIG, settings, source)
    assert run.step == 2
    with pytest.raises(InputError, match="lower max_sections"):
        source.make_batch(plan_sections("vanilla", 4, 3)[-1], 0, [0])  # 13 latent frames: longer than any clip


def test_missing_captions_are_reported(tmp_path):
    folder = clip_folder(tmp_path)
    (folder / "walk.txt").unlink()
    with pytest.raises(InputError, match="no caption file"):
        cache_dataset(folder, tmp_path / "cache", ENCODERS, reader=Reader())


def test_pyav_decodes_a_generated_clip(tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install av); the real-video reader is untested")
    path = tmp_path / "clip.mp4"
    frames, _ = moving_clip(frames=12, height=64, width=64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame.numpy(), format="rgb24")))
        container.mux(stream.encode())
    decoded, times = read_video(path)
    assert decoded.shape == (12, 64, 64, 3)
    assert torch.allclose(times, torch.arange(12, dtype=torch.float64) / 24, atol=1e-3)
    assert float((decoded.float() - frames.float()).abs().mean()) < 12  # lossy, but the same pictures


def test_the_train_command_trains_a_lora_on_a_cache(tmp_path):
    cache = tmp_path / "cache"
    cache_dataset(clip_folder(tmp_path), cache, ENCODERS, resolution=128, clip_frames=21, reader=Reader())
    base = tmp_path / "base.safetensors"
    save_file(new_model(CONFIG, 0).state_dict(), base, metadata=save_config_metadata(CONFIG))
    main(["train", "--cache", str(cache), "--run-dir", str(tmp_path / "run"), "--init-weights", str(base),
          "--lora-rank", "2", "--steps", "2", "--batch-size", "2", "--max-sections", "1", "--warmup-steps", "1",
          "--export-lora", str(tmp_path / "lora.safetensors")])
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["step"] == 2
    assert "lora_unet_transformer_blocks_0_attn_to_q.alpha" in read_lora(tmp_path / "lora.safetensors")
