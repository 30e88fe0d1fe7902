"""Planar normalizing flow (Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015).

Each layer is f(z) = z + u_hat * tanh(w^T z + b) with the paper's invertibility constraint
u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a), which makes w^T u_hat >= -1.
Here the flow is a *density model of data* trained by maximum likelihood, which needs the inverse
f^{-1}: for y = f(z) the scalar alpha = w^T z solves alpha + (w^T u_hat) tanh(alpha + b) = w^T y, a
monotone equation solved per layer, batched, by safeguarded Newton iterations inside the bracket
[w^T y - |w^T u_hat|, w^T y + |w^T u_hat|].  The gradient through the solution comes from one final
differentiable Newton step taken at the root (the implicit-function-theorem gradient).

The base distribution is a diagonal Gaussian with learned mean and scale (the planar layers alone
cannot rescale the space globally).  Between the flow and the data sits a fixed per-dimension
affine map x = shift + scale * y, with its exact log-determinant in the likelihood; the first
training batch sets it to the data's mean and standard deviation, so the planar layers work on
unit-scale coordinates whatever the data's scale (2-D toys span [-4, 4] or have modes of std 0.01).

Each layer starts near the identity: w has unit scale and w^T u = log(e - 1), where m(w^T u) = 0,
so the constraint cancels the part of u along w and u_hat is only a small random vector
(``init_std``).

What differs from the paper, and why: the paper fits K = 2, 8, 32 layers to unnormalised 2-D
energies by minimising KL(q || p), and trains its MNIST posteriors with RMSprop; genbench has only
samples, so the same flow is fitted by maximum likelihood (KL(p || q)), with Adam at lr 1e-2 so that
a CPU budget of seconds (hundreds of steps) reaches a fit.  K = 32, the paper's largest flow, and
its minibatch of 100 are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.model import Capability, GenerativeModel
from genbench.nn import randn
from genbench.optim import adam

NEWTON_ITERS = 60  # upper bound; the loop stops as soon as every residual is below NEWTON_TOL
NEWTON_TOL = 1e-9
IDENTITY_WU = math.log(math.e - 1)  # m(a) = -1 + softplus(a) = 0 here


class PlanarLayer(nn.Module):
    def __init__(self, dim: int, init_std: float = 0.01, bias_std: float = 0.0):
        super().__init__()
        # near the identity: w of unit scale and w^T u = log(e - 1), where m(w^T u) = 0, so that u_hat
        # is only the small random part of u.  (A small w would make the constraint's correction
        # (m(w^T u) - w^T u) w / ||w||^2 huge: u_hat of norm ~ 0.3 / ||w|| and w^T u_hat = m(0) = -0.31.)
        w = torch.randn(dim) / math.sqrt(dim)
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(IDENTITY_WU * w / (w @ w) + init_std * torch.randn(dim))
        self.b = nn.Parameter(bias_std * torch.randn(()))

    def u_hat(self) -> torch.Tensor:
        wu = self.w @ self.u
        return self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w @ self.w + 1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = f(z) and log|det df/dz|."""
        u_hat = self.u_hat()
        # (z @ w[:, None]) rather than a matrix-vector product: FlopCounterMode counts matmuls only
        a = (z @ self.w.unsqueeze(-1)).squeeze(-1) + self.b
        t = torch.tanh(a)
        y = z + t.unsqueeze(-1) * u_hat
        logdet = torch.log((1 + (self.w @ u_hat) * (1 - t**2)).abs() + 1e-12)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f^{-1}(y) and log|det df/dz| at z."""
        u_hat = self.u_hat()
        c = self.w @ u_hat  # >= -1 by construction
        target = (y @ self.w.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            alpha = solve_scalar(target.double(), c.double().detach(), self.b.double().detach())
        alpha = alpha.to(y.dtype)
        # one differentiable Newton step at the root: value unchanged, gradient = implicit gradient
        t = torch.tanh(alpha + self.b)
        g = alpha + c * t - target
        alpha = alpha - g / (1 + c * (1 - t**2))
        t = torch.tanh(alpha + self.b)
        z = y - t.unsqueeze(-1) * u_hat
        logdet = torch.log((1 + c * (1 - t**2)).abs() + 1e-12)
        return z, logdet


def solve_scalar(target: torch.Tensor, c: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve alpha + c tanh(alpha + b) = target for each element (monotone in alpha when c >= -1).

    An element stops moving once its residual is below NEWTON_TOL * (1 + |target|) (relative far
    out, where double roundoff exceeds any absolute tolerance); a Newton step that would leave the
    bracket of an unconverged element is replaced by bisection."""
    lo, hi = target - c.abs(), target + c.abs()
    alpha = target - c * torch.tanh(target + b)
    tol = NEWTON_TOL * (1 + target.abs())
    for _ in range(NEWTON_ITERS):
        t = torch.tanh(alpha + b)
        g = alpha + c * t - target
        done = g.abs() < tol
        if bool(done.all()):
            break
        lo = torch.where(g < 0, alpha, lo)
        hi = torch.where(g > 0, alpha, hi)
        step = alpha - g / (1 + c * (1 - t**2)).clamp_min(1e-12)
        bad = (step <= lo) | (step >= hi) | ~torch.isfinite(step)
        alpha = torch.where(done, alpha, torch.where(bad, 0.5 * (lo + hi), step))
    return alpha


@dataclass
class PlanarFlowConfig:
    n_layers: int = 32
    lr: float = 1e-2
    batch_size: int = 100
    init_std: float = 0.01  # scale of the random part of u at initialisation (u_hat ~ this)
    bias_std: float = 0.0  # scale of the random biases b at initialisation
    standardize: bool = True  # fixed per-dimension affine map of the data, set from the first batch


class PlanarFlow(GenerativeModel):
    name = "planar-flow"
    family = "Normalizing flow (planar)"
    paper = "Rezende & Mohamed 2015, arXiv:1505.05770"
    capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
    Config = PlanarFlowConfig

    def __init__(self, config: PlanarFlowConfig, spec):
        super().__init__(config, spec)
        d = spec.dim
        self.layers = nn.ModuleList(PlanarLayer(d, config.init_std, config.bias_std) for _ in range(config.n_layers))
        image = spec.kind == "image"
        # x = shift + scale * y: y is the flow's output space.  Before the first training batch
        # sets them, pixels get a fixed guess and points the identity.
        self.register_buffer("shift", torch.full((d,), 0.5 if image else 0.0))
        self.register_buffer("scale", torch.full((d,), 0.25 if image else 1.0))
        self.register_buffer("standardized", torch.tensor(False))
        self.base_mean = nn.Parameter(torch.zeros(d))
        self.base_log_scale = nn.Parameter(torch.zeros(d))
        self.optimizers = {"flow": adam(self.parameters(), lr=config.lr)}

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        s = self.base_log_scale
        e = (z - self.base_mean) * torch.exp(-s)
        return (-0.5 * e**2 - s - 0.5 * math.log(2 * math.pi)).sum(-1)

    @torch.no_grad()
    def standardize_from(self, x: torch.Tensor) -> None:
        """Data-dependent initialisation of the fixed affine map: per-dimension mean and std."""
        x = x.flatten(1).to(self.shift.dtype)
        self.shift.copy_(x.mean(0))
        self.scale.copy_(x.std(0).clamp_min(1e-3))
        self.standardized.fill_(True)

    def log_likelihood(self, x):
        y = (x.flatten(1) - self.shift) / self.scale
        total = -self.scale.log().sum().expand(y.shape[0])
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y)
            total = total - logdet
        return total + self.base_log_prob(y)

    def train_step(self, batch, progress):
        if self.config.standardize and not bool(self.standardized):
            self.standardize_from(self.spec.dequantize(batch["x"]))
        return self.maximum_likelihood_step(batch, "flow")

    def sample(self, n, generator=None, condition=None):
        z = self.base_mean + self.base_log_scale.exp() * randn((n, self.spec.dim), generator, self.device)
        for layer in self.layers:
            z, _ = layer(z)
        z = self.shift + self.scale * z
        if self.spec.kind == "image":
            z = z.clamp(0, 1)  # the density lives on dequantised pixels in [0, 1]; its tails do not
        return z.reshape(n, *self.spec.shape)


@genbench.hookimpl
def register_models(register):
    register(PlanarFlow)
