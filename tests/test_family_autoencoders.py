"""The autoencoder families: regularised autoencoder with N(0, I) and ex-post GMM sampling, the
adversarial autoencoder (Gaussian and mixture priors), and the Wasserstein autoencoders (MMD, GAN)."""

import math

import pytest
import torch
from conftest import build, train_steps

from genbench.errors import GenbenchError
from genbench.metrics import EvalContext
from genbench.metrics.posterior import AggregatePosteriorMMD, mmd_unbiased
from genbench.model import Capability
from genbench.profiles import get_profile
from genbench.toolkit import imq_mmd2
from genbench_plugins.aae import AAE, AAEMixture
from genbench_plugins.autoencoder import Autoencoder, AutoencoderExPostGMM
from genbench_plugins.wae import WAEGAN, WAEMMD, paper_lr_factor

FAMILIES = [Autoencoder, AutoencoderExPostGMM, AAE, AAEMixture, WAEMMD, WAEGAN]


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_samples_shapes_ranges_and_determinism(cls, digits):
    a = build(cls, digits, seed=3)
    train_steps(a, digits, 5, seed=3)
    b = build(cls, digits, seed=3)
    train_steps(b, digits, 5, seed=3)
    sa = a.sample(32, generator=torch.Generator().manual_seed(0))
    sb = b.sample(32, generator=torch.Generator().manual_seed(0))
    assert sa.shape == (32, 1, 8, 8) and torch.isfinite(sa).all()
    assert 0 <= sa.min() and sa.max() <= 1  # sigmoid decoder means
    assert torch.equal(sa, sb)
    # a different generator seed gives different samples
    assert not torch.equal(sa, a.sample(32, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_points_codes_and_prior_for_aggregate_posterior(cls, ring8):
    model = build(cls, ring8)
    train_steps(model, ring8, 5)
    s = model.sample(50, generator=torch.Generator().manual_seed(0))
    assert s.shape == (50, 2) and torch.isfinite(s).all()
    # deterministic encoders: codes(x) and prior(), never the 'latent' capability
    assert Capability.LATENT not in cls.capabilities
    x = ring8.split("test")["x"][:20]
    assert torch.equal(model.codes(x), model.codes(x))
    assert model.codes(x).shape == (20, model.latent_dim) == (20, 2)
    assert model.prior().sample((7,)).shape == (7, 2)


def test_aggregate_posterior_metric_runs_on_codes(digits):
    model = build(WAEMMD, digits)
    train_steps(model, digits, 5)
    metric = AggregatePosteriorMMD()
    assert metric.applies(WAEMMD, digits)[0]
    out = metric.compute(EvalContext(model, digits, get_profile("test"), 0, "cpu"))
    assert math.isfinite(out["agg_mmd"])


# --- regularised autoencoder and its ex-post density --------------------------------------------


def test_autoencoder_reconstruction_loss_decreases(digits):
    ae = build(Autoencoder, digits)
    x = digits.split("val")["x"][:200]
    with torch.no_grad():
        before = float(ae.loss(x)[1])
    train_steps(ae, digits, 30)
    with torch.no_grad():
        after = float(ae.loss(x)[1])
    assert after < 0.7 * before


def test_rae_loss_is_reconstruction_plus_code_and_decoder_penalties(digits):
    ae = build(Autoencoder, digits, code_penalty=0.5, decoder_l2=0.25)
    plain = build(Autoencoder, digits, code_penalty=0.0, decoder_l2=0.0)
    x = digits.split("val")["x"][:10]
    with torch.no_grad():
        loss, rec, code = ae.loss(x)
        z = ae.codes(x)
        assert float(rec) == pytest.approx(float(((ae.decode_mean(z) - x) ** 2).sum((1, 2, 3)).mean()), rel=1e-5)
        assert float(code) == pytest.approx(float(0.5 * (z**2).sum(1).mean()), rel=1e-5)
        l2 = sum(float((p**2).sum()) for p in ae.decoder.parameters())
        assert float(loss) == pytest.approx(float(rec) + 0.5 * float(code) + 0.25 * l2, rel=1e-5)
        assert float(plain.loss(x)[0]) == pytest.approx(float(plain.loss(x)[1]), rel=1e-6)


def test_ex_post_gmm_is_fitted_lazily_from_training_codes(digits):
    model = build(AutoencoderExPostGMM, digits)
    with pytest.raises(GenbenchError, match="train it first"):
        model.sample(4)
    train_steps(model, digits, 60)
    assert model.ex_post is None  # nothing fitted until samples are asked for
    g = torch.Generator().manual_seed(0)
    z_gmm = model.sample_codes(1000, g)
    assert model.ex_post is not None and len(model.ex_post.weights) == 10
    # 60 steps of 100 cover the 1000 training images: the fit uses each distinct one once
    assert len(model.training_inputs()) == len(digits.split("train")["x"])
    with torch.no_grad():
        train_codes = model.codes(digits.split("train")["x"])
    z_normal = torch.randn(1000, model.latent_dim, generator=g)
    near = mmd_unbiased(z_gmm, train_codes)
    far = mmd_unbiased(z_normal, train_codes)
    assert near < 0.1 * far
    # samples decoded from the mixture re-encode near the training codes too
    with torch.no_grad():
        recoded = model.codes(model.sample(1000, torch.Generator().manual_seed(1)))
    assert mmd_unbiased(recoded, train_codes) < 0.2 * far
    # prior() is the same mixture as a distribution
    assert model.prior().log_prob(z_gmm[:5]).shape == (5,)
    # another training step discards the fit
    model.train_step({"x": digits.split("train")["x"][:100]}, 1.0)
    assert model.ex_post is None


def test_ex_post_buffer_travels_with_the_state_dict(digits):
    a = build(AutoencoderExPostGMM, digits)
    train_steps(a, digits, 5)
    b = build(AutoencoderExPostGMM, digits, seed=9)
    b.load_state_dict(a.state_dict())
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a.sample(8, generator=g), b.sample(8, generator=torch.Generator().manual_seed(0)))


# --- adversarial autoencoder ---------------------------------------------------------------------


def test_aae_discriminator_loss_at_init_is_near_2_log_2(digits):
    aae = build(AAE, digits)
    x = digits.split("train")["x"][:200]
    with torch.no_grad():
        z = aae.codes(x)
        prior = aae.sample_codes(200, torch.Generator().manual_seed(0))
        assert float(aae.discriminator_loss(z, prior)) == pytest.approx(2 * math.log(2), abs=0.1)
        assert float(aae.generator_loss(z)) == pytest.approx(math.log(2), abs=0.1)


def test_aae_regularisation_pulls_the_aggregate_posterior_to_the_prior(digits):
    aae = build(AAE, digits)
    x = digits.split("val")["x"]
    p = torch.randn(len(x), aae.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = mmd_unbiased(aae.codes(x), p)
    train_steps(aae, digits, 150)
    plain = build(Autoencoder, digits, code_penalty=0.0, decoder_l2=0.0)
    train_steps(plain, digits, 150)
    with torch.no_grad():
        after = mmd_unbiased(aae.codes(x), p)
        unregularised = mmd_unbiased(plain.codes(x), p)
    assert after < 0.5 * before
    assert after < 0.7 * unregularised  # the regularisation phase, not reconstruction, did it


def test_aae_mixture_prior_is_ten_gaussians_on_a_circle(digits):
    aae = build(AAEMixture, digits)
    assert aae.config.prior == "mixture" and build(AAE, digits).config.prior == "gaussian"
    z = aae.sample_codes(5000, torch.Generator().manual_seed(0))
    radius = z[:, :2].norm(dim=1)
    assert float(radius.mean()) == pytest.approx(aae.config.mixture_radius, abs=0.1)
    angles = torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi)
    sectors = torch.round(angles / (2 * math.pi / 10)).long() % 10
    counts = torch.bincount(sectors, minlength=10)
    assert counts.min() > 400  # every component drawn, about 500 each
    assert float(z[:, 2:].std()) == pytest.approx(1.0, abs=0.05)
    # prior() is the same distribution as the generator-driven sampler
    other = aae.prior().sample((2000,))
    assert mmd_unbiased(z[:2000], other) < 0.01


def test_aae_rejects_an_unknown_prior(digits):
    with pytest.raises(GenbenchError, match="gaussian"):
        build(AAE, digits, prior="uniform")


# --- Wasserstein autoencoders --------------------------------------------------------------------


def test_wae_mmd_penalty_vanishes_on_prior_codes_and_grows_with_a_shift(digits):
    wae = build(WAEMMD, digits)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(400, wae.latent_dim, generator=g)
    p = torch.randn(400, wae.latent_dim, generator=g)
    same = float(wae.penalty(q, p))
    shifted = float(wae.penalty(q + 1.0, p))
    assert abs(same) < 0.02  # the U-statistic's spread at n = 400 is about 0.005
    assert shifted > 0.3
    # the penalty's kernel constants are those of genbench's aggregate-posterior metric (C = 2 d_z sigma_z^2 s)
    assert shifted == pytest.approx(mmd_unbiased(q + 1.0, p, scale=1.0), rel=1e-4)
    assert float(imq_mmd2(q, q, base=16.0)) < 0  # unbiased: identical samples score below 0


def test_wae_mmd_training_reduces_the_objective(digits):
    wae = build(WAEMMD, digits)
    x = digits.split("val")["x"][:200]

    def objective():
        torch.manual_seed(5)
        with torch.no_grad():
            cost, z = wae.reconstruction_cost(x)
            return float(cost.mean() + wae.config.lam * wae.penalty(z, wae.sample_codes(len(x))))

    before = objective()
    train_steps(wae, digits, 40)
    assert objective() < 0.7 * before


def test_wae_gan_adversary_loss_at_init_is_near_2_lambda_log_2(digits):
    wae = build(WAEGAN, digits, lam=1.0)
    with torch.no_grad():
        z = wae.codes(digits.split("train")["x"][:200])
        prior = wae.sample_codes(200, torch.Generator().manual_seed(0))
        assert float(wae.adversary_loss(z, prior)) == pytest.approx(2 * math.log(2), abs=0.1)
        wae.config.lam = 3.0
        assert float(wae.adversary_loss(z, prior)) == pytest.approx(6 * math.log(2), abs=0.3)


def test_wae_learning_rate_follows_the_paper_schedule(digits):
    wae = build(WAEGAN, digits)
    assert [paper_lr_factor(p) for p in (0.0, 0.29, 0.3, 0.49, 0.5, 1.0)] == [1, 1, 0.5, 0.5, 0.1, 0.1]
    wae.set_learning_rates(0.6)
    assert wae.optimizers["ae"].param_groups[0]["lr"] == pytest.approx(0.1 * wae.config.lr)
    assert wae.optimizers["adv"].param_groups[0]["lr"] == pytest.approx(0.1 * wae.config.lr_adv)
    fixed = build(WAEMMD, digits, lr_schedule=False)
    fixed.set_learning_rates(0.9)
    assert fixed.optimizers["ae"].param_groups[0]["lr"] == fixed.config.lr


def test_wae_prior_has_the_configured_scale(digits):
    wae = build(WAEMMD, digits, prior_std=2.0)
    z = wae.sample_codes(4000, torch.Generator().manual_seed(0))
    assert float(z.std()) == pytest.approx(2.0, rel=0.05)
    assert torch.allclose(wae.prior().stddev, torch.full((wae.latent_dim,), 2.0))
