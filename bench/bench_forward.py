"""Forward time and peak memory of a mid-size FramePack transformer on CPU (a benchmark, not a test).

    python3 -m bench.bench_forward [--threads N] [--repeats 5] [--out bench/results]

The model is the released architecture at reduced width and depth (about 330M parameters) with random
weights, saved once to a temporary safetensors file and loaded with ``load_transformer(path, dtype=...)``
as users do (so ``proj_out`` stays float32 in the bfloat16 model). The input is FramePack-F1's default
layout (latent_window_size 9: ``[start 1 | 4x 16 | 2x 2 | 1x 1 | noisy 9]``) at a 608x640 bucket scaled
by 1/4 per side, so one float32 forward takes a few seconds on two cores.

Measured in one process: the median forward time (after one warm-up, float32 and bfloat16 alternating),
model FLOPs per forward (counted by hooks on every Linear / Conv3d and on the attention call), the
achieved GFLOP/s against a plain 2048^3 matmul timed in the same run, and the peak RSS increase during one
forward. In a fresh subprocess per dtype: the peak RSS of ``load_transformer`` relative to the file size.
Writes ``forward.json`` and ``forward.md`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from bench.common import machine_info, write_results
from framepack_core import FramePackConfig, FramePackTransformer, load_transformer
from framepack_core.model.checkpoint import save_config_metadata
from framepack_core.model.transformer import ReferenceArguments

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MiB = 2 ** 20

# Input geometry: 608x640 px bucket scaled by 1/4 -> 152x160 px -> latent 19x20 -> rounded to even 20x20.
LATENT_HW = (20, 20)
TEXT_PADDED, TEXT_VALID = 96, 64
SIGLIP_TOKENS = round(27 / 4) ** 2  # SigLIP's 27x27 = 729 tokens, scaled by 1/4 per side like the image: 7x7 = 49
MATMUL_N = 2048


def bench_config() -> FramePackConfig:
    return FramePackConfig(num_attention_heads=8, attention_head_dim=128, num_layers=4, num_single_layers=8,
                           text_embed_dim=1024, pooled_projection_dim=768, image_proj_dim=1152,
                           rope_axes_dim=(16, 56, 56))


def f1_inputs(config: FramePackConfig, batch: int = 1) -> dict:
    """Forward kwargs in FramePack-F1's default layout: clean [0, 19], 2x [17, 18], 4x [1..16], noisy 20..28."""
    h, w = LATENT_HW
    gen = torch.Generator().manual_seed(1)
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    return dict(
        hidden_states=randn(batch, config.in_channels, 9, h, w),
        timestep=torch.full((batch,), 999.0),
        encoder_hidden_states=randn(batch, TEXT_PADDED, config.text_embed_dim),
        encoder_attention_mask=(torch.arange(TEXT_PADDED) < TEXT_VALID).expand(batch, -1),
        pooled_projections=randn(batch, config.pooled_projection_dim),
        guidance=torch.full((batch,), 10000.0),
        latent_indices=torch.arange(20, 29)[None],
        clean_latents=randn(batch, 16, 2, h, w), clean_latent_indices=torch.tensor([[0, 19]]),
        clean_latents_2x=randn(batch, 16, 2, h, w), clean_latent_2x_indices=torch.tensor([[17, 18]]),
        clean_latents_4x=randn(batch, 16, 16, h, w), clean_latent_4x_indices=torch.arange(1, 17)[None],
        image_embeddings=randn(batch, SIGLIP_TOKENS, config.image_proj_dim),
    )


def save_random_weights(config: FramePackConfig, path: Path) -> int:
    """Write a randomly initialised model (torch's default init, seed 0) to ``path``; returns its parameter count."""
    torch.manual_seed(0)
    model = FramePackTransformer(config)
    save_file(model.state_dict(), str(path), metadata=save_config_metadata(config))
    return sum(p.numel() for p in model.parameters())


def image_token_count(model: FramePackTransformer, inputs: dict) -> int:
    clean = {k: v for k, v in inputs.items() if k.startswith("clean_")}
    with torch.inference_mode():
        packed = model.pack_image_tokens(inputs["hidden_states"], inputs["latent_indices"], **clean)
    return packed.tokens.shape[1]


# ------------------------------------------------------------------------------------------- memory

def proc_status_mib() -> dict:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of this process, in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def reset_peak_rss() -> None:
    """Release freed heap memory to the OS and reset VmHWM to the current RSS (``clear_refs`` 5, Linux >= 4.0)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class RssSampler:
    """Samples RssAnon / RssFile every millisecond in a thread; VmHWM gives the exact total peak."""

    def __init__(self):
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            status = proc_status_mib()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], status[key])
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def file_backed_bytes(model: nn.Module, path: Path) -> int:
    """Bytes of the model's tensors whose storage lies in a memory mapping of ``path`` (zero-copy loading)."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                ranges.append((lo, hi))
    tensors = list(model.state_dict().values())
    return sum(t.nbytes for t in tensors if any(lo <= t.data_ptr() < hi for lo, hi in ranges))


def measure_load(path: Path, dtype_name: str) -> dict:
    """Child process body: peak RSS of ``load_transformer``, then resident memory once every weight was read."""
    reset_peak_rss()
    before = proc_status_mib()
    start = time.perf_counter()
    with RssSampler() as sampler:
        model = load_transformer(path, dtype=DTYPES[dtype_name])
    seconds = time.perf_counter() - start
    after_load = proc_status_mib()
    for tensor in model.state_dict().values():  # a forward would page every weight in
        tensor.float().sum()
    touched = proc_status_mib()
    return {
        "dtype": dtype_name, "seconds": seconds, "file_mib": path.stat().st_size / MiB,
        "weights_mib": sum(t.nbytes for t in model.state_dict().values()) / MiB,
        "file_backed_weights_mib": file_backed_bytes(model, path.resolve()) / MiB,
        "peak_increase_mib": after_load["VmHWM"] - before["VmRSS"],
        "peak_anon_increase_mib": sampler.peak["RssAnon"] - before["RssAnon"],
        "peak_file_increase_mib": sampler.peak["RssFile"] - before["RssFile"],
        "after_load_increase_mib": after_load["VmRSS"] - before["VmRSS"],
        "resident_after_reading_weights_mib": {k: touched[k] - before[k] for k in ("VmRSS", "RssAnon", "RssFile")},
    }


def load_in_fresh_process(path: Path, dtype_name: str) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_forward", "--child-load", str(path), "--child-dtype", dtype_name]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(done.stdout.strip().splitlines()[-1])


def forward_peak_rss_increase_mib(model, inputs) -> float:
    reset_peak_rss()
    before = proc_status_mib()["VmRSS"]
    with torch.inference_mode():
        model(**inputs)
    return proc_status_mib()["VmHWM"] - before


# ------------------------------------------------------------------------------------------- FLOPs and time

def count_flops(model: FramePackTransformer, inputs: dict) -> dict:
    """Run one forward counting 2*weight.numel()*positions per Linear/Conv3d and 4*B*heads*Sq*Sk*D per attention."""
    counts = {"linear": 0, "attention": 0}

    def linear_hook(module, args, output):
        positions = output.numel() // output.shape[-1 if isinstance(module, nn.Linear) else 1]
        counts["linear"] += 2 * module.weight.numel() * positions

    def counting_attention(q, k, v, mask=None):
        batch, heads, sq, d = q.shape
        counts["attention"] += 4 * batch * heads * sq * k.shape[2] * d
        return attention(q, k, v, mask)

    hooks = [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv3d))]
    attention, model.attention = model.attention, counting_attention
    try:
        with torch.inference_mode():
            output = model(**inputs)
    finally:
        model.attention = attention
        for hook in hooks:
            hook.remove()
    counts["total"] = counts["linear"] + counts["attention"]
    counts["output_finite"] = bool(torch.isfinite(output).all())
    return counts


def time_forward(model, inputs) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(**inputs)
        return time.perf_counter() - start


def matmul_gflops(a: torch.Tensor, b: torch.Tensor, calls: int = 5) -> float:
    """The machine's throughput right now: a plain ``a @ b``'s FLOPs over the median of ``calls`` timings."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / statistics.median(times) / 1e9


def thread_scaling() -> float:
    """fp32 matmul throughput with all threads over that with one: about the core count on a quiet machine."""
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a @ b
    single = matmul_gflops(a, b, calls=3)
    torch.set_num_threads(threads)
    return matmul_gflops(a, b, calls=3) / single


def alternating_measurements(models: dict, inputs: dict, repeats: int) -> dict:
    """Per repeat and dtype: a 2048^3 matmul throughput sample, then one timed forward.

    The dtypes alternate so machine drift hits both alike; sampling the matmul throughout the run (not once)
    makes its spread show how noisy the (shared) host was while the forwards ran.
    """
    operands = {name: (torch.randn(MATMUL_N, MATMUL_N).to(DTYPES[name]), torch.randn(MATMUL_N, MATMUL_N).to(DTYPES[name]))
                for name in models}
    for a, b in operands.values():
        a @ b  # warm-up
    samples = {name: {"times_s": [], "matmul_gflops": []} for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            samples[name]["matmul_gflops"].append(matmul_gflops(*operands[name]))
            samples[name]["times_s"].append(time_forward(model, inputs))
    return samples


def summarise(samples: dict, flops: float) -> dict:
    """Forward GFLOP/s over matmul GFLOP/s, typical (median / median) and best (fastest / fastest).

    Host noise only ever slows a run down, so the best-case ratio is the steadier number on a shared machine.
    """
    times, matmul = samples["times_s"], samples["matmul_gflops"]
    median = statistics.median(times)
    return {**samples, "median_s": median, "gflops": flops / median / 1e9,
            "matmul_gflops_median": statistics.median(matmul),
            "utilisation_median": flops / median / 1e9 / statistics.median(matmul),
            "utilisation_best": flops / min(times) / 1e9 / max(matmul)}


# ------------------------------------------------------------------------------------------- report

def markdown(r: dict) -> str:
    m, s, fl = r["machine"], r["setup"], r["flops"]
    lines = [
        "# FramePack transformer forward benchmark (CPU)", "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores, torch {m['torch']} "
        f"({m['cpu_capability']}), torch.get_num_threads() = {m['torch_threads']}.", "",
        f"Model: {s['params']:,} parameters ({', '.join(f'{k}={v}' for k, v in s['config'].items())}); "
        f"random weights, fp32 file {s['file_mib']:.0f} MiB.",
        f"Input: batch 1, F1 layout, latent {s['latent_hw'][0]}x{s['latent_hw'][1]}: {s['image_tokens']} image-stream "
        f"tokens ({s['noisy_tokens']} noisy + {s['image_tokens'] - s['noisy_tokens']} clean) + {s['context_tokens']} "
        f"context tokens ({s['siglip_tokens']} SigLIP + {TEXT_VALID} text of {TEXT_PADDED} padded).",
        f"FLOPs per forward: {fl['total'] / 1e9:.1f} GFLOP ({fl['linear'] / 1e9:.1f} Linear/Conv3d + "
        f"{fl['attention'] / 1e9:.1f} attention; elementwise ops not counted); output finite: {fl['output_finite']}.", "",
        "| dtype | median forward (s) | min / max (s) | GFLOP/s | 2048^3 matmul GFLOP/s: median (min-max) "
        "| utilisation: median / best | forward peak RSS increase (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in r["forward"].items():
        lines.append(
            f"| {name} | {f['median_s']:.3f} | {min(f['times_s']):.3f} / {max(f['times_s']):.3f} | {f['gflops']:.1f} "
            f"| {f['matmul_gflops_median']:.0f} ({min(f['matmul_gflops']):.0f}-{max(f['matmul_gflops']):.0f}) "
            f"| {f['utilisation_median']:.2f} / {f['utilisation_best']:.2f} | {f['peak_rss_increase_mib']:.0f} |")
    lines += [
        "", f"Repeats: {r['repeats']} per dtype after 1 warm-up, dtypes alternating, each forward preceded by a "
        "same-dtype matmul sample (median of 5 calls). Utilisation = forward GFLOP/s / matmul GFLOP/s: median / "
        "median and fastest / fastest. A wide matmul range or max forward time means the host was noisy.",
        f"Matmul speed-up of {m['torch_threads']} threads over 1, before / after the timed forwards: "
        f"{r['thread_scaling_before_after'][0]:.2f} / {r['thread_scaling_before_after'][1]:.2f} "
        f"(about {m['torch_threads']} when the host gives this VM all its cores).", "",
        "| load (fresh process) | file (MiB) | weights in RAM (MiB) | time (s) | peak RSS increase (MiB) | x file size "
        "| peak anon / file-backed (MiB) | mmap-backed weights (MiB) | resident after reading all weights: anon / file (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ld in r["load"].items():
        res = ld["resident_after_reading_weights_mib"]
        lines.append(
            f"| fp32 file -> {name} | {ld['file_mib']:.0f} | {ld['weights_mib']:.0f} | {ld['seconds']:.2f} "
            f"| {ld['peak_increase_mib']:.0f} | {ld['peak_increase_mib'] / ld['file_mib']:.2f} "
            f"| {ld['peak_anon_increase_mib']:.0f} / {ld['peak_file_increase_mib']:.0f} "
            f"| {ld['file_backed_weights_mib']:.2f} | {res['RssAnon']:.0f} / {res['RssFile']:.0f} |")
    lines += ["", "RSS increases are over the process before loading. anon = private memory (copies); file-backed = "
              "pages of the safetensors file's memory mapping (page cache, clean, reclaimable), counted in RSS while "
              "mapped. mmap-backed weights = model tensors whose storage is that mapping (zero-copy)."]
    return "\n".join(lines) + "\n"


def run(threads: int | None, repeats: int, out: Path) -> dict:
    if threads:
        torch.set_num_threads(threads)
    config = bench_config()
    inputs = f1_inputs(config)
    with tempfile.TemporaryDirectory(prefix="framepack_bench_") as tmp:
        path = Path(tmp) / "framepack_mid.safetensors"
        params = save_random_weights(config, path)
        load = {name: load_in_fresh_process(path, name) for name in DTYPES}
        # f1_inputs are the reference's named forward keywords.
        models = {name: ReferenceArguments(load_transformer(path, dtype=dtype)) for name, dtype in DTYPES.items()}
        file_mib = path.stat().st_size / MiB
    flops = count_flops(models["float32"], inputs)  # also the float32 warm-up
    time_forward(models["bfloat16"], inputs)  # bfloat16 warm-up
    scaling = [thread_scaling()]
    samples = alternating_measurements(models, inputs, repeats)
    scaling.append(thread_scaling())
    forward = {name: {**summarise(samples[name], flops["total"]),
                      "peak_rss_increase_mib": forward_peak_rss_increase_mib(model, inputs)}
               for name, model in models.items()}
    image_tokens = image_token_count(models["float32"], inputs)
    noisy = inputs["hidden_states"].shape[2] * (LATENT_HW[0] // 2) * (LATENT_HW[1] // 2)
    report = {
        "machine": machine_info(), "repeats": repeats, "thread_scaling_before_after": scaling,
        "setup": {"config": {k: v for k, v in config.to_dict().items() if k in (
                      "num_attention_heads", "attention_head_dim", "num_layers", "num_single_layers",
                      "text_embed_dim", "image_proj_dim")},
                  "params": params, "file_mib": file_mib, "latent_hw": LATENT_HW, "image_tokens": image_tokens,
                  "noisy_tokens": noisy, "siglip_tokens": SIGLIP_TOKENS, "context_tokens": SIGLIP_TOKENS + TEXT_VALID},
        "flops": flops, "forward": forward, "load": load,
    }
    write_results("forward", out, report, markdown(report))
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per dtype (default 5)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for forward.json / forward.md")
    parser.add_argument("--child-load", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-dtype", choices=list(DTYPES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_load:
        sys.stdout.write(json.dumps(measure_load(args.child_load, args.child_dtype)) + "\n")
        return
    report = run(args.threads, args.repeats, args.out)
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
