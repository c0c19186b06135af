"""The released-size FramePack transformer through the real loaders on the CPU (a benchmark, not a test).

    python -m bench.make_checkpoint /big/disk/framepack_13b_fp8.safetensors          # 13 GB, once
    python -m bench.bench_13b_cpu --file /big/disk/framepack_13b_fp8.safetensors \\
        [--comfyui /work/comfyui --comfy-python /work/comfyui-venv/bin/python] [--steps 2] [--out bench/results]

Each loading path runs in a fresh child process, so its peak RSS is its own:

- ``comfy default`` and ``comfy fp8_e4m3fn``: ComfyUI's modules imported from ``--comfyui`` (CPU device),
  the file placed in ComfyUI's diffusion_models folder list and loaded by the pack's loader node
  (``FramePackModelLoader.execute`` with that weight_dtype), sampled by the pack's ``ComfySectionSampler``
  (ModelPatcher, CFGGuider, ComfyUI's compute dtype choice for the CPU);
- ``core``: ``framepack_core.load_transformer(file)`` and ``TransformerSectionSampler``.

In each: the load time and the peak RSS of loading and of the whole run against the file size (the goal is
at most 1.15x); one section (``--steps`` UniPC steps, the inverted anti-drifting layout, window 9) at the
smallest bucket, 128x128 px (latent 16x16), with a real-shaped context: stand-ins for the encoders' outputs
at their real widths and lengths (729 SigLIP tokens of 1152, 256 text tokens of 4096 padded to 512, a 768
pooled vector); the time per forward and per block (forward hooks), where the section's time goes
(torch.profiler self time: dtype casts, i.e. fp8 -> compute copies, against GEMMs and attention); and one
more forward under a live-tensor counter, its peak against ``bench.memory_model``'s activation formula at
these token counts. Writes ``cpu_13b.json`` / ``cpu_13b.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from bench.bench_forward import RssSampler, proc_status_mib, reset_peak_rss
from bench.gpu.bench_gpu import Scale, generation_inputs, import_pack, settings_for, token_counts, forward_kwargs
from bench.memory_model import LiveTensorBytes, activation_bytes
from framepack_core import TransformerSectionSampler, generate, load_transformer
from framepack_core.model.checkpoint import STORED_DTYPES, block_weight_dtype, open_checkpoint, parameter_count, storage_dtype

ROOT = Path(__file__).resolve().parents[1]
MiB = 2 ** 20
PATHS = ("comfy default", "comfy fp8_e4m3fn", "core")
BUCKET = (128, 128)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
CAST_OPS = ("aten::copy_", "aten::_to_copy")


def scale_for(config, steps: int, text_width_tokens=(512, 256), siglip_tokens: int = 729) -> Scale:
    return Scale(config, BUCKET, text_width_tokens[0], text_width_tokens[1], siglip_tokens, steps, 1, 0, "", 0.0)


# ------------------------------------------------------------------------------------------- child

def load(kind: str, path: Path, comfyui: Path | None, steps: int):
    """(section sampler, the transformer) for one loading path."""
    if kind == "core":
        model = load_transformer(path)
        return TransformerSectionSampler(model), model
    import folder_paths

    loader, sampling = sys.modules["framepack_pack.nodes.loader"], sys.modules["framepack_pack.comfy_adapter.section_sampler"]
    folder_paths.add_model_folder_path("diffusion_models", str(path.parent), is_default=True)
    patcher = loader.FramePackModelLoader.execute(path.name, kind.split()[1]).result[0]
    sampler = sampling.ComfySectionSampler(patcher, sampling.framepack_sampler("unipc_bh1"), steps)
    return sampler, patcher.model.diffusion_model


def storage_for(kind: str, path: Path):
    """The weights' storage dtype a path will choose (None: the file's), asked of ComfyUI as its loader asks."""
    if kind == "core":
        return None
    if kind == "comfy fp8_e4m3fn":
        return torch.float8_e4m3fn
    import comfy.model_management as mm

    source = open_checkpoint(path)
    supported = sys.modules["framepack_pack.comfy_adapter.native_model"].FramePackModelConfig.supported_inference_dtypes
    return mm.unet_dtype(mm.get_torch_device(), parameter_count(source), supported, weight_dtype=block_weight_dtype(source))


def weight_bytes(path: Path, dtype) -> int:
    """Bytes of the loaded weights when stored as ``load_transformer(path, dtype=dtype)`` stores them."""
    source = open_checkpoint(path)
    return sum(math.prod(shape) * storage_dtype(key, STORED_DTYPES[source.dtypes[key]], dtype).itemsize
               for key, shape in source.shapes.items())


def check_memory(kind: str, path: Path) -> int:
    """Refuse a path whose weights cannot fit in the RAM available now (the machine is shared: never swap it out)."""
    storage = storage_for(kind, path)
    file_dtype = block_weight_dtype(open_checkpoint(path))
    needed = weight_bytes(path, None if storage in (None, file_dtype) else storage)
    available = psutil.virtual_memory().available
    if needed > 0.9 * available:
        raise SystemExit(f"{kind} stores the weights as {storage or file_dtype}: {needed / 2**30:.1f} GiB, more than 90 % "
                         f"of the {available / 2**30:.1f} GiB of RAM available now; not run")
    return needed


class BlockTimer:
    """Wall time of every transformer block call, by block kind, from forward pre/post hooks."""

    def __init__(self, model):
        self.seconds = {"dual": [], "single": []}
        self.hooks = []
        for kind, blocks in (("dual", model.transformer_blocks), ("single", model.single_transformer_blocks)):
            for block in blocks:
                self.hooks.append(block.register_forward_pre_hook(self.start))
                self.hooks.append(block.register_forward_hook(lambda *args, kind=kind: self.stop(kind)))
        self.started = None

    def start(self, *args):
        self.started = time.perf_counter()

    def stop(self, kind):
        self.seconds[kind].append(time.perf_counter() - self.started)

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def time_split(profile) -> dict:
    """Self CPU seconds of dtype casts, GEMMs, attention and everything else over a profiled run."""
    split = {"casts_s": 0.0, "gemm_s": 0.0, "attention_s": 0.0, "other_s": 0.0}
    for event in profile.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in CAST_OPS:
            split["casts_s"] += seconds
        elif event.key in GEMM_OPS:
            split["gemm_s"] += seconds
        elif "attention" in event.key:
            split["attention_s"] += seconds
        else:
            split["other_s"] += seconds
    return split


def core_forward(model):
    """The core forward (its keywords) of a transformer, also of ComfyUI's subclass, whose own forward takes
    ComfyUI's calling convention."""
    base = next(cls for cls in type(model).__mro__ if cls.__name__ == "FramePackTransformer")
    return lambda **kwargs: base.forward(model, **kwargs)


def live_peak(model, kwargs: dict) -> int:
    """Peak bytes of tensors allocated during one forward (the weights and the inputs not counted; the
    per-layer cast copies of the weights are)."""
    existing = {p.untyped_storage().data_ptr() for p in model.parameters()}
    existing |= {v.untyped_storage().data_ptr() for v in kwargs.values() if torch.is_tensor(v)}
    counter = LiveTensorBytes(existing)
    with torch.inference_mode(), counter:
        core_forward(model)(**kwargs)
    return counter.peak


def compute_inputs(model, kwargs: dict) -> dict:
    """The forward's float inputs in the model's compute dtype (ComfyUI on the CPU may compute in float32)."""
    return {k: v.to(model.compute_dtype) if torch.is_tensor(v) and v.is_floating_point() and v.ndim > 1 else v
            for k, v in kwargs.items()}


def largest_linear_weight(model) -> int:
    return max(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def measure(kind: str, path: Path, comfyui: Path | None, steps: int) -> dict:
    if kind.startswith("comfy"):  # ComfyUI's imports come before the baseline: they are not the model's memory
        import_pack(comfyui, torch.device("cpu"), 0.0)
    weights = check_memory(kind, path)
    reset_peak_rss()
    before = proc_status_mib()
    with RssSampler() as sampler_rss:
        start = time.perf_counter()
        sampler, model = load(kind, path, comfyui, steps)
        load_s = time.perf_counter() - start
    load_peak = proc_status_mib()["VmHWM"] - before["VmRSS"]
    scale = scale_for(model.config, steps)
    settings = settings_for(scale)
    timer = BlockTimer(model)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        start = time.perf_counter()
        video = generate(sampler, generation_inputs(scale), settings)
        section_s = time.perf_counter() - start
    timer.remove()
    kwargs = compute_inputs(model, forward_kwargs(scale, generation_inputs(scale), torch.device("cpu")))
    tokens = token_counts(model, kwargs)
    measured = live_peak(model, kwargs)
    run_peak = proc_status_mib()["VmHWM"] - before["VmRSS"]
    file_mib = path.stat().st_size / MiB
    predicted = activation_bytes(model.config, tokens["image_tokens"], tokens["context_tokens"],
                                 model.compute_dtype.itemsize)["total"]
    blocks = {k: sum(v) / len(v) if v else None for k, v in timer.seconds.items()}
    return {
        "path": kind, "file_mib": file_mib, "weights_mib": weights / MiB, "load_s": load_s, "compute_dtype": str(model.compute_dtype),
        "storage_dtype": str(model.transformer_blocks[0].attn.to_q.weight.dtype) if model.transformer_blocks else None,
        "load_peak_rss_increase_mib": load_peak, "load_peak_anon_increase_mib": sampler_rss.peak["RssAnon"] - before["RssAnon"],
        "run_peak_rss_increase_mib": run_peak, "load_peak_over_file": load_peak / file_mib,
        "run_peak_over_file": run_peak / file_mib, "section_s": section_s, "steps": steps,
        "s_per_forward": section_s / steps, "s_per_block": blocks, **tokens, **time_split(profile),
        "live_tensor_peak_mib": measured / MiB, "predicted_activation_mib": predicted / MiB,
        "one_weight_cast_mib": largest_linear_weight(model) * model.compute_dtype.itemsize / MiB,
        "output_finite": bool(torch.isfinite(video).all()),
    }


# ------------------------------------------------------------------------------------------- parent

def child(kind: str, args) -> dict:
    python = args.comfy_python if kind.startswith("comfy") else sys.executable
    cmd = [str(python), "-m", "bench.bench_13b_cpu", "--file", str(args.file), "--steps", str(args.steps),
           "--child", kind]
    if args.comfyui:
        cmd += ["--comfyui", str(args.comfyui)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"path": kind, "skip_reason": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(report: dict) -> str:
    lines = [f"# The {report['parameters']:,}-parameter FramePack transformer on the CPU", "",
             f"File {report['file']} ({report['file_mib']:.0f} MiB); {report['steps']} steps at {BUCKET[0]}x{BUCKET[1]} px; "
             f"{report['machine']['cpu']}, torch threads {report['machine']['torch_threads']}.", "",
             "| path | weights / compute | load (s) | peak RSS / file: load, run | s/forward | s/block dual / single "
             "| casts / GEMM / attention / other (s) | live-tensor peak / predicted activations + one weight cast (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "skip_reason" in row:
            lines.append(f"| {row['path']} | – | – | – | – | – | – | skipped: {row['skip_reason']} |")
            continue
        b = row["s_per_block"]
        lines.append(
            f"| {row['path']} | {row['storage_dtype']} / {row['compute_dtype']} | {row['load_s']:.1f} | "
            f"{row['load_peak_over_file']:.2f}, {row['run_peak_over_file']:.2f} | {row['s_per_forward']:.2f} | "
            f"{b['dual'] or 0:.3f} / {b['single'] or 0:.3f} | {row['casts_s']:.1f} / {row['gemm_s']:.1f} / "
            f"{row['attention_s']:.1f} / {row['other_s']:.1f} | {row['live_tensor_peak_mib']:.1f} / "
            f"{row['predicted_activation_mib']:.1f} + {row['one_weight_cast_mib']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from bench.common import machine_info
    from framepack_core.model.checkpoint import open_checkpoint, parameter_count

    parser = argparse.ArgumentParser(prog="python -m bench.bench_13b_cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, required=True, help="an fp8 checkpoint from bench.make_checkpoint")
    parser.add_argument("--comfyui", type=Path, default=None, help="ComfyUI's source folder (the comfy rows)")
    parser.add_argument("--comfy-python", type=Path, default=Path(sys.executable), help="Python of ComfyUI's venv")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(measure(args.child, args.file, args.comfyui, args.steps)) + "\n")
        return
    if not args.file.is_file():
        raise SystemExit(f"bench_13b_cpu: {args.file} does not exist; write it with python -m bench.make_checkpoint.")
    kinds = PATHS if args.comfyui else ("core",)
    rows = [child(kind, args) for kind in kinds]
    report = {"file": str(args.file), "file_mib": args.file.stat().st_size / MiB, "steps": args.steps,
              "parameters": parameter_count(open_checkpoint(args.file)), "machine": machine_info(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_13b.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "cpu_13b.md").write_text(markdown(report), encoding="utf-8")
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
