"""What every benchmark shares: where results go, the machine description, and writing a result.

Benchmarks import from here and never from ``bench.report``; the report imports the benchmarks' own markdown
renderers, so imports run one way only.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

log = logging.getLogger(__name__)


def machine_info() -> dict:
    cpu = platform.processor()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}


def machine_line(r: dict) -> str:
    m = r["machine"]
    load = r.get("load_average")
    text = f"Measured on {m['cpu']} ({m['usable_cores']} of {m['logical_cores']} cores usable), torch {m['torch']}"
    if load:
        text += f", 1-minute load average {load[0]:.1f} at the start and {load[1]:.1f} at the end"
    return text + "."


def write_results(name: str, out, report: dict, markdown: str) -> None:
    """A benchmark's last step: ``out/NAME.json`` and ``out/NAME.md`` (``python -m bench.report`` then
    refreshes the README from them)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    log.info("wrote %s and %s; python -m bench.report refreshes the README from them",
             out / f"{name}.json", out / f"{name}.md")
