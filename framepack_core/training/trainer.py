"""The training loop: full training or LoRA fine-tuning of a FramePack transformer, on one or N processes.

Every step draws, from a generator seeded by (seed, step) alone, a sampling layout (``modes`` with
``mode_weights``), a video length and one of its sections, plans it with ``plan_sections``, and asks a
``BatchSource`` for that section's batch: the clean context gathered with the engine's own ``context_inputs``, so
training sees exactly the packing inference uses. Because the step's draw and each sample's noise depend on the
step and the sample's key only, a run is the same on 1 or N processes and with any gradient accumulation (the
effective batch ``batch_size`` = processes x per-process batch x accumulation), and it resumes exactly from the
step number: the run folder holds ``checkpoint.safetensors`` (trainable weights, EMA, AdamW moments; no pickle),
``checkpoint.json`` (step, settings, config) and ``loss_log.tsv``. Logging and checkpoints happen on rank 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Protocol

import torch
import torch.utils.checkpoint
from safetensors.torch import load_file, save_file

from ..engine.planning import MODES, plan_sections
from ..errors import InputError
from ..model.checkpoint import load_transformer, save_config_metadata
from ..model.config import FramePackConfig
from ..model.transformer import FramePackTransformer
from . import distributed
from .lora import STORAGE_DTYPES, LoraAdapters, save_lora
from .objective import Batch, flow_matching_loss

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint.json"
LOSS_LOG = "loss_log.tsv"
SAMPLES = "samples"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything a resumed run must share with the interrupted one (only ``steps`` may change)."""

    steps: int = 3000
    batch_size: int = 16  # effective: processes x per-process batch x accumulation
    learning_rate: float = 8e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    # Extra factor on the flow-time shift: more training at high noise (see ``objective.sample_times``).
    time_shift: float = 1.0
    # > 0: weight the loss towards what changes from frame to frame (see ``objective.motion_weights``).
    motion_weight: float = 0.0
    # The fraction of samples whose time is drawn at the inference schedule's shift (low noise) instead.
    low_noise_fraction: float = 0.0
    # A model file to start from instead of a fresh initialisation: a full fine-tune, or the LoRA's base.
    init_weights: str = ""
    # > 0: train a LoRA of this rank on musubi-tuner's targets instead of all weights (needs init_weights).
    lora_rank: int = 0
    lora_alpha: float = 1.0
    # The frozen base's Linear weights are stored in this dtype and computed in float32 (LoRA only).
    base_storage: str = "float32"
    latent_window_size: int = 3
    max_sections: int = 16
    modes: tuple = MODES  # the sampling layouts to train
    mode_weights: tuple = ()  # their relative frequencies; empty = equal (a repeated mode counts twice)
    seed: int = 0
    log_every: int = 25
    save_every: int = 200
    sample_every: int = 0  # > 0: write sample videos to <run>/samples every this many steps

    def __post_init__(self):
        object.__setattr__(self, "modes", tuple(self.modes))
        object.__setattr__(self, "mode_weights", tuple(float(w) for w in self.mode_weights))
        for name in ("steps", "batch_size", "warmup_steps", "latent_window_size", "max_sections", "log_every",
                     "save_every", "lora_rank", "sample_every"):
            value = getattr(self, name)
            lowest = 0 if name in ("warmup_steps", "lora_rank", "sample_every") else 1
            if not isinstance(value, int) or value < lowest:
                raise InputError(f"training setting {name} must be an integer >= {lowest}, got {value!r}.")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise InputError(f"training modes {list(self.modes)} must be a non-empty list of {list(MODES)} "
                             "(repeats weight a mode).")
        if self.mode_weights and (len(self.mode_weights) != len(self.modes) or min(self.mode_weights) < 0
                                  or sum(self.mode_weights) <= 0):
            raise InputError(f"mode_weights {list(self.mode_weights)} must be one weight >= 0 per mode "
                             f"{list(self.modes)}, not all zero.")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if not self.motion_weight >= 0:
            raise InputError(f"motion_weight must be >= 0 (0 = plain MSE), got {self.motion_weight!r}.")
        if not self.time_shift > 0:
            raise InputError(f"time_shift must be > 0 (1 = the inference schedule's shift), got {self.time_shift!r}.")
        if not 0 <= self.low_noise_fraction <= 1:
            raise InputError(f"low_noise_fraction must be in [0, 1] (0 = every time shifted by time_shift), "
                             f"got {self.low_noise_fraction!r}.")
        if self.lora_rank and not self.init_weights:
            raise InputError("a LoRA (lora_rank > 0) trains on a base model: give its file as init_weights.")
        if self.base_storage not in STORAGE_DTYPES:
            raise InputError(f"base_storage {self.base_storage!r} must be one of {sorted(STORAGE_DTYPES)}.")


class BatchSource(Protocol):
    """Where batches come from: ``make_batch(plan, group, keys)`` returns the ``Batch`` of the section ``plan`` for
    the samples ``keys`` (ints); ``group`` is drawn once per step for all processes (e.g. a resolution bucket).
    Optionally ``write_samples(model, folder, step)`` writes sample videos."""

    def make_batch(self, plan, group: int, keys: list) -> Batch: ...


@dataclasses.dataclass(frozen=True)
class StepDraw:
    plan: object
    group: int
    keys: list


@functools.lru_cache(maxsize=None)
def cached_plans(mode: str, num_sections: int, latent_window_size: int) -> tuple:
    return tuple(plan_sections(mode, num_sections, latent_window_size))


def draw_step(settings: TrainSettings, step: int) -> StepDraw:
    """The section layout and sample keys of a step: a function of (seed, step) only."""
    generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
    pick = lambda n: int(torch.randint(n, (), generator=generator))  # noqa: E731
    weights = torch.tensor(settings.mode_weights or [1.0] * len(settings.modes), dtype=torch.float64)
    mode = settings.modes[int(torch.multinomial(weights, 1, generator=generator))]
    plans = cached_plans(mode, 1 + pick(settings.max_sections), settings.latent_window_size)
    plan = plans[pick(len(plans))]
    group = pick(2 ** 31)
    keys = torch.randint(2 ** 62, (settings.batch_size,), generator=generator).tolist()
    return StepDraw(plan, group, keys)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth at ``settings.steps``."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = min((step - settings.warmup_steps) / max(settings.steps - settings.warmup_steps, 1), 1.0)
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


# ------------------------------------------------------------------------------------------- the model

class Trained(torch.nn.Module):
    """The model with its adapters (if any) as one module, so DDP sees exactly the trainable parameters."""

    def __init__(self, model: FramePackTransformer, adapters: LoraAdapters | None):
        super().__init__()
        self.model = model
        self.adapters = adapters

    def forward(self, **inputs):
        return self.model(**inputs)

    def trainable(self) -> dict:
        """Name -> parameter of what trains: the adapters (musubi names), or every model weight."""
        if self.adapters is not None:
            return {name[len("layers."):]: p for name, p in self.adapters.named_parameters()}
        return dict(self.model.named_parameters())

    def weights(self) -> dict:
        """What a checkpoint saves of the model itself: the adapters' file content, or the model's state dict."""
        return self.adapters.state_dict() if self.adapters is not None else self.model.state_dict()

    def load_weights(self, tensors: dict) -> None:
        (self.adapters if self.adapters is not None else self.model).load_state_dict(tensors)


def new_model(config: FramePackConfig, seed: int) -> FramePackTransformer:
    """A freshly initialised model; the output projection starts at zero so the first predictions are calm."""
    torch.manual_seed(seed)
    model = FramePackTransformer(config)
    torch.nn.init.zeros_(model.proj_out.weight)
    torch.nn.init.zeros_(model.proj_out.bias)
    return model


def build_model(config: FramePackConfig, settings: TrainSettings, gradient_checkpointing: bool = False) -> Trained:
    model = new_model(config, settings.seed)
    if settings.init_weights:
        source = load_transformer(settings.init_weights)
        if source.config.to_dict() != config.to_dict():
            raise InputError(f"init_weights {settings.init_weights} holds a model of another config "
                             f"({source.config.to_dict()}); train with that config or start from scratch.")
        model.load_state_dict(source.state_dict())
        log.info("starting from %s", settings.init_weights)
    adapters = None
    if settings.lora_rank:
        torch.manual_seed(settings.seed)  # the adapters' initialisation
        adapters = LoraAdapters(model, settings.lora_rank, settings.lora_alpha, settings.base_storage)
    if gradient_checkpointing:
        checkpoint_blocks(model)
    return Trained(model, adapters)


def checkpoint_blocks(model: FramePackTransformer) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them (memory for compute)."""
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        block.forward = functools.partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)


# ------------------------------------------------------------------------------------------- the run

@dataclasses.dataclass
class Run:
    """The mutable state of a training run."""

    trained: Trained
    optimizer: torch.optim.Optimizer
    ema: dict
    step: int
    elapsed: float

    @property
    def model(self) -> FramePackTransformer:
        return self.trained.model


def start_run(config: FramePackConfig, settings: TrainSettings, gradient_checkpointing: bool = False) -> Run:
    trained = build_model(config, settings, gradient_checkpointing)
    params = trained.trainable()
    optimizer = torch.optim.AdamW(params.values(), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  betas=(0.9, 0.99))
    ema = {name: p.detach().clone() for name, p in params.items()}
    return Run(trained, optimizer, ema, 0, 0.0)


def train_step(module, optimizer, params: list, batches, lr: float, settings: TrainSettings,
               processes: distributed.Processes = distributed.Processes()) -> float:
    """One optimiser step over this process's micro-batches (accumulated); returns the mean loss of all processes."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        sync = contextlib.nullcontext() if last or not processes.distributed else module.no_sync()
        with sync:
            loss = flow_matching_loss(module, batch, settings.time_shift, settings.motion_weight,
                                      settings.low_noise_fraction) / len(batches)
            loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return distributed.mean_over_processes(total, processes)


@torch.no_grad()
def update_ema(ema: dict, parameters: dict, decay: float) -> None:
    for name, param in parameters.items():
        ema[name].lerp_(param.detach(), 1 - decay)


def micro_batch_size(settings: TrainSettings, processes: distributed.Processes, accumulation: int) -> int:
    if accumulation < 1 or settings.batch_size % (processes.world_size * accumulation):
        raise InputError(f"batch_size {settings.batch_size} must split evenly over {processes.world_size} processes "
                         f"x {accumulation} accumulation steps; choose a batch size that is a multiple of "
                         f"{processes.world_size * max(accumulation, 1)}.")
    return settings.batch_size // (processes.world_size * accumulation)


def train(run_dir, config: FramePackConfig, settings: TrainSettings, source: BatchSource, *,
          max_seconds: float | None = None, accumulation: int = 1, gradient_checkpointing: bool = False,
          processes: distributed.Processes = distributed.Processes()) -> Run:
    """Train (or resume) in ``run_dir`` until ``settings.steps`` or ``max_seconds`` of this call; returns the run."""
    run_dir = Path(run_dir)
    micro = micro_batch_size(settings, processes, accumulation)
    if processes.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(processes)
    if (run_dir / STATE).exists():
        run = load_run(run_dir, config, settings, gradient_checkpointing)
    else:
        run = start_run(config, settings, gradient_checkpointing)
    move_run(run, processes.device)
    module = distributed.wrap(run.trained, processes)
    params = run.trained.trainable()
    module.train()
    began, window = time.monotonic(), []
    while run.step < settings.steps:
        tick = time.monotonic()
        draw = draw_step(settings, run.step)
        keys = distributed.shard(draw.keys, processes)
        batches = [batch_on(source.make_batch(draw.plan, draw.group, keys[i:i + micro]), processes.device)
                   for i in range(0, len(keys), micro)]
        lr = learning_rate(run.step, settings)
        window.append(train_step(module, run.optimizer, list(params.values()), batches, lr, settings, processes))
        update_ema(run.ema, params, settings.ema_decay)
        run.step += 1
        run.elapsed += time.monotonic() - tick
        if processes.is_main and (run.step % settings.log_every == 0 or run.step == settings.steps):
            record_loss(run_dir, run, sum(window) / len(window), lr)
            window = []
        if processes.is_main and settings.sample_every and run.step % settings.sample_every == 0:
            write_samples(source, run, run_dir)
        out_of_time = distributed.any_process(max_seconds is not None and time.monotonic() - began >= max_seconds,
                                              processes)
        if run.step % settings.save_every == 0 or run.step == settings.steps or out_of_time:
            if processes.is_main:
                save_run(run_dir, run, config, settings)
            distributed.barrier(processes)
        if out_of_time:
            log.info("stopping at step %d: the time limit of %.0f s is reached", run.step, max_seconds)
            break
    return run


def move_run(run: Run, device: torch.device) -> None:
    """Put the model, its EMA and the optimizer's moments on this process's device (in place: the optimizer keeps
    its parameters)."""
    run.trained.to(device)
    run.ema = {name: value.to(device) for name, value in run.ema.items()}
    for state in run.optimizer.state.values():
        for key, value in state.items():
            if key != "step":
                state[key] = value.to(device)


def batch_on(batch: Batch, device: torch.device) -> Batch:
    move = lambda value: value.to(device) if isinstance(value, torch.Tensor) else value  # noqa: E731
    inputs = {key: [dataclasses.replace(g, latents=move(g.latents), indices=move(g.indices)) for g in value]
              if key == "clean_groups" else move(value) for key, value in batch.model_inputs.items()}
    return dataclasses.replace(batch, model_inputs=inputs, target=move(batch.target), previous=move(batch.previous))


def write_samples(source: BatchSource, run: Run, run_dir: Path) -> None:
    writer = getattr(source, "write_samples", None)
    if writer is None:
        return
    run.trained.eval()
    with torch.no_grad():
        writer(run.model, run_dir / SAMPLES, run.step)
    run.trained.train()


def record_loss(run_dir: Path, run: Run, loss: float, lr: float) -> None:
    log.info("step %6d  loss %.4f  lr %.2e  %.2f s/step", run.step, loss, lr, run.elapsed / run.step)
    path = run_dir / LOSS_LOG
    new = not path.exists()
    with path.open("a", encoding="utf-8") as handle:
        if new:
            handle.write("step\tloss\tlr\telapsed_s\n")
        handle.write(f"{run.step}\t{loss:.6f}\t{lr:.6e}\t{run.elapsed:.1f}\n")


# ------------------------------------------------------------------------------------------- checkpoints

def save_run(run_dir: Path, run: Run, config: FramePackConfig, settings: TrainSettings) -> None:
    """Write the checkpoint atomically (a crash mid-save leaves the previous one)."""
    tensors = {f"weights.{k}": v.detach().cpu().contiguous() for k, v in run.trained.weights().items()}
    tensors.update({f"ema.{k}": v.cpu().contiguous() for k, v in run.ema.items()})
    names = {id(p): n for n, p in run.trained.trainable().items()}
    for param, state in run.optimizer.state.items():
        for key, value in state.items():
            tensors[f"optimizer.{names[id(param)]}.{key}"] = value.cpu().contiguous()
    state = {"step": run.step, "elapsed_s": run.elapsed, "config": config.to_dict(),
             "settings": dataclasses.asdict(settings),
             "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in run.optimizer.param_groups]}
    save_file(tensors, run_dir / (CHECKPOINT + ".tmp"))
    (run_dir / (STATE + ".tmp")).write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(run_dir / (CHECKPOINT + ".tmp"), run_dir / CHECKPOINT)
    os.replace(run_dir / (STATE + ".tmp"), run_dir / STATE)
    log.info("saved the checkpoint of step %d to %s", run.step, run_dir)


def load_run(run_dir: Path, config: FramePackConfig, settings: TrainSettings,
             gradient_checkpointing: bool = False) -> Run:
    """Resume a run; its config and settings must match (only the step count may grow)."""
    state = json.loads((run_dir / STATE).read_text(encoding="utf-8"))
    if state["config"] != config.to_dict():
        raise InputError(f"{run_dir} holds a run of another model config ({state['config']}); "
                         "train with that config or choose a new run folder.")
    saved = TrainSettings(**dict(state["settings"], steps=settings.steps))
    if saved != settings:
        raise InputError(f"{run_dir} was trained with settings {state['settings']}; resume with the same settings "
                         "(only --steps may change) or choose a new run folder.")
    tensors = load_file(run_dir / CHECKPOINT)
    run = start_run(config, settings, gradient_checkpointing)
    run.trained.load_weights({k[len("weights."):]: v for k, v in tensors.items() if k.startswith("weights.")})
    run.ema = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    for name, param in run.trained.trainable().items():
        prefix = f"optimizer.{name}."
        moments = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
        if moments:
            run.optimizer.state[param] = moments
    for group, saved_group in zip(run.optimizer.param_groups, state["param_groups"]):
        group.update(saved_group)
    run.step, run.elapsed = state["step"], state["elapsed_s"]
    log.info("resuming %s at step %d", run_dir, run.step)
    return run


def export_model(run: Run, config: FramePackConfig, path) -> Path:
    """Save a full run's EMA weights as one self-describing safetensors file (``load_transformer`` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in run.ema.items()}, path, metadata=save_config_metadata(config))
    log.info("exported the EMA weights of step %d to %s", run.step, path)
    return path


def export_lora(run: Run, path) -> Path:
    """Save a LoRA run's EMA adapters as a musubi-format LoRA (``lora_unet_*.lora_down/lora_up/alpha``)."""
    if run.trained.adapters is None:
        raise InputError("this run trains every weight, not a LoRA; export it with export_model.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adapters = run.trained.adapters
    current = {key: value.clone() for key, value in adapters.state_dict().items()}
    adapters.load_state_dict({**current, **run.ema})
    try:
        save_lora(adapters, path, metadata={"ss_network_module": "networks.lora_framepack",
                                            "ss_network_dim": str(adapters.rank), "ss_network_alpha": str(adapters.alpha),
                                            "framepack_training_step": str(run.step)})
    finally:
        adapters.load_state_dict(current)
    log.info("exported the EMA LoRA of step %d to %s", run.step, path)
    return path
