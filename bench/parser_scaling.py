"""How every text parser's time grows with its input, and what the NaN checks cost.

    python -m bench.parser_scaling [--out bench/results]

Each parser gets the adversarial patterns found by fuzzing (unclosed '[' runs, '[0s:' repeated, nested brackets,
many groups in a schedule ...) at sizes n, 2n, 4n, 8n up to its length bound. The scaling exponent is the slope of
log time against log size (1 = linear, 2 = quadratic; the regex parser this replaced was 3 on unclosed '[' runs).
It also times the worst input at each bound, the refusal of an input beyond it, and the finiteness checks:
the per-section model-output check against a sampling step, and the per-tensor weight check against loading.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from bench.common import RESULTS, machine_info, write_results
from framepack_core import FramePackError, get_schedule, parse_schedule, parse_timestamped_prompts, plan_sections
from framepack_core.engine.conditioning import MAX_PROMPT_CHARS
from framepack_core.engine.schedules import MAX_SCHEDULE_CHARS
from framepack_core.engine.validation import check_section_output, finite

PROMPTS = {
    "unclosed [ run": lambda n: "[" * n,
    "[0s: repeated": lambda n: "[0s:" * (n // 4),
    "nested brackets": lambda n: "[" * (n // 2) + "0s: a" + "]" * (n // 2),
    "many entries": lambda n: " ".join(f"[{i}s: p]" for i in range(n // 10)),
    "one long prompt": lambda n: "[0s: " + "x" * n + "]",
    "whitespace then stray text": lambda n: "[0s: a]" + " " * n + "x",
    "unclosed after entries": lambda n: "[0s: a] " * (n // 8) + "[1s: b",
    "plain text": lambda n: "a cat " * (n // 6),
    "colons only": lambda n: ":" * n + "[",
}
SCHEDULES = {
    "groups in one token": lambda n: "f1k1" * (n // 5) + "_g9",
    "groups as tokens": lambda n: "f1k1_" * (n // 5) + "g9",
    "skips": lambda n: "x_" * (n // 2) + "g9",
    "digits": lambda n: "f" + "1" * n + "k1_g9",
    "unfinished groups": lambda n: "f1k" * (n // 3),
    "underscores": lambda n: "_" * n,
    "uniform parameters": lambda n: "uniform:" + "k" * n,
}
PARSERS = {
    "parse_timestamped_prompts": (parse_timestamped_prompts, PROMPTS, MAX_PROMPT_CHARS),
    "parse_schedule / get_schedule": (lambda text: get_schedule(text, "vanilla") if text.startswith("uniform")
                                      else parse_schedule(text), SCHEDULES, MAX_SCHEDULE_CHARS),
}


def seconds_per_call(function, argument, minimum: float = 0.05) -> float:
    """The best of 5 rounds, each repeating the call for at least ``minimum`` seconds (refusals count as calls)."""
    def call():
        try:
            function(argument)
        except FramePackError:
            pass

    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < minimum:
        call()
        calls += 1
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        rounds.append((time.perf_counter() - start) / calls)
    return min(rounds)


def exponent(sizes: list, times: list) -> float:
    """Least-squares slope of log(time) against log(size)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(t) for t in times]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def scale(function, patterns: dict, bound: int) -> dict:
    sizes = [bound // 8, bound // 4, bound // 2, bound]
    out = {}
    for name, make in patterns.items():
        times = [seconds_per_call(function, make(n)) for n in sizes]
        out[name] = {"sizes": [len(make(n)) for n in sizes], "seconds": times,
                     "exponent": exponent([len(make(n)) for n in sizes], times)}
    worst = max(out.values(), key=lambda r: r["seconds"][-1])
    beyond = seconds_per_call(function, "[" * (bound + 1))
    return {"patterns": out, "max_exponent": max(r["exponent"] for r in out.values()),
            "worst_at_bound_s": worst["seconds"][-1], "refusal_beyond_bound_s": beyond, "bound_chars": bound}


def check_costs() -> dict:
    """The per-section output check at the 640 bucket's window, and the weight check per byte."""
    window = torch.randn(1, 16, 9, 76, 80)  # one section of a 640x608 video
    plan = plan_sections("vanilla", 1)[0]
    section_check = seconds_per_call(lambda x: check_section_output(plan, x), window)
    weights = torch.randn(3072, 12288).to(torch.bfloat16)  # one 13B block Linear
    weight_check = seconds_per_call(finite, weights)
    isfinite = seconds_per_call(lambda w: bool(torch.isfinite(w).all()), weights)
    return {"section_check_s": section_check, "section_elements": window.numel(),
            "weight_check_s": weight_check, "weight_bytes": weights.numel() * weights.itemsize,
            "weight_isfinite_s": isfinite}


def markdown(r: dict) -> str:
    lines = ["| parser | pattern | sizes (chars) | time at the largest (ms) | exponent |", "|---|---|---|---|---|"]
    for parser, result in r["parsers"].items():
        for name, p in result["patterns"].items():
            lines.append(f"| {parser} | {name} | {p['sizes'][0]}-{p['sizes'][-1]} | {p['seconds'][-1] * 1e3:.3f} "
                         f"| {p['exponent']:.2f} |")
    lines += ["", "An exponent near 0 (or below) is an input refused at a bad character near its start: answered in the "
              "same few microseconds at every size.", ""]
    for parser, result in r["parsers"].items():
        lines.append(f"- `{parser}`: largest exponent {result['max_exponent']:.2f}; worst input at the "
                     f"{result['bound_chars']}-character bound {result['worst_at_bound_s'] * 1e3:.2f} ms; an input "
                     f"beyond it refused in {result['refusal_beyond_bound_s'] * 1e6:.1f} µs.")
    c, step = r["checks"], r["reference_step_s"]
    lines.append(f"- Model-output check per section (one 640x608 window, {c['section_elements']:,} values): "
                 f"{c['section_check_s'] * 1e3:.2f} ms, {100 * c['section_check_s'] / step:.3f} % of one step of "
                 f"the 329 M-parameter benchmark model ({step:.2f} s, `bench.bench_forward`); the 13B's steps are "
                 "longer still.")
    lines.append(f"- Weight check at load: {c['weight_check_s'] * 1e3:.1f} ms per {c['weight_bytes'] / 2**20:.0f} MiB "
                 f"bf16 tensor ({c['weight_bytes'] / c['weight_check_s'] / 2**30:.1f} GiB/s, so about "
                 f"{26 * 2**30 / (c['weight_bytes'] / c['weight_check_s']):.0f} s for the 13B's 26 GB; "
                 f"`torch.isfinite(t).all()` takes {c['weight_isfinite_s'] * 1e3:.0f} ms).")
    m = r["machine"]
    lines.append(f"\nMeasured on {m['cpu']} ({m['usable_cores']} of {m['logical_cores']} cores usable), torch "
                 f"{m['torch']}, 1 thread.")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parser_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    forward = json.loads((RESULTS / "forward.json").read_text())
    report = {"machine": machine_info(),
              "parsers": {name: scale(function, patterns, bound) for name, (function, patterns, bound) in
                          PARSERS.items()},
              "checks": check_costs(), "reference_step_s": forward["forward"]["float32"]["median_s"]}
    write_results("parser_scaling", args.out, report, markdown(report))


if __name__ == "__main__":
    main()
