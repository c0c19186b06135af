"""Cancel and resume: the loop's state saved after every section, so a stopped run continues exactly.

A resume file is a ``.safetensors`` file (never pickle: a file from elsewhere must not run code) holding the
video latents (float32) and the CPU generator state (uint8), with str -> str metadata: the format and its
version, the next section, the number of history frames, the settings as JSON (the schedule as its canonical
text), the fingerprint of the model and conditioning, and a sha256 checksum of all of it, so that a damaged
file is refused instead of silently continuing a corrupted video. Files are written atomically (temporary
file, fsync, ``os.replace``): a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .conditioning import TextConditioning
from .errors import FramePackError, InputError, ResumeError
from .generate import GenerationInputs, GenerationSettings, GenerationState
from .schedules import get_schedule

log = logging.getLogger(__name__)

FORMAT = "framepack_resume"
VERSION = 1
TENSORS = {"video": "F32", "generator_state": "U8"}
GENERATOR_STATE_SIZE = torch.Generator("cpu").get_state().numel()
# Elements hashed from the start and the end of each large weight (see ``fingerprint``).
WEIGHT_SAMPLE = 64
# Weights hashed in full: the patch embedders and the output projection (small, and the first and last layers
# to touch the latents), and every 1-D tensor (norms, biases): about 7 MB of the 13B model in bf16.
FULL_WEIGHT_PREFIXES = ("x_embedder.", "proj_out.")
HEX64 = re.compile(r"[0-9a-f]{64}")
COUNT = re.compile(r"\d{1,9}")
START_OVER = "delete the resume file to start a new generation"


# ------------------------------------------------------------------------------------------- writing

def save_resume(path, state: GenerationState, settings: GenerationSettings, fingerprint: str) -> None:
    """Write ``state`` to ``path`` atomically; ``fingerprint`` is ``fingerprint(model, inputs)`` of the run."""
    path = Path(os.fspath(path))
    check_fingerprint_argument(fingerprint)
    video = state.video.detach().to("cpu", torch.float32).contiguous()
    generator_state = state.generator_state.detach().to("cpu", torch.uint8).contiguous()
    record = settings_record(settings)
    history_frames = video.shape[2] - settings.num_sections * record["latent_window_size"]
    if history_frames < 1:
        raise InputError(f"the state's video has {video.shape[2]} latent frames, fewer than the "
                         f"{settings.num_sections} sections of {record['latent_window_size']} frames plus the start "
                         "latent that the settings make: save the state of a run with these settings.")
    metadata = {"format": FORMAT, "version": str(VERSION), "next_section": str(state.next_section),
                "history_frames": str(history_frames), "settings": json.dumps(record, sort_keys=True),
                "fingerprint": fingerprint}
    metadata["checksum"] = checksum(metadata, video, generator_state)
    data = safetensors_bytes({"video": video, "generator_state": generator_state}, metadata)
    write_atomically(path, data)
    log.debug("resume file %s: %d of %d sections done", path, state.next_section, settings.num_sections)


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the target's folder, fsync it, then rename it over the target."""
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise ResumeError(f"cannot write the resume file {path}: {err}. Check that the folder exists and is "
                          "writable.") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ResumeError(f"cannot write the resume file {path}: {err}. Check the free disk space; the "
                              "previous resume file, if any, is unchanged.") from None
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX only: Windows cannot open a folder for fsync)."""
    if os.name != "posix":
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as err:  # the file itself is complete; only the rename may not survive a power cut
        log.warning("could not fsync the folder %s after writing a resume file: %s", folder, err)


class ResumeWriter:
    """An ``on_section`` callback for ``generate`` that saves a resume file after every finished section.

    ``on_section``, if given, is called after the file is written, so a cancel raised from it (or from a
    later step) loses nothing that was finished.
    """

    def __init__(self, path, settings: GenerationSettings, fingerprint: str, on_section: Callable | None = None):
        self.path, self.settings, self.fingerprint, self.on_section = path, settings, fingerprint, on_section

    def __call__(self, plan, latents, state: GenerationState) -> None:
        try:
            save_resume(self.path, state, self.settings, self.fingerprint)
        except ResumeError as err:  # a full disk must not cost the video being generated
            log.warning("the run goes on without a resume file: %s", err)
        if self.on_section is not None:
            self.on_section(plan, latents, state)


# ------------------------------------------------------------------------------------------- reading

@dataclasses.dataclass
class ResumeFile:
    """The validated contents of a resume file, before it is compared with the current run."""

    next_section: int
    history_frames: int
    settings: dict
    fingerprint: str
    video: torch.Tensor
    generator_state: torch.Tensor


def load_resume(path, settings: GenerationSettings, fingerprint: str) -> GenerationState:
    """Read a resume file written by ``save_resume`` and check it continues this exact run.

    Raises ResumeError when the file is missing, damaged, of another format version, or was written with
    other settings (naming each one with both values) or another model or conditioning (the fingerprint).
    """
    path = Path(os.fspath(path))
    check_fingerprint_argument(fingerprint)
    saved = read_resume_file(path)
    check_settings_match(path, saved.settings, settings_record(settings))
    if saved.fingerprint != fingerprint:
        raise ResumeError(
            f"resume file {path} was written for another model or other conditioning (fingerprint "
            f"{saved.fingerprint[:12]}… in the file, {fingerprint[:12]}… now): load the same transformer, start "
            f"image, prompts, image embeddings, end frame and keyframes as the interrupted run, or {START_OVER}.")
    check_fits_plan(path, saved, settings)
    return GenerationState(saved.video, saved.next_section, saved.generator_state)


def read_resume_file(path: Path) -> ResumeFile:
    """Open, parse and checksum a resume file; every problem becomes a ResumeError naming the file."""
    if not path.is_file():
        raise ResumeError(f"resume file not found: {path}. Check the path, or {START_OVER}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = parse_metadata(path, handle.metadata() or {})
            check_tensor_directory(path, {name: handle.get_slice(name) for name in handle.keys()})
            # Clone: the loaded tensors must not keep the file mapped (it is replaced after the next section).
            video = handle.get_tensor("video").clone()
            generator_state = handle.get_tensor("generator_state").clone()
    except SafetensorError as err:
        raise ResumeError(f"resume file {path} is not a readable safetensors file ({err}); it is truncated or "
                          f"corrupt: {START_OVER}.") from None
    except OSError as err:
        raise ResumeError(f"cannot read the resume file {path}: {err}.") from None
    stored = metadata.pop("checksum")
    if checksum(metadata, video, generator_state) != stored:
        raise ResumeError(f"resume file {path} is damaged: its contents do not match the checksum written with "
                          f"them; {START_OVER}.")
    return ResumeFile(int(metadata["next_section"]), int(metadata["history_frames"]), json.loads(metadata["settings"]),
                      metadata["fingerprint"], video, generator_state)


def parse_metadata(path: Path, metadata: dict) -> dict:
    """Check the metadata's keys and value formats; returns it unchanged."""
    if metadata.get("format") != FORMAT:
        raise ResumeError(f"{path} is not a FramePack resume file (metadata 'format' is {metadata.get('format')!r}, "
                          f"expected {FORMAT!r}); point to the file written by the resume option.")
    version = metadata.get("version")
    if version != str(VERSION):
        raise ResumeError(f"resume file {path} has format version {version!r}; this FramePack reads version "
                          f"{VERSION}: {START_OVER}.")
    formats = {"next_section": COUNT, "history_frames": COUNT, "fingerprint": HEX64, "checksum": HEX64}
    for key, pattern in formats.items():
        if not isinstance(metadata.get(key), str) or not pattern.fullmatch(metadata[key]):
            raise ResumeError(f"resume file {path} is damaged: metadata {key!r} is {metadata.get(key)!r}; "
                              f"{START_OVER}.")
    try:
        settings = json.loads(metadata.get("settings", ""))
    except (TypeError, ValueError, RecursionError):
        settings = None
    if not isinstance(settings, dict):
        raise ResumeError(f"resume file {path} is damaged: metadata 'settings' is not a JSON object; {START_OVER}.")
    return dict(metadata)


def check_tensor_directory(path: Path, slices: dict) -> None:
    """Tensor names, dtypes and shapes, checked before any data is read."""
    if set(slices) != set(TENSORS):
        raise ResumeError(f"resume file {path} holds tensors {sorted(slices)}, expected {sorted(TENSORS)}; "
                          f"{START_OVER}.")
    for name, dtype in TENSORS.items():
        if slices[name].get_dtype() != dtype:
            raise ResumeError(f"resume file {path} is damaged: tensor {name!r} is {slices[name].get_dtype()}, "
                              f"expected {dtype}; {START_OVER}.")
    video, generator = tuple(slices["video"].get_shape()), tuple(slices["generator_state"].get_shape())
    if len(video) != 5 or video[:2] != (1, 16) or min(video[2:]) < 1:
        raise ResumeError(f"resume file {path} is damaged: the video has shape {video}, expected "
                          f"(1, 16, frames, height, width); {START_OVER}.")
    if generator != (GENERATOR_STATE_SIZE,):
        raise ResumeError(f"resume file {path} is damaged: the generator state has shape {generator}, expected "
                          f"({GENERATOR_STATE_SIZE},) (a CPU torch.Generator state); {START_OVER}.")


def check_settings_match(path: Path, saved: dict, current: dict) -> None:
    # ``...`` stands for a setting one side lacks (JSON cannot hold it, so it never equals a real value).
    differences = [f"{key}: {saved.get(key, 'absent')!r} in the file, {current.get(key, 'absent')!r} now"
                   for key in sorted(saved.keys() | current.keys()) if saved.get(key, ...) != current.get(key, ...)]
    if differences:
        raise ResumeError(f"resume file {path} was written with other settings ({'; '.join(differences)}). Use the "
                          f"interrupted run's settings to continue it, or {START_OVER}.")


def check_fits_plan(path: Path, saved: ResumeFile, settings: GenerationSettings) -> None:
    """The section count and video length must be those of the settings' plan (with the file's history)."""
    try:
        plans = settings.plans(saved.history_frames)
    except FramePackError as err:
        raise ResumeError(f"resume file {path} holds a video with {saved.history_frames} history frame(s), which "
                          f"does not fit the settings ({err}); {START_OVER}.") from None
    if saved.next_section > len(plans):
        raise ResumeError(f"resume file {path} says section {saved.next_section} is next, but the settings plan "
                          f"{len(plans)} sections; {START_OVER}.")
    frames = plans[0].total_latent_frames
    if saved.video.shape[2] != frames or saved.video.shape[3] % 2 or saved.video.shape[4] % 2:
        raise ResumeError(f"resume file {path} holds a video of shape {tuple(saved.video.shape)}, but the settings "
                          f"make {frames} latent frames of even height and width; {START_OVER}.")
    try:
        torch.Generator("cpu").set_state(saved.generator_state)
    except RuntimeError as err:
        raise ResumeError(f"resume file {path} holds an unusable generator state ({err}); {START_OVER}.") from None


# ------------------------------------------------------------------------------------------- identity

def settings_record(settings: GenerationSettings) -> dict:
    """Every setting as a JSON value; the schedule as its canonical text with the window size it implies."""
    schedule = get_schedule(settings.schedule, settings.mode, settings.latent_window_size)
    record = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}
    record.update(schedule=schedule.text, latent_window_size=schedule.latent_window_size)
    return record


def checksum(metadata: dict, video: torch.Tensor, generator_state: torch.Tensor) -> str:
    """sha256 of the metadata and of each tensor's shape and bytes (a header edit may reshape a tensor)."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for tensor in (video, generator_state):
        digest.update(f"{tuple(tensor.shape)}".encode())
        digest.update(tensor_bytes(tensor))
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def check_fingerprint_argument(fingerprint) -> None:
    if not isinstance(fingerprint, str) or not HEX64.fullmatch(fingerprint):
        raise InputError(f"fingerprint must be the 64-digit hex string from resume.fingerprint(model, inputs), "
                         f"got {fingerprint!r}.")


def fingerprint(model, inputs: GenerationInputs) -> str:
    """sha256 hex of the model (config, compute dtype, weights sample) and of every conditioning input.

    Hashing a 13B model in full would take tens of seconds, so the weights are sampled: the patch embedders,
    the output projection and every 1-D tensor (norms, biases) in full, and the first and last
    ``WEIGHT_SAMPLE`` elements of every other tensor (names, dtypes and shapes of all). Any other checkpoint,
    dtype or merged LoRA changes these; a change confined to the middle of a large matrix would go unseen.
    """
    digest = hashlib.sha256(f"{FORMAT} fingerprint {VERSION}\n".encode())
    digest.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    digest.update(str(model.compute_dtype).encode())
    for name, weight in sorted(model.state_dict().items()):
        feed(digest, name, weight if is_hashed_in_full(name, weight) else weight_sample(weight))
        digest.update(repr(tuple(weight.shape)).encode())
    for field in dataclasses.fields(inputs):
        feed(digest, field.name, getattr(inputs, field.name))
    return digest.hexdigest()


def is_hashed_in_full(name: str, weight: torch.Tensor) -> bool:
    return weight.ndim <= 1 or name.startswith(FULL_WEIGHT_PREFIXES)


def weight_sample(weight: torch.Tensor) -> torch.Tensor:
    flat = weight.detach().reshape(-1)
    return torch.cat([flat[:WEIGHT_SAMPLE], flat[-WEIGHT_SAMPLE:]])


def feed(digest, name: str, value) -> None:
    """Add a named value (tensor, conditioning, list, dict or plain number) to the digest, unambiguously."""
    if torch.is_tensor(value):
        digest.update(f"{name} tensor {value.dtype} {tuple(value.shape)}\n".encode())
        digest.update(tensor_bytes(value))
    elif isinstance(value, TextConditioning):
        for field in dataclasses.fields(value):
            feed(digest, f"{name}.{field.name}", getattr(value, field.name))
    elif isinstance(value, dict):
        digest.update(f"{name} dict {len(value)}\n".encode())
        for key in sorted(value, key=repr):
            feed(digest, f"{name}[{key!r}]", value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{name} list {len(value)}\n".encode())
        for number, item in enumerate(value):
            feed(digest, f"{name}[{number}]", item)
    elif value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{name} = {value!r}\n".encode())
    else:
        raise InputError(f"{name} is a {type(value).__name__}, which the resume fingerprint cannot identify; pass "
                         "tensors, TextConditioning, numbers, or lists and dicts of them.")
