"""The training objective: flow matching on one section, its context packed exactly as inference packs it.

A section's clean target latents are noised with ``x_t = (1 - t) x0 + t noise``; the transformer regresses the
velocity ``noise - x0`` (MSE, optionally weighted towards what moves). Every sample draws its time and noise from
its own generator, seeded by the sample's key, so a sample's loss does not depend on which batch, process or
accumulation step it lands in: that is what makes N processes equal one process with N times the batch.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..engine.sampling import T_SCALE, flux_time_shift, mu_for_seq_len


@dataclasses.dataclass
class Batch:
    """One training batch: a section plan, its clean context (model keywords), its clean target latents, the true
    frame before them, and one key per sample (seeds its time and noise)."""

    plan: object
    model_inputs: dict
    target: torch.Tensor
    previous: torch.Tensor
    keys: list


def sample_times(batch: int, seq_len: int, generator: torch.Generator, time_shift: float = 1.0,
                 low_noise_fraction: float = 0.0) -> torch.Tensor:
    """Logit-normal times, shifted towards noise like the inference schedule for ``seq_len`` noisy tokens, times
    ``time_shift``; a ``low_noise_fraction`` of the samples keep the inference schedule's own shift.

    At high noise nothing of the section is visible, so that is where the model learns to take the layout and
    the motion from the context and the caption; at the inference shift of a small latent only about 4 % of the
    times are above 0.9, and a model trained so produces motionless sections (measured on the shapes world).
    The shifted times in turn leave little training below t = 0.3, where the sampler's last steps clean up
    backgrounds and edges; the mixture keeps both.
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


def times_and_noise(batch: Batch, time_shift: float, low_noise_fraction: float) -> tuple:
    """Each sample's flow time (B,) and noise (B, C, T, H, W), drawn from a generator seeded by its key."""
    _, _, frames, height, width = batch.target.shape
    seq_len = frames * height * width // 4
    times, noises = [], []
    for key in batch.keys:
        generator = torch.Generator().manual_seed(int(key))
        times.append(sample_times(1, seq_len, generator, time_shift, low_noise_fraction))
        noises.append(torch.randn(batch.target.shape[1:], generator=generator))
    return torch.cat(times), torch.stack(noises).to(batch.target.device)


def flow_matching_loss(model, batch: Batch, time_shift: float = 1.0, motion_weight: float = 0.0,
                       low_noise_fraction: float = 0.0) -> torch.Tensor:
    """The mean over samples of each sample's (weighted) MSE between predicted and true velocity."""
    x0 = batch.target
    t, noise = times_and_noise(batch, time_shift, low_noise_fraction)
    t = t.to(x0.device)
    tt = t[:, None, None, None, None]
    velocity = model(hidden_states=(1 - tt) * x0 + tt * noise, timestep=t * T_SCALE, **batch.model_inputs)
    error = (velocity.float() - (noise - x0)).pow(2)
    if motion_weight == 0:
        return error.mean()
    weights = motion_weights(batch, motion_weight)
    per_sample = (weights * error).mean(dim=(1, 2, 3, 4)) / weights.mean(dim=(1, 2, 3, 4))
    return per_sample.mean()
