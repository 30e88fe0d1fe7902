"""The three skeleton families: VAE, GAN, planar flow."""

import math

import pytest
import torch
from conftest import build, train_steps

from genbench_plugins.gan import GAN
from genbench_plugins.planar_flow import PlanarFlow, PlanarLayer, solve_scalar
from genbench_plugins.vae import VAE


@pytest.mark.parametrize("cls", [VAE, GAN, PlanarFlow])
def test_samples_shapes_ranges_and_determinism(cls, digits):
    a = build(cls, digits, seed=3)  # seeds the global generator, as the runner does per trial
    train_steps(a, digits, 5, seed=3)
    b = build(cls, digits, seed=3)
    train_steps(b, digits, 5, seed=3)
    sa = a.sample(16, generator=torch.Generator().manual_seed(0))
    sb = b.sample(16, generator=torch.Generator().manual_seed(0))
    assert sa.shape == (16, 1, 8, 8) and torch.isfinite(sa).all()
    assert torch.equal(sa, sb)
    if cls is not PlanarFlow:  # sigmoid outputs; a flow's samples are unbounded by construction
        assert 0 <= sa.min() and sa.max() <= 1


def test_vae_loss_is_the_negative_elbo_and_bounds_are_ordered(digits):
    from genbench.metrics.likelihood import elbo_and_iwae

    vae = build(VAE, digits)
    train_steps(vae, digits, 30)
    x = digits.spec.dequantize(digits.split("test")["x"][:20], torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    objective, rec, kl = vae.elbo(x)
    assert torch.allclose(objective, rec - kl)
    assert (kl >= 0).all()  # analytic KL between Gaussians
    torch.manual_seed(0)
    elbo, iwae = elbo_and_iwae(vae, x, k=200, chunk_rows=1000)
    assert elbo.shape == iwae.shape == (20,)
    assert (iwae >= elbo).all()  # Jensen, per point, with the same samples
    # the Monte Carlo ELBO agrees with the analytic-KL ELBO on average
    assert float(elbo.mean()) == pytest.approx(float(objective.detach().mean()), rel=0.05)


def test_vae_training_improves_the_elbo(digits):
    vae = build(VAE, digits)
    x = digits.spec.dequantize(digits.split("val")["x"], torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    before = float(vae.elbo(x)[0].mean())
    train_steps(vae, digits, 200)
    torch.manual_seed(1)
    assert float(vae.elbo(x)[0].mean()) > before + 20


def test_gan_discriminator_loss_at_init_is_near_2_log_2(digits):
    gan = build(GAN, digits)
    losses = gan.train_step({"x": digits.split("train")["x"][:64]}, 0.0)
    assert losses["d_loss"] == pytest.approx(2 * math.log(2), abs=0.1)
    # non-saturating generator loss: -log D(G(z)) with D(G(z)) ~ 1/2 at init
    assert losses["g_loss"] == pytest.approx(math.log(2), abs=0.1)


def test_gan_decoder_is_a_gaussian_observation_model(digits):
    gan = build(GAN, digits, obs_sigma=0.2)
    z = torch.randn(5, gan.latent_dim)
    p = gan.decode(z)
    assert p.batch_shape == (5,) and p.event_shape == (1, 8, 8)
    assert torch.allclose(p.mean, gan.generate(z))
    assert torch.allclose(p.stddev, torch.full_like(p.mean, 0.2))


def test_planar_u_hat_keeps_layers_invertible():
    torch.manual_seed(0)
    for _ in range(20):
        layer = PlanarLayer(5)
        with torch.no_grad():
            layer.u.normal_(0, 3)
            layer.w.normal_(0, 3)
        assert float(layer.w @ layer.u_hat()) >= -1 - 1e-4  # float32 rounding at the boundary


def test_planar_inverse_and_scalar_solver():
    torch.manual_seed(0)
    target = torch.randn(1000, dtype=torch.float64) * 5
    for c in (-0.999, 0.0, 0.5, 20.0):
        alpha = solve_scalar(target, torch.tensor(c, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64))
        residual = alpha + c * torch.tanh(alpha + 0.3) - target
        assert residual.abs().max() < 1e-7  # c = -0.999 makes the equation nearly flat at its root
    layer = PlanarLayer(3)
    with torch.no_grad():
        layer.u.copy_(torch.tensor([2.0, -1.0, 0.5]))
        layer.w.copy_(torch.tensor([1.0, 1.5, -0.5]))
    z = torch.randn(50, 3)
    y, logdet = layer(z)
    z_back, logdet_back = layer.inverse(y)
    assert torch.allclose(z, z_back, atol=1e-5)
    assert torch.allclose(logdet, logdet_back, atol=1e-5)


def test_planar_log_likelihood_matches_autograd_jacobian(ring8):
    flow = build(PlanarFlow, ring8, n_layers=4).double()
    with torch.no_grad():
        for layer in flow.layers:
            layer.u.normal_(0, 1)
            layer.w.normal_(0, 1)
            layer.b.normal_(0, 1)
    z0 = torch.randn(4, 2, dtype=torch.float64)

    def forward(z):
        for layer in flow.layers:
            z, _ = layer(z)
        return z

    x = forward(z0)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(forward, z0[i : i + 1]).reshape(2, 2)
        expected = flow.base_log_prob(z0[i : i + 1]) - torch.linalg.slogdet(jac).logabsdet
        assert float(flow.log_likelihood(x[i : i + 1])) == pytest.approx(float(expected), abs=1e-6)


def test_planar_gradient_through_the_inverse_is_exact(ring8):
    """The single Newton step at the root gives the implicit-function gradient: compare the
    autograd gradient of log p(x) with central finite differences of every parameter."""
    torch.manual_seed(0)
    flow = build(PlanarFlow, ring8, n_layers=2).double()
    with torch.no_grad():
        for layer in flow.layers:
            layer.u.normal_(0, 1)
            layer.w.normal_(0, 1)
            layer.b.normal_(0, 1)
    x = torch.randn(3, 2, dtype=torch.float64)
    flow.zero_grad()
    flow.log_likelihood(x).sum().backward()
    eps = 1e-6
    for param in [p for layer in flow.layers for p in layer.parameters()]:
        flat = param.data.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + eps
                up = float(flow.log_likelihood(x).sum())
                flat[i] = old - eps
                down = float(flow.log_likelihood(x).sum())
                flat[i] = old
            assert float(param.grad.view(-1)[i]) == pytest.approx((up - down) / (2 * eps), abs=1e-5)


def test_planar_flow_density_integrates_to_one(ring8):
    flow = build(PlanarFlow, ring8, n_layers=6)
    train_steps(flow, ring8, 30)
    lin = torch.linspace(-6, 6, 401)
    gx, gy = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        mass = flow.log_likelihood(pts).double().exp().sum() * float(lin[1] - lin[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=0.02)
