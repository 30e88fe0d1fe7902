"""Likelihood estimators against closed forms: exact NLL of a flow integrates to one; ELBO, IWAE, AIS
and BDMC on a linear-Gaussian model whose log p(x) is known; the observation-sigma choice of
decoders without one; the Parzen window on a known Gaussian."""

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
from conftest import build, train_steps
from torch.distributions import Independent, Laplace, MultivariateNormal, Normal

from genbench.metrics import EvalContext
from genbench.metrics.ais import (
    AISLikelihood,
    AISSettings,
    ais_log_likelihood,
    bdmc,
    bdmc_on_simulated,
    obs_sigma,
    obs_sigma_path,
    obs_sigma_scores,
    select_obs_sigma,
    sigmoid_schedule,
)
from genbench.metrics.likelihood import elbo_and_iwae
from genbench.metrics.parzen import ParzenWindow, parzen_estimate, parzen_log_density, sigma_grid
from genbench.model import Capability, DataSpec, GenerativeModel
from genbench.nn import standard_normal
from genbench.profiles import get_profile


@dataclass
class LinearGaussianConfig:
    obs_sigma: float = 0.5


class LinearGaussian(GenerativeModel):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I); q(z|x) is the exact posterior's mean shifted
    and its std inflated (a deliberately imperfect encoder).  W has orthogonal columns, so the exact
    posterior N(m(x), (I + W^T W / sigma^2)^-1) has a diagonal covariance: a diagonal Gaussian can
    match it exactly."""

    name = "linear-gaussian"
    family = "test"
    capabilities = frozenset({Capability.SAMPLE, Capability.LATENT, Capability.DECODER})
    Config = LinearGaussianConfig

    def __init__(self, config=None, latent=2, dim=5, seed=0, q_shift=0.4, q_inflate=1.6):
        super().__init__(config or LinearGaussianConfig(), DataSpec("lg", "points", (dim,)))
        g = torch.Generator().manual_seed(seed)
        basis, _ = torch.linalg.qr(torch.randn(dim, latent, generator=g, dtype=torch.float64))
        scales = torch.linspace(1.0, 2.0, latent, dtype=torch.float64)
        self.W = torch.nn.Parameter((basis * scales).float())
        self.b = torch.nn.Parameter(torch.randn(dim, generator=g))
        self.latent = latent
        self.q_shift, self.q_inflate = q_shift, q_inflate

    @property
    def sigma(self):
        return self.config.obs_sigma

    def prior(self):
        return standard_normal(self.latent, self.W.device)

    def decode(self, z):
        return Independent(Normal(z @ self.W.T + self.b, self.sigma), 1)

    def posterior(self, x):
        """Exact mean and (diagonal) std of p(z|x)."""
        w = self.W.double()
        precision = torch.eye(self.latent, dtype=torch.float64) + w.T @ w / self.sigma**2
        cov = torch.linalg.inv(precision)
        mean = (x.double() - self.b.double()) @ w @ cov / self.sigma**2
        return mean.float(), cov.diagonal().sqrt().float()

    def encode(self, x):
        mean, std = self.posterior(x)
        return Independent(Normal(mean + self.q_shift, std * self.q_inflate), 1)

    def log_px(self, x):
        w = self.W.double()
        cov = w @ w.T + self.sigma**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b.double(), cov).log_prob(x.double())

    def sample(self, n, generator=None, condition=None):
        z = torch.randn(n, self.latent, generator=generator)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, len(self.b), generator=generator)

    def train_step(self, batch, progress):
        return {}


@pytest.fixture(scope="module")
def lg():
    torch.manual_seed(0)
    model = LinearGaussian().requires_grad_(False)
    x = model.sample(24, generator=torch.Generator().manual_seed(1))
    return model, x, model.log_px(x)


# --- exact likelihood ----------------------------------------------------------------------------


def test_flow_exact_density_integrates_to_one(ring8):
    from genbench_plugins.planar_flow import PlanarFlow

    model = build(PlanarFlow, ring8, n_layers=8)
    train_steps(model, ring8, 30)
    lim, n = 7.0, 281
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1).float()
    with torch.no_grad():
        logp = torch.cat([model.log_likelihood(c).double() for c in grid.split(8000)])
    cell = (2 * lim / (n - 1)) ** 2
    mass = float(logp.exp().sum() * cell)
    assert abs(mass - 1.0) < 0.01, mass


# --- ELBO, IWAE, AIS, BDMC on a linear-Gaussian model ----------------------------------------------


def test_elbo_below_iwae_below_log_px(lg):
    model, x, true = lg
    torch.manual_seed(2)
    elbo, iwae = elbo_and_iwae(model, x, 2000)
    assert (elbo < iwae).all()
    gap = (iwae - true).mean()
    # IWAE is a lower bound in expectation: its mean over points may exceed log p(x) only by noise
    assert gap < 0.02, float(gap)
    assert (elbo.mean() < true.mean() - 0.5), "the imperfect encoder must leave a visible ELBO gap"
    # with 2000 samples of a decent proposal IWAE is close to the truth
    assert abs(float(gap)) < 0.1


def test_ais_recovers_log_px(lg):
    model, x, true = lg
    torch.manual_seed(3)
    result = ais_log_likelihood(model, x, AISSettings(steps=300, chains=16, leapfrog=5))
    err = float((result.log_px - true).mean())
    assert abs(err) < 0.1, err
    assert 0.45 < result.accept_rate < 0.9, result.accept_rate


def test_ais_is_poor_with_few_steps_and_bdmc_says_so(lg):
    """BDMC sandwiches log p(x): the gap is large for a 5-step schedule and small for a long one."""
    model, _, _ = lg
    torch.manual_seed(4)
    short = bdmc(model, 16, AISSettings(steps=5, chains=4, leapfrog=2))
    long = bdmc(model, 16, AISSettings(steps=300, chains=16, leapfrog=5))
    assert short.gap > 1.0, short.gap
    # the sandwich is valid on average; per point its sides carry Monte Carlo noise of ~0.1 nats
    assert -0.1 < long.gap < 0.25, long.gap
    assert long.gap < short.gap / 5
    assert (long.upper.mean() - long.lower.mean()) == pytest.approx(long.gap)


def test_bdmc_brackets_the_true_log_px():
    """On simulated data the forward estimate sits below, the reverse above log p(x), on average."""
    torch.manual_seed(5)
    model = LinearGaussian(seed=3).requires_grad_(False)
    result = bdmc(model, 40, AISSettings(steps=30, chains=4, leapfrog=3))
    true = model.log_px(result.x)
    assert float(result.lower.mean()) < float(true.mean()) < float(result.upper.mean())


def test_sigmoid_schedule_is_monotone_from_zero_to_one():
    b = sigmoid_schedule(100)
    assert b[0] == 0 and b[-1] == 1 and len(b) == 101
    assert (b[1:] > b[:-1]).all()
    assert (b[1] - b[0]) < (b[51] - b[50])  # denser at the ends


def test_ais_settings_reject_bad_values():
    with pytest.raises(Exception, match="steps must be at least 1"):
        AISSettings(steps=0)


def test_obs_sigma_chosen_on_validation_recovers_the_true_noise():
    model = LinearGaussian(LinearGaussianConfig(obs_sigma=0.3), seed=7).requires_grad_(False)
    x_val = model.sample(16, generator=torch.Generator().manual_seed(8))
    torch.manual_seed(9)
    with obs_sigma(model, 2.0):  # the model now believes sigma = 2; the choice must ignore that
        best, scores = select_obs_sigma(model, x_val, (0.03, 0.3, 3.0), AISSettings(steps=50, chains=4, leapfrog=3))
        assert model.config.obs_sigma == 2.0
    assert model.config.obs_sigma == 0.3
    assert best == 0.3, scores
    with pytest.raises(Exception, match="must be positive"):
        select_obs_sigma(model, x_val, (0.1, -1.0), AISSettings(steps=2, chains=1, leapfrog=1))


def test_the_sigma_path_passes_through_every_sigmas_target():
    """Under N(G(z), s^2 I) the target of sigma s is the smallest sigma's at beta = (s_min / s)^2."""
    betas, index = obs_sigma_path((0.5, 0.01, 0.1, 0.02, 0.1), steps=200, first=50)
    assert len(betas) == 201 and betas[0] == 0 and betas[-1] == 1
    assert (betas[1:] > betas[:-1]).all()
    assert sorted(index) == [0.01, 0.02, 0.1, 0.5]  # the repeated 0.1 once
    assert index[0.5] == 50 and index[0.01] == 200
    for sigma, t in index.items():
        assert float(betas[t]) == pytest.approx((0.01 / sigma) ** 2, rel=1e-12)
    one, only = obs_sigma_path((0.2,), steps=30, first=10)  # a single sigma: the plain sigmoidal schedule
    assert torch.equal(one, sigmoid_schedule(30)) and only == {0.2: 30}


def test_every_sigma_scored_from_one_path_recovers_its_log_px():
    """One path annealed toward the smallest sigma estimates log p(x) under every sigma of the grid."""
    model = LinearGaussian(LinearGaussianConfig(obs_sigma=0.3), seed=7).requires_grad_(False)
    x = model.sample(16, generator=torch.Generator().manual_seed(8))
    grid = (0.1, 0.3, 1.0)
    torch.manual_seed(10)
    scores = obs_sigma_scores(model, x, grid, AISSettings(steps=600, chains=16, leapfrog=5))
    assert model.config.obs_sigma == 0.3
    for sigma in grid:
        with obs_sigma(model, sigma):
            true = model.log_px(x)
        err = float((scores[sigma] - true).mean())
        assert abs(err) < 0.1, (sigma, err)


class LinearLaplace(LinearGaussian):
    """The same model with a Laplace observation model: sigma is its scale, not a Gaussian's std."""

    def decode(self, z):
        return Independent(Laplace(z @ self.W.T + self.b, self.sigma), 1)


def test_obs_sigma_choice_falls_back_to_one_run_per_sigma_for_other_decoders():
    from genbench.metrics.ais import _obs_model_is_gaussian

    model = LinearLaplace(LinearGaussianConfig(obs_sigma=0.3), seed=7).requires_grad_(False)
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        x_val = model.decode(torch.randn(16, model.latent, generator=g)).sample()
    assert not _obs_model_is_gaussian(model, x_val)
    assert _obs_model_is_gaussian(LinearGaussian(seed=7), x_val)
    torch.manual_seed(9)
    best, scores = select_obs_sigma(model, x_val, (0.03, 0.3, 3.0), AISSettings(steps=50, chains=4, leapfrog=3))
    assert best == 0.3, scores
    assert model.config.obs_sigma == 0.3


def test_ais_metric_on_a_gan_records_sigma_and_restores_the_model(manager, digits):
    gan_cls = manager.models.get("gan")
    model = build(gan_cls, digits)
    profile = get_profile("test")
    ctx = EvalContext(model, digits, profile, seed=0, device="cpu")
    metric = AISLikelihood()
    assert metric.applies(gan_cls, digits) == (True, "")
    out = metric.compute(ctx)
    assert out["obs_sigma"] in AISLikelihood.settings(profile).obs_sigma_grid
    assert model.config.obs_sigma == gan_cls.Config().obs_sigma
    assert math.isfinite(out["ais"]) and math.isfinite(out["bdmc_gap"])
    # the BDMC gap's standard error over its few simulated points comes with it
    assert out["bdmc_gap_sem"] == bdmc_on_simulated(ctx).gap_sem > 0
    assert out["ais_bpd"] == pytest.approx(digits.spec.bits_per_dim(-out["ais"]))
    assert model.training  # evaluation mode was only for the metric
    flow_ok, why = metric.applies(manager.models.get("planar-flow"), digits)
    assert not flow_ok and "decoder" in why


# --- Parzen window ----------------------------------------------------------------------------------


def test_parzen_log_density_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    samples, x = torch.randn(300, 3, generator=g), torch.randn(7, 3, generator=g)
    sigmas = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    got = parzen_log_density(x, samples, sigmas)
    for i, s in enumerate(sigmas.tolist()):
        comps = Independent(Normal(samples.double(), s), 1).log_prob(x.double().unsqueeze(1))  # (7, 300)
        want = torch.logsumexp(comps, 1) - math.log(300)
        torch.testing.assert_close(got[i], want, rtol=1e-9, atol=1e-9)


def test_parzen_approaches_the_true_density_of_a_known_gaussian():
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    x_val, x_test = torch.randn(500, 2, generator=g), torch.randn(2000, 2, generator=g)
    out = parzen_estimate(samples, x_val, x_test, sigma_grid(30))
    true = float(Independent(Normal(torch.zeros(2), 1.0), 1).log_prob(x_test).double().mean())
    assert abs(out["parzen"] - true) < 0.05, (out, true)
    assert 0.05 < out["parzen_sigma"] < 0.5


def test_parzen_metric_runs_and_labels_itself(manager, digits):
    model = build(manager.models.get("vae"), digits)
    profile = get_profile("test")
    metric = ParzenWindow()
    settings = dataclasses.replace(metric.settings(profile), samples=300)
    ctx = EvalContext(model, digits, profile, seed=0, device="cpu", settings={"parzen": settings})
    out = metric.compute(ctx)
    assert math.isfinite(out["parzen"]) and out["parzen_sem"] > 0
    assert len(ctx.samples(300)) == 300 and ctx.settings_of(metric).samples == 300
    assert "biased" in metric.estimator(profile) and "200 samples" in metric.estimator(profile)  # the test profile's
