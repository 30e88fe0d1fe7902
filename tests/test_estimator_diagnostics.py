"""Estimators that report their own failure: the local posterior q* reaches the closed-form optimum of
a diagonal Gaussian and says it converged; AIS approaches the exact log p(x) and passes its checks,
while a deliberately short AIS run in many dimensions is marked with its reason; the effective
sample size of IWAE's weights is K for the exact posterior."""

import dataclasses

import pytest
import torch
from test_metrics_likelihood import LinearGaussian
from torch.distributions import Independent, Normal

from genbench.datasets import Dataset
from genbench.metrics import EvalContext
from genbench.metrics.ais import AISLikelihood, diagnose_ais, scaled_steps
from genbench.metrics.likelihood import iwae_bounds
from genbench.metrics.posterior import PosteriorGaps, fit_local_posteriors, gaussian_bounds
from genbench.profiles import get_profile


class GeneralLinearGaussian(LinearGaussian):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I) with a general W, and an untrained encoder
    q(z|x) = N(0, I).  The posterior N(m(x), P^-1), P = I + W^T W / sigma^2, is not diagonal: the
    best diagonal Gaussian under KL(q || p) has precision diag(P) and mean m(x), so the optimal
    approximation gap log p(x) - L[q*] = KL(q* || p(z|x)) = (sum_i log P_ii - log det P) / 2."""

    def __init__(self, latent=8, dim=20, seed=0, sigma=0.5, w_scale=0.6):
        super().__init__(latent=latent, dim=dim, seed=seed)
        g = torch.Generator().manual_seed(seed + 100)
        self.W = torch.nn.Parameter(torch.randn(dim, latent, generator=g) * w_scale)
        self.config.obs_sigma = sigma

    def precision(self):
        w = self.W.double()
        return torch.eye(self.latent, dtype=torch.float64) + w.T @ w / self.sigma**2

    def encode(self, x):
        zeros = torch.zeros(len(x), self.latent)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def optimal_gap(self) -> float:
        p = self.precision()
        return float(0.5 * (p.diagonal().log().sum() - torch.logdet(p)))


def _context(model, x, profile, seed=0, ais=None, qstar=None):
    """An evaluation context whose test split is ``x`` (continuous points: no dequantisation), with
    the AIS metric's settings ``ais`` and the posterior gaps' ``qstar`` (field -> value over the
    profile's).  The model has a config.obs_sigma, so the metrics choose it from the grid: the grid
    holds its own."""
    ais_settings = dataclasses.replace(AISLikelihood.settings(profile), obs_sigma_grid=(model.sigma,),
                                       obs_sigma_val_points=2, **(ais or {}))
    settings = {"ais": ais_settings,
                "posterior_gaps": dataclasses.replace(PosteriorGaps.settings(profile), **(qstar or {}))}
    data = Dataset(spec=model.spec, splits={"test": {"x": x}, "val": {"x": x}})
    return EvalContext(model, data, profile, seed=seed, device="cpu", settings=settings)


@pytest.mark.parametrize("profile_name", ["quick"])
def test_local_posterior_reaches_the_closed_form_optimum_and_says_so(profile_name):
    model = GeneralLinearGaussian().requires_grad_(False)
    x = model.sample(32, generator=torch.Generator().manual_seed(3))
    settings = PosteriorGaps.settings(get_profile(profile_name))
    torch.manual_seed(0)
    q = model.encode(x)
    fit = fit_local_posteriors(model, x, q.mean, q.stddev.log(), settings)
    assert fit.converged, (fit.steps, fit.drift, fit.drift_level)
    w, cov = model.W.double(), torch.linalg.inv(model.precision())
    exact_mean = (x.double() - model.b.double()) @ w @ cov / model.sigma**2
    assert (fit.mean.double() - exact_mean).abs().max() < 0.05
    # log std of the optimum: -log(P_ii) / 2; single coordinates keep the jitter of the final step
    err = (fit.log_std.double() + 0.5 * model.precision().diagonal().log()).abs()
    assert err.mean() < 0.05 and err.max() < 0.25
    elbo_qstar, _ = gaussian_bounds(model, x, fit.mean, fit.log_std, k=1000)
    gap = float((model.log_px(x) - elbo_qstar).mean())
    assert gap == pytest.approx(model.optimal_gap(), rel=0.05), (gap, model.optimal_gap())


def test_an_unconverged_local_posterior_is_marked():
    model = GeneralLinearGaussian().requires_grad_(False)
    x = model.sample(16, generator=torch.Generator().manual_seed(4))
    profile = dataclasses.replace(get_profile("test"), iwae_k=50, ais_points=16)
    ctx = _context(model, x, profile, ais={"bdmc_points": 0}, qstar={"steps": 20})
    out = PosteriorGaps().compute(ctx)
    assert out["qstar_converged"] == 0.0 and out["qstar_steps"] == 20
    for column in ("elbo_qstar", "approx_gap", "amort_gap"):
        assert "q* not converged within 20 steps" in ctx.marks[column]
    assert "iwae" not in ctx.marks


def test_ais_approaches_the_exact_log_px_and_its_diagnostics_pass():
    torch.manual_seed(0)
    model = LinearGaussian(seed=1).requires_grad_(False)
    x = model.sample(24, generator=torch.Generator().manual_seed(1))
    profile = dataclasses.replace(get_profile("test"), ais_points=24, iwae_k=200)
    ctx = _context(model, x, profile, ais={"steps": 200, "chains": 8, "leapfrog": 5, "bdmc_points": 16})
    out = AISLikelihood().compute(ctx)
    assert abs(out["ais"] - float(model.log_px(x).mean())) < 0.1
    assert abs(out["ais_minus_iwae"]) < 0.1 and out["bdmc_gap"] < 0.5
    assert diagnose_ais(ctx).trusted and ctx.marks == {}


def test_a_short_ais_run_in_many_dimensions_is_marked_and_not_used_as_log_px():
    torch.manual_seed(0)
    model = LinearGaussian(latent=10, dim=400, seed=2, q_shift=0.0, q_inflate=1.2).requires_grad_(False)
    model.config.obs_sigma = 0.1
    x = model.sample(16, generator=torch.Generator().manual_seed(2))
    # 400 dimensions at a reference of 400: the 5 steps are not scaled up
    profile = dataclasses.replace(get_profile("test"), ais_points=16, iwae_k=100)
    ctx = _context(model, x, profile, ais={"steps": 5, "ref_dim": 400, "chains": 2, "leapfrog": 2, "bdmc_points": 4})
    out = AISLikelihood().compute(ctx)
    assert out["ais_minus_iwae"] < -10
    why = "below IWAE (K=100) on the same points: annealing too short (5 steps) for 400 dimensions"
    for column in ("ais", "ais_bpd"):
        assert why in ctx.marks[column]
    gaps = PosteriorGaps().compute(ctx)
    assert gaps["log_px"] == max(gaps["iwae"], gaps["iwae_qstar"]) > gaps["ais"]


def test_ais_steps_grow_with_the_data_dimension():
    quick = get_profile("quick")
    protocol = AISLikelihood.settings(quick)
    assert scaled_steps(protocol, 64) == protocol.steps == scaled_steps(protocol, 2)
    assert scaled_steps(protocol, 784) == 2450  # 200 x 784 / 64
    assert "max(1, D/64)" in AISLikelihood().estimator(quick)


def test_iwae_effective_sample_size_is_k_for_the_exact_posterior():
    model = LinearGaussian(seed=0, q_shift=0.0, q_inflate=1.0).requires_grad_(False)  # q is p(z|x)
    x = model.sample(10, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    exact = iwae_bounds(model, x, k=64, chunk_rows=200)
    assert torch.allclose(exact.ess, torch.full_like(exact.ess, 64.0), rtol=1e-3)
    assert torch.allclose(exact.iwae, model.log_px(x), atol=1e-3)
    poor = iwae_bounds(LinearGaussian(seed=0, q_shift=1.0, q_inflate=2.0).requires_grad_(False), x, k=64)
    assert (poor.ess < 32).all() and (poor.ess >= 1).all()
