"""Adversarial autoencoder (Makhzani, Shlens, Jaitly, Goodfellow & Frey, "Adversarial Autoencoders",
arXiv:1511.05644, 2015).

An autoencoder whose aggregate posterior q(z) = E_x q(z|x) is matched to an arbitrary prior p(z) by
a GAN played in code space: the encoder is the GAN's generator, a discriminator on codes tells
prior samples from codes.  The paper's main variant with a deterministic encoder.  Each training
step is one minibatch of the paper's two phases:

1. reconstruction phase -- encoder and decoder minimise the reconstruction error
   ||x - D(E(x))||^2 (squared Euclidean, summed over pixels; sigmoid decoder output for images);
2. regularisation phase -- the discriminator maximises log d(z') + log(1 - d(E(x))) with z' ~ p(z),
   then the encoder maximises log d(E(x)) (the non-saturating generator loss of GANs).

Samples decode z ~ p(z).  The prior is selectable: ``prior="gaussian"`` (standard normal, the
paper's likelihood experiments) or ``prior="mixture"`` (``mixture_components`` Gaussians with means on
a circle of radius ``mixture_radius`` in the first two code dimensions and standard deviation
``mixture_std`` there, standard normal in the others -- in a 2-D code, the paper's "mixture of 10 2-D
Gaussians" with isotropic components); any prior that can be sampled works, since the discriminator
only needs its samples.  ``aae`` has the Gaussian prior, ``aae-mixture`` the mixture.

What was scaled, and why: encoder, decoder and discriminator have two hidden layers of 400 ReLU units
(the paper's MNIST networks: 1000) and the code has 8 dimensions (2 for 2-D point sets), as 8x8
digits need far less capacity than MNIST and the default budget is 15 CPU seconds.
The paper's SGD with momentum is replaced by Adam (reconstruction lr 1e-3; regularisation lr 2e-4
with beta1 = 0.5, the usual setting for GAN games), minibatch 100 as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import genbench
from genbench.errors import GenbenchError
from genbench.nn import randn, standard_normal
from genbench.optim import adam
from genbench.toolkit import bce_with_logits
from genbench.toolkit.autoencoders import DeterministicAutoencoder, GaussianMixtureCodes, code_discriminator

PRIORS = ("gaussian", "mixture")


@dataclass
class AAEConfig:
    prior: str = "gaussian"  # "gaussian" (standard normal) or "mixture" (Gaussians on a circle)
    latent_dim: int = 0  # 0 = by data: 8 for images, 2 for 2-D points
    hidden: int = 400
    disc_hidden: int = 400
    disc_layers: int = 2
    lr: float = 1e-3  # reconstruction phase
    reg_lr: float = 2e-4  # regularisation phase: discriminator and encoder-as-generator
    reg_beta1: float = 0.5
    batch_size: int = 100
    mixture_components: int = 10
    mixture_radius: float = 4.0
    mixture_std: float = 0.5


def circle_mixture(latent_dim: int, components: int, radius: float, std: float) -> GaussianMixtureCodes:
    """Equal-weight Gaussians with means on a circle in the first two code dimensions (std ``std``
    there) and standard normal in the remaining ones."""
    angles = 2 * math.pi * torch.arange(components) / components
    means = torch.zeros(components, latent_dim)
    means[:, 0], means[:, 1] = radius * angles.cos(), radius * angles.sin()
    scales = torch.ones(latent_dim)
    scales[:2] = std
    return GaussianMixtureCodes(weights=torch.full((components,), 1.0 / components), means=means,
                                scale_tril=torch.diag(scales).expand(components, -1, -1).clone())


class AAE(DeterministicAutoencoder):
    name = "aae"
    family = "Adversarial autoencoder"
    paper = "Makhzani et al. 2015, arXiv:1511.05644"
    Config = AAEConfig

    def __init__(self, config: AAEConfig, spec):
        super().__init__(config, spec)
        if config.prior not in PRIORS:
            raise GenbenchError(f"{self.name}: unknown prior {config.prior!r}; choose one of {list(PRIORS)}")
        self.mixture = None
        if config.prior == "mixture":
            if self.latent_dim < 2 or config.mixture_components < 1:
                raise GenbenchError(f"{self.name}: the mixture prior needs latent_dim >= 2 and "
                                    f"mixture_components >= 1, got {self.latent_dim} and {config.mixture_components}")
            self.mixture = circle_mixture(self.latent_dim, config.mixture_components, config.mixture_radius,
                                          config.mixture_std)
        self.discriminator = code_discriminator(self.latent_dim, config.disc_hidden, config.disc_layers)
        betas = (config.reg_beta1, 0.999)
        self.optimizers = {
            "ae": adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr),
            "disc": adam(self.discriminator.parameters(), lr=config.reg_lr, betas=betas),
            "gen": adam(self.encoder.parameters(), lr=config.reg_lr, betas=betas),
        }

    def sample_codes(self, n, generator=None):
        if self.mixture is not None:
            return self.mixture.sample(n, generator, self.device)
        return randn((n, self.latent_dim), generator, self.device)

    def prior(self):
        if self.mixture is not None:
            return self.mixture.distribution(self.device)
        return standard_normal(self.latent_dim, self.device)

    def discriminator_loss(self, codes: torch.Tensor, prior_codes: torch.Tensor) -> torch.Tensor:
        """-[log d(z') + log(1 - d(z))] (batch means): 2 log 2 where d says 1/2 everywhere."""
        real, fake = self.discriminator(prior_codes), self.discriminator(codes)
        return bce_with_logits(real, 1.0) + bce_with_logits(fake, 0.0)

    def generator_loss(self, codes: torch.Tensor) -> torch.Tensor:
        """-log d(E(x)) (batch mean): the encoder's non-saturating loss in the regularisation phase."""
        out = self.discriminator(codes)
        return bce_with_logits(out, 1.0)

    def train_step(self, batch, progress):
        x = batch["x"]
        # reconstruction phase
        cost, _ = self.reconstruction_cost(x)
        rec = cost.mean()
        self.optimizers["ae"].zero_grad()
        rec.backward()
        self.optimizers["ae"].step()
        # regularisation phase: discriminator, then the encoder as generator
        z = self.codes(x)
        d_loss = self.discriminator_loss(z.detach(), self.sample_codes(len(x)))
        self.optimizers["disc"].zero_grad()
        d_loss.backward()
        self.optimizers["disc"].step()
        g_loss = self.generator_loss(z)
        self.optimizers["gen"].zero_grad()
        g_loss.backward()
        self.optimizers["gen"].step()
        return {"rec": rec.detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


@dataclass
class AAEMixtureConfig(AAEConfig):
    prior: str = "mixture"


class AAEMixture(AAE):
    name = "aae-mixture"
    Config = AAEMixtureConfig


@genbench.hookimpl
def register_models(register):
    register(AAE)
    register(AAEMixture)
