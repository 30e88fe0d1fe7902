"""Posterior gaps (Cremer et al. 2018) on a linear-Gaussian model where the optimal Gaussian posterior
is exact, the posterior-gap metric on a real VAE, and the aggregate-posterior MMD."""

import dataclasses
import math

import pytest
import torch
from conftest import build
from test_metrics_likelihood import LinearGaussian
from torch.distributions import Distribution, Independent, Normal

from genbench.metrics import EvalContext
from genbench.metrics.posterior import (
    AggregatePosteriorMMD,
    PosteriorGaps,
    QStarSettings,
    encoder_moments,
    fit_local_posteriors,
    gaussian_bounds,
    mmd_unbiased,
    posterior_gaps,
)
from genbench.profiles import get_profile


@pytest.fixture(scope="module")
def lg():
    model = LinearGaussian(seed=2, q_shift=0.5, q_inflate=1.8).requires_grad_(False)
    x = model.sample(32, generator=torch.Generator().manual_seed(3))
    return model, x, model.log_px(x)


def test_local_gaussian_posterior_reaches_the_exact_posterior(lg):
    model, x, true = lg
    torch.manual_seed(0)
    mean, log_std = encoder_moments(model, x)
    fit = fit_local_posteriors(model, x, mean, log_std, QStarSettings(steps=2000, samples=8))
    assert fit.converged
    mu, ls = fit.mean, fit.log_std
    exact_mean, exact_std = model.posterior(x)
    assert (mu - exact_mean).abs().max() < 0.05
    assert (ls.exp() / exact_std - 1).abs().max() < 0.1
    elbo_qstar, iwae_qstar = gaussian_bounds(model, x, mu, ls, k=500)
    # q* is (nearly) the exact posterior: the approximation gap vanishes
    assert abs(float((elbo_qstar - true).mean())) < 0.02
    assert (iwae_qstar >= elbo_qstar).all()


def test_gaps_add_up_and_have_the_right_signs(lg):
    model, x, true = lg
    torch.manual_seed(1)
    result = posterior_gaps(model, x, k=500, settings=QStarSettings(steps=2000, samples=8))
    cols = result.columns()
    assert cols["inference_gap"] == pytest.approx(cols["approx_gap"] + cols["amort_gap"], abs=1e-9)
    assert cols["elbo_qstar"] > cols["elbo"] + 1.0  # the imperfect encoder leaves a large amortization gap
    assert cols["amort_gap"] > 1.0
    assert 0 <= cols["approx_gap"] < 0.05  # the optimal diagonal Gaussian is exact here
    assert cols["elbo"] <= cols["iwae"] <= cols["log_px"]
    assert abs(cols["log_px"] - float(true.mean())) < 0.05
    # against the closed form: L[q] = log p(x) - KL(q || p(z|x))
    kl = _kl_to_exact_posterior(model, x)
    assert cols["inference_gap"] == pytest.approx(float(kl.mean()), abs=0.1)


def _kl_to_exact_posterior(model, x):
    mean, std = model.posterior(x)
    q = model.encode(x)
    return torch.distributions.kl_divergence(q, Independent(Normal(mean, std), 1)).double()


def test_log_px_takes_the_best_estimate():
    from genbench.metrics.posterior import GapResult

    t = torch.tensor
    r = GapResult(elbo=t([1.0]), iwae=t([2.0]), ais=t([3.0]), elbo_qstar=t([1.5]), iwae_qstar=t([2.5]), qstar_steps=1)
    assert r.columns()["log_px"] == 3.0
    r.ais = None
    assert r.columns()["log_px"] == 2.5
    # an AIS estimate that failed its diagnostics is reported but never taken as log p^(x)
    r.ais, r.ais_trusted = t([3.0]), False
    assert r.columns()["log_px"] == 2.5 and r.columns()["ais"] == 3.0


class OwnSamplesOnly(Distribution):
    """A posterior that, like a flow posterior, can score only its own samples and has no moments."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc):
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)
        self.base = Independent(Normal(loc, torch.ones_like(loc)), 1)
        self._last = None

    def rsample(self, sample_shape=()):
        self._last = self.base.rsample(sample_shape) * 0.5 + 1.0
        return self._last

    def log_prob(self, value):
        if value is not self._last:
            raise ValueError("scores only its own samples")
        return self.base.log_prob((value - 1.0) / 0.5) - value.shape[-1] * math.log(0.5)


def test_encoder_moments_fall_back_to_samples():
    loc = torch.zeros(3, 2)
    torch.manual_seed(0)

    class Enc:
        def encode(self, x):
            return OwnSamplesOnly(loc)

    mean, log_std = encoder_moments(Enc(), torch.zeros(3, 4), samples=4000)
    assert (mean - 1.0).abs().max() < 0.05
    assert (log_std.exp() - 0.5).abs().max() < 0.05


def test_posterior_gap_metric_on_a_vae(manager, digits):
    vae_cls = manager.models.get("vae")
    model = build(vae_cls, digits)
    profile = dataclasses.replace(get_profile("test"), iwae_k=50)
    ctx = EvalContext(model, digits, profile, seed=0, device="cpu")
    out = PosteriorGaps().compute(ctx)
    for col in PosteriorGaps.columns:
        assert math.isfinite(out[col]), col
    assert 1 <= out["iwae_ess"] <= 50 and out["iwae_ess_frac"] == pytest.approx(out["iwae_ess"] / 50)
    assert out["qstar_converged"] in (0.0, 1.0)
    assert out["inference_gap"] == pytest.approx(out["approx_gap"] + out["amort_gap"])
    trusted = "ais" not in ctx.marks
    assert out["log_px"] == max(out["iwae"], out["iwae_qstar"], *([out["ais"]] if trusted else []))
    assert out["approx_gap"] >= 0 and out["elbo"] <= out["iwae"]
    # the AIS column is the 'ais' metric's number on the same points (computed once, shared)
    from genbench.metrics.ais import AISLikelihood

    assert AISLikelihood().compute(ctx)["ais"] == out["ais"]
    assert model.training


def test_posterior_metrics_apply_only_to_models_with_an_encoder(manager, digits):
    gan, vae = manager.models.get("gan"), manager.models.get("vae")
    assert PosteriorGaps().applies(gan, digits)[0] is False
    assert PosteriorGaps().applies(vae, digits) == (True, "")
    ok, why = AggregatePosteriorMMD().applies(gan, digits)
    assert not ok and "encoder" in why

    class WithCodes(gan):
        def codes(self, x):
            return torch.zeros(len(x), self.latent_dim)

    assert AggregatePosteriorMMD().applies(WithCodes, digits) == (True, "")


# --- aggregate posterior vs prior --------------------------------------------------------------------


def test_mmd_is_unbiased_near_zero_for_equal_distributions_and_positive_for_shifted():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(500, 4, generator=g)
    same = [mmd_unbiased(torch.randn(500, 4, generator=g), p) for _ in range(5)]
    shifted = mmd_unbiased(torch.randn(500, 4, generator=g) + 0.5, p)
    assert max(abs(v) for v in same) < 0.01
    assert min(same) < 0  # an unbiased estimate of zero goes negative too (a biased V-statistic would not)
    assert shifted > 10 * max(abs(v) for v in same)


def test_mmd_matches_a_direct_double_sum():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 1
    from genbench.toolkit import IMQ_SCALES

    want = 0.0
    for s in IMQ_SCALES:
        c = 2 * 3 * s

        def k(a, b, c=c):
            return c / (c + float(((a - b) ** 2).sum()))

        xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
        yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
        xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
        want += xx + yy - 2 * xy
    assert mmd_unbiased(x, y) == pytest.approx(want, rel=1e-9)
    with pytest.raises(Exception, match="same width"):
        mmd_unbiased(x, y[:, :2])


def test_aggregate_posterior_metric(manager, digits):
    model = build(manager.models.get("vae"), digits)
    ctx = EvalContext(model, digits, get_profile("test"), seed=0, device="cpu")
    out = AggregatePosteriorMMD().compute(ctx)
    assert math.isfinite(out["agg_mmd"])
