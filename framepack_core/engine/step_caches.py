"""Step caches: skip the transformer blocks on some sampling steps, reusing the last computed residual.

A holder lives outside the model and is passed to each forward call (``model(..., cache=holder)``), so
one model can serve several runs; it answers ``should_compute(modulated_input)``, then gets ``store``
(the blocks' residual) or ``reuse`` (add the stored one), and ``reset(steps)`` starts a section. Both
assume one transformer call per sampling step (real CFG 1), as the reference does.

- ``TeaCache``: the change measure is the relative L1 distance between consecutive steps' modulated input
  of the first dual-stream block, rescaled by TeaCache's HunyuanVideo polynomial and accumulated until it
  reaches the threshold. The first and last step of a section always compute.
- ``MagCache``: MagCache's rule (Ma et al. 2025) with the magnitude ratios estimated online: the norm of
  the blocks' residual changes by a nearly constant factor per step, so a skipped step's error is
  estimated from the ratio of the last two computed residuals' norms, accumulated as ``|1 - prod ratio|``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

# TeaCache's published rescaling polynomial for HunyuanVideo, highest power first.
HUNYUAN_COEFFICIENTS = (733.226126, -401.131952, 67.5869174, -3.14987800, 0.0961237896)


def rescale(distance: float, coefficients=HUNYUAN_COEFFICIENTS) -> float:
    value = 0.0
    for c in coefficients:
        value = value * distance + c
    return value


class StepCache:
    """What every step cache shares: per-section step counting, the residual it reuses, skip statistics.

    Subclasses decide in ``should_compute`` and finish each decision with ``advance(compute)``.
    """

    def __init__(self, steps: int):
        self.computed_steps = 0
        self.skipped_steps = 0
        self.reset(steps)

    def reset(self, steps: int) -> None:
        """Start a new section of ``steps`` model calls."""
        if steps < 1:
            raise ValueError(f"{type(self).__name__} needs the number of steps per section (>= 1), got {steps!r}.")
        self.steps = int(steps)
        self.step = 0
        self.residual = None

    def advance(self, compute: bool) -> bool:
        self.step = (self.step + 1) % self.steps
        self.computed_steps += compute
        self.skipped_steps += not compute
        return compute

    def reuse(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual

    def store(self, residual: torch.Tensor) -> None:
        self.residual = residual


class TeaCache(StepCache):
    """Per-section step cache. Call ``reset(steps)`` before every section (the sampler loop does)."""

    def __init__(self, threshold: float = 0.15, steps: int = 25):
        if not threshold >= 0:
            raise ValueError(f"TeaCache threshold must be >= 0 (0 disables skipping), got {threshold!r}; 0.15 is the usual value.")
        self.threshold = float(threshold)
        super().__init__(steps)

    def reset(self, steps: int) -> None:
        super().reset(steps)
        self.accumulated = 0.0
        self.previous_input = None

    def should_compute(self, modulated_input: torch.Tensor) -> bool:
        """Decide for this call; ``modulated_input`` is the first block's modulated image-stream input."""
        edge = self.step == 0 or self.step == self.steps - 1
        if edge or self.previous_input is None or self.residual is None:
            compute = True
        else:
            previous = self.previous_input
            distance = ((modulated_input - previous).abs().mean() / previous.abs().mean()).item()
            self.accumulated += rescale(distance)
            compute = self.accumulated >= self.threshold
        if compute:
            self.accumulated = 0.0
        self.previous_input = modulated_input
        return self.advance(compute)


class MagCache(StepCache):
    """Per-section step cache skipping by the accumulated change of residual magnitudes.

    ``threshold`` bounds the accumulated error estimate of the steps skipped in a row, ``max_skips`` their
    number, and the first ``retention`` fraction of a section's steps (where the residual changes fastest)
    and its last step always compute. ``reset(steps)`` starts a section, as for ``TeaCache``.
    """

    def __init__(self, threshold: float = 0.1, steps: int = 25, max_skips: int = 2, retention: float = 0.2):
        if not threshold >= 0:
            raise ValueError(f"MagCache threshold must be >= 0 (0 disables skipping), got {threshold!r}; 0.1 is usual.")
        if not isinstance(max_skips, int) or max_skips < 0:
            raise ValueError(f"MagCache max_skips must be an integer >= 0, got {max_skips!r}.")
        if not 0 <= retention <= 1:
            raise ValueError(f"MagCache retention must be a fraction of the steps from 0 to 1, got {retention!r}.")
        self.threshold, self.max_skips, self.retention = float(threshold), max_skips, float(retention)
        super().__init__(steps)

    def reset(self, steps: int) -> None:
        super().reset(steps)
        self.current = 0
        self.magnitudes = []  # (step, mean token L2 norm of the residual) of the computed steps
        self._restart()

    def _restart(self) -> None:
        self.ratio_product, self.error, self.skips = 1.0, 0.0, 0

    def step_ratio(self) -> float | None:
        """Residual magnitude ratio per step, from the last two computed steps (None before two exist)."""
        if len(self.magnitudes) < 2:
            return None
        (s0, m0), (s1, m1) = self.magnitudes[-2:]
        return (m1 / m0) ** (1 / (s1 - s0)) if m0 > 0 else None

    def should_compute(self, modulated_input: torch.Tensor) -> bool:
        """Decide for this call (the modulated input is part of the interface; MagCache does not need it)."""
        self.current = self.step
        ratio = self.step_ratio()
        always = self.step < math.ceil(self.retention * self.steps) or self.step == self.steps - 1
        if always or self.residual is None or ratio is None:
            compute = True
        else:
            self.ratio_product *= ratio
            self.error += abs(1 - self.ratio_product)
            compute = self.error >= self.threshold or self.skips >= self.max_skips
        if compute:
            self._restart()
        else:
            self.skips += 1
        return self.advance(compute)

    def store(self, residual: torch.Tensor) -> None:
        super().store(residual)
        self.magnitudes = (self.magnitudes + [(self.current, residual.float().norm(dim=-1).mean().item())])[-2:]


@dataclasses.dataclass(frozen=True)
class StepCacheChoice:
    """Which step cache a run uses (``kind`` 'teacache' or 'magcache', and its threshold): a fresh cache is
    made from it for every section."""

    kind: str
    threshold: float

    def __post_init__(self):
        if self.kind not in STEP_CACHES:
            raise ValueError(f"unknown step cache {self.kind!r}; choose one of {', '.join(STEP_CACHES)}.")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"the {self.kind} threshold must be a finite number >= 0 (0 disables skipping), "
                             f"got {self.threshold!r}.")

    def new_cache(self, steps: int) -> StepCache:
        return STEP_CACHES[self.kind](self.threshold, steps)


STEP_CACHES = {"teacache": TeaCache, "magcache": MagCache}
