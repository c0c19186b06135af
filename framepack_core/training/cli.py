"""Command-line pieces shared by the training commands: the settings flags, the launch flags and the run itself.

``torchrun --nproc_per_node N <command> --run-dir ...`` runs any of them data-parallel; ``--run-dir`` is ``--run``
under a name torchrun's own parser lets through (it reads ``--run`` as an abbreviation of its ``--run-path``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from ..engine.planning import MODES
from ..model.config import FramePackConfig
from . import distributed
from .trainer import BatchSource, TrainSettings, export_lora, export_model, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's launch flags and every ``TrainSettings`` field as ``--field-name``."""
    parser.add_argument("--run", "--run-dir", dest="run", required=True,
                        help="run folder (checkpoint, loss log, samples); an existing one resumes")
    parser.add_argument("--config", help="model config JSON (FramePackConfig fields)")
    parser.add_argument("--export", help="write the EMA weights to this .safetensors file at the end (full training)")
    parser.add_argument("--export-lora", help="write the EMA LoRA (musubi format) to this .safetensors file at the end")
    parser.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes")
    parser.add_argument("--accumulation", type=int, default=1,
                        help="gradient accumulation steps; batch size = processes x per-process batch x this")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations")
    # One thread by default: on a small host shared with other work, two threads on two cores spend most of
    # their time spin-waiting whenever one is descheduled (measured: 1.3 s/step with two, 0.5 s with one).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (per process)")
    defaults = TrainSettings()
    for field in dataclasses.fields(TrainSettings):
        if field.name not in ("modes", "mode_weights"):
            default = getattr(defaults, field.name)
            parser.add_argument("--" + field.name.replace("_", "-"), type=type(default), default=default)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="sampling modes to train, drawn per step; repeat one to weight it")
    parser.add_argument("--mode-weights", nargs="+", type=float, default=[],
                        help="relative frequency of each of --modes (default: equal)")


def settings_from(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)})


def config_from(args: argparse.Namespace, default: FramePackConfig) -> FramePackConfig:
    if not args.config:
        return default
    return FramePackConfig.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))


def run(args: argparse.Namespace, config: FramePackConfig, source: BatchSource):
    """Train as the flags say on this process (of torchrun's, if any); rank 0 exports."""
    torch.set_num_threads(args.threads)
    processes = distributed.init_processes()
    max_seconds = None if args.max_minutes is None else args.max_minutes * 60
    result = train(args.run, config, settings_from(args), source, max_seconds=max_seconds,
                   accumulation=args.accumulation, gradient_checkpointing=args.gradient_checkpointing,
                   processes=processes)
    if processes.is_main and args.export:
        export_model(result, config, args.export)
    if processes.is_main and args.export_lora:
        export_lora(result, args.export_lora)
    return result
