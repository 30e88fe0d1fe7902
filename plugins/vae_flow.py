"""VAE with a planar-flow posterior (Rezende & Mohamed, "Variational Inference with Normalizing
Flows", ICML 2015, section 4).

The approximate posterior is q_K(z|x): a diagonal Gaussian q_0(z|x) = N(mu(x), diag sigma^2(x))
pushed through K planar layers f_k(z) = z + u_hat_k tanh(w_k^T z + b_k).  As in the paper, the
flow parameters are amortised: the encoder outputs mu, log sigma and every layer's (u, w, b) for
each x.  u_hat is the paper's invertibility constraint (its appendix A), written here for batches
of parameters and kept identical to :meth:`genbench_plugins.planar_flow.PlanarLayer.u_hat`:
u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a), so w^T u_hat >= -1.
Training maximises the paper's bound (the negative of its free energy for planar flows, section 4.2)

    ELBO(x) = E_{z_0 ~ q_0} [ log p(x, z_K) - log q_0(z_0|x) + sum_k log |1 + u_hat_k^T psi_k(z_{k-1})| ],

with one reparameterised sample per point.  Generative model, decoder, widths, optimiser and
minibatch are those of ``vae`` (the class subclasses :class:`genbench_plugins.vae.VAE`), so the two
rows differ only in the posterior family.  The paper's decoder was Bernoulli on binarised MNIST and
its optimiser RMSprop; the VAE's Gaussian decoder on dequantised pixels keeps the likelihoods
comparable with the rest of the leaderboard.  K = 10 by default (the paper reports K = 2 .. 80).
The paper's annealed bound (inverse temperature beta_t = min(1, 0.01 + t / 10000) on log p(x, z_K))
is available as ``anneal``, the fraction of the budget over which beta reaches 1; it is off by
default, as the VAE's KL warm-up is.

Because the amortised planar flow has no cheap inverse, ``encode(x)`` returns a
:class:`PlanarFlowPosterior` that scores only its own samples: ``log_prob(z)`` for the tensor its
last ``rsample`` returned is the density cached while drawing it, which is exactly what the ELBO
and IWAE estimators need.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

import genbench
from genbench.errors import GenbenchError
from genbench.nn import diag_gaussian, mlp
from genbench.optim import adam
from genbench_plugins.vae import VAE


def planar_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The paper's constraint for batches of parameters (last dimension = latent): the same
    formula as ``PlanarLayer.u_hat``, which guarantees w^T u_hat >= -1."""
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / ((w * w).sum(-1, keepdim=True) + 1e-12)


def planar_step(z: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """One planar layer with per-point parameters (u_hat, w: (n, d), b: (n,)) applied to
    z of shape (..., n, d): returns f(z) and log|det df/dz| of shape (..., n)."""
    t = torch.tanh((z * w).sum(-1) + b)
    wu = (w * u_hat).sum(-1)  # >= -1 by construction
    # the same 1e-12 guard as PlanarLayer: w^T u_hat = -1 makes the layer singular where tanh' = 1
    logdet = torch.log((1 + wu * (1 - t**2)).abs() + 1e-12)
    return z + t.unsqueeze(-1) * u_hat, logdet


class PlanarFlowPosterior(Distribution):
    """q_K(z|x): a diagonal Gaussian base pushed through K planar layers with per-point
    parameters.  Batch shape (n,), event shape (d,).

    ``log_prob`` is defined only for the samples this object drew itself (the last call of
    ``rsample``/``sample``): the density of a sample is known from the change of variables while
    it is drawn, but inverting an amortised planar flow at an arbitrary z would need an iterative
    solve per point and layer.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, base: Distribution, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
        """``base``: q_0 with batch shape (n,) and event shape (d,); ``u``, ``w``: (K, n, d);
        ``b``: (K, n).  ``u`` is the unconstrained parameter; u_hat is computed here."""
        if u.shape != w.shape or u.shape[1:] != base.batch_shape + base.event_shape or b.shape != u.shape[:2]:
            raise GenbenchError(
                f"planar posterior: u {tuple(u.shape)} and w {tuple(w.shape)} must be (K, n, d) and b "
                f"{tuple(b.shape)} (K, n) for a base of batch shape {tuple(base.batch_shape)} and event "
                f"shape {tuple(base.event_shape)}")
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)
        self.base = base
        self.u, self.w, self.b = u, w, b
        self.u_hat = planar_u_hat(u, w)
        self.last_base_sample: torch.Tensor | None = None
        self._last_sample: torch.Tensor | None = None
        self._last_log_prob: torch.Tensor | None = None

    @property
    def n_layers(self) -> int:
        return self.w.shape[0]

    def flow(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_K and sum_k log|det| (shape z0.shape[:-1]) for base samples z0 of shape (..., n, d)."""
        z, total = z0, torch.zeros(z0.shape[:-1], device=z0.device, dtype=z0.dtype)
        for k in range(self.n_layers):
            z, logdet = planar_step(z, self.u_hat[k], self.w[k], self.b[k])
            total = total + logdet
        return z, total

    def rsample(self, sample_shape=()) -> torch.Tensor:
        z0 = self.base.rsample(sample_shape)
        z, logdet = self.flow(z0)
        self.last_base_sample = z0
        self._last_sample = z
        self._last_log_prob = self.base.log_prob(z0) - logdet
        return z

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        last = self._last_sample
        if last is not None and (value is last or (value.shape == last.shape and value.device == last.device
                                                   and torch.equal(value, last.to(value.dtype)))):
            return self._last_log_prob
        raise GenbenchError(
            "a planar-flow posterior can only score its own samples: call q.rsample(...) (or q.sample) "
            "and pass the tensor it returned to q.log_prob; the density of any other z would need the "
            "inverse of the amortised flow, which has no closed form")


@dataclass
class PlanarVAEConfig:
    flow_length: int = 10  # K planar layers in q_K(z|x)
    latent_dim: int = 0  # 0 = by data: 16 for images, 2 for 2-D points (as vae)
    hidden: int = 400
    lr: float = 1e-3
    batch_size: int = 100
    anneal: float = 0.0  # fraction of the budget over which beta goes 0.01 -> 1 (0 = off)
    min_log_scale: float = -6.0  # floor on the decoder's log std, for numerical safety only


class PlanarVAE(VAE):
    name = "vae-planar"
    family = "VAE (planar-flow posterior)"
    paper = "Rezende & Mohamed 2015, arXiv:1505.05770"
    Config = PlanarVAEConfig

    def __init__(self, config: PlanarVAEConfig, spec):
        if config.flow_length < 0:
            raise GenbenchError(f"vae-planar: flow_length={config.flow_length} must be >= 0 (0 = plain VAE)")
        super().__init__(config, spec)
        d, k, h = self.latent_dim, config.flow_length, config.hidden
        # one encoder head for mu, log sigma and every layer's (u, w, b): the amortised flow
        self.encoder = mlp([spec.dim, h, h, 2 * d + k * (2 * d + 1)], act=torch.nn.Tanh)
        # The constraint adds (m(w.u) - w.u) w / |w|^2 to u, of size ~0.31 / |w| near w.u = 0: with
        # the near-zero w a default-initialised head outputs, u_hat starts huge and every layer
        # throws z far from the prior.  A bias of norm ~1 on each layer's w keeps the initial bends mild.
        with torch.no_grad():
            head = self.encoder[-1].bias[2 * d:].view(k, 2 * d + 1)
            head[:, d : 2 * d] = torch.randn(k, d) / d**0.5
        self.optimizers = {"vae": adam(self.parameters(), lr=config.lr)}

    def encode(self, x):
        d, k = self.latent_dim, self.config.flow_length
        out = self.encoder(x.flatten(1))
        mu, log_sigma, flow = out.split([d, d, k * (2 * d + 1)], dim=-1)
        base = diag_gaussian(mu, log_sigma.clamp(-10, 5))
        flow = flow.reshape(len(x), k, 2 * d + 1).transpose(0, 1)  # (K, n, 2d + 1)
        u, w, b = flow.split([d, d, 1], dim=-1)
        return PlanarFlowPosterior(base, u, w, b.squeeze(-1))

    def elbo(self, x, kl_weight: float = 1.0):
        """One-sample estimates per point: (log p(x|z_K) - kl_weight * kl, log p(x|z_K), kl) with
        kl = log q_K(z_K|x) - log p(z_K), which has no closed form under a flow posterior."""
        q = self.encode(x)
        z = q.rsample()
        rec = self.decode(z).log_prob(x)
        kl = q.log_prob(z) - self.prior().log_prob(z)
        return rec - kl_weight * kl, rec, kl

    def train_step(self, batch, progress):
        x = self.spec.dequantize(batch["x"])
        anneal = self.config.anneal
        beta = min(1.0, 0.01 + progress / anneal) if anneal > 0 else 1.0
        q = self.encode(x)
        z = q.rsample()
        rec = self.decode(z).log_prob(x)
        log_pz = self.prior().log_prob(z)
        log_q = q.log_prob(z)
        # the paper's annealed free energy: beta scales log p(x, z_K), not the entropy term
        loss = -(beta * (rec + log_pz) - log_q).mean()
        opt = self.optimizers["vae"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "rec": -rec.mean().detach(), "kl": (log_q - log_pz).mean().detach()}


@genbench.hookimpl
def register_models(register):
    register(PlanarVAE)
