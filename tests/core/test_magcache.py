"""MagCache decisions (online magnitude ratios), their effect on the output, and choosing a step cache in the settings."""

import logging

import pytest
import torch

from framepack_core import InputError
from framepack_core.engine.generate import (GenerationSettings, TransformerSectionSampler, check_settings, generate,
                                     section_step_cache)
from framepack_core.engine.step_caches import MagCache, TeaCache
from test_generate import make_inputs
from test_teacache import run_steps

def residual(magnitude):
    """A one-token residual whose L2 norm is ``magnitude``."""
    out = torch.zeros(1, 1, 4)
    out[..., 0] = magnitude
    return out


def test_threshold_zero_computes_every_step_and_matches_uncached(model, args):
    cache = MagCache(threshold=0.0, steps=6, retention=0.0)
    cached = run_steps(model, args, cache, 6)
    plain = run_steps(model, args, None, 6)
    assert (cache.computed_steps, cache.skipped_steps) == (6, 0)
    for a, b in zip(cached, plain):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_large_threshold_skips_at_most_max_skips_in_a_row_after_the_retention_steps(model, args):
    cache = MagCache(threshold=1e9, steps=8, max_skips=2, retention=0.2)
    cached = run_steps(model, args, cache, 8)
    plain = run_steps(model, args, None, 8)
    # ceil(0.2 * 8) = 2 retention steps (0, 1) measure the first ratio; then 2 skips, 1 compute, 2 skips, last step.
    assert (cache.computed_steps, cache.skipped_steps) == (4, 4)
    for step in (0, 1):
        torch.testing.assert_close(cached[step], plain[step], atol=0, rtol=0)
    assert (cached[2] - plain[2]).abs().max() > 1e-4  # a skipped step reuses the residual: an approximation


def test_no_skips_allowed_computes_every_step(model, args):
    cache = MagCache(threshold=1e9, steps=5, max_skips=0, retention=0.0)
    run_steps(model, args, cache, 5)
    assert (cache.computed_steps, cache.skipped_steps) == (5, 0)


def test_error_accumulates_one_minus_the_product_of_ratios():
    cache = MagCache(threshold=0.15, steps=10, max_skips=5, retention=0.0)
    x = torch.zeros(1, 1, 4)
    assert cache.should_compute(x)  # step 0: nothing stored yet
    cache.store(residual(1.0))
    assert cache.should_compute(x)  # step 1: one magnitude, no ratio yet
    cache.store(residual(0.9))
    assert cache.step_ratio() == pytest.approx(0.9)
    assert not cache.should_compute(x)  # step 2: error |1 - 0.9| = 0.1 < 0.15
    assert cache.should_compute(x)  # step 3: error 0.1 + |1 - 0.81| = 0.29 >= 0.15
    cache.store(residual(0.9 ** 3))  # the ratio per step spans the skipped step
    assert cache.step_ratio() == pytest.approx(0.9)
    assert cache.error == 0 and cache.ratio_product == 1


def test_reset_starts_a_new_section(model, args):
    cache = MagCache(threshold=1e9, steps=5, max_skips=2, retention=0.0)
    run_steps(model, args, cache, 5)
    cache.reset(5)
    assert cache.residual is None and cache.step == 0 and cache.magnitudes == []
    run_steps(model, args, cache, 5)
    assert cache.computed_steps == 2 * 3 and cache.skipped_steps == 2 * 2


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": -0.1}, "threshold"), ({"threshold": float("nan")}, "threshold"),
    ({"max_skips": -1}, "max_skips"), ({"retention": 1.5}, "retention"), ({"steps": 0}, "steps"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MagCache(**kwargs)


# ------------------------------------------------------------------ choosing a step cache in the settings

def test_settings_choose_the_step_cache():
    assert section_step_cache(GenerationSettings()) is None
    tea = section_step_cache(GenerationSettings(teacache_threshold=0.15, steps=9))
    mag = section_step_cache(GenerationSettings(magcache_threshold=0.1, steps=9))
    assert type(tea) is TeaCache and (tea.threshold, tea.steps) == (0.15, 9)
    assert type(mag) is MagCache and (mag.threshold, mag.steps) == (0.1, 9)


def test_real_cfg_turns_step_caching_off_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert section_step_cache(GenerationSettings(magcache_threshold=0.1, real_cfg=3.0)) is None
    assert "real CFG 3.0" in caplog.text


@pytest.mark.parametrize("settings, match", [
    (dict(teacache_threshold=0.1, magcache_threshold=0.1), "choose one step cache"),
    (dict(magcache_threshold=-0.5), "magcache_threshold must be >= 0"),
    (dict(magcache_threshold=float("nan")), "magcache_threshold must be >= 0"),
])
def test_bad_step_cache_settings(settings, match):
    with pytest.raises(InputError, match=match):
        check_settings(GenerationSettings(**settings))


@pytest.mark.parametrize("cache", ["teacache_threshold", "magcache_threshold"])
def test_generation_uses_the_chosen_cache(model, cache):
    """A huge threshold makes the chosen cache skip steps: the video changes, a little."""
    run = lambda threshold: generate(TransformerSectionSampler(model), make_inputs(), GenerationSettings(  # noqa: E731
        mode="vanilla", num_sections=2, latent_window_size=2, steps=8, **{cache: threshold}))
    plain, cached = run(0.0), run(1.0)
    change = float((cached - plain).norm() / plain.norm())
    assert 1e-4 < change < 0.5
