"""Wasserstein autoencoders (Tolstikhin, Bousquet, Gelly & Schoelkopf, "Wasserstein Auto-Encoders",
ICLR 2018, arXiv:1711.01558).

WAE minimises a relaxation of the optimal-transport cost between the data and the model,

    E_x c(x, G(E(x))) + lambda * D_Z(Q_Z, P_Z),

with a deterministic encoder E, decoder G, the squared Euclidean cost c(x, y) = ||x - y||^2 and a
penalty D_Z that pulls the aggregate posterior Q_Z (the distribution of codes) to the prior
P_Z = N(0, sigma_z^2 I).  As in the paper's MNIST experiments: sigma_z = 1, an 8-dimensional code,
Adam with beta1 = 0.5, lr 1e-3 for encoder and decoder (5e-4 for the adversary), minibatch 100, and
the paper's schedule (lr halved after 30% of training and divided by 5 again after 50%, its 30 and
50 of 100 epochs; here fractions of the budget).

* ``wae-mmd`` (the paper's Algorithm 2): D_Z is the unbiased U-statistic estimate of MMD^2 between the
  batch's codes and as many prior samples, with the inverse multiquadratic kernel
  k(x, y) = C / (C + ||x - y||^2), C = 2 d_z sigma_z^2 * s summed over s in {.1, .2, .5, 1, 2, 5, 10}
  (the scales of the authors' released code); lambda = 10.
* ``wae-gan`` (Algorithm 1): D_Z is estimated adversarially by a discriminator on codes (the paper's
  MNIST adversary: 4 hidden ReLU layers), trained to maximise lambda [log d(z') + log(1 - d(E(x)))],
  z' ~ P_Z, while encoder and decoder minimise c - lambda log d(E(x)); lambda = 1.

What was scaled, and why: MLP encoder and decoder (two hidden layers of 400 ReLU units) instead of the
paper's DCGAN-style convolutional networks with batch norm, and an adversary of width 256 (the
paper: 512), since 8x8 digits and a 15-second CPU budget need less; 2-D codes for 2-D point sets.
The squared cost is the paper's, summed over pixels.  (The authors' code multiplies it by 0.05 on
28x28 MNIST; on 64-pixel digits the unscaled sum is of the same order as that scaled 784-pixel
sum, so the balance against lambda = 10 is kept.)  The encoder pre-training of the released code
is not part of the paper's algorithms and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Independent, Normal

import genbench
from genbench.errors import GenbenchError
from genbench.nn import randn
from genbench.optim import adam
from genbench.toolkit import bce_with_logits, imq_mmd2
from genbench.toolkit.autoencoders import DeterministicAutoencoder, code_discriminator


@dataclass
class WAEMMDConfig:
    latent_dim: int = 0  # 0 = by data: 8 for images (the paper's MNIST d_z), 2 for 2-D points
    hidden: int = 400
    prior_std: float = 1.0  # sigma_z
    lam: float = 10.0
    lr: float = 1e-3
    beta1: float = 0.5
    lr_schedule: bool = True  # the paper's step decay at 30% and 50% of training
    batch_size: int = 100


@dataclass
class WAEGANConfig:
    latent_dim: int = 0
    hidden: int = 400
    disc_hidden: int = 256
    disc_layers: int = 4
    prior_std: float = 1.0
    lam: float = 1.0
    lr: float = 1e-3
    lr_adv: float = 5e-4
    beta1: float = 0.5
    lr_schedule: bool = True
    batch_size: int = 100


def paper_lr_factor(progress: float) -> float:
    """The MNIST schedule of Tolstikhin et al.: x1/2 after 30 of 100 epochs, x1/5 more after 50."""
    return 1.0 if progress < 0.3 else 0.5 if progress < 0.5 else 0.1


class WAEBase(DeterministicAutoencoder):
    paper = "Tolstikhin et al. 2018, arXiv:1711.01558"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        if config.prior_std <= 0 or config.lam < 0:
            raise GenbenchError(f"{self.name}: prior_std must be > 0 and lam >= 0, got {config.prior_std} "
                                f"and {config.lam}")

    def sample_codes(self, n, generator=None):
        return self.config.prior_std * randn((n, self.latent_dim), generator, self.device)

    def prior(self):
        zeros = torch.zeros(self.latent_dim, device=self.device)
        return Independent(Normal(zeros, torch.full_like(zeros, self.config.prior_std)), 1)

    def set_learning_rates(self, progress: float) -> None:
        factor = paper_lr_factor(progress) if self.config.lr_schedule else 1.0
        for opt, base in self.base_lrs.items():
            for group in self.optimizers[opt].param_groups:
                group["lr"] = base * factor


class WAEMMD(WAEBase):
    name = "wae-mmd"
    family = "Wasserstein autoencoder (MMD)"
    Config = WAEMMDConfig

    def __init__(self, config: WAEMMDConfig, spec):
        super().__init__(config, spec)
        self.optimizers = {"ae": adam(self.parameters(), lr=config.lr, betas=(config.beta1, 0.999))}
        self.base_lrs = {"ae": config.lr}

    def penalty(self, codes: torch.Tensor, prior_codes: torch.Tensor) -> torch.Tensor:
        """MMD^2 between codes and prior samples, IMQ kernels with C = 2 d_z sigma_z^2 s."""
        return imq_mmd2(codes, prior_codes, base=2.0 * self.latent_dim * self.config.prior_std**2)

    def train_step(self, batch, progress):
        self.set_learning_rates(progress)
        x = batch["x"]
        cost, z = self.reconstruction_cost(x)
        rec = cost.mean()
        mmd = self.penalty(z, self.sample_codes(len(x)))
        loss = rec + self.config.lam * mmd
        opt = self.optimizers["ae"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "rec": rec.detach(), "mmd": mmd.detach()}


class WAEGAN(WAEBase):
    name = "wae-gan"
    family = "Wasserstein autoencoder (GAN)"
    Config = WAEGANConfig

    def __init__(self, config: WAEGANConfig, spec):
        super().__init__(config, spec)
        self.discriminator = code_discriminator(self.latent_dim, config.disc_hidden, config.disc_layers)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "ae": adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=config.lr, betas=betas),
            "adv": adam(self.discriminator.parameters(), lr=config.lr_adv, betas=betas),
        }
        self.base_lrs = {"ae": config.lr, "adv": config.lr_adv}

    def adversary_loss(self, codes: torch.Tensor, prior_codes: torch.Tensor) -> torch.Tensor:
        """-lambda [log d(z') + log(1 - d(z))] (batch means)."""
        real, fake = self.discriminator(prior_codes), self.discriminator(codes)
        return self.config.lam * (bce_with_logits(real, 1.0) + bce_with_logits(fake, 0.0))

    def penalty(self, codes: torch.Tensor) -> torch.Tensor:
        """-log d(E(x)) (batch mean), the encoder's side of the adversarial D_Z."""
        return bce_with_logits(self.discriminator(codes), 1.0)

    def train_step(self, batch, progress):
        self.set_learning_rates(progress)
        x = batch["x"]
        cost, z = self.reconstruction_cost(x)
        # Algorithm 1: the adversary ascends lambda [log d(z') + log(1 - d(z~))] on this batch's codes,
        d_loss = self.adversary_loss(z.detach(), self.sample_codes(len(x)))
        self.optimizers["adv"].zero_grad()
        d_loss.backward()
        self.optimizers["adv"].step()
        # then encoder and decoder descend c(x, G(z~)) - lambda log d(z~) against the updated adversary.
        rec = cost.mean()
        gan = self.penalty(z)
        loss = rec + self.config.lam * gan
        self.optimizers["ae"].zero_grad()
        loss.backward()
        self.optimizers["ae"].step()
        return {"loss": loss.detach(), "rec": rec.detach(), "penalty": gan.detach(), "d_loss": d_loss.detach()}


@genbench.hookimpl
def register_models(register):
    register(WAEMMD)
    register(WAEGAN)
