"""Our transformer side by side with diffusers' ``HunyuanVideoFramepackTransformer3DModel`` (a benchmark, not a test).

    python3 -m bench.bench_reference [--threads 1 2] [--repeats 5] [--steps 3] [--baseline REV] [--out bench/results]

Both models get the same weights (one safetensors file: ours loads it with ``load_transformer``, diffusers
from a folder holding it and a ``config.json``, with ``from_pretrained`` as its users do), the same inputs,
float32, the same torch thread count, in one process. Two configurations:

- ``tiny``: the reference's tiny model (330k parameters) on the golden ``inverted`` case (528 image tokens);
- ``mid``: the 329M-parameter configuration of ``bench_forward`` at its scaled-down 608x640 bucket (F1
  layout, 1161 image tokens + 113 context tokens).

Measured per configuration and thread count, implementations alternating (the order rotating every repeat)
after one warm-up each: wall and process CPU time of a forward, median of ``--repeats``; the ratio of our
median to the reference's; the largest absolute difference of the outputs; for ``mid`` the FLOP utilisation
(model FLOPs per forward / time, over a plain 2048^3 matmul's throughput sampled before every repeat). Per
section: one section of ``--steps`` UniPC steps (``FlowDenoiser`` + ``sample_unipc``) driving each model.
Memory, in a fresh process per implementation: peak RSS of loading, and of one forward after a warm-up.

``--baseline REV`` adds ``framepack_core`` as of git revision REV (extracted with ``git archive``) as a
third implementation, so before/after numbers of an optimisation come from the same run.

One thread by default: on this small host shared with other work, a second thread mostly waits at the
barrier of every parallel op while its core runs something else (``--threads 1 2`` shows both).
Writes ``reference.json`` and ``reference.md`` to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import framepack_core
from bench.diffusers_reference import CONDITIONING, load_reference, write_model_folder
from bench.bench_forward import (RssSampler, bench_config, count_flops, f1_inputs, matmul_gflops,
                                 proc_status_mib, reset_peak_rss, save_random_weights)
from bench.memory_model import measured_activation_peak
from bench.common import machine_info, write_results
from framepack_core.model.transformer import ReferenceArguments
from framepack_core import FlowDenoiser, FramePackConfig, flow_sigmas, sample_unipc

REPO = Path(__file__).resolve().parent.parent
REFERENCE_DIR = REPO / "tests" / "data" / "reference"
TINY_CASE = "inverted"
MATMUL_N = 2048
MIN_SAMPLE_S = 0.5
PROFILED_ROUNDS = 3

def extract_baseline(revision: str, into: Path) -> None:
    """Write ``framepack_core`` as of git ``revision`` into the folder ``into``."""
    archive = subprocess.run(["git", "archive", revision, "framepack_core"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def import_baseline(folder: str):
    """The extracted package, imported as ``framepack_core_baseline`` (its imports are relative)."""
    if "framepack_core_baseline" in sys.modules:
        return sys.modules["framepack_core_baseline"]
    package = Path(folder) / "framepack_core"
    spec = importlib.util.spec_from_file_location("framepack_core_baseline", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def load_model(name: str, paths: dict, baseline_dir: str | None = None):
    """A callable with our forward keywords: ``ours``, ``reference`` (diffusers) or ``baseline``."""
    if name == "ours":
        return ReferenceArguments(framepack_core.load_transformer(paths["file"]))
    if name == "baseline":
        return import_baseline(baseline_dir).load_transformer(paths["file"])
    return load_reference(paths["folder"])


# ------------------------------------------------------------------------------------------- configurations

def tiny_setup(workdir: Path) -> dict:
    """The reference's tiny model and the golden ``inverted`` inputs (and its golden output)."""
    golden = load_file(REFERENCE_DIR / "golden_forward.safetensors")
    prefix = TINY_CASE + "/"
    inputs = {k[len(prefix):]: v for k, v in golden.items()
              if k.startswith(prefix) and "/intermediate/" not in k and k[len(prefix):] not in ("output", "output_diffusers")}
    config_dict = json.loads((REFERENCE_DIR / "tiny_framepack_config.json").read_text())
    config = FramePackConfig.from_dict({k: v for k, v in config_dict.items() if not k.startswith("_")})
    weights = REFERENCE_DIR / "tiny_framepack.safetensors"
    write_model_folder(config, weights, workdir / "tiny")
    return {"config": config, "inputs": inputs, "golden": golden[prefix + "output"],
            "paths": {"file": str(weights), "folder": str(workdir / "tiny")}}


def mid_setup(workdir: Path) -> dict:
    """bench_forward's 329M configuration with random weights (seed 0) and its F1-layout inputs."""
    config = bench_config()
    weights = workdir / "mid" / "weights.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_random_weights(config, weights)
    write_model_folder(config, weights, workdir / "mid")
    return {"config": config, "inputs": f1_inputs(config), "golden": None,
            "paths": {"file": str(weights), "folder": str(workdir / "mid")}}


SETUPS = {"tiny": tiny_setup, "mid": mid_setup}


def setup_inputs(name: str) -> dict:
    """The inputs of a configuration without writing weights (child processes)."""
    if name == "mid":
        return f1_inputs(bench_config())
    with tempfile.TemporaryDirectory() as tmp:
        return tiny_setup(Path(tmp))["inputs"]


# ------------------------------------------------------------------------------------------- timing

def timed(fn, calls: int = 1) -> tuple:
    """(wall s, process CPU s) per call, averaged over ``calls`` calls of ``fn``, and the last result."""
    with torch.inference_mode():
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            result = fn()
        return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls, result


def alternate(jobs: dict, repeats: int, matmul: tuple | None = None) -> dict:
    """Run every job once (warm-up), then ``repeats`` rounds with the order rotating each round.

    A job faster than ``MIN_SAMPLE_S`` is called several times per sample (the mean per call is kept), so
    millisecond forwards are not measured at the timer's and the scheduler's granularity. Returns per job
    its wall / CPU times per call and last result; with ``matmul`` operands, a matmul throughput sample
    (GFLOP/s) is taken before every sample, so utilisation compares like with like.
    """
    names = list(jobs)
    samples = {name: {"wall_s": [], "cpu_s": [], "matmul_gflops": []} for name in names}
    calls = {}
    for name in names:
        warm_s, _, samples[name]["result"] = timed(jobs[name])
        calls[name] = max(1, math.ceil(MIN_SAMPLE_S / warm_s))
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if matmul is not None:
                samples[name]["matmul_gflops"].append(matmul_gflops(*matmul))
            wall, cpu, samples[name]["result"] = timed(jobs[name], calls[name])
            samples[name]["wall_s"].append(wall)
            samples[name]["cpu_s"].append(cpu)
    for name in names:
        samples[name]["calls_per_sample"] = calls[name]
    return samples


def summary(samples: dict, reference: str = "reference", flops: float | None = None, golden=None) -> dict:
    """Medians, ratios to the reference's medians, output differences and (with ``flops``) utilisation."""
    ref = samples[reference]
    out = {}
    for name, s in samples.items():
        row = {"wall_s": s["wall_s"], "cpu_s": s["cpu_s"], "calls_per_sample": s["calls_per_sample"],
               "median_wall_s": statistics.median(s["wall_s"]), "median_cpu_s": statistics.median(s["cpu_s"]),
               "max_abs_diff_vs_reference": (s["result"] - ref["result"]).abs().max().item()}
        row["wall_ratio"] = row["median_wall_s"] / statistics.median(ref["wall_s"])
        row["cpu_ratio"] = row["median_cpu_s"] / statistics.median(ref["cpu_s"])
        if golden is not None:
            row["max_abs_diff_vs_golden"] = (s["result"] - golden).abs().max().item()
        if flops is not None:
            matmul = statistics.median(s["matmul_gflops"])
            row.update(matmul_gflops_median=matmul, gflops=flops / row["median_wall_s"] / 1e9,
                       utilisation=flops / row["median_wall_s"] / 1e9 / matmul,
                       utilisation_cpu=flops / row["median_cpu_s"] / 1e9 / matmul)
        out[name] = row
    return out


def forward_jobs(models: dict, inputs: dict) -> dict:
    return {name: (lambda m=model: m(**inputs)) for name, model in models.items()}


def section_jobs(models: dict, inputs: dict, steps: int) -> dict:
    """One section: ``steps`` UniPC steps from fixed noise with FramePack's shifted schedule, per model."""
    positive = {k: inputs[k] for k in CONDITIONING}
    shared = {k: v for k, v in inputs.items() if k.endswith("indices") or k.startswith("clean_latents")}
    hidden = inputs["hidden_states"]
    noise = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(31337))
    sigmas = flow_sigmas(steps, seq_len=hidden.shape[2] * hidden.shape[3] * hidden.shape[4] // 4)

    def job(model):
        denoiser = FlowDenoiser(model, positive, shared=shared, distilled_cfg=10.0, dtype=torch.float32)
        return lambda: sample_unipc(denoiser, noise, sigmas)

    return {name: job(model) for name, model in models.items()}


def time_shares(jobs: dict, rounds: int = PROFILED_ROUNDS) -> dict:
    """Per job, profiled calls split into Linear layers (GEMM + bias), attention and every other op.

    Linear and attention are the same kernels in every implementation, so the reference's share outside
    them bounds how far below the reference any exact implementation can get. Jobs alternate over
    ``rounds`` rounds; each category's median is kept (single profiles vary by several percent).
    """
    samples = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            samples[name].append(profiled_split(job))
    shares = {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()}
    ref = shares["reference"]
    shares["floor_ratio"] = (ref["linear_s"] + ref["attention_s"]) / ref["total_s"]
    return shares


def profiled_split(job) -> dict:
    """Op CPU seconds of one call of ``job``: total, in ``aten::linear``, in SDPA, and the rest."""
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        job()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    linear = sum(e.cpu_time_total for e in events if e.key == "aten::linear") / 1e6
    attention = sum(e.cpu_time_total for e in events if e.key == "aten::scaled_dot_product_attention") / 1e6
    return {"total_s": total, "linear_s": linear, "attention_s": attention, "other_s": total - linear - attention}


# ------------------------------------------------------------------------------------------- memory

def measure_memory(impl: str, config_name: str, paths: dict, baseline_dir: str | None) -> dict:
    """Child process body: peak RSS of loading, resident after loading, peak RSS of one (warm) forward.

    The tiny model is loaded and run once first, so the modules every load and forward imports lazily
    (diffusers imports most of itself on first use) are not counted as the model's memory.
    """
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_setup(Path(tmp))
        with torch.inference_mode():
            load_model(impl, tiny["paths"], baseline_dir)(**tiny["inputs"])
    inputs = setup_inputs(config_name)
    reset_peak_rss()
    before = proc_status_mib()
    start = time.perf_counter()
    with RssSampler() as sampler:
        model = load_model(impl, paths, baseline_dir)
    load_s = time.perf_counter() - start
    after_load = proc_status_mib()
    with torch.inference_mode():
        model(**inputs)  # warm-up: pages every weight in, one-time allocations of the kernels
    reset_peak_rss()
    warm = proc_status_mib()
    with torch.inference_mode():
        model(**inputs)
    return {"impl": impl, "config": config_name, "load_s": load_s,
            "load_peak_increase_mib": after_load["VmHWM"] - before["VmRSS"],
            "load_peak_anon_increase_mib": sampler.peak["RssAnon"] - before["RssAnon"],
            "after_load_increase_mib": after_load["VmRSS"] - before["VmRSS"],
            "after_forward_increase_mib": warm["VmRSS"] - before["VmRSS"],
            "forward_peak_increase_mib": proc_status_mib()["VmHWM"] - warm["VmRSS"]}


def memory_in_fresh_process(impl: str, config_name: str, paths: dict, baseline_dir: str | None) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_reference", "--child", json.dumps(
        {"impl": impl, "config": config_name, "paths": paths, "baseline_dir": baseline_dir})]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- report

def versions() -> dict:
    import accelerate
    import diffusers
    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "accelerate": accelerate.__version__}


def markdown(r: dict) -> str:
    m, v = r["machine"], r["versions"]
    lines = [
        "# Our transformer vs diffusers' HunyuanVideoFramepackTransformer3DModel (CPU, float32)", "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores; torch {v['torch']}, "
        f"diffusers {v['diffusers']} (loaded with `from_pretrained`, accelerate {v['accelerate']}); 1-minute load "
        f"average {r['load_average'][0]:.2f} at the start, {r['load_average'][1]:.2f} at the end (a load above "
        "the benchmark's own thread count means other work shared the host).",
        "Implementations: `ours` = the working tree's framepack_core" + (
            f"; `baseline` = framepack_core at git `{r['baseline']}`" if r["baseline"] else "") +
        "; `reference` = diffusers. Same weights file, inputs, dtype and thread count, in one process.", "",
    ]
    for name, c in r["configs"].items():
        lines.append(f"- `{name}`: {c['params']:,} parameters, {c['description']}; "
                     f"{c['flops'] / 1e9:.2f} GFLOP per forward (Linear/Conv3d + attention)")
    lines += ["", "## Forward", "",
              f"Median of {r['repeats']} alternating samples after one warm-up each (a sample averages several "
              f"calls where one call takes under {MIN_SAMPLE_S} s). Ratio = median / the reference's median (below 1 "
              "= faster than diffusers). Utilisation = model GFLOP/s over a 2048^3 matmul's GFLOP/s sampled before "
              "each sample, at the same thread count.", "",
              "| config | threads | implementation | median wall (s) | min / max (s) | median CPU (s) | wall ratio "
              "| CPU ratio | max abs diff vs reference | utilisation (wall / CPU) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for key, rows in r["forward"].items():
        name, threads = key.split("@")
        for impl, x in rows.items():
            util = f"{x['utilisation']:.2f} / {x['utilisation_cpu']:.2f}"
            diff = f"{x['max_abs_diff_vs_reference']:.1e}"
            if "max_abs_diff_vs_golden" in x:
                diff += f" (golden: {x['max_abs_diff_vs_golden']:.1e})"
            lines.append(f"| {name} | {threads} | {impl} | {x['median_wall_s']:.4f} | {min(x['wall_s']):.4f} / "
                         f"{max(x['wall_s']):.4f} | {x['median_cpu_s']:.4f} | {x['wall_ratio']:.3f} | "
                         f"{x['cpu_ratio']:.3f} | {diff} | {util} |")
    lines += ["", f"## Where the forward's time goes ({r['section_threads']} thread(s), median of {PROFILED_ROUNDS} "
              "profiled forwards each)", "",
              "Linear = `aten::linear` (GEMM and bias), attention = `aten::scaled_dot_product_attention`, the same "
              "kernels with the same shapes in every implementation; other = every other op (norms, modulation, "
              "RoPE, activations, copies). Times are the ops' CPU times (Python between ops is not counted); the "
              "profiler's per-op overhead inflates `other` for the tiny model.", "",
              "| config | implementation | total (s) | Linear | attention | other | floor of ours / reference |",
              "|---|---|---|---|---|---|---|"]
    for name, shares in r["shares"].items():
        for impl, x in shares.items():
            if impl == "floor_ratio":
                continue
            share = lambda key: f"{x[key]:.4f} s ({x[key] / x['total_s']:.0%})"  # noqa: E731
            floor = f"{shares['floor_ratio']:.3f}" if impl == "reference" else "-"
            lines.append(f"| {name} | {impl} | {x['total_s']:.4f} | {share('linear_s')} | {share('attention_s')} | "
                         f"{share('other_s')} | {floor} |")
    lines += ["", "Floor = the reference's Linear + attention time over its total: the ratio an exact implementation "
              "would reach if everything else took no time at all.", ""]
    lines += ["## One section of sampling", "",
              f"{r['steps']} UniPC (bh1) steps with `FlowDenoiser` + `sample_unipc`, distilled CFG 10, real CFG 1, "
              f"fixed noise, {r['section_threads']} thread(s); median of {r['repeats']} alternating samples. The "
              "difference is that of the final latents.", "",
              "| config | implementation | median wall (s) | median CPU (s) | wall ratio | CPU ratio "
              "| max abs diff vs reference |", "|---|---|---|---|---|---|---|"]
    for name, rows in r["sections"].items():
        for impl, x in rows.items():
            lines.append(f"| {name} | {impl} | {x['median_wall_s']:.4f} | {x['median_cpu_s']:.4f} | "
                         f"{x['wall_ratio']:.3f} | {x['cpu_ratio']:.3f} | {x['max_abs_diff_vs_reference']:.1e} |")
    lines += ["", "## Memory (fresh process per implementation, 1 thread)", "",
              "| config | implementation | load time (s) | load peak RSS increase (MiB) | of which private "
              "(MiB) | resident after load / after a forward (MiB) | forward peak RSS increase (MiB) | forward "
              "peak of live tensors (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for x in r["memory"]:
        live = r["live_peak_mib"][x["config"]][x["impl"]]
        lines.append(f"| {x['config']} | {x['impl']} | {x['load_s']:.2f} | {x['load_peak_increase_mib']:.0f} | "
                     f"{x['load_peak_anon_increase_mib']:.0f} | {x['after_load_increase_mib']:.0f} / "
                     f"{x['after_forward_increase_mib']:.0f} | "
                     f"{x['forward_peak_increase_mib']:.0f} | {live:.1f} |")
    lines += ["", "RSS increases are over the process before loading (torch and diffusers already imported). Ours "
              "maps the float32 file and uses it in place (file-backed pages, shared with the page cache); "
              "private = anonymous memory (copies). Forward peak: over the resident memory before a second forward. "
              "Live tensors: the peak of the bytes of all tensors a forward allocated and still holds (counted op by "
              "op in the main process, `bench.memory_model.LiveTensorBytes`), what a GPU's allocator would need; "
              "RSS also shows the CPU allocator's caching.",
              ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main

def run(args) -> dict:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="framepack_reference_") as tmp:
        workdir = Path(tmp)
        baseline_dir = None
        if args.baseline:
            baseline_dir = str(workdir / "baseline")
            Path(baseline_dir).mkdir()
            extract_baseline(args.baseline, Path(baseline_dir))
        impls = ["ours", "reference"] + (["baseline"] if args.baseline else [])
        report = {"machine": machine_info(), "versions": versions(), "repeats": args.repeats, "steps": args.steps,
                  "baseline": args.baseline, "section_threads": args.threads[0], "configs": {}, "forward": {},
                  "sections": {}, "shares": {}, "live_peak_mib": {}, "memory": []}
        for name in args.configs:
            setup = SETUPS[name](workdir)
            models = {impl: load_model(impl, setup["paths"], baseline_dir) for impl in impls}
            report["configs"][name] = describe(name, setup, models["ours"])
            flops = report["configs"][name]["flops"]
            for threads in args.threads:
                torch.set_num_threads(threads)
                matmul = (torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N))
                samples = alternate(forward_jobs(models, setup["inputs"]), args.repeats, matmul)
                report["forward"][f"{name}@{threads}"] = summary(samples, flops=flops, golden=setup["golden"])
                log(f"{name} forward, {threads} thread(s): " + ratios(report["forward"][f"{name}@{threads}"]))
            torch.set_num_threads(args.threads[0])
            report["shares"][name] = time_shares(forward_jobs(models, setup["inputs"]))
            report["live_peak_mib"][name] = {impl: measured_activation_peak(model, setup["inputs"]) / 2 ** 20
                                             for impl, model in models.items()}
            samples = alternate(section_jobs(models, setup["inputs"], args.steps), args.repeats)
            report["sections"][name] = summary(samples)
            log(f"{name} section: " + ratios(report["sections"][name]))
            del models
            for impl in impls:
                report["memory"].append(memory_in_fresh_process(impl, name, setup["paths"], baseline_dir))
    report["load_average"] = [load_start, os.getloadavg()[0]]
    return report


DESCRIPTIONS = {"tiny": f"the reference's tiny model on the golden `{TINY_CASE}` inputs",
                "mid": "bench_forward's configuration, F1 layout at a 608x640 bucket scaled by 1/4 per side"}


def describe(name: str, setup: dict, model) -> dict:
    """Parameters, tokens per forward and model FLOPs (counted on our model by bench_forward's hooks)."""
    inputs = setup["inputs"]
    clean = {k: v for k, v in inputs.items() if k.startswith("clean_")}
    with torch.inference_mode():
        image_tokens = model.pack_image_tokens(inputs["hidden_states"], inputs["latent_indices"], **clean).tokens.shape[1]
    context_tokens = inputs["image_embeddings"].shape[1] + int(inputs["encoder_attention_mask"].sum())
    return {"params": sum(p.numel() for p in model.parameters()), "flops": count_flops(model, inputs)["total"],
            "description": f"{DESCRIPTIONS[name]} ({image_tokens} image + {context_tokens} context tokens)"}


def ratios(rows: dict) -> str:
    return ", ".join(f"{impl} {x['median_wall_s']:.4f} s (x{x['wall_ratio']:.3f})" for impl, x in rows.items())


def log(text: str) -> None:
    sys.stderr.write(text + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1],
                        help="torch thread counts for the forward timings (sections use the first; default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="UniPC steps of the timed section (default 3)")
    parser.add_argument("--baseline", help="also time framepack_core at this git revision")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        sys.stdout.write(json.dumps(measure_memory(job["impl"], job["config"], job["paths"], job["baseline_dir"])) + "\n")
        return
    if args.repeats < 5:
        parser.error("--repeats must be at least 5 (medians of fewer runs are too noisy on a shared host)")
    report = run(args)
    text = markdown(report)
    write_results("reference", args.out, report, text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
