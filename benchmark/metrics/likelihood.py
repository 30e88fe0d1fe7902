"""Likelihood metrics with the estimator named: exact (flows), and the ELBO / IWAE estimators that the
posterior-gap metric (:mod:`genbench.metrics.posterior`) reports for latent-variable models.

All image likelihoods are densities of uniformly dequantised data on [0, 1]^D (one dequantisation
for every family, see ``DataSpec.dequantize``), reported in nats per example and in bits/dim.

The exact log-likelihoods a model returns for evaluation must be one finite-or-minus-infinity value
per point: NaN or +inf breaks the contract and fails the trial (:class:`genbench.metrics.ContractViolation`).
-inf is legal: the model says a test point is impossible, so its NLL is +inf; the ``nll`` cell is
then marked with how many test points got zero density, not left blank without a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genbench.contract import log_likelihood_violation
from genbench.metrics import EvalContext, Metric, contract_violation, evaluating
from genbench.model import Capability, GenerativeModel
from genbench.profiles import Profile

LIKELIHOOD_CHUNK = 500


def dequantized_test(ctx: EvalContext) -> torch.Tensor:
    x = ctx.test_points()["x"].cpu()  # the generator lives on the CPU: same noise on every device
    return ctx.dataset.spec.dequantize(x, generator=ctx.generator(1).manual_seed(1234)).to(ctx.device)


@torch.no_grad()
def exact_log_likelihood(model: GenerativeModel, x: torch.Tensor, contract: bool = False) -> torch.Tensor:
    """``model.log_likelihood`` of ``x`` in chunks, float64 on the CPU.  With ``contract``, every chunk
    as the model returned it must be ``(len(chunk),)`` log-densities without NaN or +inf, else
    :class:`~genbench.metrics.ContractViolation` is raised (-inf, zero density, is allowed)."""
    out = []
    for c in x.split(LIKELIHOOD_CHUNK):
        ll = model.log_likelihood(c)
        if contract:
            problem = log_likelihood_violation(ll, len(c), allow_zero_density=True)
            if problem is not None:
                raise contract_violation(model, "log_likelihood", problem)
        out.append(ll.double().cpu())
    return torch.cat(out)


class ExactLikelihood(Metric):
    name = "exact_likelihood"
    headline = {"bpd": 60, "nll": 100, "nll_excess": 105}
    columns = {"nll": "lower", "bpd": "lower", "nll_sem": "lower", "nll_excess": "lower"}  # nll_excess: toy data only
    needs = frozenset({Capability.LOG_LIKELIHOOD})

    def estimator(self, profile: Profile) -> str:
        return (f"exact change of variables on the first {profile.ais_points} dequantised test points "
                "(the same points as the IWAE and AIS estimates of latent-variable models)")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        # the points (and dequantisation noise) of the IWAE / AIS columns, so bpd compares across families
        x = dequantized_test(ctx)[: ctx.profile.ais_points]
        with evaluating(ctx.model):
            ll = exact_log_likelihood(ctx.model, x, contract=True)
        out = {"nll": float(-ll.mean()), "nll_sem": float(ll.std() / math.sqrt(len(ll))),
               "bpd": ctx.dataset.spec.bits_per_dim(-ll.mean())}
        impossible = int((ll == -math.inf).sum())
        if impossible:  # legal, and not a number a table can show: say why the cells are infinite
            for column in ("nll", "bpd", "nll_sem"):
                ctx.mark(column, f"the model gives {impossible} of {len(ll)} test points zero density "
                                 "(log p = -inf): the NLL is infinite")
        if ctx.dataset.log_density is not None:  # toy data: how far from the truth (KL(p||q) estimate)
            true_ll = ctx.dataset.log_density(x.double().cpu())
            out["nll_excess"] = float((true_ll - ll).mean())
        return out


def log_weights(model: GenerativeModel, x: torch.Tensor, k: int) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for k posterior samples per point: shape (k, n)."""
    q = model.encode(x)
    z = q.rsample((k,))  # (k, n, d)
    log_q = q.log_prob(z)
    # decoded as k*n rows of 2-D latents: convolutional decoders accept no extra batch dimension
    x_rows = x.repeat(k, *([1] * (x.dim() - 1)))
    log_px_z = model.decode(z.reshape(k * len(x), *z.shape[2:])).log_prob(x_rows).view(k, len(x))
    return log_px_z + model.prior().log_prob(z) - log_q


@dataclass
class IWAEResult:
    """Per point, float64 on the CPU: the ELBO (Monte Carlo mean of the k log weights), the IWAE
    bound log (1/k) sum_k w_k, and the effective sample size (sum w)^2 / sum w^2 of the weights."""

    elbo: torch.Tensor
    iwae: torch.Tensor
    ess: torch.Tensor
    k: int


@torch.no_grad()
def iwae_bounds(model: GenerativeModel, x: torch.Tensor, k: int, chunk_rows: int = 4000) -> IWAEResult:
    """Per-point ELBO, IWAE bound (Burda et al. 2016) and effective sample size of the importance
    weights (Kong 1992: ESS = (sum w)^2 / sum w^2, between 1 and k; k when q is the exact posterior,
    since then every weight equals p(x)).  Points are processed in chunks so that k * points stays
    <= chunk_rows; a point whose k samples exceed chunk_rows is processed in sample chunks and
    combined with running logsumexps of w and of w^2."""
    elbos, iwaes, esss = [], [], []
    per_chunk = max(1, chunk_rows // k)
    sample_chunk = min(k, chunk_rows)
    for xc in x.split(per_chunk):
        lse, lse2, total = None, None, None
        for start in range(0, k, sample_chunk):
            lw = log_weights(model, xc, min(sample_chunk, k - start)).double()
            part, part2 = torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0)
            lse = part if lse is None else torch.logaddexp(lse, part)
            lse2 = part2 if lse2 is None else torch.logaddexp(lse2, part2)
            total = lw.sum(0) if total is None else total + lw.sum(0)
        elbos.append((total / k).cpu())
        iwaes.append((lse - math.log(k)).cpu())
        esss.append((2 * lse - lse2).exp().cpu())
    return IWAEResult(torch.cat(elbos), torch.cat(iwaes), torch.cat(esss), k)


def elbo_and_iwae(model: GenerativeModel, x: torch.Tensor, k: int,
                  chunk_rows: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point ELBO and IWAE bound with k samples (see :func:`iwae_bounds`)."""
    result = iwae_bounds(model, x, k, chunk_rows)
    return result.elbo, result.iwae
