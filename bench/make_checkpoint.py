"""A FramePack checkpoint of any size with seeded random weights, written tensor by tensor (no download).

    python -m bench.make_checkpoint OUT.safetensors [--config CONFIG.json] [--seed 0]
    python -m bench.make_checkpoint OUT_FOLDER --layout diffusers-bf16 [--shard-gib 5]

The default config is the released FramePackI2V_HY (``tests/data/reference/framepack_i2v_hy_config.json``):
its 1,274 tensors and 12,874,314,816 parameters equal the reference key manifest. Layouts:

- ``fp8`` (default): one safetensors file laid out like ComfyUI's fp8_e4m3fn repacks: the blocks' Linear
  weights in float8_e4m3fn; norms, biases, embedders, the modulation Linears and the output head in bfloat16
  (the rule of ``framepack_core.model.checkpoint.storage_dtype``, so ``load_transformer`` keeps each tensor as it is
  stored). The config travels in the file's metadata. About 13 GB at full size.
- ``bf16``: the same single file with every tensor in bfloat16 (about 26 GB).
- ``diffusers-bf16``: a diffusers folder: ``config.json``, bfloat16 shards of at most ``--shard-gib`` and the
  shard index (about 26 GB).

The safetensors format is an 8-byte little-endian header length, a JSON header giving every tensor's dtype,
shape and byte range, then the raw bytes. All byte ranges follow from the shapes and dtypes, so the header is
written first and each tensor is then generated, converted and written alone: the writer holds at most one
tensor (in float32, plus its stored copy) however large the model. A file is written under a ``.PID.partial``
name and renamed when complete, so an interrupted run never leaves a file that looks whole.

The random weights keep activations finite and bounded through all 60 blocks: Linear and Conv3d weights are
normal with standard deviation 1/sqrt(fan-in) (variance-preserving), the adaptive-norm modulation Linears
(shift, scale and gate of every block) 0.1/sqrt(fan-in), so the gates are small and every block changes the
residual stream a little; biases are normal with standard deviation 0.02; norm weights are 1 and norm biases
0. Every tensor draws from its own generator seeded by (seed, name), so a tensor does not depend on the order
of generation or on the other tensors; ``random_tensor`` on another device (the GPU benchmark builds the
model on the GPU) follows the same recipe with that device's random stream.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import zlib
from pathlib import Path
from typing import Callable, Iterable

import torch

from framepack_core import FramePackConfig, FramePackTransformer
from framepack_core.model.checkpoint import INDEX_NAME, storage_dtype

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CONFIG = ROOT / "tests" / "data" / "reference" / "framepack_i2v_hy_config.json"
LAYOUTS = ("fp8", "bf16", "diffusers-bf16")
SAFETENSORS_DTYPES = {torch.float8_e4m3fn: "F8_E4M3", torch.bfloat16: "BF16", torch.float32: "F32"}
MODULATION_GAIN = 0.1
BIAS_STD = 0.02
# Room left on the disk beyond the file itself (other work shares it).
DISK_MARGIN_BYTES = 2 * 2 ** 30


class CheckpointWriteError(RuntimeError):
    """A checkpoint cannot be written (bad arguments, no room); the message says what to do."""


# ------------------------------------------------------------------------------------------- the tensors

def load_config(path=REFERENCE_CONFIG) -> FramePackConfig:
    """A FramePackConfig from a diffusers ``config.json`` (keys starting with ``_`` are metadata)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return FramePackConfig.from_dict({k: v for k, v in data.items() if not k.startswith("_")})


def tensor_plan(config: FramePackConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the model as (name, shape), sorted by name (the reference manifest's order)."""
    with torch.device("meta"):
        model = FramePackTransformer(config)
    return sorted((name, tuple(t.shape)) for name, t in model.state_dict().items())


def is_modulation(name: str) -> bool:
    """The adaptive-norm Linears producing shift / scale / gate (``norm1.linear``, ``norm.linear``, ...)."""
    return ".linear." in name and "norm" in name.rsplit(".linear.", 1)[0].rsplit(".", 1)[-1]


def is_norm_parameter(name: str) -> bool:
    owner = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    return owner.startswith("norm") and not is_modulation(name)


def tensor_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63


def random_tensor(name: str, shape: tuple, seed: int = 0, device="cpu") -> torch.Tensor:
    """One tensor of the init recipe (module docstring), in float32 on ``device``."""
    if is_norm_parameter(name):
        fill = 1.0 if name.endswith(".weight") else 0.0
        return torch.full(shape, fill, dtype=torch.float32, device=device)
    generator = torch.Generator(device).manual_seed(tensor_seed(seed, name))
    tensor = torch.empty(shape, dtype=torch.float32, device=device)
    if name.endswith(".bias"):
        return tensor.normal_(0.0, BIAS_STD, generator=generator)
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    std = (MODULATION_GAIN if is_modulation(name) else 1.0) / fan_in ** 0.5
    return tensor.normal_(0.0, std, generator=generator)


def file_dtype(name: str, layout: str) -> torch.dtype:
    """The dtype a tensor is stored in for a layout (fp8: the loader's rule; the head in bf16 as in the repacks)."""
    if layout != "fp8" or name.startswith("proj_out."):
        return torch.bfloat16
    return storage_dtype(name, torch.bfloat16, torch.float8_e4m3fn)


# ------------------------------------------------------------------------------------------- safetensors

def nbytes(shape: tuple, dtype: torch.dtype) -> int:
    count = 1
    for size in shape:
        count *= size
    return count * dtype.itemsize


def header_bytes(entries: list[tuple[str, tuple, torch.dtype]], metadata: dict) -> bytes:
    """The safetensors header (length prefix included) for tensors stored back to back in ``entries`` order."""
    header, offset = {"__metadata__": metadata}, 0
    for name, shape, dtype in entries:
        size = nbytes(shape, dtype)
        header[name] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors itself writes
    return len(text).to_bytes(8, "little") + text


def write_safetensors(path: Path, entries: list[tuple[str, tuple, torch.dtype]], metadata: dict,
                      make: Callable[[str, tuple], torch.Tensor]) -> int:
    """Write ``make(name, shape)`` for each entry, one tensor in memory at a time; returns the file size."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # one per writer: two runs never share it
    try:
        with open(partial, "wb") as out:
            out.write(header_bytes(entries, metadata))
            for name, shape, dtype in entries:
                tensor = make(name, shape).to(dtype).contiguous().cpu()
                if tuple(tensor.shape) != tuple(shape):
                    raise CheckpointWriteError(f"the tensor made for {name} has shape {tuple(tensor.shape)}, not {shape}.")
                out.write(memoryview(tensor.view(torch.uint8).numpy()))
                del tensor
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def check_room(target: Path, needed: int) -> None:
    if target.exists():
        raise CheckpointWriteError(f"{target} already exists; choose a new name or delete it first (nothing was written).")
    free = shutil.disk_usage(target.parent).free
    if free < needed + DISK_MARGIN_BYTES:
        raise CheckpointWriteError(
            f"writing {target} needs {needed / 2**30:.1f} GiB but {target.parent} has {free / 2**30:.1f} GiB free "
            f"(keeping {DISK_MARGIN_BYTES / 2**30:.0f} GiB spare); free some space or write elsewhere.")


def config_metadata(config: FramePackConfig, seed: int) -> dict:
    return {"format": "pt", "config": json.dumps(config.to_dict()), "framepack_random_weights_seed": str(seed)}


# ------------------------------------------------------------------------------------------- writers

def write_single_file(config: FramePackConfig, path, layout: str = "fp8", seed: int = 0,
                      make: Callable | None = None) -> dict:
    """One safetensors file in the ``fp8`` or ``bf16`` layout; ``make(name, shape)`` replaces the random
    recipe (the GPU benchmark passes the tensors it already built). Returns a summary."""
    if layout not in ("fp8", "bf16"):
        raise CheckpointWriteError(f"a single file is written in layout 'fp8' or 'bf16', got {layout!r}.")
    path = Path(path)
    entries = [(name, shape, file_dtype(name, layout)) for name, shape in tensor_plan(config)]
    check_room(path, sum(nbytes(s, d) for _, s, d in entries))
    make = make or (lambda name, shape: random_tensor(name, shape, seed))
    size = write_safetensors(path, entries, config_metadata(config, seed), make)
    log.info("wrote %s (%d tensors, %.2f GiB)", path, len(entries), size / 2 ** 30)
    return summary(path, entries, size)


def shards(entries: list, limit: int) -> list[list]:
    """Consecutive entries grouped into shards of at most ``limit`` bytes (a larger tensor gets its own)."""
    groups, current, size = [], [], 0
    for entry in entries:
        entry_size = nbytes(entry[1], entry[2])
        if current and size + entry_size > limit:
            groups.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry_size
    return groups + [current] if current else groups


def write_diffusers_folder(config: FramePackConfig, folder, seed: int = 0, shard_bytes: int = 5 * 2 ** 30) -> dict:
    """A diffusers folder: ``config.json``, bfloat16 shards and ``diffusion_pytorch_model.safetensors.index.json``."""
    folder = Path(folder)
    entries = [(name, shape, torch.bfloat16) for name, shape in tensor_plan(config)]
    total = sum(nbytes(s, d) for _, s, d in entries)
    check_room(folder, total)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
    partial.mkdir(parents=True)
    try:
        groups = shards(entries, shard_bytes)
        weight_map = {}
        for number, group in enumerate(groups, 1):
            name = f"diffusion_pytorch_model-{number:05d}-of-{len(groups):05d}.safetensors"
            write_safetensors(partial / name, group, config_metadata(config, seed),
                              lambda key, shape: random_tensor(key, shape, seed))
            weight_map.update({key: name for key, _, _ in group})
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (partial / INDEX_NAME).write_text(json.dumps(index, indent=1), encoding="utf-8")
        config_json = {"_class_name": "HunyuanVideoTransformer3DModelPacked", **config.to_dict()}
        (partial / "config.json").write_text(json.dumps(config_json, indent=1), encoding="utf-8")
        os.replace(partial, folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("wrote %s (%d tensors in %d shards, %.2f GiB)", folder, len(entries), len(groups), total / 2 ** 30)
    return summary(folder, entries, total)


def summary(path: Path, entries: Iterable, size: int) -> dict:
    entries = list(entries)
    counts: dict = {}
    for _, shape, dtype in entries:
        counts[str(dtype)] = counts.get(str(dtype), 0) + nbytes(shape, dtype) // dtype.itemsize
    return {"path": str(path), "tensors": len(entries), "bytes": size, "parameters_by_dtype": counts,
            "parameters": sum(counts.values())}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.make_checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .safetensors file (fp8 / bf16) or the folder (diffusers-bf16)")
    parser.add_argument("--config", type=Path, default=REFERENCE_CONFIG, help="model config.json (default: the 13B release)")
    parser.add_argument("--layout", choices=LAYOUTS, default="fp8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-gib", type=float, default=5.0, help="largest shard of a diffusers folder (GiB)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = load_config(args.config)
    try:
        if args.layout == "diffusers-bf16":
            result = write_diffusers_folder(config, args.out, args.seed, int(args.shard_gib * 2 ** 30))
        else:
            result = write_single_file(config, args.out, args.layout, args.seed)
    except CheckpointWriteError as err:
        raise SystemExit(f"make_checkpoint: {err}") from None
    sys.stdout.write(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
