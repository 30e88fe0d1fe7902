"""Mode metrics on toy mixtures, with the definitions of Srivastava et al. (VEEGAN, 2017) as used by
Lin et al. (PacGAN, 2018): a sample is *high quality* if it lies within three standard deviations
of its nearest mode centre; a mode is *captured* if at least one high-quality sample is assigned to
it.  PacGAN's reverse KL between the mode histogram of the high-quality samples and the uniform
distribution over modes is reported too (0 when every mode gets its share)."""

from __future__ import annotations

import math

import torch

from genbench.metrics import EvalContext, Metric
from genbench.model import Capability


def mode_metrics(samples: torch.Tensor, centres: torch.Tensor, std: float, min_count: int = 1) -> dict[str, float]:
    d = torch.cdist(samples.double(), centres.double().to(samples.device))
    dist, nearest = d.min(dim=1)
    hq = dist <= 3 * std
    counts = torch.bincount(nearest[hq], minlength=len(centres)).double()
    captured = int((counts >= min_count).sum())
    if hq.any():
        p = counts / counts.sum()
        nz = p > 0
        reverse_kl = float((p[nz] * (p[nz] * len(centres)).log()).sum())
    else:
        reverse_kl = math.log(len(centres))  # no high-quality sample: as far from uniform as it gets
    return {"modes": float(captured), "hq_pct": 100.0 * float(hq.double().mean()), "mode_kl": reverse_kl}


class Modes(Metric):
    name = "modes"
    headline = {"modes": 40, "hq_pct": 50, "mode_kl": 90}
    columns = {"modes": "higher", "hq_pct": "higher", "mode_kl": "lower"}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"points"})
    dataset_needs = frozenset({"modes"})

    def estimator(self, profile) -> str:
        return f"PacGAN mode counts on {profile.n_mode_samples} samples (3 std, >=1 sample per mode)"

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        samples = ctx.samples(ctx.profile.n_mode_samples)
        return mode_metrics(samples, ctx.dataset.modes.cpu(), ctx.dataset.mode_std)
