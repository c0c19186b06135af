"""Cancel and resume: the loop's state saved after every section, so a stopped run continues exactly.

A run is saved as a folder written append-only, so that saving a section costs the same at section 5 and at
section 500:

- ``run.safetensors``, written once when the run starts: the video latents that exist before the first
  section to generate (the start latent or the extended video's history; the whole video when a run is
  continued from another save), the CPU generator state, and str -> str metadata (format and version, the next
  section, the number of history frames, the settings as JSON with the schedule as its canonical text, the
  fingerprint of the model and conditioning, and a sha256 checksum of all of it);
- ``section_00005.safetensors`` after every finished section: only that section's latents and the generator
  state after it, with the section number, the checksum of the run's header (a piece of another run is never
  mixed in) and its own checksum.

Every file is written atomically (temporary file, fsync, ``os.replace``, folder fsync). Reading stops at the first
missing or damaged section piece, which is then simply computed again: a crash mid-write costs at most the
section being written. ``save_resume`` writes the same state as one self-contained file (format version 1, also
read by ``load_resume``), the format resume files had before run folders.

Files are safetensors, never pickle: a file from elsewhere must not run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .conditioning import TextConditioning
from ..errors import FramePackError, InputError, ResumeError
from .generate import GenerationInputs, GenerationSettings, GenerationState

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
    """Write ``state`` to one self-contained file atomically (``fingerprint(model, inputs)`` of the run).

    The whole video is written, so this suits handing one state over; a running generation saves itself with
    ``ResumeWriter``, whose cost per section does not grow with the video.
    """
    path = Path(os.fspath(path))
    check_fingerprint_argument(fingerprint)
    metadata = state_metadata(SINGLE_FILE, state, settings, fingerprint)
    data, _ = encoded(metadata, video=state.video, generator_state=state.generator_state)
    write_atomically(path, data)
    log.debug("resume file %s: %d of %d sections done", path, state.next_section, settings.num_sections)


def state_metadata(layout, state: GenerationState, settings: GenerationSettings, fingerprint: str) -> dict:
    record = settings_record(settings)
    history_frames = state.video.shape[2] - settings.num_sections * record["latent_window_size"]
    if history_frames < 1:
        raise InputError(f"the state's video has {state.video.shape[2]} latent frames, fewer than the "
                         f"{settings.num_sections} sections of {record['latent_window_size']} frames plus the start "
                         "latent that the settings make: save the state of a run with these settings.")
    return {"format": layout.format, "version": str(layout.version), "next_section": str(state.next_section),
            "history_frames": str(history_frames), "settings": json.dumps(record, sort_keys=True),
            "fingerprint": fingerprint}


def encoded(metadata: dict, **tensors) -> tuple[bytes, str]:
    """(safetensors bytes, checksum) of ``tensors`` (latents float32, generator state uint8) and ``metadata``."""
    tensors = {name: t.detach().to("cpu", torch.float32 if name != "generator_state" else torch.uint8).contiguous()
               for name, t in tensors.items()}
    digest = checksum(metadata, *tensors.values())
    return safetensors_bytes(tensors, {**metadata, "checksum": digest}), digest


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file in the target's folder, fsync it, then rename it over the target."""
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as err:
        raise ResumeError(f"cannot write the resume file {path}: {err}. Check that the folder exists and is "
                          "writable, or turn resuming off.") from None
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


# ------------------------------------------------------------------------------------------- run folders

HEADER_NAME = "run.safetensors"
PIECE_NAME = re.compile(r"section_(\d{5})\.safetensors")
# What to do when saving fails during a run: go on without saving, or stop the run.
CONTINUE, STOP = "continue", "stop"


def piece_path(folder: Path, section: int) -> Path:
    return folder / f"section_{section:05d}.safetensors"


def section_pieces(folder: Path) -> dict[int, Path]:
    """The section pieces in a run folder by section number (an unreadable folder has none)."""
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return {}
    return {int(match[1]): folder / name for name in names if (match := PIECE_NAME.fullmatch(name))}


class ResumeWriter:
    """An ``on_section`` callback for ``generate`` that saves the run to a run folder after every section.

    It starts from ``start``, the state the run begins with (``initial_state`` or a loaded resume state): when
    ``folder`` already holds this run up to ``start``, it goes on appending there; otherwise the folder is
    (re)started with a header holding ``start``. After that, each section writes only its own piece, so the cost
    per section is constant. ``on_section``, if given, is called after the piece is written, so a cancel raised
    from it (or from a later step) loses nothing that was finished. A failed write stops the run with a
    ResumeError naming the folder when ``on_failure`` is ``"stop"``; with ``"continue"`` it is logged once and
    the run goes on without saving.
    """

    def __init__(self, folder, settings: GenerationSettings, fingerprint: str, start: GenerationState, *,
                 on_section: Callable | None = None, on_failure: str = CONTINUE):
        if on_failure not in (CONTINUE, STOP):
            raise InputError(f"on_failure must be {CONTINUE!r} or {STOP!r}, got {on_failure!r}.")
        check_fingerprint_argument(fingerprint)
        self.folder, self.settings, self.on_section, self.on_failure = Path(os.fspath(folder)), settings, on_section, on_failure
        self.run_id = None
        self.guarded(lambda: self.begin(start, fingerprint))

    def __call__(self, plan, latents, state: GenerationState) -> None:
        if self.run_id is not None:
            self.guarded(lambda: self.write_piece(plan.index, latents, state.generator_state))
        if self.on_section is not None:
            self.on_section(plan, latents, state)

    def guarded(self, write: Callable) -> None:
        try:
            write()
        except ResumeError as err:
            if self.on_failure == STOP:
                raise
            self.run_id = None
            log.warning("FramePack: the run goes on without saving its sections (a cancel or crash will start it "
                        "over): %s", err)

    def begin(self, start: GenerationState, fingerprint: str) -> None:
        try:
            saved = read_run(self.folder, self.settings, fingerprint)
        except ResumeError:
            saved = None
        if saved is not None and saved.base_section <= start.next_section <= saved.state.next_section:
            self.run_id = saved.run_id  # the same run: keep its pieces before ``start``, drop the rest
            stale = [path for section, path in section_pieces(self.folder).items() if section >= start.next_section]
        else:
            make_folder(self.folder)
            stale = list(section_pieces(self.folder).values())
        # Temporary files of writes a crash interrupted (a finished write renames its file).
        stale += [self.folder / name for name in os.listdir(self.folder) if name.endswith(".partial")]
        for path in stale:
            remove_file(path)
        if self.run_id is None:
            self.write_header(start, fingerprint)

    def write_header(self, start: GenerationState, fingerprint: str) -> None:
        metadata = state_metadata(RUN_HEADER, start, self.settings, fingerprint)
        history_frames = int(metadata["history_frames"])
        # A fresh run holds only its history; a continued one its whole video so far (written once).
        frames = history_frames if start.next_section == 0 else start.video.shape[2]
        data, digest = encoded(metadata, video=start.video[:, :, :frames], generator_state=start.generator_state)
        write_atomically(self.folder / HEADER_NAME, data)
        self.run_id = digest

    def write_piece(self, section: int, latents: torch.Tensor, generator_state: torch.Tensor) -> None:
        metadata = {"format": SECTION_PIECE.format, "version": str(SECTION_PIECE.version), "section": str(section),
                    "run": self.run_id}
        data, _ = encoded(metadata, latents=latents, generator_state=generator_state)
        write_atomically(piece_path(self.folder, section), data)


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResumeError(f"cannot create the resume folder {folder}: {err}. Make its parent folder writable (or "
                          "free some disk space), or turn resuming off.") from None


def remove_file(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise ResumeError(f"cannot remove the stale resume piece {path}: {err}. Make the folder writable, or "
                          "delete the folder to start a new generation.") from None


@dataclasses.dataclass
class SavedRun:
    """A run folder read back: the state after its last good piece, its header's identity and first section."""

    state: GenerationState
    run_id: str
    base_section: int


def read_run(folder: Path, settings: GenerationSettings, fingerprint: str) -> SavedRun:
    """Read a run folder's header and its consecutive good section pieces, and check they continue this run."""
    header = folder / HEADER_NAME
    if not header.is_file():
        raise ResumeError(f"resume folder {folder} has no {HEADER_NAME}: it is not a FramePack run folder, or its "
                          f"run never saved a section; {START_OVER}.")
    metadata, tensors = read_checked(header, RUN_HEADER)
    run_id = checksum(metadata, *tensors.values())
    check_settings_match(folder, json.loads(metadata["settings"]), settings_record(settings))
    history_frames, base = int(metadata["history_frames"]), int(metadata["next_section"])
    prefix = tensors["video"]
    saved = ResumeFile(base, history_frames, json.loads(metadata["settings"]), metadata["fingerprint"], prefix,
                       tensors["generator_state"])
    plans = checked_plans(folder, saved, settings)
    total = plans[0].total_latent_frames
    if prefix.shape[2] > total:
        raise ResumeError(f"resume folder {folder} is damaged: its header holds {prefix.shape[2]} latent frames, "
                          f"more than the {total} of the video; {START_OVER}.")
    video = prefix.new_zeros((1, 16, total) + tuple(prefix.shape[3:]))
    video[:, :, :prefix.shape[2]] = prefix
    saved.video = video
    pieces = section_pieces(folder)
    while saved.next_section < len(plans) and saved.next_section in pieces:
        plan = plans[saved.next_section]
        try:
            latents, generator_state = read_piece(pieces[plan.index], plan, run_id, tuple(video.shape[3:]))
        except ResumeError as err:
            log.warning("FramePack: %s. Section %d is computed again.", err, plan.index + 1)
            break
        video[:, :, plan.position:plan.position + plan.latent_window_size] = latents
        saved.generator_state, saved.next_section = generator_state, plan.index + 1
    check_identity(folder, saved, settings, fingerprint)
    return SavedRun(GenerationState(video, saved.next_section, saved.generator_state), run_id, base)


def read_piece(path: Path, plan, run_id: str, size: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    metadata, tensors = read_checked(path, SECTION_PIECE)
    expected = (1, 16, plan.latent_window_size) + size
    if metadata["run"] != run_id or metadata["section"] != str(plan.index):
        raise ResumeError(f"resume piece {path} belongs to another run or section (section {metadata['section']})")
    if tuple(tensors["latents"].shape) != expected:
        raise ResumeError(f"resume piece {path} holds latents of shape {tuple(tensors['latents'].shape)}, expected "
                          f"{expected}")
    return tensors["latents"], tensors["generator_state"]


def run_is_finished(folder: Path) -> bool:
    """Whether a run folder holds its last section (from the header's settings; no tensor data is read)."""
    try:
        with safe_open(str(folder / HEADER_NAME), framework="pt", device="cpu") as handle:
            num_sections = json.loads((handle.metadata() or {}).get("settings", "{}")).get("num_sections")
    except (SafetensorError, OSError, ValueError, AttributeError):
        return False
    return isinstance(num_sections, int) and num_sections - 1 in section_pieces(folder)


def prune_runs(root, *, keep_finished: int, keep_unfinished: int, keep: tuple = ()) -> list[Path]:
    """Delete all but the newest ``keep_finished`` finished and ``keep_unfinished`` unfinished run folders.

    Run folders are the ``framepack_*`` folders under ``root`` holding a run header; ``keep`` are never
    deleted. Returns the deleted folders; a folder that cannot be deleted is logged and left.
    """
    root = Path(os.fspath(root))
    try:
        folders = [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)
                   and e.name.startswith("framepack_") and (Path(e.path) / HEADER_NAME).is_file()]
    except OSError:
        return []
    folders = [f for f in folders if f not in {Path(k) for k in keep}]
    folders.sort(key=last_write, reverse=True)
    finished = [f for f in folders if run_is_finished(f)]
    unfinished = [f for f in folders if f not in finished]
    removed = []
    for folder in finished[keep_finished:] + unfinished[keep_unfinished:]:
        try:
            shutil.rmtree(folder)
            removed.append(folder)
        except OSError as err:
            log.warning("FramePack: could not remove the old resume folder %s: %s", folder, err)
    return removed


def last_write(folder: Path) -> float:
    try:
        return max(entry.stat().st_mtime for entry in os.scandir(folder))
    except (OSError, ValueError):
        return 0.0


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
    """Read a saved run (a run folder, or a single file from ``save_resume``) and check it continues this run.

    Raises ResumeError when it is missing, damaged, of another format version, holds NaN or infinite latents,
    or was written with other settings (naming each one with both values) or another model or conditioning
    (the fingerprint). In a run folder, a damaged last section piece is dropped (that section is computed again).
    """
    path = Path(os.fspath(path))
    check_fingerprint_argument(fingerprint)
    if path.is_dir():
        return read_run(path, settings, fingerprint).state
    saved = read_resume_file(path)
    check_identity(path, saved, settings, fingerprint)
    return GenerationState(saved.video, saved.next_section, saved.generator_state)


def check_identity(path: Path, saved: ResumeFile, settings: GenerationSettings, fingerprint: str) -> None:
    """Settings, fingerprint, plan and finiteness of a saved state, against the current run."""
    check_settings_match(path, saved.settings, settings_record(settings))
    if saved.fingerprint != fingerprint:
        raise ResumeError(
            f"resume file {path} was written for another model or other conditioning (fingerprint "
            f"{saved.fingerprint[:12]}… in the file, {fingerprint[:12]}… now): load the same transformer, LoRAs, "
            f"sampler, start image, prompts, image embeddings, end frame and keyframes as the interrupted run, or "
            f"{START_OVER}.")
    check_fits_plan(path, saved, settings)
    if not bool(torch.isfinite(saved.video).all()):
        raise ResumeError(f"resume file {path} holds NaN or infinite latents: the interrupted run had already gone "
                          f"wrong (a NaN in the model or its inputs), so continuing it would finish a broken video. "
                          f"{START_OVER[0].upper()}{START_OVER[1:]} (and check the model and its inputs).")


@dataclasses.dataclass(frozen=True)
class Layout:
    """What one kind of resume file holds: its format name and version, tensors (name -> dtype), metadata fields."""

    format: str
    version: int
    tensors: dict
    fields: dict
    json_fields: tuple = ()


STATE_FIELDS = {"next_section": COUNT, "history_frames": COUNT, "fingerprint": HEX64, "checksum": HEX64}
SINGLE_FILE = Layout(FORMAT, VERSION, TENSORS, STATE_FIELDS, ("settings",))
# A run folder's header: "video" holds the frames that exist before its first section (zeros follow them).
RUN_HEADER = Layout(f"{FORMAT}_run", 2, TENSORS, STATE_FIELDS, ("settings",))
SECTION_PIECE = Layout(f"{FORMAT}_section", 2, {"latents": "F32", "generator_state": "U8"},
                       {"section": COUNT, "run": HEX64, "checksum": HEX64})


def read_resume_file(path: Path) -> ResumeFile:
    """Open, parse and checksum a single-file resume state; every problem becomes a ResumeError naming the file."""
    metadata, tensors = read_checked(path, SINGLE_FILE)
    return ResumeFile(int(metadata["next_section"]), int(metadata["history_frames"]), json.loads(metadata["settings"]),
                      metadata["fingerprint"], tensors["video"], tensors["generator_state"])


def read_checked(path: Path, layout: Layout) -> tuple[dict, dict]:
    """(metadata without the checksum, tensors) of a file of ``layout``, after checking all of it."""
    if not path.is_file():
        raise ResumeError(f"resume file not found: {path}. Check the path, or {START_OVER}.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = parse_metadata(path, handle.metadata() or {}, layout)
            check_tensor_directory(path, {name: handle.get_slice(name) for name in handle.keys()}, layout)
            # Clone: the loaded tensors must not keep the file mapped (it may be replaced later).
            tensors = {name: handle.get_tensor(name).clone() for name in layout.tensors}
    except SafetensorError as err:
        raise ResumeError(f"resume file {path} is not a readable safetensors file ({err}); it is truncated or "
                          f"corrupt: {START_OVER}.") from None
    except OSError as err:
        raise ResumeError(f"cannot read the resume file {path}: {err}.") from None
    stored = metadata.pop("checksum")
    if checksum(metadata, *tensors.values()) != stored:
        raise ResumeError(f"resume file {path} is damaged: its contents do not match the checksum written with "
                          f"them; {START_OVER}.")
    return metadata, tensors


def parse_metadata(path: Path, metadata: dict, layout: Layout) -> dict:
    """Check the metadata's keys and value formats; returns it unchanged."""
    if metadata.get("format") != layout.format:
        raise ResumeError(f"{path} is not a FramePack resume file (metadata 'format' is {metadata.get('format')!r}, "
                          f"expected {layout.format!r}); point to the file written by the resume option.")
    version = metadata.get("version")
    if version != str(layout.version):
        raise ResumeError(f"resume file {path} has format version {version!r}; this FramePack reads version "
                          f"{layout.version}: {START_OVER}.")
    for key, pattern in layout.fields.items():
        if not isinstance(metadata.get(key), str) or not pattern.fullmatch(metadata[key]):
            raise ResumeError(f"resume file {path} is damaged: metadata {key!r} is {metadata.get(key)!r}; "
                              f"{START_OVER}.")
    for key in layout.json_fields:
        try:
            value = json.loads(metadata.get(key, ""))
        except (TypeError, ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise ResumeError(f"resume file {path} is damaged: metadata {key!r} is not a JSON object; {START_OVER}.")
    return dict(metadata)


def check_tensor_directory(path: Path, slices: dict, layout: Layout) -> None:
    """Tensor names, dtypes and shapes, checked before any data is read."""
    if set(slices) != set(layout.tensors):
        raise ResumeError(f"resume file {path} holds tensors {sorted(slices)}, expected {sorted(layout.tensors)}; "
                          f"{START_OVER}.")
    for name, dtype in layout.tensors.items():
        if slices[name].get_dtype() != dtype:
            raise ResumeError(f"resume file {path} is damaged: tensor {name!r} is {slices[name].get_dtype()}, "
                              f"expected {dtype}; {START_OVER}.")
        shape = tuple(slices[name].get_shape())
        if name == "generator_state" and shape != (GENERATOR_STATE_SIZE,):
            raise ResumeError(f"resume file {path} is damaged: the generator state has shape {shape}, expected "
                              f"({GENERATOR_STATE_SIZE},) (a CPU torch.Generator state); {START_OVER}.")
        if dtype == "F32" and (len(shape) != 5 or shape[:2] != (1, 16) or min(shape[2:]) < 1):
            raise ResumeError(f"resume file {path} is damaged: the {name} has shape {shape}, expected "
                              f"(1, 16, frames, height, width); {START_OVER}.")


def check_settings_match(path: Path, saved: dict, current: dict) -> None:
    # ``...`` stands for a setting one side lacks (JSON cannot hold it, so it never equals a real value).
    differences = [f"{key}: {saved.get(key, 'absent')!r} in the file, {current.get(key, 'absent')!r} now"
                   for key in sorted(saved.keys() | current.keys()) if saved.get(key, ...) != current.get(key, ...)]
    if differences:
        raise ResumeError(f"resume file {path} was written with other settings ({'; '.join(differences)}). Use the "
                          f"interrupted run's settings to continue it, or {START_OVER}.")


def checked_plans(path: Path, saved: ResumeFile, settings: GenerationSettings) -> list:
    """The settings' plan with the file's history frames; the file's next section must lie within it."""
    try:
        plans = settings.plans(saved.history_frames)
    except FramePackError as err:
        raise ResumeError(f"resume file {path} holds a video with {saved.history_frames} history frame(s), which "
                          f"does not fit the settings ({err}); {START_OVER}.") from None
    if saved.next_section > len(plans):
        raise ResumeError(f"resume file {path} says section {saved.next_section} is next, but the settings plan "
                          f"{len(plans)} sections; {START_OVER}.")
    return plans


def check_fits_plan(path: Path, saved: ResumeFile, settings: GenerationSettings) -> None:
    """The section count and video length must be those of the settings' plan (with the file's history)."""
    plans = checked_plans(path, saved, settings)
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
    schedule = settings.frame_schedule
    record = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}
    record.update(schedule=schedule.text, latent_window_size=schedule.latent_window_size)
    return record


def checksum(metadata: dict, *tensors: torch.Tensor) -> str:
    """sha256 of the metadata and of each tensor's shape and bytes (a header edit may reshape a tensor)."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for tensor in tensors:
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
