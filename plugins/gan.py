"""Generative adversarial network (Goodfellow et al., "Generative Adversarial Nets", NIPS 2014).

MLP generator and discriminator playing the minimax game, with the paper's non-saturating
generator loss (maximise log D(G(z)) instead of minimising log(1 - D(G(z)))), one discriminator
step per generator step (k = 1, as in the paper's experiments).  The paper's maxout/dropout
discriminator is replaced by LeakyReLU, and SGD with momentum by Adam (lr 2e-4, beta1 0.5): the
settings that made MLP GANs train reliably since Radford et al. 2016.

For likelihood estimation by AIS the generator is also exposed as a decoder under a Gaussian
observation model p(x|z) = N(G(z), sigma^2 I) with the standard normal prior (Wu et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.model import Capability, GenerativeModel
from genbench.nn import diag_gaussian, mlp, randn, standard_normal


@dataclass
class GANConfig:
    latent_dim: int = 0  # 0 = by data: 32 for images, 8 for 2-D points
    hidden: int = 256
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64
    obs_sigma: float = 0.1  # std of the Gaussian observation model used only for likelihood estimates


class GaussianObservationDecoder:
    """For generator families: ``decode(z)`` = N(G(z), obs_sigma^2 I) and a standard normal prior,
    so AIS can estimate their likelihood like any decoder's.  Needs ``generate``, ``latent_dim``
    and ``config.obs_sigma``."""

    def sample(self, n, generator=None, condition=None):
        return self.generate(randn((n, self.latent_dim), generator, self.device))

    def decode(self, z):
        mean = self.generate(z)
        log_scale = torch.full_like(mean, float(torch.tensor(self.config.obs_sigma).log()))
        return diag_gaussian(mean, log_scale, event_dims=len(self.spec.shape))

    def prior(self):
        return standard_normal(self.latent_dim, self.device)


class GAN(GaussianObservationDecoder, GenerativeModel):
    name = "gan"
    family = "GAN"
    paper = "Goodfellow et al. 2014, arXiv:1406.2661"
    capabilities = frozenset({Capability.SAMPLE, Capability.DECODER})
    Config = GANConfig

    def __init__(self, config: GANConfig, spec):
        super().__init__(config, spec)
        d, h = spec.dim, config.hidden
        self.latent_dim = config.latent_dim or (32 if spec.kind == "image" else 8)
        out = nn.Sigmoid() if spec.kind == "image" else None
        self.generator = mlp([self.latent_dim, h, h, d], act=nn.ReLU, out_act=out)
        self.discriminator = mlp([d, h, h, 1], act=lambda: nn.LeakyReLU(0.2))
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "g": torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas),
        }

    def generate(self, z):
        return self.generator(z).reshape(*z.shape[:-1], *self.spec.shape)

    def train_step(self, batch, progress):
        # dequantised like every family sees the data: otherwise D separates real from fake by the
        # 17 discrete pixel levels alone
        real = self.spec.dequantize(batch["x"]).flatten(1)
        n = real.shape[0]
        z = torch.randn(n, self.latent_dim, device=real.device)
        fake = self.generator(z)
        # discriminator: maximise log D(x) + log(1 - D(G(z)))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        # generator: non-saturating, maximise log D(G(z))
        g_out = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        self.optimizers["g"].zero_grad()
        g_loss.backward()
        self.optimizers["g"].step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}


@genbench.hookimpl
def register_models(register):
    register(GAN)
