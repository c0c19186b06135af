# SPDX-License-Identifier: Apache-2.0
"""FramePack's sampling: the shifted flow-matching schedule, UniPC and Euler samplers, and the CFG denoiser.

Float32 arithmetic is ordered so that the reference's sampler states are reproduced bit for bit.
Flow convention: ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the transformer predicts the velocity
``noise - x0``. The samplers follow k-diffusion's calling convention so that ComfyUI's ``KSAMPLER`` can wrap
them: ``model(x, sigma * x.new_ones([batch]), **extra_args)`` returns the denoised (x0) estimate.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..errors import InputError

logger = logging.getLogger(__name__)

# The line through (256 tokens, mu 0.5) and (4096 tokens, mu 1.15) used by Flux/FramePack, capped at ln 7.
_MU_SLOPE = (1.15 - 0.5) / (4096 - 256)
_MU_INTERCEPT = 0.5 - _MU_SLOPE * 256
MAX_MU = math.log(7.0)

UNIPC_VARIANTS = ("bh1", "bh2")
MAX_UNIPC_ORDER = 3
# Timestep and distilled guidance are fed to the transformer on a 0..1000 scale.
T_SCALE = 1000.0


def _is_positive_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def mu_for_seq_len(seq_len: int) -> float:
    """Shift exponent mu for ``seq_len`` noisy tokens: linear in the token count, capped at ln 7."""
    if not _is_positive_number(seq_len):
        raise InputError(f"seq_len must be a positive number of noisy tokens (T*H*W/4 of the latent), got {seq_len!r}.")
    # slope * x + intercept (not 0.5 + slope * (x - 256)): this ordering reproduces the reference's mu bit for bit.
    return min(seq_len * _MU_SLOPE + _MU_INTERCEPT, MAX_MU)


def flux_time_shift(t: Tensor, mu: float) -> Tensor:
    """Warp times t in [0, 1] towards 1 by the factor e^mu: ``e^mu / (e^mu + (1/t - 1))``; t = 0 maps to 0."""
    shift = math.exp(mu)
    return shift / (shift + (1 / t - 1))


def flow_sigmas(steps: int, *, seq_len: int | None = None, shift: float | None = None) -> Tensor:
    """FramePack's schedule: ``steps + 1`` float32 sigmas from 1 down to 0.

    The shift comes from the noisy-token count ``seq_len`` (the demos' ``shift=None``) unless a manual
    ``shift`` is given, which then takes precedence.
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}; FramePack's default is 25.")
    if shift is not None:
        if not _is_positive_number(shift):
            raise InputError(f"shift must be a positive number, got {shift!r}; "
                             "pass shift=None to derive it from seq_len.")
        mu = math.log(shift)
    elif seq_len is not None:
        mu = mu_for_seq_len(seq_len)
    else:
        raise InputError("flow_sigmas got neither seq_len nor shift; pass seq_len (T*H*W/4 of the noisy latent) "
                         "or a manual shift such as 3.0.")
    logger.debug("flow_sigmas: steps=%d mu=%.6f shift=%.4f", steps, mu, math.exp(mu))
    return flux_time_shift(torch.linspace(1, 0, steps + 1, dtype=torch.float32), mu)


def _denoise(model, x: Tensor, sigma: Tensor, extra_args: dict) -> Tensor:
    """One model call with sigma broadcast over the batch, as k-diffusion does; the result is float32."""
    return model(x, sigma * x.new_ones([x.shape[0]]), **extra_args).float()


def _report(callback, i: int, x: Tensor, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _weighted_sum(weights: Tensor, tensors: list[Tensor]):
    """``sum_j weights[j] * tensors[j]`` over the shorter of the two (0 when empty)."""
    return sum(w * d for w, d in zip(weights, tensors))


def _check_sigmas(sigmas: Tensor) -> None:
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise InputError(f"sigmas must be a 1-D tensor of at least 2 values (steps + 1), "
                         f"got shape {tuple(sigmas.shape)}.")


def _unipc_coefficients(t_hist: Tensor, t: Tensor, variant: str):
    """UniPC coefficients for the step from ``t_hist[-1]`` to ``t``, of order ``p = len(t_hist)``.

    Time is sigma and lambda = -ln(sigma). Returns ``(phi1, B, rks, rho_p, rho_c)`` as 0-d/1-d tensors, where
    ``rks`` are the lambda ratios of the older model outputs (newest first, without the trailing 1).
    NOTE: computed in the sigmas' dtype (float32) from lambda differences; this reproduces the golden
    reference states bit for bit, whereas float64 coefficients drift from them by ~1e-6.
    """
    p = len(t_hist)
    lam_hist, lam_t = -torch.log(t_hist), -torch.log(t)
    h = lam_t - lam_hist[-1]
    hh = -h
    phi1 = torch.expm1(hh)
    big_b = hh if variant == "bh1" else phi1
    rks = (lam_hist[:-1].flip(0) - lam_hist[-1]) / h
    # b_k = g_k k! / B with g_1 = phi1/hh - 1 and g_{k+1} = g_k/hh - 1/(k+1)!
    g, b = phi1 / hh - 1, []
    for k in range(1, p + 1):
        b.append(g * math.factorial(k) / big_b)
        g = g / hh - 1 / math.factorial(k + 1)
    b = torch.stack(b)
    r_mat = torch.cat([rks, rks.new_ones(1)])[None, :] ** torch.arange(p, device=rks.device)[:, None]
    half = b.new_tensor([0.5])
    if p == 1:  # no older outputs: the predictor is the plain DDIM step
        return phi1, big_b, rks, half[:0], half
    rho_p = half if p == 2 else torch.linalg.solve(r_mat[:-1, :-1], b[:-1])
    return phi1, big_b, rks, rho_p, torch.linalg.solve(r_mat, b)


@torch.no_grad()
def sample_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, variant="bh1"):
    """UniPC for flow matching (Zhao et al. 2023; FramePack's bh1 variant by default).

    One model call per step at ``sigmas[0] .. sigmas[-2]``, none at the final sigma 0; the result is the x0
    prediction of the last call. The callback's ``x`` for step i is the corrected state at ``sigmas[i]`` and
    its ``denoised`` the model output at that step (the predictor point). ``disable`` is accepted for
    k-diffusion compatibility; progress display belongs to the caller.
    """
    extra_args = {} if extra_args is None else extra_args
    if variant not in UNIPC_VARIANTS:
        raise InputError(f"variant must be one of {UNIPC_VARIANTS}, got {variant!r}; FramePack uses 'bh1'.")
    _check_sigmas(sigmas)
    if sigmas[-1] != 0:
        raise InputError(f"sample_unipc needs sigmas ending in 0 (it returns the final x0 prediction), got last sigma "
                         f"{float(sigmas[-1])}; use sample_euler to stop at a non-zero sigma.")
    steps = len(sigmas) - 1
    order = min(MAX_UNIPC_ORDER, steps - 1)
    x = x.float()
    m = _denoise(model, x, sigmas[0], extra_args)
    t_hist, m_hist = [sigmas[0]], [m]
    _report(callback, 0, x, sigmas[0], m)
    for i in range(1, steps):
        t = sigmas[i]
        phi1, big_b, rks, rho_p, rho_c = _unipc_coefficients(torch.stack(t_hist), t, variant)
        m_prev = m_hist[-1]
        diffs = [(m_hist[-1 - j] - m_prev) / r for j, r in enumerate(rks, start=1)]
        # The exact first-order (DDIM) flow step, plus the higher-order predictor terms (none at order 1).
        x_base = (t / t_hist[-1]) * x - phi1 * m_prev
        x_pred = x_base - big_b * _weighted_sum(rho_p, diffs)
        m = _denoise(model, x_pred, t, extra_args)
        x = x_base - big_b * (_weighted_sum(rho_c, diffs) + rho_c[-1] * (m - m_prev))
        t_hist, m_hist = (t_hist + [t])[-order:], (m_hist + [m])[-order:]
        _report(callback, i, x, t, m)
    return m


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Euler for flow matching: ``x += (x - denoised) / sigma * (sigma_next - sigma)``; a final step to 0 returns x0."""
    extra_args = {} if extra_args is None else extra_args
    _check_sigmas(sigmas)
    x = x.float()
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            # Exactly the model's x0 rather than x + d * (0 - sigma), which only equals it up to rounding.
            x = denoised
        else:
            x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def guidance_input(distilled_cfg: float, batch: int = 1, device=None) -> Tensor:
    """The distilled guidance as the transformer takes it, (batch,) float32: ``distilled_cfg x 1000``, built in
    float32 as the reference does (round it to the compute dtype with ``time_inputs``)."""
    return torch.full((batch,), distilled_cfg * T_SCALE, dtype=torch.float32, device=device)


def time_inputs(timestep: Tensor, guidance: Tensor | None, dtype: torch.dtype) -> tuple:
    """Timestep (sigma x 1000) and guidance rounded to the compute dtype, as the reference feeds them
    (10000 -> 9984 in bf16)."""
    return timestep.float().to(dtype), None if guidance is None else guidance.float().to(dtype)


def require_negative(real_cfg: float, negative, advice: str = "pass negative or set real_cfg to 1.") -> None:
    """Real CFG above 1 needs a negative: refuse its absence with ``advice`` on what to connect."""
    if real_cfg != 1 and negative is None:
        raise InputError(f"real_cfg is {real_cfg}, which needs negative conditioning; {advice}")


def apply_cfg(pos: Tensor, neg: Tensor | None, real_cfg: float, rescale: float = 0.0) -> Tensor:
    """Real classifier-free guidance with optional CFG rescale (Lin et al. 2023).

    ``pred = neg + cfg * (pos - neg)``, then blended towards ``pred`` rescaled to the per-sample std of ``pos``.
    At ``real_cfg == 1`` the negative is not needed and may be None.
    """
    require_negative(real_cfg, neg)
    pred = pos if real_cfg == 1 else neg + real_cfg * (pos - neg)
    if rescale != 0:
        dims = tuple(range(1, pos.ndim))
        # torch.std's default (unbiased) as the reference; the factor cancels in the ratio anyway.
        ratio = pos.std(dim=dims, keepdim=True) / pred.std(dim=dims, keepdim=True)
        pred = rescale * (pred * ratio) + (1 - rescale) * pred
    return pred


class FlowDenoiser:
    """Wraps a FramePack transformer (velocity) as a k-diffusion denoiser (x0) with distilled and real CFG.

    Args:
        transformer: callable with FramePack's forward keywords (``hidden_states``, ``timestep``, ``guidance``,
            text/image conditioning, indices and clean latents) returning the velocity.
        positive: conditioning keywords of the positive call (``encoder_hidden_states``,
            ``encoder_attention_mask``, ``pooled_projections``, ``image_embeddings``).
        negative: the same for the negative call; required when ``real_cfg != 1``, never used otherwise.
        shared: keywords passed unchanged to every call (``latent_indices``, ``clean_latents``, ...).
        distilled_cfg: the guidance-distilled scale, fed as ``distilled_cfg * 1000``.
        real_cfg, cfg_rescale: see ``apply_cfg``.
        dtype: compute dtype that x, timestep and guidance are cast to before the call (default: the
            transformer's ``compute_dtype`` or float32). In bf16 this reproduces the reference's rounding of
            timestep and guidance, and x0 is formed from the rounded x as the reference does.
    """

    def __init__(self, transformer: Callable, positive: Mapping, negative: Mapping | None = None, *,
                 shared: Mapping | None = None, distilled_cfg: float = 10.0, real_cfg: float = 1.0,
                 cfg_rescale: float = 0.0, dtype: torch.dtype | None = None):
        require_negative(real_cfg, negative)
        self.transformer = transformer
        self.positive = dict(positive)
        self.negative = None if negative is None else dict(negative)
        self.shared = {} if shared is None else dict(shared)
        self.distilled_cfg = distilled_cfg
        self.real_cfg = real_cfg
        self.cfg_rescale = cfg_rescale
        self.dtype = dtype if dtype is not None else getattr(transformer, "compute_dtype", torch.float32)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.float()
        x_in = x.to(self.dtype)
        timestep, guidance = time_inputs(sigma * T_SCALE, guidance_input(self.distilled_cfg, x.shape[0], x.device),
                                         self.dtype)
        v_pos = self._velocity(x_in, timestep, guidance, self.positive)
        v_neg = None if self.real_cfg == 1 else self._velocity(x_in, timestep, guidance, self.negative)
        v = apply_cfg(v_pos, v_neg, self.real_cfg, self.cfg_rescale)
        return x_in.float() - v * sigma.reshape(-1, *[1] * (x.ndim - 1))

    def _velocity(self, x, timestep, guidance, cond):
        return self.transformer(hidden_states=x, timestep=timestep, guidance=guidance, **cond, **self.shared).float()
