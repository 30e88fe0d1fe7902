"""Parzen-window log-likelihood: the classic estimator that early GAN papers report.

The protocol of Breuleux, Bengio and Vincent 2011 as used by Goodfellow et al. 2014 (GAN, Table 1):
fit an isotropic Gaussian kernel density to a fixed number of generated samples, choose the kernel
width sigma by the log-likelihood of validation data over a log grid, then report the mean
log-density of test points and its standard error.  The estimator is biased and, in high
dimension, far from the true log-likelihood (Theis, van den Oord and Bethge 2016); it is here so
that old numbers can be reproduced, with the label saying so.  Test and validation points are
dequantised exactly as for every other likelihood column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genbench.errors import GenbenchError
from genbench.metrics import EvalContext, Metric
from genbench.metrics.likelihood import dequantized_test
from genbench.model import Capability
from genbench.profiles import Profile

MAX_ENTRIES = 2_000_000  # (points x samples) distances per chunk: 16 MB of float64
SIGMA_RANGE = (-3.0, 0.5)  # log10 of the bandwidth grid's ends (covers 2-D toys and [0, 1] pixels)


def sigma_grid(n: int) -> torch.Tensor:
    if n < 1:
        raise GenbenchError(f"the Parzen bandwidth grid needs at least one value, got {n}")
    return torch.logspace(*SIGMA_RANGE, n, dtype=torch.float64)


def parzen_log_density(x: torch.Tensor, samples: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """log of the Gaussian-kernel density of ``samples`` at each point of ``x``, for every bandwidth:
    shape (len(sigmas), n).  Squared distances are computed once per chunk of points (float64) and
    reused for all bandwidths."""
    x = x.flatten(1).double()
    s = samples.flatten(1).double().to(x.device)
    if x.shape[1] != s.shape[1]:
        raise GenbenchError(f"Parzen window: points have {x.shape[1]} dims but samples have {s.shape[1]}")
    n_s, d = s.shape
    sigmas = sigmas.to(x.device, torch.float64)
    s_sq = (s**2).sum(1)
    norm = -math.log(n_s) - d * sigmas.log() - 0.5 * d * math.log(2 * math.pi)  # (S,)
    out = []
    rows = max(1, MAX_ENTRIES // n_s)
    for xc in x.split(rows):
        sq = ((xc**2).sum(1, keepdim=True) + s_sq - 2.0 * xc @ s.T).clamp_min(0.0)  # (c, n_s)
        lse = torch.stack([torch.logsumexp(-sq / (2.0 * sig**2), dim=1) for sig in sigmas])  # (S, c)
        out.append((lse + norm.unsqueeze(1)).cpu())
    return torch.cat(out, dim=1)


def parzen_estimate(samples: torch.Tensor, x_val: torch.Tensor, x_test: torch.Tensor,
                    sigmas: torch.Tensor) -> dict[str, float]:
    """Choose sigma on ``x_val``, then the mean and standard error of the log-density of ``x_test``."""
    val = parzen_log_density(x_val, samples, sigmas).mean(1)
    best = int(torch.nan_to_num(val, nan=-math.inf).argmax())
    sigma = sigmas[best : best + 1]
    ll = parzen_log_density(x_test, samples, sigma)[0]
    sem = float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    return {"parzen": float(ll.mean()), "parzen_sem": sem, "parzen_sigma": float(sigma[0])}


@dataclass(frozen=True)
class ParzenSettings:
    samples: int = 2000  # model samples the kernel density sits on
    sigmas: int = 20  # size of the log grid of bandwidths, 1e-3 .. 10**0.5
    val_points: int = 500  # validation points that choose the bandwidth


class ParzenWindow(Metric):
    name = "parzen"
    columns = {"parzen": "higher", "parzen_sem": "lower"}  # also reported: parzen_sigma
    needs = frozenset({Capability.SAMPLE})
    Settings = ParzenSettings
    profile_settings = {"standard": {"samples": 10_000, "sigmas": 30, "val_points": 2000},
                        "test": {"samples": 200, "sigmas": 8, "val_points": 100}}

    def applies(self, model_cls, dataset):
        if model_cls.condition_key is not None:
            # its samples are drawn from the held-out inputs (e.g. the test images' own patches), so a
            # kernel density on them, scored on those test images, would not estimate p(x)
            return False, "samples come from held-out inputs, not from p(x)"
        return super().applies(model_cls, dataset)

    def estimator(self, profile: Profile) -> str:
        cfg = self.settings(profile)
        return (f"Parzen window (Breuleux et al. 2011, Goodfellow et al. 2014): the classic, biased estimator; "
                f"Gaussian kernel on {cfg.samples} samples, sigma from a {cfg.sigmas}-point "
                f"log grid 10^{SIGMA_RANGE[0]}..10^{SIGMA_RANGE[1]} by validation log-likelihood "
                f"({cfg.val_points} val points), mean +- s.e.m. over "
                f"{profile.n_likelihood_points} dequantised test points")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        cfg = ctx.settings_of(self)
        samples = ctx.samples(cfg.samples)
        if not torch.isfinite(samples).all():
            raise GenbenchError(f"{ctx.model.name} produced non-finite samples; the Parzen window needs finite ones")
        val = ctx.dataset.split("val")["x"][: cfg.val_points].cpu()  # CPU generator below
        x_val = ctx.dataset.spec.dequantize(val, generator=torch.Generator().manual_seed(4321))
        x_test = dequantized_test(ctx)
        return parzen_estimate(samples, x_val.to(ctx.device), x_test, sigma_grid(cfg.sigmas))
