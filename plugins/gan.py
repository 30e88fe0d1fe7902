"""Generative adversarial network (Goodfellow et al., "Generative Adversarial Nets", NIPS 2014).

An MLP generator and discriminator playing the minimax game, with the paper's non-saturating
generator loss (maximise log D(G(z)) instead of minimising log(1 - D(G(z)))) and one discriminator
step per generator step (k = 1, as in the paper's experiments).

The architecture is the plain-GAN baseline of PacGAN (Lin et al. 2018) for the 2-D mixtures: a
generator of 4 hidden ReLU layers with batch norm (no biases before batch norm, a linear output),
a discriminator of 3 hidden maxout layers (Goodfellow et al.'s maxout discriminator), a 2-D
standard normal latent for 2-D points.  Deviations,
because the benchmark trains for seconds where PacGAN trains 400 epochs of 100k points
(400k updates):

* widths 128 (generator) and 64 x 3 pieces (discriminator) instead of 400 and 200 x 5: a step of
  the published nets is about five times as expensive, and within a budget of seconds the number
  of updates, not their width, decides whether the samples sharpen onto the modes;
* Adam lr 1e-3 and beta1 0.5 instead of 1e-4 and 0.8 (beta1 0.5 as in Radford et al. 2016): at
  lr 1e-4 the discriminator stays at chance (loss 2 log 2) for the first thousands of updates;
* PyTorch's default initialisation instead of PacGAN's N(0, 0.02), which starts the
  discriminator at chance with vanishing gradients;
* images (the same MLPs on the flattened image, sigmoid output) use a 32-d latent.

Batch norm runs on batch statistics while training; ``sample`` and ``decode`` run the generator on
its running statistics (the caller puts the model in eval mode, as the evaluator does), so that
every sample depends only on its own noise vector.

For likelihood estimation by AIS the generator is also exposed as a decoder under a Gaussian
observation model p(x|z) = N(G(z), sigma^2 I) with the standard normal prior (Wu et al. 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import genbench
from genbench.model import Capability, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import GaussianObservationDecoder, bce_with_logits


@dataclass
class GANConfig:
    latent_dim: int = 0  # 0 = by data: 32 for images, 2 for 2-D points (PacGAN)
    hidden: int = 128  # generator width (PacGAN: 400)
    gen_layers: int = 4  # hidden layers of the generator (PacGAN: 4)
    disc_hidden: int = 64  # maxout units per discriminator layer (PacGAN: 200)
    disc_layers: int = 3  # hidden maxout layers of the discriminator (PacGAN: 3)
    maxout_pieces: int = 3  # (PacGAN: 5)
    lr: float = 1e-3  # (PacGAN: 1e-4)
    beta1: float = 0.5  # (PacGAN: 0.8)
    batch_size: int = 100  # PacGAN
    obs_sigma: float = 0.1  # std of the Gaussian observation model used only for likelihood estimates


class Maxout(nn.Module):
    """A linear layer to ``out * pieces`` units, maximised over each group of ``pieces``."""

    def __init__(self, d_in: int, d_out: int, pieces: int):
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(d_in, d_out * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(*y.shape[:-1], -1, self.pieces).amax(-1)


def generator_mlp(d_in: int, hidden: int, layers: int, d_out: int, out_act: nn.Module | None) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(d_in if i == 0 else hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden, d_out))
    if out_act is not None:
        mods.append(out_act)
    return nn.Sequential(*mods)


def maxout_discriminator(d_in: int, hidden: int, layers: int, pieces: int) -> nn.Sequential:
    mods = [Maxout(d_in if i == 0 else hidden, hidden, pieces) for i in range(layers)]
    return nn.Sequential(*mods, nn.Linear(hidden, 1))


class GAN(GaussianObservationDecoder, GenerativeModel):
    name = "gan"
    family = "GAN"
    paper = "Goodfellow et al. 2014, arXiv:1406.2661"
    capabilities = frozenset({Capability.SAMPLE, Capability.DECODER})
    Config = GANConfig

    def __init__(self, config: GANConfig, spec):
        super().__init__(config, spec)
        d = spec.dim
        self.latent_dim = config.latent_dim or (32 if spec.kind == "image" else 2)
        out = nn.Sigmoid() if spec.kind == "image" else None
        self.generator = generator_mlp(self.latent_dim, config.hidden, config.gen_layers, d, out)
        self.discriminator = maxout_discriminator(d, config.disc_hidden, config.disc_layers, config.maxout_pieces)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "g": adam(self.generator.parameters(), lr=config.lr, betas=betas),
            "d": adam(self.discriminator.parameters(), lr=config.lr, betas=betas),
        }

    def generate(self, z):
        flat = z.reshape(-1, self.latent_dim)
        return self.generator(flat).reshape(*z.shape[:-1], *self.spec.shape)

    def train_step(self, batch, progress):
        # dequantised like every family sees the data: otherwise D separates real from fake by the
        # 17 discrete pixel levels alone
        real = self.spec.dequantize(batch["x"]).flatten(1)
        n = real.shape[0]
        z = torch.randn(n, self.latent_dim, device=real.device)
        fake = self.generator(z)
        # discriminator: maximise log D(x) + log(1 - D(G(z)))
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = bce_with_logits(d_real, 1.0) + bce_with_logits(d_fake, 0.0)
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        # generator: non-saturating, maximise log D(G(z))
        g_out = self.discriminator(fake)
        g_loss = bce_with_logits(g_out, 1.0)
        self.optimizers["g"].zero_grad()
        g_loss.backward()
        self.optimizers["g"].step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


@genbench.hookimpl
def register_models(register):
    register(GAN)
