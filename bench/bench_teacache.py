"""Step caches' speed-up against their change of the result, over a multi-section generation (a benchmark).

    python3 -m bench.bench_teacache [--models random shapes] [--repeats 5] [--steps 25] [--out bench/results]

Each run generates a whole video with ``framepack_core.engine.generate`` (inverted anti-drifting, 3 sections,
``--steps`` UniPC steps per section, fixed seed): without a cache, with TeaCache through
``GenerationSettings(teacache_threshold=...)`` and ``TransformerSectionSampler`` at thresholds 0.1 / 0.15 /
0.2, and with ``MagCache`` (a holder with TeaCache's interface, reset per section the same way) at three
thresholds. Reported per setting: model calls and how many skipped the blocks, the median wall time of
``--repeats`` runs (settings alternating), the speed-up over no cache, and the relative L2 change of the
generated latents (all frames but the start frame) against the uncached run. For scale, the same
generation with another seed is compared too: the change that counts as "a different video".

Models: ``random`` is a small random-weight transformer (any machine); ``shapes`` is the shipped model
trained on the procedural shapes world (``models/framepack_shapes``) with a held-out clip's start frame
and caption, whose velocities behave like a trained model's (skipped if the file is absent). Random
weights do not denoise anything, so their numbers show the caches' mechanics, not their quality.
Writes ``teacache.json``, ``teacache.md`` and ``teacache.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.common import machine_info, write_results
from framepack_core import (FramePackConfig, FramePackTransformer, GenerationInputs, GenerationSettings,
                            TextConditioning, TransformerSectionSampler, generate, load_transformer)
from framepack_core.engine.step_caches import MagCache

MODE, SECTIONS, SEED, OTHER_SEED = "inverted_anti_drifting", 3, 31337, 7
TEACACHE_THRESHOLDS = (0.1, 0.15, 0.2)
MAGCACHE_THRESHOLDS = (0.05, 0.1, 0.2)
SHAPES_MODEL = Path(__file__).resolve().parent.parent / "models" / "framepack_shapes" / "framepack_shapes.safetensors"


# ------------------------------------------------------------------------------------------- models and inputs

def random_setup() -> dict:
    """bench_sections' small configuration (random weights, seed 0) at 128x128 px, window 9."""
    config = FramePackConfig(num_attention_heads=4, attention_head_dim=32, rope_axes_dim=(8, 12, 12), num_layers=2,
                             num_single_layers=2, num_refiner_layers=1, text_embed_dim=64, pooled_projection_dim=32,
                             image_proj_dim=32)
    torch.manual_seed(0)
    model = FramePackTransformer(config).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    randn = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    prompt = TextConditioning(randn(1, 32, config.text_embed_dim), torch.ones(1, 32, dtype=torch.bool),
                              randn(1, config.pooled_projection_dim))
    inputs = GenerationInputs(start_latent=randn(1, 16, 1, 16, 16), prompts=prompt,
                              image_embeddings=randn(1, 16, config.image_proj_dim))
    return {"model": model, "inputs": inputs, "window": 9,
            "description": "random weights, 4 heads x 32, 2 dual + 2 single blocks, latent 16x16, window 9"}


def shapes_setup() -> dict | None:
    """The shipped shapes model on held-out clip 0 (its start frame, caption and image tokens), window 3."""
    if not SHAPES_MODEL.is_file():
        return None
    from framepack_shapes import demo, world
    spec = world.sample_clip(0, split="test")
    digest = hashlib.sha256(SHAPES_MODEL.read_bytes()).hexdigest()[:12]
    return {"model": load_transformer(SHAPES_MODEL), "inputs": demo.clip_inputs(spec), "window": demo.WINDOW,
            "description": f"`models/framepack_shapes` (trained; file sha256 {digest}...), held-out clip 0 "
                           f"{spec.caption!r}, latent 8x8, window {demo.WINDOW}"}


SETUPS = {"random": random_setup, "shapes": shapes_setup}


# ------------------------------------------------------------------------------------------- runs

class CallCounter:
    """Counts model calls and the calls that ran the blocks (the first dual-stream block's forwards)."""

    def __init__(self, model: FramePackTransformer):
        self.calls = self.computed = 0
        model.register_forward_pre_hook(lambda *_: self._count("calls"))
        model.transformer_blocks[0].register_forward_pre_hook(lambda *_: self._count("computed"))

    def _count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def take(self) -> tuple:
        counts = (self.calls, self.computed)
        self.calls = self.computed = 0
        return counts


class MagCacheModel:
    """The model with a MagCache in every call, in place of the sampler's (TeaCache or none) ``cache``."""

    def __init__(self, model: FramePackTransformer, cache: MagCache):
        self.model, self.cache = model, cache
        self.compute_dtype = model.compute_dtype

    def __call__(self, **kwargs):
        return self.model(**{**kwargs, "cache": self.cache})


def magcache_sampler(model: FramePackTransformer, threshold: float, steps: int):
    """TransformerSectionSampler driving the model through a MagCache that restarts every section."""
    cache = MagCache(threshold, steps)
    inner = TransformerSectionSampler(MagCacheModel(model, cache))

    def sample(job):
        cache.reset(steps)
        return inner(job)

    return sample


def settings_list(steps: int) -> list:
    """(name, method, threshold, seed) of every generation, the uncached reference first."""
    rows = [("no cache", "none", 0.0, SEED)]
    rows += [(f"TeaCache {t:g}", "teacache", t, SEED) for t in TEACACHE_THRESHOLDS]
    rows += [(f"MagCache {t:g}", "magcache", t, SEED) for t in MAGCACHE_THRESHOLDS]
    return rows + [(f"no cache, seed {OTHER_SEED}", "none", 0.0, OTHER_SEED)]


def generation(setup: dict, method: str, threshold: float, seed: int, steps: int):
    """A function generating the whole video with one setting."""
    settings = GenerationSettings(mode=MODE, num_sections=SECTIONS, latent_window_size=setup["window"], steps=steps,
                                  seed=seed, teacache_threshold=threshold if method == "teacache" else 0.0)
    model = setup["model"]
    sampler = magcache_sampler(model, threshold, steps) if method == "magcache" else TransformerSectionSampler(model)
    return lambda: generate(sampler, setup["inputs"], settings)


def measure(setup: dict, steps: int, repeats: int) -> list:
    """Every setting once for its latents and call counts, then ``repeats`` alternating timed rounds."""
    counter = CallCounter(setup["model"])
    rows, jobs = [], []
    for name, method, threshold, seed in settings_list(steps):
        job = generation(setup, method, threshold, seed, steps)
        with torch.inference_mode():
            video = job()
        calls, computed = counter.take()
        rows.append({"setting": name, "method": method, "threshold": threshold, "seed": seed, "calls": calls,
                     "computed": computed, "skipped": calls - computed, "video": video, "wall_s": []})
        jobs.append(job)
    for round_ in range(repeats):
        shift = round_ % len(jobs)
        for row, job in list(zip(rows, jobs))[shift:] + list(zip(rows, jobs))[:shift]:
            with torch.inference_mode():
                start = time.perf_counter()
                job()
                row["wall_s"].append(time.perf_counter() - start)
    return finish(rows)


def finish(rows: list) -> list:
    """Medians, speed-ups and relative L2 changes against the uncached run (the first row)."""
    videos = [row.pop("video")[:, :, 1:] for row in rows]  # frame 0 is the given start frame
    reference, base = videos[0], rows[0]
    base_wall = statistics.median(base["wall_s"])
    for row, video in zip(rows, videos):
        row["median_wall_s"] = statistics.median(row["wall_s"])
        row["speedup_wall"] = base_wall / row["median_wall_s"]
        row["speedup_calls"] = base["computed"] / row["computed"]
        row["relative_l2"] = ((video - reference).norm() / reference.norm()).item()
    return rows


# ------------------------------------------------------------------------------------------- report

def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# Step caches: speed-up vs change of the result (CPU)", "",
             f"Machine: {m['cpu']}, torch {m['torch']}, {r['threads']} thread(s); 1-minute load average "
             f"{r['load_average'][0]:.2f} at the start, {r['load_average'][1]:.2f} at the end.",
             f"Generation: {MODE}, {SECTIONS} sections, {r['steps']} UniPC steps per section, distilled CFG 10, real "
             f"CFG 1, seed {SEED}; median wall time of {r['repeats']} runs per setting, settings alternating. "
             "Relative L2 = ||latents - uncached latents|| / ||uncached latents|| over the generated frames. "
             "MagCache: max 2 skips in a row, first 20 % of each section's steps always computed.", ""]
    for name, result in r["models"].items():
        lines += [f"## Model `{name}`: {result['description']}", "",
                  "| setting | model calls | blocks skipped | speed-up (calls) | median wall (s) | speed-up (wall) "
                  "| relative L2 vs no cache |", "|---|---|---|---|---|---|---|"]
        for row in result["rows"]:
            lines.append(f"| {row['setting']} | {row['calls']} | {row['skipped']} ({row['skipped'] / row['calls']:.0%}) "
                         f"| {row['speedup_calls']:.2f}x | {row['median_wall_s']:.3f} | {row['speedup_wall']:.2f}x "
                         f"| {row['relative_l2']:.4f} |")
        lines.append("")
    lines += ["The last row of each table is the uncached generation with another seed: the relative L2 of two "
              "different videos, for scale.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(r["models"]), figsize=(6 * len(r["models"]), 4.5), squeeze=False)
    for ax, (name, result) in zip(axes[0], r["models"].items()):
        for method, colour in (("teacache", "tab:blue"), ("magcache", "tab:orange")):
            rows = [row for row in result["rows"] if row["method"] == method]
            ax.plot([row["relative_l2"] for row in rows], [row["speedup_wall"] for row in rows], "o-", color=colour,
                    label=method)
            for row in rows:
                ax.annotate(f"{row['threshold']:g}", (row["relative_l2"], row["speedup_wall"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set(title=f"model `{name}`", xlabel="relative L2 change of the latents vs no cache",
               ylabel="wall-time speed-up vs no cache", xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Step caches over {SECTIONS} sections x {r['steps']} steps (labels: thresholds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"machine": machine_info(), "steps": args.steps, "repeats": args.repeats, "threads": args.threads,
              "load_average": [os.getloadavg()[0]], "models": {}}
    for name in args.models:
        setup = SETUPS[name]()
        if setup is None:
            sys.stderr.write(f"model {name}: not available, skipped\n")
            continue
        report["models"][name] = {"description": setup["description"], "rows": measure(setup, args.steps, args.repeats)}
    report["load_average"].append(os.getloadavg()[0])
    text = markdown(report)
    write_results("teacache", args.out, report, text)
    plot(report, args.out / "teacache.png")
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
