"""Variational autoencoder (Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014).

Gaussian MLP encoder q(z|x) = N(mu(x), diag sigma^2(x)), standard normal prior, and the paper's
Gaussian MLP decoder for real-valued data (its appendix C.2): p(x|z) = N(mean(z), diag s^2(z)) on
uniformly dequantised pixels, so its likelihood is a density comparable with the flows'.  Trained
by maximising the SGVB estimator of the ELBO with the analytic KL term (the paper's estimator B),
Adam (the paper used Adagrad; Adam is today's default), minibatch 100 as in the paper.  Hidden
width 400 (the paper used 500 on MNIST; 8x8 digits need less).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

import genbench
from genbench.model import Capability, GenerativeModel
from genbench.nn import diag_gaussian, mlp, randn, standard_normal
from genbench.optim import adam


@dataclass
class VAEConfig:
    latent_dim: int = 0  # 0 = by data: 16 for images, 2 for 2-D points
    hidden: int = 400
    lr: float = 1e-3
    batch_size: int = 100
    kl_warmup: float = 0.0  # fraction of the budget over which the KL weight ramps 0 -> 1 (0 = off)
    min_log_scale: float = -6.0  # floor on the decoder's log std, for numerical safety only


class VAE(GenerativeModel):
    name = "vae"
    family = "VAE"
    paper = "Kingma & Welling 2014, arXiv:1312.6114"
    capabilities = frozenset({Capability.SAMPLE, Capability.LATENT, Capability.DECODER})
    Config = VAEConfig

    def __init__(self, config: VAEConfig, spec):
        super().__init__(config, spec)
        d = spec.dim
        self.latent_dim = config.latent_dim or (16 if spec.kind == "image" else 2)
        h = config.hidden
        self.encoder = mlp([d, h, h, 2 * self.latent_dim], act=torch.nn.Tanh)
        self.decoder = mlp([self.latent_dim, h, h, 2 * d], act=torch.nn.Tanh)
        self.optimizers = {"vae": adam(self.parameters(), lr=config.lr)}

    def encode(self, x):
        mu, log_sigma = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return diag_gaussian(mu, log_sigma.clamp(-10, 5))

    def _decoder_params(self, z):
        mean, log_scale = self.decoder(z).chunk(2, dim=-1)
        if self.spec.kind == "image":
            mean = torch.sigmoid(mean)
        log_scale = log_scale.clamp(min=self.config.min_log_scale, max=3.0)
        shape = (*z.shape[:-1], *self.spec.shape)
        return mean.reshape(shape), log_scale.reshape(shape)

    def decode(self, z):
        mean, log_scale = self._decoder_params(z)
        return diag_gaussian(mean, log_scale, event_dims=len(self.spec.shape))

    def prior(self):
        return standard_normal(self.latent_dim, self.device)

    def elbo(self, x, kl_weight: float = 1.0):
        q = self.encode(x)
        z = q.rsample()
        rec = self.decode(z).log_prob(x)
        kl = kl_divergence(q, self.prior())
        return rec - kl_weight * kl, rec, kl

    def train_step(self, batch, progress):
        x = self.spec.dequantize(batch["x"])
        warm = self.config.kl_warmup
        beta = min(1.0, progress / warm) if warm > 0 else 1.0
        objective, rec, kl = self.elbo(x, beta)
        loss = -objective.mean()
        opt = self.optimizers["vae"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "rec": -rec.mean().detach(), "kl": kl.mean().detach()}

    def sample(self, n, generator=None, condition=None):
        z = randn((n, self.latent_dim), generator, self.device)
        mean, log_scale = self._decoder_params(z)
        if self.spec.kind == "image":
            return mean  # the decoder mean, the usual way VAE image samples are shown and scored
        return mean + log_scale.exp() * randn(mean.shape, generator, self.device)


@genbench.hookimpl
def register_models(register):
    register(VAE)
