"""Streaming decode: each finished section decoded with ComfyUI's VAE and appended to an MP4 as it is finished.

The sampler decodes a section's window (its latents and the neighbour's, as the reference demos do), the
``SectionStitcher`` cross-fades the overlap, and the frames that are final are encoded (H.264 through PyAV) into one
small MP4 part per section, written atomically beside the run's resume pieces. Only one window of pixel frames is
in memory at a time. The parts are also appended, packet by packet, to a fragmented ``_live.mp4`` in the output
folder, which plays at any time and is shown on the node while later sections sample. When the run ends, the parts
are joined (remuxed, not re-encoded) in temporal order into the output MP4, with the prompt and workflow in its
metadata as SaveVideo writes them; on a cancel the same is done with the frames so far (``_partial.mp4``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import av
import folder_paths
import numpy as np
import torch
from comfy_api.latest import InputImpl, io, ui
from server import PromptServer

from ..framepack_core import InputError
from ..framepack_core.engine.conditioning import FPS as VIDEO_FPS
from ..framepack_core.engine.stitch import SectionStitcher, section_clips
from .latents import to_comfy_latent

log = logging.getLogger(__name__)

FPS = int(VIDEO_FPS)  # H.264 frame rates are integers
PIXEL_FORMATS = ("yuv420p", "yuv444p")
LIVE_FLAGS = "frag_keyframe+empty_moov+default_base_moof+frag_every_frame"

def vae_identity(vae) -> str:
    """A digest of the VAE's weights (sampled, as the model fingerprint samples them) and class."""
    digest = hashlib.sha256(type(vae.first_stage_model).__qualname__.encode())
    for name, weight in sorted(vae.first_stage_model.state_dict().items()):
        flat = weight.detach().reshape(-1)
        digest.update(f"{name}{tuple(weight.shape)}".encode())
        digest.update(torch.cat([flat[:32], flat[-32:]]).float().cpu().numpy().tobytes())
    return digest.hexdigest()


class StreamingVideo:
    """An ``on_section`` callback writing the video as the sections finish (see the module docstring)."""

    def __init__(self, options: dict, plans, parts_folder: Path, metadata: dict, node_id, temporary: bool):
        self.options, self.parts, self.metadata, self.node_id = options, parts_folder, metadata, node_id
        self.temporary = temporary  # parts in a temporary folder (resume off), removed when the video is written
        self.stitcher = SectionStitcher(section_clips(plans))
        self.done = 0

    # ------------------------------------------------------------------ decoding and parts

    def decode(self, video: torch.Tensor, section: int) -> torch.Tensor:
        clip = self.stitcher.clips[section]
        samples = to_comfy_latent(video[:, :, clip.first:clip.end])["samples"]
        vae, tile = self.options["vae"], self.options["tile_size"]
        if tile:
            pixels = vae.decode_tiled(samples, tile_x=tile // 8, tile_y=tile // 8, overlap=max(1, tile // 32))
        else:
            pixels = vae.decode(samples)
        return pixels.reshape(-1, *pixels.shape[-3:]).float().cpu()  # (frames, H, W, C) in [0, 1]

    def part_path(self, section: int) -> Path:
        return self.parts / f"part_{section:05d}.mp4"

    def begin(self, video: torch.Tensor, next_section: int) -> None:
        """Before sampling: pick up the parts of a resumed run, decoding again only from the first one missing."""
        self.parts.mkdir(parents=True, exist_ok=True)
        for path in [*self.parts.glob(".*.partial.mp4"), *self.parts.glob("pending_*.mp4")]:
            path.unlink()  # left by an interrupted write
        missing = [s for s in range(next_section) if self.has_frames(s) and not self.part_path(s).is_file()]
        first = missing[0] if missing else next_section
        if first > 0:
            self.stitcher.restore(first - 1, self.decode(video, first - 1))
        for section in range(first, next_section):
            self.write_part(section, *self.stitcher.add(section, self.decode(video, section)))
        for path in self.parts.glob("part_*.mp4"):
            if int(path.stem[5:]) >= next_section:
                path.unlink()
        self.done = next_section
        self.open_live()

    def has_frames(self, section: int) -> bool:
        start, end = self.stitcher.final_range(section)
        return end > start

    def __call__(self, plan, latents, state) -> None:
        start, frames = self.stitcher.add(plan.index, self.decode(state.video, plan.index))
        self.write_part(plan.index, start, frames)
        self.done = plan.index + 1
        self.show(plan.index)

    def write_part(self, section: int, start: int, frames: torch.Tensor) -> None:
        if len(frames):
            encode(self.part_path(section), frames, self.options)

    # ------------------------------------------------------------------ the live file and the result

    def open_live(self) -> None:
        """A fragmented MP4 in the output folder holding the video from its first frame as far as it is final
        (vanilla sampling: all of it so far). It is playable while it grows."""
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            self.options["filename_prefix"] + "_live", folder_paths.get_output_directory())
        self.live_path, self.live_subfolder = Path(folder) / f"{name}_{counter:05}_.mp4", subfolder
        self.live = PacketWriter(av.open(str(self.live_path), "w", format="mp4",
                                         options={"movflags": LIVE_FLAGS, "flush_packets": "1"}))
        for section in self.temporal_order(range(self.done)):
            self.extend_live(section)

    def extend_live(self, section: int) -> bool:
        """Append the part of ``section`` to the live file if it starts where the live file ends."""
        if not self.part_path(section).is_file() or self.stitcher.final_range(section)[0] != self.live.frames:
            return False
        self.live.append(self.part_path(section))
        return True

    def show(self, section: int) -> None:
        """Show the live file on the node, or (inverted sampling, finishing from the end back) the newest part."""
        if self.extend_live(section):
            result = ui.SavedResult(self.live_path.name, self.live_subfolder, io.FolderType.output)
        else:
            result = saved_result(self.part_path(section)) if self.part_path(section).is_file() else None
        if result is not None and self.node_id is not None and PromptServer.instance is not None:
            PromptServer.instance.send_sync("executed", {"node": self.node_id, "display_node": self.node_id,
                                                         "output": ui.PreviewVideo([result]).as_dict()})

    def temporal_order(self, sections) -> list[int]:
        return sorted((s for s in sections if self.has_frames(s)), key=lambda s: self.stitcher.final_range(s)[0])

    def finish(self, suffix: str = "") -> tuple[Path, str]:
        """Join the finished parts (on a cancel with the frames still pending) into an MP4 in the output folder;
        returns its path and subfolder."""
        self.live.close()
        self.live_path.unlink(missing_ok=True)
        tail = []
        if suffix:
            for number, (start, frames) in enumerate(self.stitcher.unfinished()):
                path = self.parts / f"pending_{number}.mp4"
                encode(path, frames, self.options)
                tail.append((start, path))
        sources = [(self.stitcher.final_range(s)[0], self.part_path(s)) for s in self.temporal_order(range(self.done))]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            self.options["filename_prefix"] + suffix, folder_paths.get_output_directory())
        target = Path(folder) / f"{name}_{counter:05}_.mp4"
        join_parts([path for _, path in sorted(sources + tail)], target, self.metadata)
        for _, path in tail:
            path.unlink(missing_ok=True)
        return target, subfolder


def saved_result(path: Path):
    """A UI reference to a file under the output or temp folder."""
    for kind, root in ((io.FolderType.output, folder_paths.get_output_directory()),
                       (io.FolderType.temp, folder_paths.get_temp_directory())):
        try:
            relative = path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        return ui.SavedResult(relative.name, str(relative.parent) if str(relative.parent) != "." else "", kind)
    return None


class PacketWriter:
    """Appends MP4 files' H.264 packets to one output container, one after the other in time (no re-encoding)."""

    def __init__(self, container):
        self.container, self.stream, self.frames = container, None, 0

    def append(self, source: Path) -> None:
        with av.open(str(source)) as part:
            stream = part.streams.video[0]
            if self.stream is None:
                self.stream = self.container.add_stream_from_template(stream)
            offset = self.frames * int(round(1 / (stream.time_base * FPS)))
            for packet in part.demux(stream):
                if packet.dts is None:
                    continue
                packet.pts += offset
                packet.dts += offset
                packet.stream = self.stream
                self.container.mux(packet)
                self.frames += 1

    def close(self) -> None:
        self.container.close()


def encode(path: Path, frames: torch.Tensor, options: dict) -> None:
    """Encode (frames, H, W, 3) floats in [0, 1] as one H.264 MP4, written atomically."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial.mp4", dir=path.parent)
    os.close(descriptor)
    try:
        with av.open(temporary, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=FPS)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = options["pixel_format"]
            stream.options = {"crf": str(options["crf"])}
            pixels = (frames[..., :3].clamp(0, 1) * 255).to(torch.uint8).numpy()
            for image in pixels:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def join_parts(sources: list[Path], target: Path, metadata: dict) -> None:
    """Remux ``sources`` one after the other into ``target`` with SaveVideo's metadata, atomically."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial.mp4")
    try:
        output = av.open(str(temporary), "w", format="mp4", options={"movflags": "use_metadata_tags"})
        for key, value in metadata.items():
            output.metadata[key] = json.dumps(value)
        writer = PacketWriter(output)
        try:
            for path in sources:
                writer.append(path)
        finally:
            writer.close()
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def save_metadata(prompt, extra_pnginfo) -> dict:
    """What SaveVideo embeds: the workflow (extra_pnginfo) and the prompt, unless metadata is disabled."""
    from comfy.cli_args import args

    if args.disable_metadata:
        return {}
    metadata = dict(extra_pnginfo or {})
    if prompt is not None:
        metadata["prompt"] = prompt
    return metadata


def parts_folder(run_folder: Path | None, options: dict) -> Path:
    """The parts live beside the run's resume pieces (so a resumed run finds them), keyed by the VAE and the
    encoding options; without resume in a hidden folder of the output directory, removed afterwards."""
    if run_folder is None:  # not ComfyUI's temp folder: a ComfyUI starting beside this one empties it
        return Path(folder_paths.get_output_directory()) / f".framepack_parts_{uuid.uuid4().hex[:12]}"
    key = hashlib.sha256(json.dumps([vae_identity(options["vae"]), options["crf"], options["pixel_format"],
                                     options["tile_size"], FPS]).encode()).hexdigest()[:16]
    return run_folder / f"video_{key}"


def remove_temporary(streaming: StreamingVideo) -> None:
    if streaming.temporary:
        shutil.rmtree(streaming.parts, ignore_errors=True)


def check_video_output_is_fed(video_output, prompt, node_id) -> None:
    """The VIDEO output needs video_output connected; say so before sampling, not in SaveVideo afterwards."""
    if video_output is not None or not isinstance(prompt, dict):
        return
    for name, node in prompt.items():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) == str(node_id) and value[1] == 1:
                raise InputError(f"the sampler's VIDEO output feeds node {name} ({node.get('class_type')}), but no "
                                 "FramePack Video Output is connected to its video_output input: connect one (with "
                                 "the VAE), or take the LATENT output through VAEDecodeTiled.")


def start_streaming(video_output: dict, plans, start, run_folder: Path | None, hidden) -> StreamingVideo:
    streaming = StreamingVideo(video_output, plans, parts_folder(run_folder, video_output),
                               save_metadata(hidden.prompt, hidden.extra_pnginfo), hidden.unique_id,
                               temporary=run_folder is None)
    streaming.begin(start.video, start.next_section)
    return streaming


def finished_output(streaming: StreamingVideo, latent: dict) -> io.NodeOutput:
    """The sampler's outputs with the joined MP4 as a core VIDEO (backed by the file) and shown on the node."""
    path, subfolder = streaming.finish()
    remove_temporary(streaming)
    log.info("FramePack: video written to %s", path)
    return io.NodeOutput(latent, InputImpl.VideoFromFile(str(path)),
                         ui=ui.PreviewVideo([ui.SavedResult(path.name, subfolder, io.FolderType.output)]))


def keep_partial(streaming: StreamingVideo, sections: int) -> None:
    """On a cancel or error: the finished sections as a playable MP4, and where it is."""
    if streaming.done == 0:
        log.warning("FramePack: stopped before the first section was finished; no video was written.")
        remove_temporary(streaming)
        return
    try:
        path, _ = streaming.finish("_partial")
    except (OSError, av.FFmpegError) as err:
        log.warning("FramePack: could not write the partial video: %s (its parts are in %s)", err, streaming.parts)
        return
    remove_temporary(streaming)
    log.warning("FramePack: stopped after %d of %d sections; the video so far is %s", streaming.done, sections, path)
