"""Planar normalizing flow (Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015).

Each layer is f(z) = z + u_hat * tanh(w^T z + b) with the paper's invertibility constraint
u_hat = u + (m(w^T u) - w^T u) w / ||w||^2, m(a) = -1 + softplus(a), which makes w^T u_hat >= -1.
Here the flow is a *density model of data* trained by maximum likelihood, which needs the inverse
f^{-1}: for y = f(z) the scalar alpha = w^T z solves alpha + (w^T u_hat) tanh(alpha + b) = w^T y, a
monotone equation solved per layer, batched, by safeguarded Newton iterations inside the bracket
[w^T y - |w^T u_hat|, w^T y + |w^T u_hat|].  The gradient through the solution comes from one final
differentiable Newton step taken at the root (the implicit-function-theorem gradient).

The base distribution is a diagonal Gaussian with learned mean and scale (the planar layers alone
cannot rescale the space globally).
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

NEWTON_ITERS = 60  # upper bound; the loop stops as soon as every residual is below NEWTON_TOL
NEWTON_TOL = 1e-9


class PlanarLayer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.u = nn.Parameter(torch.randn(dim) * 0.01)
        self.w = nn.Parameter(torch.randn(dim) * 0.01)
        self.b = nn.Parameter(torch.zeros(()))

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
    """Solve alpha + c tanh(alpha + b) = target for each element (monotone in alpha when c >= -1)."""
    lo, hi = target - c.abs(), target + c.abs()
    alpha = target - c * torch.tanh(target + b)
    for _ in range(NEWTON_ITERS):
        t = torch.tanh(alpha + b)
        g = alpha + c * t - target
        if float(g.abs().max()) < NEWTON_TOL:
            break
        lo = torch.where(g < 0, alpha, lo)
        hi = torch.where(g > 0, alpha, hi)
        step = alpha - g / (1 + c * (1 - t**2)).clamp_min(1e-12)
        bad = (step <= lo) | (step >= hi) | ~torch.isfinite(step)
        alpha = torch.where(bad, 0.5 * (lo + hi), step)
    return alpha


@dataclass
class PlanarFlowConfig:
    n_layers: int = 32
    lr: float = 1e-3
    batch_size: int = 100


class PlanarFlow(GenerativeModel):
    name = "planar-flow"
    family = "Normalizing flow (planar)"
    paper = "Rezende & Mohamed 2015, arXiv:1505.05770"
    capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
    Config = PlanarFlowConfig

    def __init__(self, config: PlanarFlowConfig, spec):
        super().__init__(config, spec)
        d = spec.dim
        self.layers = nn.ModuleList(PlanarLayer(d) for _ in range(config.n_layers))
        image = spec.kind == "image"
        self.base_mean = nn.Parameter(torch.full((d,), 0.5 if image else 0.0))
        self.base_log_scale = nn.Parameter(torch.full((d,), math.log(0.25) if image else 0.0))
        self.optimizers = {"flow": torch.optim.Adam(self.parameters(), lr=config.lr)}

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        s = self.base_log_scale
        e = (z - self.base_mean) * torch.exp(-s)
        return (-0.5 * e**2 - s - 0.5 * math.log(2 * math.pi)).sum(-1)

    def log_likelihood(self, x):
        y = x.flatten(1)
        total = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
        for layer in reversed(self.layers):
            y, logdet = layer.inverse(y)
            total = total - logdet
        return total + self.base_log_prob(y)

    def train_step(self, batch, progress):
        return self.maximum_likelihood_step(batch, "flow")

    def sample(self, n, generator=None, condition=None):
        z = self.base_mean + self.base_log_scale.exp() * randn((n, self.spec.dim), generator, self.device)
        for layer in self.layers:
            z, _ = layer(z)
        if self.spec.kind == "image":
            z = z.clamp(0, 1)  # the density lives on dequantised pixels in [0, 1]; its tails do not
        return z.reshape(n, *self.spec.shape)


@genbench.hookimpl
def register_models(register):
    register(PlanarFlow)
