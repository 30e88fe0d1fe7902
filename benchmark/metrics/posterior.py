"""Posterior gaps and the aggregate posterior of models with an encoder.

Inference suboptimality (Cremer, Li and Duvenaud 2018, "Inference Suboptimality in Variational
Autoencoders", arXiv:1801.03558).  For a data point x with amortised posterior q(z|x):

* L[q]   -- the ELBO of the encoder's q (Monte Carlo mean over K samples);
* L[q*]  -- the ELBO of a *local* fully factorised Gaussian q*(z) = N(mu, diag sigma^2) optimised for
  that point alone (initialised from the encoder's mean and std where it has them, batched over
  points, Adam on the reparameterised ELBO with the Gaussian's entropy in closed form; the step
  shrinks whenever a window's gradients show no drift out of their Monte Carlo noise (a norm test),
  and the fit has converged at the first such window at the smallest step -- or is reported as not
  converged when its step limit comes first, and its columns are marked);
* log p^(x) -- the best available estimate of log p(x): the largest of the IWAE bound with K samples
  of q, the IWAE bound with K samples of q* (a valid importance sampler too, and never below L[q*])
  and AIS (:mod:`genbench.metrics.ais`) unless AIS failed its own diagnostics, all averaged over the
  same points and all reported.  The effective sample size of IWAE's weights is reported beside it.

approximation gap = log p^(x) - L[q*], amortization gap = L[q*] - L[q], inference gap = their sum =
log p^(x) - L[q].  Every column of :class:`PosteriorGaps` is computed on the same test points.

Aggregate posterior vs prior: the unbiased estimate of the squared maximum mean discrepancy (Gretton
et al. 2012) between samples of q(z) = E_x q(z|x) (one encoder sample per test point; the codes of a
deterministic encoder) and samples of p(z), with the inverse multiquadratic kernel summed over scales
as in Tolstikhin et al. 2018 (WAE), the quantity AAE and WAE regularise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from genbench.errors import GenbenchError
from genbench.metrics import EvalContext, Metric, evaluating
from genbench.metrics.ais import (
    ais_on_test,
    chosen_obs_sigma,
    diagnose_ais,
    iwae_on_test,
    likelihood_points,
    obs_sigma,
    out_of_scope,
    seeded,
)
from genbench.metrics.likelihood import IWAEResult, dequantized_test, iwae_bounds
from genbench.model import Capability, GenerativeModel
from genbench.profiles import Profile
from genbench.toolkit.mmd import IMQ_SCALES, imq_mmd2

CHECK_EVERY = 50  # steps per window of the convergence test of q*
PLATEAU_Z = 3.0  # a gradient drift statistic within this many standard deviations of pure noise: a plateau
LR_DECAYS, LR_DECAY_FACTOR = 3, 0.3  # at a plateau the step shrinks this often by this factor; the next one stops
LOG_SCALE_RANGE = (-12.0, 5.0)  # keeps q*'s scales finite where a point's likelihood is flat or spiky


@dataclass(frozen=True)
class QStarSettings:
    steps: int = 2000
    samples: int = 4
    lr: float = 5e-2  # the initial step; it shrinks at each plateau
    chunk_rows: int = 4000  # decoder rows per step (points x samples); the profile's iwae_chunk_rows in a trial


def _decode_log_prob(model: GenerativeModel, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for z of shape (k, n, d) and x of shape (n, ...): decoded as k*n rows of 2-D latents
    (convolutional decoders take only those), returned as (k, n)."""
    k, n = z.shape[:2]
    x_rows = x.repeat(k, *([1] * (x.dim() - 1)))
    return model.decode(z.reshape(k * n, *z.shape[2:])).log_prob(x_rows).view(k, n)


def encoder_moments(model: GenerativeModel, x: torch.Tensor, samples: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log std of q(z|x) per point: the distribution's own moments where it has them (a
    Gaussian encoder), else moments of its samples (e.g. a flow posterior)."""
    with torch.no_grad():
        q = model.encode(x)
        try:
            mean, std = q.mean, q.stddev
            if mean.shape != std.shape or not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
                raise ValueError("moments unavailable")
        except (NotImplementedError, ValueError, AttributeError):
            z = q.rsample((samples,))
            mean, std = z.mean(0), z.std(0)
    return mean.float(), std.clamp_min(1e-6).log().float().clamp(*LOG_SCALE_RANGE)


def gaussian_elbo_terms(model: GenerativeModel, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                        k: int) -> torch.Tensor:
    """log p(x, z) - log q(z) for k reparameterised samples of N(mean, diag exp(log_std)^2): (k, n)."""
    eps = torch.randn(k, *mean.shape, device=mean.device, dtype=mean.dtype)
    z = mean + log_std.exp() * eps
    log_q = (-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return _decode_log_prob(model, z, x) + model.prior().log_prob(z) - log_q


@dataclass
class LocalFit:
    """q* of each point of a batch, and how its optimisation ended."""

    mean: torch.Tensor
    log_std: torch.Tensor
    steps: int
    converged: bool  # the bound stopped improving at the smallest step size, within the step limit
    last_gain: float  # change of the window-mean bound (nats per point) at the last check
    drift: float  # the last window's gradient statistic (:func:`drift_statistic`) ...
    drift_level: float  # ... and the level below which it counts as stationary


def drift_statistic(grad_sum: torch.Tensor, grad_sq_sum: torch.Tensor, n: int) -> tuple[float, float]:
    """The norm test of a window of ``n`` stochastic gradients (Byrd, Chin, Nocedal and Wu 2012):
    per coordinate, the squared window-mean gradient over its squared standard error,
    gbar^2 / (s^2 / n), averaged over the coordinates.  Where the expected gradient is zero (the
    optimum: only Monte Carlo noise moves the iterate) each term is F(1, n-1)-distributed, with
    mean (n-1)/(n-3); while the iterate still drifts the mean gradient stands out of the noise and
    the average grows with the remaining distance.  Returns the statistic and the level that the
    stationary average exceeds with probability about 0.1% (``PLATEAU_Z`` standard deviations of the
    mean of independent F(1, n-1) terms)."""
    mean = grad_sum / n
    var = ((grad_sq_sum - n * mean**2) / (n - 1)).clamp_min(0)
    live = var > 0  # coordinates the objective does not depend on (or clamped ones) carry no signal
    p = int(live.sum())
    if p == 0:
        return 0.0, 0.0
    stat = float((mean[live] ** 2 / (var[live] / n)).mean())
    nu = n - 1
    f_mean = nu / (nu - 2)
    f_sd = math.sqrt(2 * nu**2 * (nu - 1) / ((nu - 2) ** 2 * (nu - 4)))
    return stat, f_mean + PLATEAU_Z * f_sd / math.sqrt(p)


def fit_local_posteriors(model: GenerativeModel, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                         settings: QStarSettings) -> LocalFit:
    """Optimise a Gaussian q*(z) per point (all points of ``x`` at once).  The model's parameters
    are not touched.

    Adam on the reparameterised ELBO (closed-form entropy).  The ELBO itself is too noisy to tell a
    slow climb from a plateau, so every ``CHECK_EVERY`` steps the window's gradients are tested
    (:func:`drift_statistic`): while their mean stands out of their noise the iterate is still
    moving toward the optimum.  At the first window without significant drift the iterate only
    jitters at the scale of the step, so the step shrinks by ``LR_DECAY_FACTOR``; after
    ``LR_DECAYS`` such shrinks, the next stationary window means convergence.  Running out of
    ``settings.steps`` first is reported as not converged, with the last window's statistics.
    """
    mu = mean.detach().clone().requires_grad_(True)
    ls = log_std.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu, ls], lr=settings.lr)
    d = mu.shape[-1]
    entropy_const = 0.5 * d * (1 + math.log(2 * math.pi))
    trace = torch.zeros(CHECK_EVERY, dtype=torch.float64, device=mu.device)
    g_sum = torch.zeros(2, *mu.shape, dtype=torch.float64, device=mu.device)
    g_sq = torch.zeros_like(g_sum)
    previous = None
    step = decays = 0
    converged, gain, stat, level = False, math.nan, math.nan, math.nan
    with torch.enable_grad():
        for step in range(1, settings.steps + 1):
            ls_c = ls.clamp(*LOG_SCALE_RANGE)
            eps = torch.randn(settings.samples, *mu.shape, device=mu.device, dtype=mu.dtype)
            z = mu + ls_c.exp() * eps
            log_joint = _decode_log_prob(model, z, x) + model.prior().log_prob(z)
            # closed-form entropy of the Gaussian: lower variance than a Monte Carlo log q
            elbo = log_joint.mean(0) + ls_c.sum(-1) + entropy_const
            grads = torch.autograd.grad(-elbo.sum(), [mu, ls])
            for i, (p, g) in enumerate(zip((mu, ls), grads)):
                p.grad = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
                g_sum[i] += p.grad.double()
                g_sq[i] += p.grad.double() ** 2
            opt.step()
            trace[(step - 1) % CHECK_EVERY] = elbo.detach().double().mean()
            if step % CHECK_EVERY:
                continue
            window_mean = float(trace.mean())
            gain = window_mean - previous if previous is not None else math.nan
            previous = window_mean
            stat, level = drift_statistic(g_sum, g_sq, CHECK_EVERY)
            g_sum.zero_()
            g_sq.zero_()
            if stat <= level:
                if decays == LR_DECAYS:
                    converged = True
                    break
                decays += 1
                for group in opt.param_groups:
                    group["lr"] *= LR_DECAY_FACTOR
    return LocalFit(mu.detach(), ls.detach().clamp(*LOG_SCALE_RANGE), step, converged, gain, stat, level)


@torch.no_grad()
def gaussian_bounds(model: GenerativeModel, x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, k: int,
                    chunk_rows: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """ELBO (mean over k samples) and IWAE bound of a per-point Gaussian q, as ``elbo_and_iwae`` does
    for the encoder's q: per point, float64 on the CPU."""
    elbos, iwaes = [], []
    per_chunk = max(1, chunk_rows // k)
    sample_chunk = min(k, chunk_rows)
    for xc, mc, lc in zip(x.split(per_chunk), mean.split(per_chunk), log_std.split(per_chunk)):
        lse, total = None, None
        for start in range(0, k, sample_chunk):
            lw = gaussian_elbo_terms(model, xc, mc, lc, min(sample_chunk, k - start)).double()
            part = torch.logsumexp(lw, 0)
            lse = part if lse is None else torch.logaddexp(lse, part)
            total = lw.sum(0) if total is None else total + lw.sum(0)
        elbos.append((total / k).cpu())
        iwaes.append((lse - math.log(k)).cpu())
    return torch.cat(elbos), torch.cat(iwaes)


@dataclass
class GapResult:
    elbo: torch.Tensor  # L[q] per point
    iwae: torch.Tensor
    ais: torch.Tensor | None
    elbo_qstar: torch.Tensor  # L[q*] per point
    iwae_qstar: torch.Tensor  # IWAE bound with q* as the proposal, from the same samples as L[q*]
    qstar_steps: int
    qstar_converged: bool = True  # every chunk's fit reached its final plateau within the step limit
    qstar_last_gain: float = 0.0  # the largest last-window improvement over chunks (nats per point)
    ais_trusted: bool = True  # False when the AIS estimate failed its diagnostics: not a candidate

    def log_px_candidates(self) -> dict[str, float]:
        candidates = {"iwae": float(self.iwae.mean()), "iwae_qstar": float(self.iwae_qstar.mean())}
        if self.ais is not None and self.ais_trusted:
            candidates["ais"] = float(self.ais.mean())
        return candidates

    def columns(self) -> dict[str, float]:
        """Dataset-level numbers.  log p^(x) is the largest of the mean estimates (all stochastic lower
        bounds): IWAE with q, IWAE with q* and AIS -- AIS only if its own diagnostics pass (an AIS
        run that has not converged is no estimate to rely on, even where it is large); a per-point
        maximum of noisy estimates would bias it upward.  IWAE with q* is never below L[q*] (same
        samples, Jensen), so the approximation gap is never negative."""
        elbo, qstar = float(self.elbo.mean()), float(self.elbo_qstar.mean())
        candidates = self.log_px_candidates()
        log_px = max(candidates.values())
        out = {"elbo": elbo, **candidates, "elbo_qstar": qstar, "log_px": log_px,
               "approx_gap": log_px - qstar, "amort_gap": qstar - elbo, "inference_gap": log_px - elbo,
               "qstar_steps": float(self.qstar_steps), "qstar_converged": float(self.qstar_converged),
               "qstar_last_gain": self.qstar_last_gain}
        if self.ais is not None:
            out["ais"] = float(self.ais.mean())
        return out


def posterior_gaps(model: GenerativeModel, x: torch.Tensor, k: int, settings: QStarSettings,
                   ais: torch.Tensor | None = None, bounds: IWAEResult | None = None) -> GapResult:
    """L[q], IWAE (k samples), L[q*] (k samples of the optimised q*) on the points ``x``; ``ais`` is
    an AIS estimate on the same points, if one was computed; ``bounds`` the ELBO and IWAE of q on
    them, if already computed."""
    bounds = bounds or iwae_bounds(model, x, k, settings.chunk_rows)
    mean, log_std = encoder_moments(model, x)
    per_chunk = max(1, settings.chunk_rows // settings.samples)
    qstar, qstar_iwae, steps, converged, last_gain = [], [], 0, True, -math.inf
    for xc, mc, lc in zip(x.split(per_chunk), mean.split(per_chunk), log_std.split(per_chunk)):
        fit = fit_local_posteriors(model, xc, mc, lc, settings)
        steps, converged = max(steps, fit.steps), converged and fit.converged
        last_gain = max(last_gain, fit.last_gain)
        bound, iw = gaussian_bounds(model, xc, fit.mean, fit.log_std, k, settings.chunk_rows)
        qstar.append(bound)
        qstar_iwae.append(iw)
    return GapResult(elbo=bounds.elbo, iwae=bounds.iwae, ais=ais, elbo_qstar=torch.cat(qstar),
                     iwae_qstar=torch.cat(qstar_iwae), qstar_steps=steps, qstar_converged=converged,
                     qstar_last_gain=last_gain)


class PosteriorGaps(Metric):
    """ELBO, IWAE, AIS, L[q*] and the three gaps of Cremer et al. 2018, all on the same points."""

    name = "posterior_gaps"
    allowance_s = {"standard": 6 * 3600.0}  # thousands of annealing / fit steps per point
    columns = {"elbo": "higher", "iwae": "higher", "iwae_bpd": "lower", "elbo_qstar": "higher",
               "iwae_qstar": "higher", "log_px": "higher", "approx_gap": "lower", "amort_gap": "lower",
               "inference_gap": "lower"}
    needs = frozenset({Capability.LATENT})
    headline = {"iwae_bpd": 70, "iwae": 110, "elbo": 320, "inference_gap": 325}
    Settings = QStarSettings  # the fit of q*; AIS runs with the 'ais' metric's settings
    profile_settings = {"standard": {"steps": 10_000, "samples": 10}, "test": {"steps": 20, "samples": 2}}


    def estimator(self, profile: Profile) -> str:
        fit = self.settings(profile)
        return (f"Cremer et al. 2018 on {profile.ais_points} dequantised test points: ELBO L[q] and IWAE with "
                f"K={profile.iwae_k} samples (with the weights' effective sample size); q* a diagonal Gaussian "
                f"per point, init from the encoder, Adam from lr={fit.lr}, {fit.samples} "
                f"samples/step, the step shrinking x{LR_DECAY_FACTOR} {LR_DECAYS} times at windows of "
                f"{CHECK_EVERY} steps whose gradients show no drift (norm test, {PLATEAU_Z:g} sd), converged at "
                f"the next such window, <= {fit.steps} steps, L[q*] and IWAE(q*) with K={profile.iwae_k}; "
                f"log p^(x) = max of mean IWAE(q), IWAE(q*), AIS (AIS of the 'ais' metric, same points; left out "
                f"when its diagnostics fail)")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        skipped = out_of_scope(ctx)  # AIS not run on this data under this profile: the gaps go on without it
        sigma = None if skipped else chosen_obs_sigma(ctx)[0]  # choosing sigma runs AIS too
        ais = None if skipped else ais_on_test(ctx).log_px
        diagnosis = None if skipped else diagnose_ais(ctx)
        bounds = iwae_on_test(ctx)
        x = likelihood_points(ctx)
        settings = dataclasses.replace(ctx.settings_of(self), chunk_rows=ctx.profile.iwae_chunk_rows)
        with seeded(ctx.seed + 17, ctx.device), evaluating(ctx.model, no_grad=False), obs_sigma(ctx.model, sigma):
            result = posterior_gaps(ctx.model, x, ctx.profile.iwae_k, settings, ais=ais, bounds=bounds)
        result.ais_trusted = diagnosis is not None and diagnosis.trusted
        out = result.columns()
        out["iwae_bpd"] = ctx.dataset.spec.bits_per_dim(-result.iwae.mean())
        out["iwae_ess"] = float(bounds.ess.mean())
        out["iwae_ess_frac"] = out["iwae_ess"] / bounds.k
        # IWAE is not marked for a small ESS: whatever the ESS, its value is an unbiased estimate of the
        # K-sample bound it is labelled as, and a valid lower bound; how far that bound sits below log p(x)
        # is what AIS (and ais_minus_iwae) measures.
        if diagnosis is not None and not diagnosis.trusted:
            ctx.mark("ais", diagnosis.reason)  # reported here too, with the same reason
        if not result.qstar_converged:
            why = (f"q* not converged within {settings.steps} steps (its gradients still drift; last window's "
                   f"bound changed {result.qstar_last_gain:.3g} nats per point)")
            for column in ("elbo_qstar", "approx_gap", "amort_gap"):
                ctx.mark(column, why)
        return out


# --- aggregate posterior vs prior -------------------------------------------------------------------

def mmd_unbiased(x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> float:
    """Unbiased MMD^2 with the inverse multiquadratic kernel k(a, b) = C / (C + |a - b|^2) summed
    over C = 2 d scale^2 s for s in IMQ_SCALES (Tolstikhin et al. 2018), in float64; ``scale`` is
    the prior's standard deviation."""
    return float(imq_mmd2(x.double(), y.double(), base=2.0 * x.shape[-1] * scale**2))


def has_codes(model_cls) -> bool:
    return callable(getattr(model_cls, "codes", None))


@torch.no_grad()
def aggregate_posterior_samples(model: GenerativeModel, x: torch.Tensor) -> torch.Tensor:
    """One sample of q(z|x) per point (the codes of a deterministic encoder): samples of q(z)."""
    if model.has(Capability.LATENT):
        return model.encode(x).rsample().flatten(1)
    if has_codes(type(model)):
        return model.codes(x).flatten(1)
    raise GenbenchError(f"{model.name} has no encoder: declare the 'latent' capability or define codes(x)")


class AggregatePosteriorMMD(Metric):
    """How far the aggregate posterior q(z) sits from the prior p(z)."""

    name = "aggregate_posterior"
    columns = {"agg_mmd": "lower"}
    requirement = "an encoder (latent capability, or codes(x) with prior())"

    def applies(self, model_cls, dataset):
        if not (Capability.LATENT in model_cls.capabilities or has_codes(model_cls)):
            return False, f"needs {self.requirement}"
        return super().applies(model_cls, dataset)

    def estimator(self, profile: Profile) -> str:
        return (f"unbiased MMD^2, IMQ kernel summed over C = 2 d var_p s, s in {list(IMQ_SCALES)}, between one "
                f"q(z|x) sample (or code) per test point ({profile.n_likelihood_points} points) and as many "
                f"prior samples")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        x = dequantized_test(ctx)
        with seeded(ctx.seed + 19, ctx.device), evaluating(ctx.model, no_grad=False):
            q = aggregate_posterior_samples(ctx.model, x)
            p = ctx.model.prior().sample((len(q),)).flatten(1)
        scale = float(p.double().var(0).mean().sqrt())
        return {"agg_mmd": mmd_unbiased(q, p, scale=scale)}
