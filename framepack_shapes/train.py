"""Training a FramePack transformer the way FramePack is trained, on the procedural shapes world (``data``).

Every step picks a sampling mode (vanilla, anti_drifting or inverted_anti_drifting), a video length and one
section of it, plans it with ``plan_sections`` and gathers its clean context from the ground-truth clip with
the engine's own ``context_inputs``, so training sees exactly the packing inference uses. The section's
latents are noised with flow matching (``x_t = (1 - t) x0 + t noise``, target velocity ``noise - x0``, t
logit-normal then shifted like the inference schedule, times ``time_shift``) and the transformer regresses the
velocity (MSE, optionally weighted towards what moves: ``motion_weight``). One step's batch shares a section
layout (different clips), because packed layouts differ between sections. The shipped shapes model was trained
in two stages (``models/framepack_shapes/TRAINING.md``): from scratch, then fine-tuned from that file with half of
the times at low noise:

    python -m framepack_shapes.train --run runs/framepack_shapes --steps 13000 --max-minutes 60 \
        --learning-rate 0.0012 --time-shift 3 --motion-weight 4 \
        --modes vanilla vanilla anti_drifting inverted_anti_drifting \
        --export runs/framepack_shapes/framepack_shapes.safetensors
    python -m framepack_shapes.train --run runs/ft_lownoise --steps 4400 --max-minutes 66 \
        --init-weights runs/framepack_shapes/framepack_shapes.safetensors --learning-rate 0.0005 \
        --low-noise-fraction 0.5 --time-shift 3 --motion-weight 4 \
        --modes vanilla vanilla anti_drifting inverted_anti_drifting \
        --export models/framepack_shapes/framepack_shapes.safetensors

The run folder holds ``checkpoint.safetensors`` (weights, EMA weights, AdamW moments, RNG state; no pickle),
``checkpoint.json`` (step, settings, config, optimizer hyper-parameters) and ``loss_log.tsv``; running the
same command again resumes from it. ``trainable_parameters`` is the one place that decides what trains, so a
LoRA variant only has to replace it (and the export).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import world
from framepack_core.model.checkpoint import load_transformer, save_config_metadata
from framepack_core.model.config import FramePackConfig
from framepack_core.errors import InputError
from framepack_core.engine.generate import GenerationInputs, context_inputs
from framepack_core.model.transformer import FramePackTransformer
from framepack_core.engine.planning import MODES, plan_sections
from framepack_core.engine.sampling import T_SCALE, flux_time_shift, mu_for_seq_len

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
STATE = "checkpoint.json"
LOSS_LOG = "loss_log.tsv"

# The shipped model's size: trains on two CPU cores in well under an hour (about 2.8 M parameters).
SHAPES_CONFIG = FramePackConfig(
    num_attention_heads=4, attention_head_dim=32, rope_axes_dim=(8, 12, 12), num_layers=2, num_single_layers=2,
    num_refiner_layers=1, text_embed_dim=world.TEXT_DIM, pooled_projection_dim=world.TEXT_DIM,
    image_proj_dim=world.IMAGE_TOKEN_DIM, guidance_embeds=False)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation and data settings; everything a resumed run must share with the interrupted one."""

    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 8e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    ema_decay: float = 0.998
    # Extra factor on the flow-time shift: more training at high noise, where the section's layout and motion
    # must come from the context alone (see ``sample_times``).
    time_shift: float = 1.0
    # > 0: weight the loss towards what changes from frame to frame (see ``motion_weights``).
    motion_weight: float = 0.0
    # The fraction of samples whose time is drawn at the inference schedule's shift instead (see
    # ``sample_times``): keeps training at low noise, where backgrounds, edges and fine texture are decided.
    low_noise_fraction: float = 0.0
    # A model file (``export_model``) to start from instead of a fresh initialisation: a fine-tune.
    init_weights: str = ""
    latent_window_size: int = 3
    max_sections: int = 16
    modes: tuple = MODES  # each step draws one of these uniformly: repeat a mode to train it more often
    seed: int = 0
    log_every: int = 25
    save_every: int = 200

    def __post_init__(self):
        object.__setattr__(self, "modes", tuple(self.modes))
        for name in ("steps", "batch_size", "warmup_steps", "latent_window_size", "max_sections", "log_every",
                     "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "warmup_steps" else 1):
                raise InputError(f"training setting {name} must be a positive integer, got {value!r}.")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise InputError(f"training modes {list(self.modes)} must be a non-empty list of {list(MODES)} "
                             "(repeats weight a mode).")
        if not 0 <= self.ema_decay < 1:
            raise InputError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if not self.motion_weight >= 0:
            raise InputError(f"motion_weight must be >= 0 (0 = plain MSE), got {self.motion_weight!r}.")
        if not self.time_shift > 0:
            raise InputError(f"time_shift must be > 0 (1 = the inference schedule's shift), got {self.time_shift!r}.")
        if not 0 <= self.low_noise_fraction <= 1:
            raise InputError(f"low_noise_fraction must be in [0, 1] (0 = every time shifted by time_shift), "
                             f"got {self.low_noise_fraction!r}.")


@dataclasses.dataclass
class Batch:
    """One training batch: a section plan, its clean context (model keywords), its clean target latents and the
    true frame before them."""

    plan: object
    model_inputs: dict
    target: torch.Tensor
    previous: torch.Tensor


# ------------------------------------------------------------------------------------------- data

@functools.lru_cache(maxsize=None)
def cached_plans(mode: str, num_sections: int, latent_window_size: int) -> tuple:
    return tuple(plan_sections(mode, num_sections, latent_window_size))


def sample_batch(generator: torch.Generator, settings: TrainSettings) -> Batch:
    """A random section of random clips, with the context inference would gather for it."""
    pick = lambda n: int(torch.randint(n, (), generator=generator))  # noqa: E731
    mode = settings.modes[pick(len(settings.modes))]
    plans = cached_plans(mode, 1 + pick(settings.max_sections), settings.latent_window_size)
    plan = plans[pick(len(plans))]
    seeds = torch.randint(2 ** 62, (settings.batch_size,), generator=generator).tolist()
    return make_batch(plan, [world.sample_clip(seed) for seed in seeds])


def make_batch(plan, specs: list) -> Batch:
    """The batch of ``plan`` for the clips ``specs`` (ground-truth clips stand in for generated history)."""
    video = world.encode_frames(torch.stack([world.render_clip(s, plan.total_latent_frames) for s in specs]))
    start = video[:, :, :1]
    # Only the keyframe / end-frame fields are read: neither is used in training.
    context = context_inputs(plan, video, GenerationInputs(start_latent=start, prompts=None, image_embeddings=None))
    text = world.batch_captions([s.caption for s in specs])
    inputs = {**context, **text.model_inputs(), "image_embeddings": world.image_embeddings(start)}
    window = video[:, :, plan.position:plan.position + plan.latent_window_size]
    return Batch(plan, inputs, window.contiguous(), video[:, :, plan.position - 1:plan.position].contiguous())


# ------------------------------------------------------------------------------------------- objective

def sample_times(batch: int, seq_len: int, generator: torch.Generator, time_shift: float = 1.0,
                 low_noise_fraction: float = 0.0) -> torch.Tensor:
    """Logit-normal times, shifted towards noise like the inference schedule for ``seq_len`` noisy tokens, times
    ``time_shift``; a ``low_noise_fraction`` of the samples keep the inference schedule's own shift.

    At high noise nothing of the section is visible, so that is where the model learns to take the layout and
    the motion from the context and the caption; at the inference shift of a small latent only about 4 % of the
    times are above 0.9, and a model trained so produces motionless sections (measured on the shapes world).
    The shifted times in turn leave little training below t = 0.3, where the sampler's last steps clean up
    backgrounds and edges (a model trained only so leaves fine noise that changes from frame to frame); the
    mixture keeps both.
    """
    t = torch.sigmoid(torch.randn(batch, generator=generator))
    mu = mu_for_seq_len(seq_len)
    shifted = flux_time_shift(t, mu + math.log(time_shift))
    if low_noise_fraction == 0:
        return shifted
    plain = torch.rand(batch, generator=generator) < low_noise_fraction
    return torch.where(plain, flux_time_shift(t, mu), shifted)


def motion_weights(batch: Batch, strength: float) -> torch.Tensor:
    """Per-position loss weights (B, 1, T, H, W): ``1 + strength x`` each latent position's change from the
    previous frame, relative to its clip's mean change.

    The weighting leaves the loss's minimiser (the conditional mean at every position) as it is and only moves
    the gradient's emphasis to the moving objects, a small part of the frame that decides whether a video moves.
    """
    frames = torch.cat([batch.previous, batch.target], dim=2)
    change = frames.diff(dim=2).abs().mean(dim=1, keepdim=True)
    return 1 + strength * change / change.mean(dim=(2, 3, 4), keepdim=True).clamp(min=1e-6)


def flow_matching_loss(model, batch: Batch, generator: torch.Generator, time_shift: float = 1.0,
                       motion_weight: float = 0.0, low_noise_fraction: float = 0.0) -> torch.Tensor:
    """(Weighted) MSE between the predicted and the true velocity ``noise - x0`` at random flow times."""
    x0 = batch.target
    _, _, frames, height, width = x0.shape
    t = sample_times(x0.shape[0], frames * height * width // 4, generator, time_shift, low_noise_fraction)
    noise = torch.randn(x0.shape, generator=generator)
    tt = t[:, None, None, None, None]
    x_t = (1 - tt) * x0 + tt * noise
    velocity = model(hidden_states=x_t, timestep=t * T_SCALE, **batch.model_inputs)
    error = (velocity - (noise - x0)).pow(2)
    if motion_weight == 0:
        return error.mean()
    weights = motion_weights(batch, motion_weight)
    return (weights * error).mean() / weights.mean()


def trainable_parameters(model: torch.nn.Module) -> dict:
    """Name -> parameter of what trains (all weights); a LoRA fine-tune would return its adapters here."""
    return dict(model.named_parameters())


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth at ``settings.steps``."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = min((step - settings.warmup_steps) / max(settings.steps - settings.warmup_steps, 1), 1.0)
    return settings.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(model, optimizer, batch: Batch, generator: torch.Generator, lr: float,
               settings: TrainSettings = TrainSettings()) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss = flow_matching_loss(model, batch, generator, settings.time_shift, settings.motion_weight,
                              settings.low_noise_fraction)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def update_ema(ema: dict, parameters: dict, decay: float) -> None:
    for name, param in parameters.items():
        ema[name].lerp_(param.detach(), 1 - decay)


# ------------------------------------------------------------------------------------------- the run

@dataclasses.dataclass
class Run:
    """The mutable state of a training run."""

    model: FramePackTransformer
    optimizer: torch.optim.Optimizer
    ema: dict
    generator: torch.Generator
    step: int
    elapsed: float


def new_model(config: FramePackConfig, seed: int) -> FramePackTransformer:
    """A freshly initialised model; the output projection starts at zero so the first predictions are calm."""
    torch.manual_seed(seed)
    model = FramePackTransformer(config)
    torch.nn.init.zeros_(model.proj_out.weight)
    torch.nn.init.zeros_(model.proj_out.bias)
    return model


def start_run(config: FramePackConfig, settings: TrainSettings) -> Run:
    model = new_model(config, settings.seed)
    if settings.init_weights:
        load_initial_weights(model, config, settings.init_weights)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params.values(), lr=settings.learning_rate, weight_decay=settings.weight_decay,
                                  betas=(0.9, 0.99))
    ema = {name: p.detach().clone() for name, p in params.items()}
    return Run(model, optimizer, ema, torch.Generator().manual_seed(settings.seed), 0, 0.0)


def load_initial_weights(model: FramePackTransformer, config: FramePackConfig, path: str) -> None:
    """Start a fine-tune from an exported model file, which must hold a model of the same config."""
    source = load_transformer(path)
    if source.config.to_dict() != config.to_dict():
        raise InputError(f"--init-weights {path} holds a model of another config ({source.config.to_dict()}); "
                         "train with that config (--config) or start from scratch.")
    model.load_state_dict(source.state_dict())
    log.info("fine-tuning from %s", path)


def train(run_dir, config: FramePackConfig = SHAPES_CONFIG, settings: TrainSettings = TrainSettings(), *,
          max_seconds: float | None = None) -> Run:
    """Train (or resume) in ``run_dir`` until ``settings.steps`` or ``max_seconds`` of this call; returns the run."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir, config, settings) if (run_dir / STATE).exists() else start_run(config, settings)
    params = trainable_parameters(run.model)
    run.model.train()
    began, window = time.monotonic(), []
    while run.step < settings.steps:
        tick = time.monotonic()
        batch = sample_batch(run.generator, settings)
        window.append(train_step(run.model, run.optimizer, batch, run.generator, learning_rate(run.step, settings),
                                 settings))
        update_ema(run.ema, params, settings.ema_decay)
        run.step += 1
        run.elapsed += time.monotonic() - tick
        if run.step % settings.log_every == 0:
            record_loss(run_dir, run, sum(window) / len(window), learning_rate(run.step - 1, settings))
            window = []
        out_of_time = max_seconds is not None and time.monotonic() - began >= max_seconds
        if run.step % settings.save_every == 0 or run.step == settings.steps or out_of_time:
            save_run(run_dir, run, config, settings)
        if out_of_time:
            log.info("stopping at step %d: the time limit of %.0f s is reached", run.step, max_seconds)
            break
    return run


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
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in run.model.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous() for k, v in run.ema.items()})
    names = {id(p): n for n, p in trainable_parameters(run.model).items()}
    for param, state in run.optimizer.state.items():
        for key, value in state.items():
            tensors[f"optimizer.{names[id(param)]}.{key}"] = value.contiguous()
    tensors["generator_state"] = run.generator.get_state()
    state = {"step": run.step, "elapsed_s": run.elapsed, "config": config.to_dict(),
             "settings": dataclasses.asdict(settings),
             "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in run.optimizer.param_groups]}
    save_file(tensors, run_dir / (CHECKPOINT + ".tmp"))
    (run_dir / (STATE + ".tmp")).write_text(json.dumps(state, indent=1), encoding="utf-8")
    os.replace(run_dir / (CHECKPOINT + ".tmp"), run_dir / CHECKPOINT)
    os.replace(run_dir / (STATE + ".tmp"), run_dir / STATE)
    log.info("saved the checkpoint of step %d to %s", run.step, run_dir)


def load_run(run_dir: Path, config: FramePackConfig, settings: TrainSettings) -> Run:
    """Resume a run; its config and data settings must match (only the step count may grow)."""
    state = json.loads((run_dir / STATE).read_text(encoding="utf-8"))
    if state["config"] != config.to_dict():
        raise InputError(f"{run_dir} holds a run of another model config ({state['config']}); "
                         "train with that config or choose a new run folder.")
    saved = dict(state["settings"], steps=settings.steps)
    saved["modes"] = tuple(saved["modes"])
    if saved != dataclasses.asdict(settings):
        raise InputError(f"{run_dir} was trained with settings {state['settings']}; resume with the same settings "
                         "(only --steps may change) or choose a new run folder.")
    tensors = load_file(run_dir / CHECKPOINT)
    run = start_run(config, settings)
    run.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    run.ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    params = trainable_parameters(run.model)
    for name, param in params.items():
        keys = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"optimizer.{name}.")
                and k.count(".") == name.count(".") + 2}
        if keys:
            run.optimizer.state[param] = keys
    for group, saved_group in zip(run.optimizer.param_groups, state["param_groups"]):
        group.update(saved_group)
    run.generator.set_state(tensors["generator_state"])
    run.step, run.elapsed = state["step"], state["elapsed_s"]
    log.info("resuming %s at step %d", run_dir, run.step)
    return run


def export_model(run: Run, config: FramePackConfig, path) -> Path:
    """Save the EMA weights as a single self-describing safetensors file (``load_transformer(path)`` reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in run.ema.items()}, path, metadata=save_config_metadata(config))
    log.info("exported the EMA weights of step %d to %s", run.step, path)
    return path


# ------------------------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m framepack_shapes.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder (checkpoint, loss log); an existing one resumes")
    parser.add_argument("--config", help="model config JSON (FramePackConfig fields); default: the shapes config")
    parser.add_argument("--export", help="write the EMA weights to this .safetensors file at the end")
    parser.add_argument("--max-minutes", type=float, help="stop (and save) after this many minutes")
    # One thread by default: on a small host shared with other work, two threads on two cores spend most of
    # their time spin-waiting whenever one is descheduled (measured: 1.3 s/step with two, 0.5 s with one).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    defaults = TrainSettings()
    for field in dataclasses.fields(TrainSettings):
        if field.name != "modes":
            parser.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                                default=getattr(defaults, field.name))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES,
                        help="sampling modes to train, drawn uniformly per step; repeat one to weight it")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SHAPES_CONFIG
    if args.config:
        config = FramePackConfig.from_dict(json.loads(Path(args.config).read_text(encoding="utf-8")))
    settings = TrainSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)})
    max_seconds = None if args.max_minutes is None else args.max_minutes * 60
    run = train(args.run, config, settings, max_seconds=max_seconds)
    if args.export:
        export_model(run, config, args.export)


if __name__ == "__main__":
    main()
