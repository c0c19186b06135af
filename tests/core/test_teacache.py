"""TeaCache decisions and their effect on the transformer's output."""

import pytest
import torch

from framepack_core.engine.step_caches import HUNYUAN_COEFFICIENTS, TeaCache, rescale
from framepack_core.model.transformer import ReferenceArguments


def run_steps(model, args, cache, steps):
    """``steps`` forward calls of one section, the timestep falling from 1000, sharing ``cache`` (``args`` are
    the golden case's, with the reference's named clean inputs)."""
    outs = []
    with torch.no_grad():
        for i in range(steps):
            timestep = torch.tensor([1000.0 * (1 - i / steps)])
            outs.append(ReferenceArguments(model)(**{**args, "timestep": timestep}, cache=cache))
    return outs


def test_rescale_polynomial():
    assert rescale(0.0) == pytest.approx(HUNYUAN_COEFFICIENTS[-1])
    r = 0.1
    expected = sum(c * r ** (4 - i) for i, c in enumerate(HUNYUAN_COEFFICIENTS))
    assert rescale(r) == pytest.approx(expected)


def test_threshold_zero_computes_every_step_and_matches_uncached(model, args):
    cache = TeaCache(threshold=0.0, steps=4)
    cached = run_steps(model, args, cache, 4)
    plain = run_steps(model, args, None, 4)
    assert cache.computed_steps == 4 and cache.skipped_steps == 0
    for a, b in zip(cached, plain):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_large_threshold_computes_only_first_and_last_step(model, args):
    cache = TeaCache(threshold=1e9, steps=5)
    cached = run_steps(model, args, cache, 5)
    plain = run_steps(model, args, None, 5)
    assert (cache.computed_steps, cache.skipped_steps) == (2, 3)
    torch.testing.assert_close(cached[0], plain[0], atol=0, rtol=0)
    torch.testing.assert_close(cached[-1], plain[-1], atol=0, rtol=0)
    assert (cached[2] - plain[2]).abs().max() > 1e-4  # a skipped step reuses the residual: an approximation


def test_reset_starts_a_new_section(model, args):
    cache = TeaCache(threshold=1e9, steps=3)
    run_steps(model, args, cache, 3)
    cache.reset(3)
    assert cache.residual is None and cache.step == 0
    run_steps(model, args, cache, 3)
    assert (cache.computed_steps, cache.skipped_steps) == (4, 2)


@pytest.mark.parametrize("threshold", [-0.1, float("nan")])
def test_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold"):
        TeaCache(threshold=threshold)
