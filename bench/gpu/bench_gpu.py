"""GPU speed of the 13B FramePack transformer, one script for one lent H200 / H100 (a benchmark, not a test).

    python -m bench.gpu.bench_gpu [--comfyui PATH] [--out bench/results] [--budget-s 420]
    python -m bench.gpu.bench_gpu --dry-run --out /tmp/gpu_dry      # the same code paths on the CPU, seconds

What it measures, in one process, at a 640-class bucket (640x608 px -> latent 80x76), window 9, the
inverted anti-drifting (I2V) layout [start | noisy 9 | post 1 | 2x 2 | 4x 16] with its real context (729
SigLIP tokens of width 1152, 256 valid text tokens of width 4096 padded to 512, a pooled 768 vector):

- the device's bf16 matmul rate (an 8192^3 matmul), the reference for MFU (model FLOPs counted by hooks on
  every Linear / Conv3d and the attention call, over time, over that rate);
- s/forward of the transformer: ours with bf16 weights, ours with fp8_e4m3fn weights and bf16 compute (each
  Linear casts its weight per call, ``framepack_core.model.ops.CastOps``, as ComfyUI's fp8 path does), ours bf16
  with ``torch.compile`` (each transformer block compiled, regional compilation; skipped with the reason
  when the time left is too short), and diffusers' ``HunyuanVideoFramepackTransformer3DModel`` on the same
  bf16 tensors (skipped with the reason when diffusers is not importable);
- a full 25-step section (``generate`` + ``TransformerSectionSampler``, UniPC) in bf16 and fp8, without a
  step cache, with TeaCache 0.15 and with MagCache 0.1: s/frame (33 video frames per section), steps computed
  and skipped, peak allocated GPU memory;
- the same section through ComfyUI under a 6 GiB cap: the 13B fp8 file written from the GPU weights, loaded
  with the pack's loader (``comfy_adapter.native_model.load_framepack_model``, as the loader node does), sampled with the
  pack's ``ComfySectionSampler`` (ComfyUI's ModelPatcher, partial lowvram loading, CFGGuider). The cap is
  ``torch.cuda.set_per_process_memory_fraction`` and ComfyUI is told of it with its own ``reserve_vram``
  setting (ComfyUI reads the device's free memory, not torch's cap). Needs ``--comfyui PATH``; skipped with
  the reason otherwise. An out-of-memory under the cap is recorded as the result.

The weights are the init recipe of ``bench.make_checkpoint`` built directly on the GPU (no file; tensors the
fp8 layout keeps in bf16 are shared by both models). Rows run in priority order; one whose estimated time
exceeds what is left of ``--budget-s`` is skipped with that reason, so the script ends in time.
Writes ``gpu.json`` and ``gpu.md`` to ``--out`` (never the README).

How to run it on a lent machine (nothing can be downloaded there; the device tool copies the working tree
and the ignored paths named in ``carry``, 64 MiB in all):

1. Here, once: ``bash bench/gpu/prepare_carry.sh /work/comfyui`` fills ``bench/gpu/carry/`` (ignored by
   git, about 33 MB): ``comfyui/`` (ComfyUI's source without .git, models and outputs) and ``wheels/``
   (diffusers and the small packages ComfyUI imports that a plain PyTorch install may lack; compiled wheels
   are for this machine's Python, so a device with another Python skips them).
2. The device call (one command, timeout 540 s; the script starts no row it expects to end after 420 s):
   ``run(carry=["bench/gpu/carry"], timeout_s=540, command="bash bench/gpu/install_carry.sh; python -m
   bench.gpu.bench_gpu --comfyui bench/gpu/carry/comfyui --out $OUT")``. install_carry.sh installs each
   missing wheel alone and never fails the run: what cannot be installed turns the diffusers or ComfyUI row
   into a recorded skip naming the missing module.
3. Copy ``gpu.json`` and ``gpu.md`` from the returned files into ``bench/results/``.
Expected time on an H200 (0.50 PFLOP per forward at this bucket, about 1 s at half the peak rate): weights
~10 s, forwards ~15 s, six sections ~2 min, diffusers ~10 s, the ComfyUI row ~1.5 min (a 13 GB file write,
then every step streams most weights), compile ~1-2 min.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from bench.bench_forward import count_flops
from bench.diffusers_reference import ReferenceModel
from bench.make_checkpoint import load_config, random_tensor, tensor_plan, write_single_file
from framepack_core import (CleanGroup, FramePackConfig, FramePackTransformer, GenerationInputs, GenerationSettings,
                           TextConditioning, TransformerSectionSampler, generate)
from framepack_core.model.checkpoint import storage_dtype
from framepack_core.engine.generate import context_inputs
from framepack_core.model.ops import CastOps

log = logging.getLogger("bench.gpu")

ROOT = Path(__file__).resolve().parents[2]
GiB = 2 ** 30
WINDOW = 9
FRAMES_PER_SECTION = 4 * WINDOW - 3
TEACACHE, MAGCACHE = 0.15, 0.1
WEIGHTS = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
# Every row the report has, in the order they run (a row that cannot run carries its skip reason).
FORWARD_ROWS = ("forward, ours bf16", "forward, ours fp8", "forward, diffusers bf16", "forward, ours bf16 + torch.compile")
SECTION_ROWS = tuple(f"section, ours {w}, {c}" for w in WEIGHTS for c in ("no cache", f"TeaCache {TEACACHE}",
                                                                         f"MagCache {MAGCACHE}"))
COMFY_ROW = "section, ComfyUI fp8, 6 GiB cap, partial loading"
ROWS = FORWARD_ROWS + SECTION_ROWS + (COMFY_ROW,)


@dataclasses.dataclass(frozen=True)
class Scale:
    """What a run measures at: the model, the bucket, the context, the sampling and the time budget."""

    config: FramePackConfig
    bucket: tuple[int, int]
    text_tokens: int
    text_valid: int
    siglip_tokens: int
    steps: int
    repeats: int
    matmul_n: int
    compile_backend: str
    vram_cap_gib: float
    compute_dtype: torch.dtype = torch.bfloat16


def full_scale() -> Scale:
    return Scale(load_config(), (640, 608), 512, 256, 729, 25, 3, 8192, "inductor", 6.0)


def dry_scale() -> Scale:
    """Tiny dims, a small latent and 8 steps (enough for the step caches to skip) on the CPU, computing in
    float32 (CPUs without bf16 units run bf16 many times slower); dynamo traces the blocks with the aot_eager
    backend (no C++ build)."""
    config = FramePackConfig(num_attention_heads=2, attention_head_dim=16, num_layers=2, num_single_layers=2,
                             num_refiner_layers=1, text_embed_dim=32, pooled_projection_dim=16, image_proj_dim=24,
                             rope_axes_dim=(4, 6, 6))
    return Scale(config, (128, 128), 16, 8, 9, 8, 2, 512, "aot_eager", 6.0, torch.float32)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def refusal(self, estimate: float) -> str | None:
        """None when ``estimate`` seconds fit in what is left, else the skip reason."""
        left = self.left()
        if estimate <= left:
            return None
        return f"over the time budget: needs about {estimate:.0f} s, {max(left, 0):.0f} s left"


# ------------------------------------------------------------------------------------------- device helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None


def free_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def to_device(value, device):
    """Forward inputs to ``device``: tensors, CleanGroup lists and TextConditioning."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, TextConditioning):
        return TextConditioning(value.text.to(device), value.mask.to(device), value.pooled.to(device))
    if isinstance(value, list) and all(isinstance(g, CleanGroup) for g in value):
        return [dataclasses.replace(g, latents=g.latents.to(device), indices=g.indices.to(device)) for g in value]
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def matmul_tflops(n: int, device: torch.device, dtype: torch.dtype) -> float:
    """The device's matmul rate now (compute dtype): an n^3 matmul's FLOPs over the median of 10 timings."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    times = [timed(device, lambda: a @ b)[1] for _ in range(10)]
    return 2 * n ** 3 / statistics.median(times) / 1e12


# ------------------------------------------------------------------------------------------- weights and models

def build_weights(config: FramePackConfig, device: torch.device, seed: int = 0) -> dict:
    """bf16 and fp8 state dicts of make_checkpoint's init recipe, built on ``device``; what the fp8 layout
    keeps in bf16 (and the float32 head) is one tensor shared by both."""
    states = {"bf16": {}, "fp8": {}}
    for name, shape in tensor_plan(config):
        full = random_tensor(name, shape, seed, device)
        bf16 = states["bf16"][name] = full.to(storage_dtype(name, torch.bfloat16, torch.bfloat16))
        target = storage_dtype(name, torch.bfloat16, torch.float8_e4m3fn)
        states["fp8"][name] = bf16 if target == bf16.dtype else full.to(target)
        del full
    return states


def framepack_model(config: FramePackConfig, state: dict, compute_dtype: torch.dtype) -> FramePackTransformer:
    """Our transformer on ``state``'s tensors, weights cast per layer to the compute dtype (as load_transformer builds it)."""
    with torch.device("meta"):
        model = FramePackTransformer(config, dtype=compute_dtype, operations=CastOps)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def diffusers_model(config: FramePackConfig, state: dict, compute_dtype: torch.dtype) -> ReferenceModel:
    """diffusers' FramePack transformer on the same bf16 tensors (converted when computing in another dtype, and
    its head in the compute dtype too: diffusers runs one dtype)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        model = HunyuanVideoFramepackTransformer3DModel.from_config(config.to_dict())
    state = {k: v.to(compute_dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return ReferenceModel(model.eval().requires_grad_(False))


class DeviceSectionSampler(TransformerSectionSampler):
    """The core section sampler with each job's tensors moved to the model's device first."""

    def __init__(self, model, device):
        super().__init__(model)
        self.device = device

    def __call__(self, job):
        d = self.device
        job = dataclasses.replace(job, noise=job.noise.to(d), model_inputs=to_device(job.model_inputs, d),
                                  positive=to_device(job.positive, d), negative=to_device(job.negative, d),
                                  image_embeddings=job.image_embeddings.to(d))
        return super().__call__(job)


# ------------------------------------------------------------------------------------------- inputs

def generation_inputs(scale: Scale) -> GenerationInputs:
    """Seeded stand-ins for the encoders' outputs at their real widths and token counts."""
    cfg, latent = scale.config, latent_size(scale)
    gen = torch.Generator().manual_seed(7)
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    mask = (torch.arange(scale.text_tokens) < scale.text_valid)[None]
    text = TextConditioning(randn(1, scale.text_tokens, cfg.text_embed_dim), mask, randn(1, cfg.pooled_projection_dim))
    return GenerationInputs(start_latent=randn(1, 16, 1, *latent), prompts=text,
                            image_embeddings=randn(1, scale.siglip_tokens, cfg.image_proj_dim))


def latent_size(scale: Scale) -> tuple[int, int]:
    return scale.bucket[0] // 8, scale.bucket[1] // 8


def settings_for(scale: Scale, cache: str = "no cache") -> GenerationSettings:
    return GenerationSettings(mode="inverted_anti_drifting", num_sections=1, latent_window_size=WINDOW, steps=scale.steps,
                              teacache_threshold=TEACACHE if cache.startswith("TeaCache") else 0.0,
                              magcache_threshold=MAGCACHE if cache.startswith("MagCache") else 0.0)


def forward_kwargs(scale: Scale, inputs: GenerationInputs, device: torch.device) -> dict:
    """One forward's keywords for the section's first step, floats in the compute dtype (diffusers does not
    cast its inputs)."""
    plan = settings_for(scale).plans()[0]
    video = torch.zeros((1, 16, plan.total_latent_frames) + latent_size(scale))
    video[:, :, :1] = inputs.start_latent
    noise = torch.randn((1, 16, WINDOW) + latent_size(scale), generator=torch.Generator().manual_seed(3))
    kwargs = {**inputs.prompts.model_inputs(), "image_embeddings": inputs.image_embeddings,
              **context_inputs(plan, video, inputs), "hidden_states": noise,
              "timestep": torch.tensor([1000.0]), "guidance": torch.tensor([10000.0])}
    kwargs = {k: v.to(scale.compute_dtype) if torch.is_tensor(v) and v.is_floating_point() and k not in ("timestep", "guidance")
              else v for k, v in kwargs.items()}
    return to_device(kwargs, device)


def token_counts(model: FramePackTransformer, kwargs: dict) -> dict:
    clean = {k: v for k, v in kwargs.items() if k.startswith("clean_")}
    with torch.inference_mode():
        image = model.pack_image_tokens(kwargs["hidden_states"], kwargs["latent_indices"], **clean).tokens.shape[1]
    context = kwargs["image_embeddings"].shape[1] + int(kwargs["encoder_attention_mask"].sum())
    return {"image_tokens": image, "context_tokens": context}


# ------------------------------------------------------------------------------------------- measurements

def measure_forwards(call: Callable, kwargs: dict, scale: Scale, device: torch.device, flops: float, rate: float) -> dict:
    """One untimed call (compiles, warms up), then ``scale.repeats`` timed forwards; s/frame projected to a section."""
    reset_peak(device)
    with torch.inference_mode():
        out, first = timed(device, lambda: call(**kwargs))
        times = [timed(device, lambda: call(**kwargs))[1] for _ in range(scale.repeats)]
    median = statistics.median(times)
    return {"first_call_s": first, "forward_s": times, "s_per_forward": median,
            "s_per_frame": scale.steps * median / FRAMES_PER_SECTION, "s_per_frame_method": "projected: steps x s/forward",
            "mfu": flops / median / (rate * 1e12), "peak_allocated_gib": peak_gib(device),
            "output_finite": bool(torch.isfinite(out).all())}


def measure_section(sampler: Callable, blocks_model: torch.nn.Module, scale: Scale, settings: GenerationSettings,
                    device: torch.device, flops: float, rate: float) -> dict:
    """A full section through ``generate``: wall time, steps computed (the first block ran) and skipped."""
    inputs = generation_inputs(scale)
    computed = []
    hook = blocks_model.transformer_blocks[0].register_forward_hook(lambda *args: computed.append(1))
    reset_peak(device)
    try:
        video, seconds = timed(device, lambda: generate(sampler, inputs, settings))
    finally:
        hook.remove()
    calls = settings.steps
    return {"section_s": seconds, "s_per_forward": seconds / calls, "s_per_frame": seconds / FRAMES_PER_SECTION,
            "s_per_frame_method": "measured: one full section", "computed_steps": len(computed),
            "skipped_steps": calls - len(computed), "mfu": len(computed) * flops / seconds / (rate * 1e12),
            "peak_allocated_gib": peak_gib(device), "output_finite": bool(torch.isfinite(video).all())}


def run_row(rows: dict, name: str, estimate: float, budget: Budget, fn: Callable) -> None:
    """Run one row unless the budget refuses it; an exception becomes the row's skip reason (never a crash)."""
    reason = budget.refusal(estimate)
    if reason is None:
        try:
            rows[name] = {"estimate_s": estimate, **fn()}
            log.info("%s: %s", name, {k: v for k, v in rows[name].items() if not isinstance(v, list)})
            return
        except torch.OutOfMemoryError as err:
            reason = f"out of memory: {str(err).splitlines()[0]}"
        except ImportError as err:
            reason = f"not importable here: {err}"
        except Exception as err:  # noqa: BLE001  (a benchmark row reports why it could not run and the rest go on)
            log.exception("%s failed", name)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    rows[name] = {"skip_reason": reason}
    log.info("%s skipped: %s", name, reason)


def compile_blocks(model: FramePackTransformer, backend: str) -> FramePackTransformer:
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        block.compile(backend=backend)
    return model


# ------------------------------------------------------------------------------------------- ComfyUI

def import_pack(comfyui: Path, device: torch.device, cap_gib: float):
    """ComfyUI's modules from its source folder, told the memory cap, and this node pack as ComfyUI loads it."""
    if not (comfyui / "comfy" / "model_management.py").is_file():
        raise FileNotFoundError(f"{comfyui} is not a ComfyUI source folder (no comfy/model_management.py)")
    sys.path.insert(0, str(comfyui))
    # As ComfyUI's main.py does first: its top-level utils package, before comfy/utils.py can shadow that name.
    importlib.import_module("utils.extra_config")
    import comfy.cli_args

    comfy.cli_args.args.cpu = device.type == "cpu"
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / GiB
        comfy.cli_args.args.reserve_vram = total - cap_gib
    if "framepack_pack" not in sys.modules:
        spec = importlib.util.spec_from_file_location("framepack_pack", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["framepack_pack"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("framepack_pack.comfy_adapter.native_model"), importlib.import_module("framepack_pack.comfy_adapter.section_sampler")


def comfy_section(comfyui: Path, path: Path, scale: Scale, device: torch.device, flops: float, rate: float) -> dict:
    """The section through ComfyUI with the pack's loader and sampler, under the VRAM cap on a GPU."""
    pack_model, pack_sampling = import_pack(comfyui, device, scale.vram_cap_gib)
    import comfy.model_management

    start = time.perf_counter()
    patcher = pack_model.load_framepack_model(str(path), "default")
    load_s = time.perf_counter() - start
    sampler = pack_sampling.ComfySectionSampler(patcher, pack_sampling.framepack_sampler("unipc_bh1"), scale.steps)
    cap = None
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(scale.vram_cap_gib * GiB / total, device)
        cap = scale.vram_cap_gib
    try:
        result = measure_section(sampler, patcher.model.diffusion_model, scale, settings_for(scale), device, flops, rate)
    finally:
        comfy.model_management.unload_all_models()
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return {**result, "load_s": load_s, "vram_cap_gib": cap,
            "note": "cap applied" if cap else "no cap on the CPU (code path only)"}


# ------------------------------------------------------------------------------------------- the run

def machine(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=props.total_memory / GiB, cuda=torch.version.cuda)
    else:
        info["name"] = platform.processor() or "cpu"
    return info


def run(scale: Scale, device: torch.device, budget: Budget, comfyui: Path | None, workdir: Path) -> dict:
    rows: dict = {}
    rate = matmul_tflops(scale.matmul_n, device, scale.compute_dtype)
    states, build_s = timed(device, lambda: build_weights(scale.config, device))
    models = {w: framepack_model(scale.config, states[w], scale.compute_dtype) for w in WEIGHTS}
    kwargs = forward_kwargs(scale, generation_inputs(scale), device)
    counted = count_flops(models["bf16"], kwargs)
    flops = counted["total"]
    for w in WEIGHTS:
        run_row(rows, f"forward, ours {w}", 10, budget,
                lambda w=w: measure_forwards(models[w], kwargs, scale, device, flops, rate))
    per_forward = rows["forward, ours bf16"].get("s_per_forward", 1.0)
    for w in WEIGHTS:
        for cache in ("no cache", f"TeaCache {TEACACHE}", f"MagCache {MAGCACHE}"):
            run_row(rows, f"section, ours {w}, {cache}", 1.2 * scale.steps * per_forward + 2, budget,
                    lambda m=models[w], c=cache: measure_section(DeviceSectionSampler(m, device), m, scale,
                                                                 settings_for(scale, c), device, flops, rate))
    run_row(rows, "forward, diffusers bf16", (scale.repeats + 2) * per_forward + 10, budget,
            lambda: measure_forwards(diffusers_model(scale.config, states["bf16"], scale.compute_dtype), kwargs, scale, device, flops, rate))
    comfy_estimate = 3 * scale.steps * per_forward + 60
    if comfyui is None:
        rows[COMFY_ROW] = {"skip_reason": "no --comfyui PATH given (ComfyUI's source must travel with the tree)"}
    else:
        run_row(rows, COMFY_ROW, comfy_estimate, budget,
                lambda: write_fp8_then(scale, workdir, models, states, device,
                                       lambda path: comfy_section(comfyui, path, scale, device, flops, rate)))
    if "bf16" not in models:  # the ComfyUI row freed the GPU for its cap: rebuild the bf16 model
        states = {"bf16": build_weights(scale.config, device)["bf16"]}
        models = {"bf16": framepack_model(scale.config, states["bf16"], scale.compute_dtype)}
    run_row(rows, "forward, ours bf16 + torch.compile", 120 + (scale.repeats + 1) * per_forward, budget,
            lambda: {**measure_forwards(compile_blocks(models["bf16"], scale.compile_backend), kwargs, scale, device,
                                        flops, rate), "backend": scale.compile_backend})
    return {"rows": {name: rows[name] for name in ROWS}, "matmul_tflops": rate, "weights_build_s": build_s,
            "flops_per_forward": flops, "output_finite_at_flop_count": counted["output_finite"],
            **token_counts(models["bf16"], kwargs)}


def write_fp8_then(scale, workdir, models: dict, states: dict, device, then: Callable) -> dict:
    """Write the fp8 file from the GPU tensors, then free the GPU (the cap counts everything this process
    holds) and run ``then(path)``; what was still allocated when the cap was set is recorded."""
    path = workdir / "framepack_random_fp8.safetensors"
    written, write_s = timed(device, lambda: write_single_file(scale.config, path, "fp8",
                                                               make=lambda name, shape: states["fp8"][name]))
    models.clear()
    states.clear()
    free_device(device)
    held = torch.cuda.memory_allocated(device) / GiB if device.type == "cuda" else None
    try:
        return {**then(path), "file_gib": written["bytes"] / GiB, "file_write_s": write_s,
                "allocated_before_section_gib": held}
    finally:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- report

def cell(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def markdown(report: dict) -> str:
    m, s = report["machine"], report["setup"]
    lines = [f"# FramePack 13B transformer on {m['name']}{' (DRY RUN on the CPU, tiny config)' if report['dry_run'] else ''}",
             "", f"torch {m['torch']}; {s['parameters']:,} parameters; bucket {s['bucket'][0]}x{s['bucket'][1]} "
             f"(latent {s['latent'][0]}x{s['latent'][1]}), window {WINDOW}, {s['image_tokens']} image + "
             f"{s['context_tokens']} context tokens, {s['steps']} steps per section ({FRAMES_PER_SECTION} frames); "
             f"{report['flops_per_forward'] / 1e12:.3g} TFLOP per forward; compute in {s['compute_dtype']}, measured "
             f"{s['compute_dtype']} matmul {report['matmul_tflops']:.3g} TFLOP/s (the MFU reference).", "",
             "| row | s/forward | s/frame | steps computed / skipped | MFU | peak allocated (GiB) | note |",
             "|---|---|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        if "skip_reason" in row:
            lines.append(f"| {name} | – | – | – | – | – | skipped: {row['skip_reason']} |")
            continue
        steps = f"{row['computed_steps']} / {row['skipped_steps']}" if "computed_steps" in row else "–"
        note = row["s_per_frame_method"] + (f"; {row['note']}" if "note" in row else "")
        lines.append(f"| {name} | {row['s_per_forward']:.3g} | {row['s_per_frame']:.3g} | {steps} | {row['mfu']:.2f} | "
                     f"{cell(row['peak_allocated_gib'], '.2f')} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu.bench_gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny config on the CPU (checks the code paths)")
    parser.add_argument("--comfyui", type=Path, default=None, help="ComfyUI's source folder (for the 6 GiB row)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for gpu.json / gpu.md")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting rows after this many seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.dry_run:
        scale, device = dry_scale(), torch.device("cpu")
        torch.set_num_threads(1)  # tiny tensors run fastest on one thread, and CI machines are shared
    elif torch.cuda.is_available():
        scale, device = full_scale(), torch.device("cuda")
    else:
        raise SystemExit("bench_gpu: no CUDA device is visible; run it on a GPU machine, or pass --dry-run to check "
                         "the code paths on the CPU at a tiny size.")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="framepack_gpu_bench_") as tmp:
        result = run(scale, device, Budget(args.budget_s), args.comfyui, Path(tmp))
    report = {"dry_run": args.dry_run, "machine": machine(device), "budget_s": args.budget_s,
              "setup": {"bucket": list(scale.bucket), "latent": list(latent_size(scale)), "steps": scale.steps,
                        "parameters": sum(torch.Size(shape).numel() for _, shape in tensor_plan(scale.config)),
                        "config": scale.config.to_dict(), "compute_dtype": str(scale.compute_dtype).removeprefix("torch."),
                        "teacache": TEACACHE, "magcache": MAGCACHE,
                        "text_tokens": [scale.text_valid, scale.text_tokens], "siglip_tokens": scale.siglip_tokens,
                        "image_tokens": result.pop("image_tokens"), "context_tokens": result.pop("context_tokens")},
              **result}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "gpu.md").write_text(markdown(report), encoding="utf-8")
    sys.stdout.write(markdown(report))
    return report


if __name__ == "__main__":
    main()
