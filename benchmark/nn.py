"""Small building blocks shared by the built-in families."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Independent, Normal


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, out_act: nn.Module | None = None) -> nn.Sequential:
    """Linear layers of the given sizes with ``act`` between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def standard_normal(dim: int, device) -> Independent:
    zeros = torch.zeros(dim, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def diag_gaussian(mean: torch.Tensor, log_scale: torch.Tensor, event_dims: int = 1) -> Independent:
    return Independent(Normal(mean, log_scale.exp()), event_dims)


def randn(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``generator`` (so samples are the same on every
    device for the same seed), then moved to ``device``."""
    return torch.randn(*shape, generator=generator).to(device)


def log_normal_std(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) summed over the last dimension."""
    return -0.5 * (x**2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)
