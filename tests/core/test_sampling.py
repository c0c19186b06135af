"""Schedule, samplers and CFG wrapper of framepack_core.engine.sampling, against the golden sampler data and analytic models."""

import math

import pytest
import torch

from framepack_core import InputError
from framepack_core.engine.sampling import (FlowDenoiser, apply_cfg, flow_sigmas, flux_time_shift, mu_for_seq_len,
                                     sample_euler, sample_unipc)

CASES = ("inverted_cfg1", "f1_cfg3")
TOL = dict(atol=1e-4, rtol=1e-4)


def case_tensors(golden_sampler, case):
    return {k.split("/", 1)[1]: v for k, v in golden_sampler.items() if k.startswith(case + "/")}


def collect(steps_seen):
    """A callback storing each step's dict by index."""
    return lambda d: steps_seen.__setitem__(d["i"], d)


# ---------------------------------------------------------------------------------------------- schedule

@pytest.mark.parametrize("case", CASES)
def test_flow_sigmas_match_golden_bit_for_bit(golden_sampler, golden_sampler_info, case):
    """The seq_len-derived schedule equals the reference's float32 sigmas exactly."""
    params = golden_sampler_info["cases"][case]["params"]
    sigmas = flow_sigmas(params["steps"], seq_len=params["seq_len"])
    assert sigmas.dtype == torch.float32
    torch.testing.assert_close(sigmas, golden_sampler[f"{case}/sigmas"], atol=0, rtol=0)
    assert mu_for_seq_len(params["seq_len"]) == params["mu"]


@pytest.mark.parametrize("seq_len", [14400, 13680, 13464])
def test_flow_sigmas_real_resolution(golden_sampler_info, seq_len):
    """Every 640-bucket token count hits the ln 7 cap and gives the demo's 25-step schedule."""
    expected = torch.tensor(golden_sampler_info["real_resolution_schedule_25_steps"]["sigmas"])
    torch.testing.assert_close(flow_sigmas(25, seq_len=seq_len), expected, atol=1e-6, rtol=0)
    assert flow_sigmas(25, seq_len=seq_len)[-2].item() == pytest.approx(0.22580644, abs=1e-7)


def test_mu_line_and_cap():
    """mu is 0.5 at 256 tokens, 1.15 at 4096, linear between, and never above ln 7."""
    assert mu_for_seq_len(256) == pytest.approx(0.5, abs=1e-12)
    assert mu_for_seq_len(4096) == pytest.approx(1.15, abs=1e-12)
    assert mu_for_seq_len(2176) == pytest.approx(0.825, abs=1e-12)
    assert mu_for_seq_len(14400) == math.log(7.0)
    assert mu_for_seq_len(10 ** 9) == math.log(7.0)
    assert mu_for_seq_len(8700) < math.log(7.0) == mu_for_seq_len(8900)  # the cap binds from ~8798 tokens


def test_manual_shift_overrides_seq_len():
    """shift=s gives sigma = s*t / (1 + (s-1)*t) and takes precedence over seq_len."""
    t = torch.linspace(1, 0, 9, dtype=torch.float64)
    expected = (3.0 * t / (1 + 2.0 * t)).float()
    torch.testing.assert_close(flow_sigmas(8, shift=3.0), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(flow_sigmas(8, shift=3.0, seq_len=14400), expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(flow_sigmas(8, shift=1.0), t.float(), atol=1e-7, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 25, 100])
def test_flow_sigmas_shape_and_monotonic(steps):
    sigmas = flow_sigmas(steps, seq_len=1560 * 9)
    assert sigmas.shape == (steps + 1,) and sigmas[0] == 1 and sigmas[-1] == 0
    assert torch.all(sigmas[1:] < sigmas[:-1])


def test_flux_time_shift_formula():
    t = torch.tensor([1.0, 0.5, 0.25, 0.0])
    torch.testing.assert_close(flux_time_shift(t, math.log(2.0)), torch.tensor([1.0, 2 / 3, 0.4, 0.0]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0, seq_len=100), "steps must be an integer >= 1, got 0"),
    (dict(steps=2.5, seq_len=100), "steps .* got 2.5"),
    (dict(steps=True, seq_len=100), "steps .* got True"),
    (dict(steps=4, seq_len=0), "seq_len must be a positive .* got 0"),
    (dict(steps=4, seq_len=-3), "seq_len .* got -3"),
    (dict(steps=4, shift=0.0), "shift must be a positive number, got 0.0"),
    (dict(steps=4, shift=float("nan")), "shift .* got nan"),
    (dict(steps=4), "neither seq_len nor shift"),
])
def test_flow_sigmas_rejects_bad_arguments(kwargs, match):
    steps = kwargs.pop("steps")
    with pytest.raises(InputError, match=match):
        flow_sigmas(steps, **kwargs)


# ------------------------------------------------------------------------------------- golden_sampler replay

@pytest.mark.parametrize("case", CASES)
def test_unipc_replays_golden_trajectory(golden_sampler, case):
    """Fed the reference's model outputs, UniPC reproduces every reference state and the final latents."""
    c = case_tensors(golden_sampler, case)
    sigmas, steps = c["sigmas"], len(c["sigmas"]) - 1
    seen_sigmas = []

    def replay_model(x, sigma):
        assert x.shape == c["initial_noise"].shape and sigma.shape == (1,)
        seen_sigmas.append(sigma.item())
        return c["step_denoised"][len(seen_sigmas) - 1]

    steps_seen = {}
    result = sample_unipc(replay_model, c["initial_noise"], sigmas, callback=collect(steps_seen))

    assert seen_sigmas == sigmas[:-1].tolist()
    assert sorted(steps_seen) == list(range(steps))
    for i, d in steps_seen.items():
        torch.testing.assert_close(d["x"], c["step_x"][i], **TOL)
        torch.testing.assert_close(d["denoised"], c["step_denoised"][i], **TOL)
        assert d["sigma"] == sigmas[i] and d["sigma_hat"] == sigmas[i]
    torch.testing.assert_close(result, c["final_latents"], **TOL)


# ----------------------------------------------------------------------------------- analytic models

class GaussianData:
    """Per-element Gaussian data x0 ~ N(mu, s^2): its exact denoiser and probability-flow trajectory are known.

    With x_t = (1-t) x0 + t n, the ODE from noise z at t = 1 is x_t = (1-t) mu + sqrt(v(t)) z with
    v(t) = (1-t)^2 s^2 + t^2, and E[x0 | x_t] = mu + (1-t) s^2 / v(t) * (x_t - (1-t) mu).
    """

    def __init__(self, shape=(2, 4, 3, 4, 4), seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(shape, generator=g, dtype=torch.float64)
        self.s = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
        self.z = torch.randn(shape, generator=g, dtype=torch.float64)
        self.calls = 0

    def var(self, t):
        return (1 - t) ** 2 * self.s ** 2 + t ** 2

    def __call__(self, x, sigma):
        self.calls += 1
        t = sigma.double().reshape(-1, *[1] * (x.ndim - 1))
        return self.mu + (1 - t) * self.s ** 2 / self.var(t) * (x.double() - (1 - t) * self.mu)

    def state(self, t):
        return (1 - t) * self.mu + self.var(t).sqrt() * self.z


def state_error(sampler, steps, **kwargs):
    """Max error of the sampler's state at the last evaluated sigma on a grid with bounded lambda steps."""
    data = GaussianData()
    sigmas = torch.cat([torch.linspace(1, 0.2, steps), torch.zeros(1)])
    steps_seen = {}
    sampler(data, data.z.float(), sigmas, callback=collect(steps_seen), **kwargs)
    return (steps_seen[steps - 1]["x"].double() - data.state(float(sigmas[-2]))).abs().max().item()


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_converges_at_high_order(variant):
    """Halving the step size cuts the error > 10x (order 3 + corrector); a wrong coefficient drops the order."""
    coarse, fine = state_error(sample_unipc, 16, variant=variant), state_error(sample_unipc, 32, variant=variant)
    assert fine < 1e-3
    assert coarse / fine > 10


def test_euler_converges_at_first_order():
    coarse, fine = state_error(sample_euler, 16), state_error(sample_euler, 32)
    assert 1.6 < coarse / fine < 2.5


def demo_schedule_errors(sampler, **kwargs):
    """Max state error and mean result error against the exact solution, 25 steps at shift 7."""
    data = GaussianData()
    sigmas = flow_sigmas(25, shift=7.0)
    steps_seen = {}
    result = sampler(data, data.z.float(), sigmas, callback=collect(steps_seen), **kwargs)
    assert data.calls == 25 and result.dtype == torch.float32
    state = max((d["x"].double() - data.state(float(sigmas[i]))).abs().max().item() for i, d in steps_seen.items())
    expected = data(data.state(float(sigmas[-2])), sigmas[-2:-1].expand(2))
    return state, (result.double() - expected).abs().mean().item()


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_follows_exact_trajectory_on_demo_schedule(variant):
    """On the demo schedule UniPC's states stay close to the exact ODE solution, far closer than Euler's."""
    state, result = demo_schedule_errors(sample_unipc, variant=variant)
    euler_state, euler_result = demo_schedule_errors(sample_euler)
    assert state < 0.06 and result < 0.03
    assert state < euler_state / 5 and result < euler_result / 2


@pytest.mark.parametrize("sampler", [sample_unipc, sample_euler])
def test_constant_denoiser_is_reached_exactly(sampler):
    """A model whose x0 is always c returns exactly c; the states follow x_t = c + t (noise - c)."""
    c = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    sigmas = flow_sigmas(6, shift=3.0)
    steps_seen = {}
    result = sampler(lambda x, sigma: c, noise, sigmas, callback=collect(steps_seen))
    assert torch.equal(result, c)
    for i, d in steps_seen.items():
        torch.testing.assert_close(d["x"], c + sigmas[i] * (noise - c), atol=1e-6, rtol=0)


def nonlinear_model(x, sigma):
    """A deterministic, nonlinear stand-in denoiser."""
    return torch.tanh(x) * (1 - sigma.reshape(-1, 1, 1)) + 0.3 * sigma.reshape(-1, 1, 1) * x


@pytest.fixture
def noise():
    return torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(3))


def test_euler_single_step_returns_denoised(noise):
    result = sample_euler(nonlinear_model, noise, torch.tensor([1.0, 0.0]))
    assert torch.equal(result, nonlinear_model(noise, torch.ones(2)))


def test_unipc_single_step_is_one_call(noise):
    calls = []
    result = sample_unipc(lambda x, s: calls.append(s) or nonlinear_model(x, s), noise, torch.tensor([1.0, 0.0]))
    assert len(calls) == 1 and torch.equal(result, nonlinear_model(noise, torch.ones(2)))


def test_unipc_two_steps_equals_euler(noise):
    """At two steps UniPC is first order: same model inputs as Euler, so the same final x0."""
    sigmas = flow_sigmas(2, shift=3.0)
    unipc, euler = sample_unipc(nonlinear_model, noise, sigmas), sample_euler(nonlinear_model, noise, sigmas)
    torch.testing.assert_close(unipc, euler, atol=1e-6, rtol=0)


def test_bh1_and_bh2_differ_from_three_steps(noise):
    """The variants share the predictor of step 1 but their correctors differ, which shows from step 2 on."""
    two, three = flow_sigmas(2, shift=3.0), flow_sigmas(3, shift=3.0)
    bh2 = sample_unipc(nonlinear_model, noise, two, variant="bh2")
    assert torch.equal(sample_unipc(nonlinear_model, noise, two), bh2)
    diff = (sample_unipc(nonlinear_model, noise, three) - sample_unipc(nonlinear_model, noise, three, variant="bh2"))
    assert diff.abs().max() > 1e-4


@pytest.mark.parametrize("sampler", [sample_unipc, sample_euler])
def test_sampler_calling_convention(sampler, noise):
    """k-diffusion contract: sigma as a (batch,) tensor, extra_args forwarded, dict callback, float32 state."""
    sigmas = flow_sigmas(4, shift=3.0)
    seen = []

    def model(x, sigma, scale):
        assert x.dtype == torch.float32 and sigma.shape == (x.shape[0],)
        seen.append(sigma[0].item())
        return (scale * nonlinear_model(x.float(), sigma)).to(torch.bfloat16)

    steps_seen = {}
    result = sampler(model, noise.double(), sigmas, extra_args={"scale": 0.5}, callback=collect(steps_seen),
                     disable=True)
    assert seen == sigmas[:-1].tolist()
    assert sorted(steps_seen) == [0, 1, 2, 3]
    assert set(steps_seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert torch.equal(steps_seen[0]["x"], noise)
    assert result.dtype == torch.float32


def test_unipc_rejects_bad_input(noise):
    with pytest.raises(InputError, match="variant must be one of .* got 'bh3'"):
        sample_unipc(nonlinear_model, noise, flow_sigmas(4, shift=3.0), variant="bh3")
    with pytest.raises(InputError, match="ending in 0"):
        sample_unipc(nonlinear_model, noise, torch.tensor([1.0, 0.5]))
    with pytest.raises(InputError, match="1-D tensor of at least 2"):
        sample_unipc(nonlinear_model, noise, torch.tensor([1.0]))


def test_euler_stops_at_nonzero_sigma(noise):
    """A partial schedule returns the state at its last sigma (exact for a constant denoiser)."""
    c = torch.full_like(noise, 0.25)
    result = sample_euler(lambda x, s: c, noise, torch.tensor([1.0, 0.6, 0.3]))
    torch.testing.assert_close(result, c + 0.3 * (noise - c), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------- CFG

def test_apply_cfg_at_one_returns_pos():
    pos = torch.randn(2, 3, 4)
    assert apply_cfg(pos, None, 1.0) is pos
    assert torch.equal(apply_cfg(pos, torch.zeros_like(pos), 1.0), pos)


def test_apply_cfg_without_rescale():
    pos, neg = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(apply_cfg(pos, neg, 3.0), torch.tensor([[3.0, 4.0]]))


def test_apply_cfg_rescale_per_sample():
    """Sample 0: pred = 2*pos, std ratio 1/2. Sample 1: pos has std 0, so its rescaled part vanishes."""
    pos = torch.tensor([[[1.0, 3.0], [1.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]])
    neg = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 2.0]]])
    pred = torch.tensor([[[2.0, 6.0], [2.0, 6.0]], [[2.0, 0.0], [2.0, 0.0]]])
    torch.testing.assert_close(apply_cfg(pos, neg, 2.0), pred)
    expected = torch.stack([0.5 * pos[0] + 0.5 * pred[0], 0.5 * pred[1]])
    torch.testing.assert_close(apply_cfg(pos, neg, 2.0, rescale=0.5), expected)
    torch.testing.assert_close(apply_cfg(pos, neg, 2.0, rescale=1.0)[0], pos[0])


def test_apply_cfg_needs_negative():
    with pytest.raises(InputError, match="real_cfg is 3.0"):
        apply_cfg(torch.ones(1, 2), None, 3.0)


class FakeTransformer:
    """Records its calls; the velocity depends on the conditioning so that CFG is observable."""

    def __init__(self, compute_dtype=None):
        if compute_dtype is not None:
            self.compute_dtype = compute_dtype
        self.calls = []

    def __call__(self, hidden_states, timestep, guidance, encoder_hidden_states, **kwargs):
        self.calls.append(dict(hidden_states=hidden_states, timestep=timestep, guidance=guidance,
                               encoder_hidden_states=encoder_hidden_states, **kwargs))
        return hidden_states.float() * encoder_hidden_states


def test_flow_denoiser_real_cfg_1_makes_one_call():
    transformer = FakeTransformer()
    positive = dict(encoder_hidden_states=torch.tensor(2.0), pooled_projections="pooled")
    denoiser = FlowDenoiser(transformer, positive, shared=dict(latent_indices="idx"))
    x, sigma = torch.randn(2, 16, 1, 2, 2), torch.tensor([0.5, 0.5])
    x0 = denoiser(x, sigma)
    (call,) = transformer.calls
    assert call["pooled_projections"] == "pooled" and call["latent_indices"] == "idx"
    torch.testing.assert_close(call["timestep"], torch.tensor([500.0, 500.0]))
    torch.testing.assert_close(call["guidance"], torch.tensor([10000.0, 10000.0]))
    assert call["hidden_states"].dtype == call["timestep"].dtype == call["guidance"].dtype == torch.float32
    torch.testing.assert_close(x0, x - 2.0 * x * 0.5)


def test_flow_denoiser_cfg_and_rescale():
    """Negative call with its own conditioning, shared kwargs in both, CFG and rescale applied to v."""
    transformer = FakeTransformer()
    positive, negative = dict(encoder_hidden_states=torch.tensor(2.0)), dict(encoder_hidden_states=torch.tensor(0.5))
    denoiser = FlowDenoiser(transformer, positive, negative, shared=dict(clean_latents="clean"), distilled_cfg=6.0,
                            real_cfg=3.0, cfg_rescale=0.7)
    x, sigma = torch.randn(1, 16, 1, 2, 2), torch.tensor([0.25])
    x0 = denoiser(x, sigma)
    assert len(transformer.calls) == 2 and all(c["clean_latents"] == "clean" for c in transformer.calls)
    assert [c["encoder_hidden_states"].item() for c in transformer.calls] == [2.0, 0.5]
    torch.testing.assert_close(transformer.calls[1]["guidance"], torch.tensor([6000.0]))
    torch.testing.assert_close(x0, x - apply_cfg(2.0 * x, 0.5 * x, 3.0, 0.7) * 0.25)


def test_flow_denoiser_bf16_rounds_inputs_like_the_reference():
    """In bf16, timestep/guidance/x are rounded (10000 -> 9984) and x0 is built from the rounded x."""
    transformer = FakeTransformer(compute_dtype=torch.bfloat16)
    denoiser = FlowDenoiser(transformer, dict(encoder_hidden_states=torch.tensor(1.0)))
    x, sigma = torch.randn(1, 16, 1, 2, 2), torch.tensor([0.8303033709526062])
    x0 = denoiser(x, sigma)
    (call,) = transformer.calls
    assert call["guidance"].dtype == torch.bfloat16 and call["guidance"].item() == 9984.0
    assert call["timestep"].item() == torch.tensor(830.3033709526062).bfloat16().item()
    rounded = x.bfloat16().float()
    torch.testing.assert_close(x0, rounded - rounded * sigma, atol=0, rtol=0)
    assert FlowDenoiser(transformer, {}, dtype=torch.float16).dtype == torch.float16


def test_flow_denoiser_needs_negative_for_real_cfg():
    with pytest.raises(InputError, match="real_cfg is 2.0, which needs negative conditioning"):
        FlowDenoiser(FakeTransformer(), dict(encoder_hidden_states=torch.tensor(1.0)), real_cfg=2.0)
