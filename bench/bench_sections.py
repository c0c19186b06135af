"""FramePack's constant cost per section against a naive full-history baseline (a benchmark, not a test).

    python3 -m bench.bench_sections [--sections 50] [--out bench/results] [--threads 1] [--steps 2]

A small random-weight FramePackTransformer generates ``--sections`` sections with ``framepack_core.engine.generate``
in the F1 (vanilla) and the inverted anti-drifting default layouts; every section's wall time is taken
between ``on_section`` callbacks (so it includes noise, context gathering and sampling), together with the
process CPU time, and its image-stream tokens from ``plan.image_tokens(H, W)`` (checked against the tokens
the model really packs).

One torch thread by default: the model is tiny, and on a small host shared with other work two threads on
two cores lose most of their time in spin-waits whenever one is descheduled (sections then take 2-5x longer
and their times scatter). With one thread the CPU time per section is nearly immune to other processes.

The naive baseline (a strawman, defined only here) uses the same model, sampler and steps, but conditions
every section on the whole history at 1x2x2 (``clean_latents`` = all frames so far, RoPE indices = their
frame numbers, the window right after them), so its token count grows linearly and its attention cost
quadratically. It stops before the section that would take it past ``--naive-budget`` seconds; later
sections are extrapolated with a least-squares fit t = a + b N + c N^2 of its CPU times over token counts N.

Writes ``sections.json``, ``sections.md`` and ``sections.png`` to ``--out``; the last line printed is the
F1 run's mean time of the last 10 sections over the mean of the first 10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common import machine_info, write_results
from framepack_core import (FlowDenoiser, FramePackConfig, FramePackTransformer, GenerationInputs, GenerationSettings,
                            TextConditioning, TransformerSectionSampler, flow_sigmas, generate, sample_unipc)
from framepack_core.model.transformer import ReferenceArguments

LATENT_HW = (16, 16)  # a 128x128 px frame
WINDOW = 9
TEXT_TOKENS, SIGLIP_TOKENS = 32, 16
MODES = {"f1": "vanilla", "inverted": "inverted_anti_drifting"}
TABLE_SECTIONS = (1, 2, 5, 10, 20, 30, 40, 50)


def bench_config() -> FramePackConfig:
    return FramePackConfig(num_attention_heads=4, attention_head_dim=32, rope_axes_dim=(8, 12, 12), num_layers=2,
                           num_single_layers=2, num_refiner_layers=1, text_embed_dim=64, pooled_projection_dim=32,
                           image_proj_dim=32)


def make_inputs(config: FramePackConfig) -> GenerationInputs:
    gen = torch.Generator().manual_seed(0)
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    prompt = TextConditioning(randn(1, TEXT_TOKENS, config.text_embed_dim),
                              torch.ones(1, TEXT_TOKENS, dtype=torch.bool), randn(1, config.pooled_projection_dim))
    return GenerationInputs(start_latent=randn(1, 16, 1, *LATENT_HW), prompts=prompt,
                            image_embeddings=randn(1, SIGLIP_TOKENS, config.image_proj_dim))


class Probe:
    """Hooks on the model: time spent in forward calls and the image-stream tokens of the last call."""

    def __init__(self, model: FramePackTransformer):
        self.forward_s, self.tokens, self._t0 = 0.0, None, 0.0
        model.register_forward_pre_hook(self._pre)
        model.register_forward_hook(self._post)
        pack = model.pack_image_tokens

        def counted(*args, **kwargs):
            packed = pack(*args, **kwargs)
            self.tokens = packed.tokens.shape[1]
            return packed

        model.pack_image_tokens = counted

    def _pre(self, *_):
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self.forward_s += time.perf_counter() - self._t0

    def take(self) -> float:
        spent, self.forward_s = self.forward_s, 0.0
        return spent


# ------------------------------------------------------------------------------------------- runs

def run_framepack(model, probe, inputs, mode: str, sections: int, steps: int) -> list[dict]:
    settings = GenerationSettings(mode=mode, num_sections=sections, latent_window_size=WINDOW, steps=steps)
    rows, steps_seen = [], []
    probe.take()
    last, last_cpu = time.perf_counter(), time.process_time()

    def on_step(done, total, denoised):
        steps_seen.append(done)

    def on_section(plan, latents, state):
        nonlocal last, last_cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        tokens = plan.image_tokens(*LATENT_HW)
        if tokens != probe.tokens:
            raise RuntimeError(f"section {plan.index}: plan says {tokens} image tokens, "
                               f"the model packed {probe.tokens}")
        rows.append({"section": plan.index + 1, "position": plan.position, "padding": plan.padding,
                     "image_tokens": tokens, "context_tokens": plan.context_tokens(*LATENT_HW),
                     "time_s": now - last, "cpu_s": now_cpu - last_cpu, "forward_s": probe.take(),
                     "steps": len(steps_seen)})
        steps_seen.clear()
        last, last_cpu = now, now_cpu

    generate(TransformerSectionSampler(model), inputs, settings, on_section=on_section, on_step=on_step)
    return rows


def naive_tokens(section: int) -> int:
    """Image-stream tokens of naive section ``section`` (1-based): 1 + (section-1)*W history frames + the window."""
    per_frame = LATENT_HW[0] * LATENT_HW[1] // 4
    return (1 + (section - 1) * WINDOW) * per_frame + WINDOW * per_frame


def run_naive(model, probe, inputs, sections: int, steps: int, budget_s: float) -> list[dict]:
    """Each section sees every frame generated so far at 1x2x2; stops before a section would pass ``budget_s``."""
    video = torch.zeros(1, 16, 1 + sections * WINDOW, *LATENT_HW)
    video[:, :, :1] = inputs.start_latent
    prompt = inputs.prompts
    positive = {**prompt.model_inputs(), "image_embeddings": inputs.image_embeddings}
    sigmas = flow_sigmas(steps, seq_len=WINDOW * LATENT_HW[0] * LATENT_HW[1] // 4)
    gen = torch.Generator().manual_seed(31337)
    rows, spent = [], 0.0
    probe.take()
    for k in range(sections):
        if rows:  # conservative estimate of the next section: scale the last one quadratically in tokens
            estimate = rows[-1]["time_s"] * (naive_tokens(k + 1) / rows[-1]["image_tokens"]) ** 2
            if spent + estimate > budget_s:
                break
        start, start_cpu = time.perf_counter(), time.process_time()
        known = 1 + k * WINDOW
        noise = torch.randn((1, 16, WINDOW, *LATENT_HW), generator=gen)
        shared = {"clean_latents": video[:, :, :known], "clean_latent_indices": torch.arange(known)[None],
                  "latent_indices": torch.arange(known, known + WINDOW)[None]}
        denoiser = FlowDenoiser(ReferenceArguments(model), positive, shared=shared)
        video[:, :, known:known + WINDOW] = sample_unipc(denoiser, noise, sigmas)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if probe.tokens != naive_tokens(k + 1):
            raise RuntimeError(f"naive section {k + 1}: expected {naive_tokens(k + 1)} tokens, packed {probe.tokens}")
        rows.append({"section": k + 1, "image_tokens": probe.tokens, "time_s": elapsed, "cpu_s": cpu,
                     "forward_s": probe.take()})
        spent += elapsed
    return rows


def quadratic_fit(rows: list[dict]):
    """Least-squares t = a + b N + c N^2 over (tokens, CPU time); None with fewer than 4 points.

    CPU time, not wall time: with one thread it is the section's own compute, while the wall time of the long
    naive sections also holds whatever else the host ran meanwhile.
    """
    if len(rows) < 4:
        return None
    n = torch.tensor([r["image_tokens"] for r in rows], dtype=torch.float64)
    t = torch.tensor([r["cpu_s"] for r in rows], dtype=torch.float64)
    scale = n.max()
    design = torch.stack([torch.ones_like(n), n / scale, (n / scale) ** 2], dim=1)
    a, b, c = torch.linalg.lstsq(design, t[:, None]).solution[:, 0].tolist()
    return {"a": a, "b": b / float(scale), "c": c / float(scale) ** 2}


def predict(fit, tokens: int) -> float:
    return fit["a"] + fit["b"] * tokens + fit["c"] * tokens ** 2


def ratio(rows: list[dict], key: str = "time_s") -> float:
    times = [r[key] for r in rows]
    return statistics.fmean(times[-10:]) / statistics.fmean(times[:10])


# ------------------------------------------------------------------------------------------- report

def markdown(r: dict) -> str:
    m, s, fp, naive, fit = r["machine"], r["setup"], r["framepack"], r["naive"], r["naive_fit"]
    measured = {row["section"]: row for row in naive["sections"]}
    cell = lambda row: f"{row['time_s']:.3f} / {row['cpu_s']:.3f}"  # noqa: E731
    lines = [
        "# FramePack per-section cost vs a naive full-history baseline (CPU)", "",
        f"Machine: {m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} cores, torch {m['torch']}, "
        f"torch.set_num_threads({m['torch_threads']}), Python {m['python']}; 1-minute load average "
        f"{r['load_average'][0]:.2f} at the start, {r['load_average'][1]:.2f} at the end (other work shared the host).",
        "", f"Model: random weights, {s['params']:,} parameters "
        f"({', '.join(f'{k}={v}' for k, v in s['config'].items())}).",
        f"Video: latent {s['latent_hw'][0]}x{s['latent_hw'][1]} (128x128 px), latent_window_size {WINDOW} "
        f"({s['noisy_tokens']} noisy tokens), {s['steps']} UniPC steps per section, distilled CFG only "
        f"(1 forward per step); {TEXT_TOKENS} text + {SIGLIP_TOKENS} SigLIP context tokens (not counted below).", "",
        "Tokens = image-stream tokens per forward (packed clean context + noisy window). FramePack: "
        f"`plan.image_tokens(H, W)`, schedules F1 `{fp['f1']['schedule']}` and inverted "
        f"`{fp['inverted']['schedule']}`. Naive: all frames so far at 1x2x2 + the window. Time = wall / process "
        "CPU seconds per section (FramePack: between `on_section` callbacks).", "",
        "| section | F1 tokens | F1 wall / CPU (s) | inverted tokens | inverted wall / CPU (s) | naive tokens "
        "| naive wall / CPU (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    f1, inv = {x["section"]: x for x in fp["f1"]["sections"]}, {x["section"]: x for x in fp["inverted"]["sections"]}
    for k in TABLE_SECTIONS:
        if k not in f1:
            continue
        if k in measured:
            nt = cell(measured[k])
        else:
            nt = f"~{predict(fit, naive_tokens(k)):.1f} (extrapolated, not run)" if fit else "not run"
        lines.append(f"| {k} | {f1[k]['image_tokens']} | {cell(f1[k])} | {inv[k]['image_tokens']} | {cell(inv[k])} "
                     f"| {naive_tokens(k)} | {nt} |")
    n_run = len(naive["sections"])
    lines += ["", f"Naive run capped at {naive['budget_s']:.0f} s: it ran sections 1-{n_run} of {s['sections']} "
              f"in {naive['total_s']:.1f} s."]
    if fit:
        whole = naive["total_s"] + sum(predict(fit, naive_tokens(k)) for k in range(n_run + 1, s["sections"] + 1))
        lines[-1] += (f" Later sections are extrapolated by a least-squares t = a + b N + c N^2 (N = tokens) over the "
                      f"measured CPU times; the whole {s['sections']}-section naive run would take about "
                      f"{whole:.0f} s.")
    lines += ["", "| run | sections | total wall (s) | wall per section: mean / min / max (s) | share of wall in "
              "transformer forward | last 10 / first 10: wall | last 10 / first 10: CPU |",
              "|---|---|---|---|---|---|---|"]
    runs = (("F1 (vanilla)", fp["f1"]["sections"]), ("inverted anti-drifting", fp["inverted"]["sections"]),
            ("naive (full history)", naive["sections"]))
    for name, rows in runs:
        t = [x["time_s"] for x in rows]
        ratios = [f"{ratio(rows, key):.3f}" if len(rows) >= 10 else "-" for key in ("time_s", "cpu_s")]
        lines.append(f"| {name} | {len(t)} | {sum(t):.2f} | {statistics.fmean(t):.4f} / {min(t):.4f} / {max(t):.4f} "
                     f"| {sum(x['forward_s'] for x in rows) / sum(t):.0%} | {ratios[0]} | {ratios[1]} |")
    lines += ["", "Each FramePack run follows an unmeasured 2-section warm-up generation in the same process. The "
              "script's final line is the F1 run's wall-time ratio.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fp, naive, fit, n = r["framepack"], r["naive"], r["naive_fit"], r["setup"]["sections"]
    fig, (ax_tok, ax_time) = plt.subplots(1, 2, figsize=(12, 4.8))
    runs = [("F1 / vanilla (FramePack)", "tab:blue", "-", fp["f1"]["sections"]),
            ("inverted anti-drifting (FramePack)", "tab:green", "--", fp["inverted"]["sections"]),
            ("naive: full history at 1x2x2", "tab:red", "-", naive["sections"])]
    for label, color, ls, rows in runs:
        x = [row["section"] for row in rows]
        ax_time.plot(x, [row["time_s"] for row in rows], ls, color=color, marker=".", label=f"{label}: wall")
        ax_time.plot(x, [row["cpu_s"] for row in rows], ls, color=color, lw=0.8, alpha=0.45)
    ks = list(range(1, n + 1))
    for label, color, ls, rows in runs[:2]:
        ax_tok.plot(ks, [row["image_tokens"] for row in rows], ls, color=color, lw=2, label=label)
    ax_tok.plot(ks, [naive_tokens(k) for k in ks], color="tab:red", lw=2, label="naive: full history at 1x2x2")
    flat = fp["f1"]["sections"][0]["image_tokens"]
    ax_tok.annotate(f"FramePack: {flat} tokens in every section", (n * 0.55, flat),
                    xytext=(n * 0.45, naive_tokens(n) * 0.2),
                    arrowprops={"arrowstyle": "->"}, fontsize=9)
    rows = naive["sections"]
    if fit and len(rows) < n:
        rest = list(range(len(rows), n + 1))
        ax_time.plot(rest, [predict(fit, naive_tokens(k)) if k > len(rows) else rows[-1]["cpu_s"] for k in rest],
                     ":", color="tab:red", label=f"naive after section {len(rows)}: not run, quadratic fit to CPU time")
    ax_time.plot([], [], color="grey", lw=0.8, alpha=0.45, label="thin lines: process CPU time (1 thread)")
    ax_tok.set(title="image-stream tokens per forward (clean context + noisy window)", xlabel="section",
               ylabel="tokens", ylim=(0, None))
    ax_time.set(title="seconds per section (log scale)", xlabel="section", ylabel="seconds", yscale="log")
    for ax in (ax_tok, ax_time):
        ax.grid(alpha=0.3)
        ax.set_xlim(0, n + 1)
        ax.legend(fontsize=8, loc="upper left")
    m = r["machine"]
    fig.suptitle(f"FramePack keeps the per-section cost constant; full-history conditioning grows it quadratically "
                 f"({m['cpu']}, torch threads: {m['torch_threads']}, {r['setup']['steps']} steps per section)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1; see the module docstring)")
    parser.add_argument("--steps", type=int, default=2, help="UniPC steps per section (default 2)")
    parser.add_argument("--naive-budget", type=float, default=90.0, help="seconds the naive run may take (default 90)")
    args = parser.parse_args()
    if args.sections < 10:
        parser.error("--sections must be at least 10 (the ratio compares the first and last 10)")
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    config = bench_config()
    model = FramePackTransformer(config).eval().requires_grad_(False)
    probe = Probe(model)
    inputs = make_inputs(config)

    framepack = {}
    for key, mode in MODES.items():
        run_framepack(model, probe, inputs, mode, 2, args.steps)  # warm-up
        rows = run_framepack(model, probe, inputs, mode, args.sections, args.steps)
        schedule = GenerationSettings(mode=mode, num_sections=1, latent_window_size=WINDOW).plans()[0].schedule
        framepack[key] = {"mode": mode, "schedule": schedule.text, "sections": rows, "ratio": ratio(rows)}
        sys.stdout.write(f"{mode}: {args.sections} sections in {sum(x['time_s'] for x in rows):.2f} s\n")
    start = time.perf_counter()
    naive_rows = run_naive(model, probe, inputs, args.sections, args.steps, args.naive_budget)
    naive = {"sections": naive_rows, "budget_s": args.naive_budget, "total_s": time.perf_counter() - start}
    sys.stdout.write(f"naive: {len(naive_rows)} sections in {naive['total_s']:.2f} s\n")

    report = {
        "machine": machine_info(),
        "setup": {"config": {k: v for k, v in config.to_dict().items() if k in (
                      "num_attention_heads", "attention_head_dim", "num_layers", "num_single_layers",
                      "text_embed_dim", "pooled_projection_dim", "image_proj_dim")},
                  "params": sum(p.numel() for p in model.parameters()), "latent_hw": list(LATENT_HW),
                  "latent_window_size": WINDOW, "noisy_tokens": WINDOW * LATENT_HW[0] * LATENT_HW[1] // 4,
                  "steps": args.steps, "sampler": "unipc_bh1", "sections": args.sections},
        "framepack": framepack, "naive": naive, "naive_fit": quadratic_fit(naive_rows),
        "load_average": [load_start, os.getloadavg()[0]],
    }
    text = markdown(report)
    write_results("sections", args.out, report, text)
    plot(report, args.out / "sections.png")
    sys.stdout.write(text + "\n")
    sys.stdout.write(f"per-section time ratio (last 10 / first 10): {framepack['f1']['ratio']:.3f}\n")


if __name__ == "__main__":
    main()
