"""The README's benchmark tables, written from the benchmarks' own result files.

    python -m bench.report [--results bench/results] [--readme README.md]

Every benchmark script ends with ``bench.common.write_results``, which writes ``NAME.json`` and ``NAME.md`` to its output
folder and nothing else: a benchmark run never edits the README. Running this module rewrites every README block
between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` from ``bench/results/NAME.json``, so no number in
those blocks is typed by hand, and a CI test checks that the committed README equals what it writes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench import bench_long_video, parser_scaling
from bench.bench_sections import naive_tokens, predict, ratio
from bench.common import RESULTS, ROOT, machine_line
from bench.drift import motion_table
from framepack_shapes.drift import markdown_table
from framepack_shapes.motion import MotionScore

README = ROOT / "README.md"



# ------------------------------------------------------------------------------------------- summaries

def sections(r: dict) -> str:
    f1 = {x["section"]: x for x in r["framepack"]["f1"]["sections"]}
    inverted = {x["section"]: x for x in r["framepack"]["inverted"]["sections"]}
    naive = {x["section"]: x for x in r["naive"]["sections"]}
    lines = ["| section | FramePack F1 tokens | F1 s/section | inverted s/section | naive tokens | naive s/section |",
             "|---|---|---|---|---|---|"]
    for k in (1, 10, 20, 50):
        if k not in f1:
            continue
        if k in naive:
            cell = f"{naive[k]['time_s']:.3f}"
        else:
            cell = f"~{predict(r['naive_fit'], naive_tokens(k)):.1f} (extrapolated)" if r["naive_fit"] else "not run"
        lines.append(f"| {k} | {f1[k]['image_tokens']} | {f1[k]['time_s']:.3f} | {inverted[k]['time_s']:.3f} "
                     f"| {naive_tokens(k)} | {cell} |")
    runs = r["framepack"]["f1"]["sections"], r["framepack"]["inverted"]["sections"], r["naive"]["sections"]
    lines += ["", f"Per-section time, last 10 / first 10 sections: F1 {ratio(runs[0]):.3f}, inverted "
              f"{ratio(runs[1]):.3f}, naive {ratio(runs[2]):.1f} (over the {len(runs[2])} sections it ran within "
              f"its {r['naive']['budget_s']:.0f} s budget). {machine_line(r)}", "",
              "![per-section tokens and time](bench/results/sections.png)"]
    return "\n".join(lines)


def forward(r: dict) -> str:
    s = r["setup"]
    lines = [f"{s['params']:,} parameters, {s['image_tokens']} image + {s['context_tokens']} context tokens, "
             f"{r['flops']['total'] / 1e9:.0f} GFLOP per forward, {r['machine']['torch_threads']} threads.", "",
             "| dtype | median forward (s) | GFLOP/s | utilisation vs a 2048³ matmul (median / best) "
             "| forward peak RSS increase (MiB) |", "|---|---|---|---|---|"]
    for dtype, f in r["forward"].items():
        lines.append(f"| {dtype} | {f['median_s']:.2f} | {f['gflops']:.1f} | {f['utilisation_median']:.2f} / "
                     f"{f['utilisation_best']:.2f} | {f['peak_rss_increase_mib']:.0f} |")
    lines += ["", "| load (fresh process) | time (s) | peak RSS increase (MiB) | x converted weights |",
              "|---|---|---|---|"]
    for dtype, load in r["load"].items():
        lines.append(f"| {load['file_mib']:.0f} MiB fp32 file as {dtype} | {load['seconds']:.2f} | "
                     f"{load['peak_increase_mib']:.0f} | {load['peak_increase_mib'] / load['weights_mib']:.2f} |")
    before, after = r["thread_scaling_before_after"]
    lines += ["", f"{machine_line(r)} Matmul speed-up of 2 threads over 1 around the run: {before:.2f} / {after:.2f} "
              "(about 2 on a quiet host; lower means other work shared the cores)."]
    return "\n".join(lines)


def reference(r: dict) -> str:
    f, sec, live = r["forward"], r["sections"], r["live_peak_mib"]
    ratio = lambda job: f"{job['ours']['wall_ratio']:.3f}"  # noqa: E731
    mid = r["configs"]["mid"]
    lines = [f"| | tiny ({r['configs']['tiny']['params']:,} parameters, golden inputs) | mid ({mid['params']:,}, "
             f"{mid['flops'] / 1e9:.0f} GFLOP) |", "|---|---|---|",
             f"| forward, ours / diffusers, 1 thread | {ratio(f['tiny@1'])} | {ratio(f['mid@1'])} |",
             f"| forward, ours / diffusers, 2 threads | {ratio(f['tiny@2'])} | {ratio(f['mid@2'])} |",
             f"| one section ({r['steps']} UniPC steps), ours / diffusers | {ratio(sec['tiny'])} | {ratio(sec['mid'])} |",
             f"| max abs difference of the outputs | {f['tiny@1']['ours']['max_abs_diff_vs_reference']:.1e} | "
             f"{f['mid@1']['ours']['max_abs_diff_vs_reference']:.1e} |",
             f"| FLOP utilisation vs a 2048³ matmul, 1 thread: ours / diffusers | – | "
             f"{f['mid@1']['ours']['utilisation']:.2f} / {f['mid@1']['reference']['utilisation']:.2f} |",
             f"| forward peak of live tensors, ours / diffusers (MiB) | {live['tiny']['ours']:.1f} / "
             f"{live['tiny']['reference']:.1f} | {live['mid']['ours']:.0f} / {live['mid']['reference']:.0f} |"]
    shares = r["shares"]["mid"]["reference"]
    kernels = (shares["linear_s"] + shares["attention_s"]) / shares["total_s"]
    lines += ["", f"At the mid size {kernels:.1%} of diffusers' forward is Linear GEMMs and SDPA calls, the same kernels "
              "with the same shapes that ours runs (torch.profiler), so an exact implementation cannot go below "
              f"about {r['shares']['mid']['floor_ratio']:.2f} of its time there. {machine_line(r)}"]
    return "\n".join(lines)


def memory_model(r: dict) -> str:
    rows = {(row["bucket"], row["storage"]): row for row in r["rows"]}
    buckets = sorted({bucket for bucket, _ in rows})
    fast, slow = (f"{bw:g}" for bw in r["assumptions"]["pcie_gb_s"])
    desktop, laptop = list(r["assumptions"]["gpu_tflop_s"])
    slowdown = lambda row, gpu, bw: 1 + row["transfer_s"][bw] / row["compute_s"][gpu]  # noqa: E731
    lines = [f"| bucket | image tokens | minimum GPU memory bf16 / fp8 (GiB) | blocks resident in {r['vram_gib']:g} GiB "
             f"bf16 / fp8 | slow-down bf16 / fp8, {desktop} at {fast} GB/s | slow-down, {laptop} at {slow} GB/s |",
             "|---|---|---|---|---|---|"]
    for bucket in buckets:
        bf, f8 = rows[(bucket, "bf16")], rows[(bucket, "fp8")]
        lines.append(f"| {bucket} | {bf['image_tokens']} | {bf['min_vram_gib']:.2f} / {f8['min_vram_gib']:.2f} | "
                     f"{bf['resident_blocks']} / {f8['resident_blocks']} of {bf['blocks']} | "
                     f"x{slowdown(bf, desktop, fast):.2f} / x{slowdown(f8, desktop, fast):.2f} | "
                     f"x{slowdown(bf, laptop, slow):.2f} / x{slowdown(f8, laptop, slow):.2f} |")
    worst = max(row["min_vram_gib"] for row in r["rows"])
    check = r["check"]
    lines += ["", f"Every bucket needs at most {worst:.2f} GiB, so the {r['vram_gib']:g} GB claim "
              f"{'holds' if worst <= r['vram_gib'] else 'does NOT hold'}. The activation formula predicts "
              f"{check['predicted_bytes'] / check['measured_bytes']:.3f} x the live-tensor peak of a real "
              f"{check['config']} forward, the FLOP formula {check['predicted_flops'] / check['counted_flops']:.4f} x "
              "the counted FLOPs.", "", "![13B minimum GPU memory per bucket](bench/results/memory_model.png)"]
    return "\n".join(lines)


def teacache(r: dict) -> str:
    lines = ["| model | setting | blocks skipped | wall speed-up | relative L2 vs no cache |", "|---|---|---|---|---|"]
    for name, model in r["models"].items():
        for row in model["rows"]:
            if row["method"] == "none" and row["seed"] == model["rows"][0]["seed"]:
                continue
            if row["method"] == "none":
                lines.append(f"| {name} | no cache, another seed (for scale) | – | – | {row['relative_l2']:.3f} |")
                continue
            lines.append(f"| {name} | {row['setting']} | {row['skipped'] / row['calls']:.0%} | "
                         f"{row['speedup_wall']:.2f}x | {row['relative_l2']:.3f} |")
    lines += ["", "; ".join(f"{name}: {model['description']}" for name, model in r["models"].items()) + ". "
              + machine_line(r), "", "![speed-up vs change](bench/results/teacache.png)"]
    return "\n".join(lines)


def drift(r: dict) -> str:
    motion = {mode: [MotionScore(**s) for s in items] for mode, items in r["motion_per_clip"].items()}
    args = r["args"]
    return "\n".join([
        f"{args['clips']} held-out clips, {args['sections']} sections ({3 * args['sections'] + 1} frames), "
        f"{args['steps']} UniPC steps per section, {r['seconds']:.0f} s on the CPU with {args['threads']} thread(s); "
        "mean ± standard error over clips; RMSE in [0, 1] intensity units.",
        "", markdown_table(r["summary"]), "", motion_table(motion), "",
        "![drift per frame](bench/results/drift.png)", "", "![drift contact sheet](bench/results/drift_sheet.png)"])


SUMMARIES = {"sections": sections, "forward": forward, "reference": reference, "memory_model": memory_model,
             "teacache": teacache, "drift": drift, "parser_scaling": parser_scaling.markdown,
             "long_video": bench_long_video.markdown}


# ------------------------------------------------------------------------------------------- the README

def replace_block(text: str, name: str, markdown: str) -> str:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise SystemExit(f"the README needs exactly one '{begin}' line followed by one '{end}' line for the "
                         f"{name} benchmark's table; add them where the table belongs.")
    head, rest = text.split(begin)
    return head + begin + "\n" + markdown.strip() + "\n" + end + rest.split(end)[1]


def refresh(name: str, results: Path = RESULTS, readme: Path = README) -> None:
    """Rewrite the README block of benchmark ``name`` from ``results/NAME.json`` (atomically)."""
    report = json.loads((Path(results) / f"{name}.json").read_text(encoding="utf-8"))
    text = replace_block(Path(readme).read_text(encoding="utf-8"), name, SUMMARIES[name](report))
    tmp = Path(readme).with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, readme)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    for name in SUMMARIES:
        if (args.results / f"{name}.json").exists():
            refresh(name, args.results, args.readme)


if __name__ == "__main__":
    main()
