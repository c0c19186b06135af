"""TeaCache: skip the transformer blocks on steps whose input barely changed, reusing the last residual.

The holder lives outside the model and is passed to each forward call (``model(..., cache=holder)``), so
one model can serve several runs. The change measure is the relative L1 distance between consecutive
steps' modulated input of the first dual-stream block, rescaled by TeaCache's HunyuanVideo polynomial
and accumulated until it reaches the threshold. The first and last step of a section always compute.
It assumes one transformer call per sampling step (real CFG 1), as the reference does.
"""

from __future__ import annotations

import torch

# TeaCache's published rescaling polynomial for HunyuanVideo, highest power first.
HUNYUAN_COEFFICIENTS = (733.226126, -401.131952, 67.5869174, -3.14987800, 0.0961237896)


def rescale(distance: float, coefficients=HUNYUAN_COEFFICIENTS) -> float:
    value = 0.0
    for c in coefficients:
        value = value * distance + c
    return value


class TeaCache:
    """Per-section step cache. Call ``reset(steps)`` before every section (the sampler loop does)."""

    def __init__(self, threshold: float = 0.15, steps: int = 25):
        if not threshold >= 0:
            raise ValueError(f"TeaCache threshold must be >= 0 (0 disables skipping), got {threshold!r}; 0.15 is the usual value.")
        self.threshold = float(threshold)
        self.computed_steps = 0
        self.skipped_steps = 0
        self.reset(steps)

    def reset(self, steps: int) -> None:
        """Start a new section of ``steps`` model calls."""
        if steps < 1:
            raise ValueError(f"TeaCache needs the number of steps per section (>= 1), got {steps!r}.")
        self.steps = int(steps)
        self.step = 0
        self.accumulated = 0.0
        self.previous_input = None
        self.residual = None

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
        self.step = (self.step + 1) % self.steps
        self.computed_steps += compute
        self.skipped_steps += not compute
        return compute

    def reuse(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual

    def store(self, residual: torch.Tensor) -> None:
        self.residual = residual
