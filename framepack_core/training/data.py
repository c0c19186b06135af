"""Datasets of real clips: a folder of videos with captions, bucketed, resampled to 30 fps, cached once.

    clips/
        walk.mp4   walk.txt      <- the caption, UTF-8
        wave.webm  wave.txt

Each video is decoded with PyAV (the optional ``av`` package), resampled to ``FPS`` (the frame shown at each
1/30 s), resized and centre-cropped to its nearest FramePack bucket, and cut into clips of ``clip_frames`` pixel
frames (4 k + 1, as the causal video VAE wants). Each clip is encoded once through an ``Encoders`` implementation
into one safetensors file: the VAE latents, the text states of its caption and the SigLIP embedding of the clip's
first frame (the start image inference conditions on). Caching is resumable: finished files are kept (each written
atomically) and progress is logged. ``CachedClips`` is the cache's ``BatchSource`` for the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..engine.buckets import nearest_bucket
from ..engine.generate import GenerationInputs, context_inputs
from ..errors import InputError
from .objective import Batch

log = logging.getLogger(__name__)

FPS = 30
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv")
PROGRESS_SECONDS = 10.0


class Encoders(Protocol):
    """What caching needs of the VAE, the text encoders and the image encoder.

    ``name`` identifies the encoders (a cache made with others is not mixed in); ``encode_video`` takes (T, 3, H, W)
    frames in [-1, 1] to model-space latents (1, C, (T - 1) / 4 + 1, H / 8, W / 8); ``encode_text`` a caption to
    ``encoder_hidden_states`` (1, L, D), ``encoder_attention_mask`` (1, L) and ``pooled_projections`` (1, P);
    ``encode_image`` one frame (3, H, W) to image embeddings (1, N, D).
    """

    name: str

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, caption: str) -> dict: ...

    def encode_image(self, frame: torch.Tensor) -> torch.Tensor: ...


@dataclasses.dataclass(frozen=True)
class StandInEncoders:
    """Small deterministic encoders with the real ones' layouts, for tests and dry runs: 8x8 average pooling
    and a fixed channel projection (time: the first frame alone, then groups of 4), hashed word vectors, and
    pooled 2x2 latent patches as image tokens."""

    name: str = "stand-in"
    latent_channels: int = 16
    text_dim: int = 32
    pooled_dim: int = 32
    image_dim: int = 64

    def projection(self, rows: int, columns: int, salt: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(zlib.crc32(salt.encode()))
        return torch.randn(rows, columns, generator=generator) / columns ** 0.5

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(frames.float(), 8)  # (T, 3, h, w)
        groups = [pooled[:1]] + [pooled[i:i + 4].mean(dim=0, keepdim=True) for i in range(1, len(pooled), 4)]
        latents = torch.einsum("tchw,dc->dthw", torch.cat(groups), self.projection(self.latent_channels, 3, "vae"))
        return latents[None]

    def encode_text(self, caption: str) -> dict:
        words = caption.lower().split() or [""]
        vectors = torch.stack([self.projection(1, self.text_dim, "word:" + w)[0] for w in words]) * self.text_dim ** 0.5
        pooled = vectors.mean(dim=0) @ self.projection(self.text_dim, self.pooled_dim, "pooled")
        return {"encoder_hidden_states": vectors[None], "encoder_attention_mask": torch.ones(1, len(words), dtype=torch.bool),
                "pooled_projections": pooled[None]}

    def encode_image(self, frame: torch.Tensor) -> torch.Tensor:
        latent = self.encode_video(frame[None])[:, :, 0]  # (1, C, h, w)
        tokens = F.adaptive_avg_pool2d(latent, 4).flatten(2).transpose(1, 2)  # (1, 16, C)
        return tokens @ self.projection(self.latent_channels, self.image_dim, "image")


# ------------------------------------------------------------------------------------------- reading videos

def find_clips(folder) -> list:
    """(video path, caption) of every video in ``folder``; each needs a caption file of the same name (.txt)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"clip folder {folder} does not exist; give a folder of videos with caption .txt files.")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"{folder} holds no videos ({', '.join(VIDEO_SUFFIXES)}).")
    missing = [v.name for v in videos if not v.with_suffix(".txt").is_file()]
    if missing:
        raise InputError(f"{len(missing)} videos in {folder} have no caption file, e.g. {missing[:3]}: put the caption "
                         "in a UTF-8 .txt file of the same name next to each video.")
    return [(video, video.with_suffix(".txt").read_text(encoding="utf-8").strip()) for video in videos]


def read_video(path) -> tuple:
    """(frames uint8 (T, H, W, 3), timestamps in seconds (T,)) of a video's first stream, decoded with PyAV."""
    try:
        import av
    except ImportError:
        raise InputError("reading videos needs PyAV: pip install av (ComfyUI ships it).") from None
    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            times.append(float(frame.time if frame.time is not None else len(times) / float(stream.average_rate)))
    if not frames:
        raise InputError(f"{path} holds no video frames; it is empty or damaged.")
    return torch.stack(frames), torch.tensor(times, dtype=torch.float64)


def resample_indices(timestamps: torch.Tensor, fps: float = FPS) -> torch.Tensor:
    """For each 1/fps tick from the first frame to the last, the index of the frame shown then (the last one that
    started at or before it): duplicates frames of slower videos, drops frames of faster ones."""
    start, end = float(timestamps[0]), float(timestamps[-1])
    ticks = start + torch.arange(int((end - start) * fps + 1e-6) + 1, dtype=torch.float64) / fps
    return (torch.searchsorted(timestamps.contiguous(), ticks + 1e-9, right=True) - 1).clamp(min=0)


def to_bucket(frames: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> (T, 3, h, w) in [-1, 1] at the nearest bucket: scaled to cover, centre-cropped."""
    height, width = frames.shape[1:3]
    bucket_h, bucket_w = nearest_bucket(height, width, resolution)
    scale = max(bucket_h / height, bucket_w / width)
    size = (max(bucket_h, round(height * scale)), max(bucket_w, round(width * scale)))
    images = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
    images = F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - bucket_h) // 2, (size[1] - bucket_w) // 2
    return images[:, :, top:top + bucket_h, left:left + bucket_w].clamp(-1, 1)


# ------------------------------------------------------------------------------------------- caching

def cache_dataset(folder, cache_dir, encoders: Encoders, *, resolution: int = 640, clip_frames: int = 125,
                  reader: Callable = read_video) -> list:
    """Encode every clip of ``folder`` into ``cache_dir`` (skipping the ones already there); returns the files."""
    if clip_frames < 5 or (clip_frames - 1) % 4:
        raise InputError(f"clip_frames must be 4 k + 1 (e.g. 37, 125), got {clip_frames}.")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    clips, files, began, last = find_clips(folder), [], time.monotonic(), 0.0
    for number, (video, caption) in enumerate(clips, 1):
        files += cache_video(video, caption, cache_dir, encoders, resolution, clip_frames, reader)
        if time.monotonic() - last >= PROGRESS_SECONDS or number == len(clips):
            log.info("cached %d of %d videos (%d clips) in %.0f s", number, len(clips), len(files), time.monotonic() - began)
            last = time.monotonic()
    return files


def cache_video(video: Path, caption: str, cache_dir: Path, encoders: Encoders, resolution: int, clip_frames: int,
                reader: Callable) -> list:
    """The cache files of one video's clips, encoding only those not cached yet."""
    done = sorted(cache_dir.glob(f"{video.stem}.*.safetensors"))
    marker = cache_dir / f"{video.stem}.done.json"
    if marker.is_file():
        return done
    frames, times = reader(video)
    frames = to_bucket(frames[resample_indices(times)], resolution)
    starts = range(0, len(frames) - clip_frames + 1, clip_frames)
    if not starts:
        log.warning("%s is shorter than %d frames at %d fps; skipped", video.name, clip_frames, FPS)
    files = []
    text = {k: v.contiguous() for k, v in encoders.encode_text(caption).items()}
    for index, start in enumerate(starts):
        path = cache_dir / f"{video.stem}.{index:04d}.safetensors"
        files.append(path)
        if path.is_file():
            continue
        clip = frames[start:start + clip_frames]
        tensors = {"latents": encoders.encode_video(clip).float().contiguous(),
                   "image_embeddings": encoders.encode_image(clip[0]).float().contiguous(), **text}
        meta = {"source": video.name, "start_frame": str(start), "fps": str(FPS), "encoders": encoders.name,
                "caption": caption}
        save_file(tensors, str(path) + ".tmp", metadata=meta)
        os.replace(str(path) + ".tmp", path)
    marker.write_text(json.dumps({"clips": len(files), "encoders": encoders.name}), encoding="utf-8")
    return files


# ------------------------------------------------------------------------------------------- batches

@dataclasses.dataclass(frozen=True)
class CachedClip:
    path: Path
    latent_frames: int
    bucket: tuple


class CachedClips:
    """The trainer's batches from a cache: the step's ``group`` picks a bucket, each key a clip of it long enough
    for the section plan; the clip's first latent frame is the start image, as in inference."""

    def __init__(self, cache_dir, encoders_name: str | None = None):
        self.clips = []
        for path in sorted(Path(cache_dir).glob("*.safetensors")):
            with safe_open(str(path), "pt") as handle:
                if encoders_name is not None and handle.metadata().get("encoders") != encoders_name:
                    continue
                shape = handle.get_slice("latents").get_shape()
            self.clips.append(CachedClip(path, shape[2], tuple(shape[3:])))
        if not self.clips:
            raise InputError(f"{cache_dir} holds no cached clips; cache the clip folder first (cache_dataset).")
        self.buckets = sorted({clip.bucket for clip in self.clips})

    def candidates(self, group: int, frames: int) -> list:
        for offset in range(len(self.buckets)):
            bucket = self.buckets[(group + offset) % len(self.buckets)]
            fitting = [c for c in self.clips if c.bucket == bucket and c.latent_frames >= frames]
            if fitting:
                return fitting
        longest = max(c.latent_frames for c in self.clips)
        raise InputError(f"a section plan needs {frames} latent frames but the longest cached clip has {longest}; "
                         "lower max_sections (or latent_window_size), or cache longer clips (clip_frames).")

    def make_batch(self, plan, group: int, keys: list) -> Batch:
        fitting = self.candidates(group, plan.total_latent_frames)
        loaded = [load_file(fitting[key % len(fitting)].path) for key in keys]
        video = torch.cat([item["latents"][:, :, :plan.total_latent_frames] for item in loaded])
        context = context_inputs(plan, video, GenerationInputs(start_latent=video[:, :, :1], prompts=None,
                                                              image_embeddings=None))
        inputs = {**context, **padded_text(loaded), "image_embeddings": torch.cat([i["image_embeddings"] for i in loaded])}
        window = video[:, :, plan.position:plan.position + plan.latent_window_size]
        return Batch(plan, inputs, window.contiguous(), video[:, :, plan.position - 1:plan.position].contiguous(), keys)


def padded_text(items: list) -> dict:
    """The clips' text states as one batch, zero-padded to the longest with the mask marking real tokens."""
    length = max(item["encoder_hidden_states"].shape[1] for item in items)
    pad = lambda t: F.pad(t, (0, 0, 0, length - t.shape[1]) if t.ndim == 3 else (0, length - t.shape[1]))  # noqa: E731
    return {"encoder_hidden_states": torch.cat([pad(i["encoder_hidden_states"]) for i in items]),
            "encoder_attention_mask": torch.cat([pad(i["encoder_attention_mask"]) for i in items]).bool(),
            "pooled_projections": torch.cat([i["pooled_projections"] for i in items])}
