"""The planar flow as a density model of data: initialisation near the identity, the data
standardisation and its log-determinant, consistency of sampling with the density, and a short
fit that beats the moment-matched Gaussian on a 2-D mixture."""

import dataclasses
import math

import pytest
import torch
from conftest import build, train_steps

from genbench_plugins.planar_flow import PlanarFlow, PlanarLayer, solve_scalar


def gaussian_fit_nll(train: torch.Tensor, test: torch.Tensor) -> float:
    """NLL on ``test`` of the diagonal Gaussian with ``train``'s mean and standard deviation."""
    g = torch.distributions.Normal(train.mean(0).double(), train.std(0).double())
    return float(-g.log_prob(test.double()).sum(-1).mean())


def test_a_fresh_layer_is_near_the_identity():
    torch.manual_seed(0)
    z = torch.randn(200, 2) * 3
    for _ in range(20):
        layer = PlanarLayer(2)
        u_hat = layer.u_hat().detach()
        assert float(u_hat.norm()) < 0.1  # the constraint cancels the part of u along w
        assert abs(float(layer.w.detach() @ u_hat)) < 0.05
        with torch.no_grad():
            y, logdet = layer(z)
        assert float((y - z).abs().max()) < 0.1
        assert float(logdet.abs().max()) < 0.05


def test_untrained_flow_on_standardised_data_is_the_moment_matched_gaussian(ring8):
    flow = build(PlanarFlow, ring8)
    train, test = ring8.split("train")["x"][:100], ring8.split("test")["x"][:500]
    flow.standardize_from(train)
    with torch.no_grad():
        nll = float(-flow.log_likelihood(test).double().mean())
    assert nll == pytest.approx(gaussian_fit_nll(train, test), abs=0.2)


def test_first_training_step_standardises_and_later_steps_keep_the_map(ring8):
    flow = build(PlanarFlow, ring8)
    assert not bool(flow.standardized)
    batch = {"x": ring8.split("train")["x"][:100] * 4 + 3}
    flow.train_step(batch, 0.0)
    assert bool(flow.standardized)
    assert torch.allclose(flow.shift, batch["x"].mean(0)) and torch.allclose(flow.scale, batch["x"].std(0))
    shift, scale = flow.shift.clone(), flow.scale.clone()
    flow.train_step({"x": ring8.split("train")["x"][100:200]}, 0.1)
    assert torch.equal(flow.shift, shift) and torch.equal(flow.scale, scale)
    fixed = build(PlanarFlow, ring8, standardize=False)
    fixed.train_step(batch, 0.0)
    assert torch.equal(fixed.shift, torch.zeros(2)) and torch.equal(fixed.scale, torch.ones(2))


def test_log_likelihood_with_the_data_map_matches_the_autograd_jacobian(ring8):
    """log p(x) = log N(z) + log|det dz/dx| for the whole map x -> z, standardisation included."""
    flow = build(PlanarFlow, ring8, n_layers=4).double()
    with torch.no_grad():
        for layer in flow.layers:
            layer.u.normal_(0, 1)
            layer.w.normal_(0, 1)
            layer.b.normal_(0, 1)
        flow.shift.copy_(torch.tensor([0.7, -2.0]))
        flow.scale.copy_(torch.tensor([0.05, 3.0]))
        flow.base_mean.normal_(0, 0.3)
        flow.base_log_scale.normal_(0, 0.3)

    def to_latent(x):
        y = (x - flow.shift) / flow.scale
        for layer in reversed(flow.layers):
            y, _ = layer.inverse(y)
        return y

    x = flow.shift + flow.scale * torch.randn(4, 2, dtype=torch.float64)
    with torch.no_grad():
        ll = flow.log_likelihood(x)
    for i in range(4):
        z = to_latent(x[i : i + 1])
        jac = torch.autograd.functional.jacobian(to_latent, x[i : i + 1]).reshape(2, 2)
        expected = flow.base_log_prob(z) + torch.linalg.slogdet(jac).logabsdet
        assert float(ll[i]) == pytest.approx(float(expected), abs=1e-6)


def test_samples_follow_the_density_the_likelihood_reports(ring8):
    """After training on data far from the origin, the density integrates to one on a grid around
    the data and its mean equals the mean of the samples: sampling and scoring use the same map."""
    splits = {k: {**v, "x": v["x"] * 2 + torch.tensor([5.0, -3.0])} for k, v in ring8.splits.items()}
    shifted = dataclasses.replace(ring8, splits=splits)
    flow = build(PlanarFlow, shifted, n_layers=6)
    train_steps(flow, shifted, 30)
    lin_x = torch.linspace(-1, 11, 481, dtype=torch.float64)
    lin_y = torch.linspace(-9, 3, 481, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lin_x, lin_y, indexing="ij"), -1).reshape(-1, 2)
    cell = float(lin_x[1] - lin_x[0]) * float(lin_y[1] - lin_y[0])
    with torch.no_grad():
        density = flow.double().log_likelihood(grid).exp()
        samples = flow.sample(20000, generator=torch.Generator().manual_seed(0))
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=0.01)
    grid_mean = (density.unsqueeze(1) * grid).sum(0) * cell
    assert torch.allclose(samples.mean(0), grid_mean, atol=0.05)
    assert float(samples.mean(0).sub(torch.tensor([5.0, -3.0], dtype=torch.float64)).norm()) < 0.5


@pytest.mark.parametrize("dataset_name, margin", [("ring8", 0.5), ("grid25", 0.15)])
def test_a_short_fit_beats_the_moment_matched_gaussian(dataset_name, margin):
    from genbench.datasets import load_grid25, load_ring8

    dataset = {"ring8": load_ring8, "grid25": load_grid25}[dataset_name]()
    flow = build(PlanarFlow, dataset, n_layers=8)
    train_steps(flow, dataset, 150)
    test = dataset.split("test")["x"][:1000]
    with torch.no_grad():
        nll = float(-flow.log_likelihood(test).double().mean())
    assert math.isfinite(nll)
    assert nll < gaussian_fit_nll(dataset.split("train")["x"], test) - margin


def test_solver_converges_far_out_where_roundoff_grows():
    target = torch.tensor([-1e7, -3.0, 0.0, 2.5, 4e6], dtype=torch.float64)
    for c in (-0.999, 0.3, 50.0):
        c_t, b = torch.tensor(c, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
        alpha = solve_scalar(target, c_t, b)
        residual = alpha + c * torch.tanh(alpha + b) - target
        assert float((residual.abs() / (1 + target.abs())).max()) < 1e-8
