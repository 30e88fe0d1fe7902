"""Deterministic autoencoders as building blocks: the encoder/decoder base that the plain,
regularised, adversarial and Wasserstein autoencoders share, the discriminator on codes of AAE and
WAE-GAN, and a Gaussian mixture over codes (an ex-post density or a mixture prior).

Deterministic encoders do not declare the ``latent`` capability (that would promise an ``encode(x)``
distribution and a decoder likelihood); instead ``codes(x)`` returns the code and ``prior()`` the
distribution codes are sampled from, which is what the aggregate-posterior metric compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from genbench.errors import GenbenchError
from genbench.model import Capability, GenerativeModel
from genbench.nn import mlp, randn, standard_normal


@dataclass(frozen=True)
class GaussianMixtureCodes:
    """A Gaussian mixture over codes held as tensors on the CPU: ``weights`` (K,), ``means`` (K, d),
    ``scale_tril`` (K, d, d).  Sampling draws from a CPU generator, so samples are the same on every
    device for the same seed."""

    weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor

    def sample(self, n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator)
        z = self.means[k] + (self.scale_tril[k] @ eps.unsqueeze(-1)).squeeze(-1)
        return z.to(device)

    def distribution(self, device) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(probs=self.weights.to(device)),
                                 MultivariateNormal(self.means.to(device), scale_tril=self.scale_tril.to(device)))


class DeterministicAutoencoder(GenerativeModel):
    """Deterministic MLP encoder ``codes(x)`` and decoder ``decode_mean(z)``; samples decode
    ``sample_codes(n)``, whose distribution ``prior()`` returns.  Subclasses add the objective.

    The config needs ``latent_dim`` (0 = 8 for images, 2 for points) and ``hidden``."""

    capabilities = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image", "points"})

    def __init__(self, config, spec):
        super().__init__(config, spec)
        if config.latent_dim < 0 or config.hidden < 1:
            raise GenbenchError(f"{self.name}: latent_dim must be >= 0 (0 = by data) and hidden >= 1, got "
                                f"latent_dim={config.latent_dim}, hidden={config.hidden}")
        d, h = spec.dim, config.hidden
        self.latent_dim = config.latent_dim or (8 if spec.kind == "image" else 2)
        self.encoder = mlp([d, h, h, self.latent_dim])
        # Images live in [0, 1]; a sigmoid keeps decoded means there (the papers' choice for MNIST).
        out = nn.Sigmoid() if spec.kind == "image" else None
        self.decoder = mlp([self.latent_dim, h, h, d], out_act=out)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic code E(x), shape ``(n, latent_dim)``."""
        return self.encoder(x.flatten(1))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).reshape(*z.shape[:-1], *self.spec.shape)

    def reconstruction_cost(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(c(x, D(E(x))) per example, the codes), with c the squared Euclidean distance."""
        z = self.codes(x)
        cost = (self.decode_mean(z) - x).flatten(1).pow(2).sum(1)
        return cost, z

    def sample_codes(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return randn((n, self.latent_dim), generator, self.device)

    def prior(self) -> torch.distributions.Distribution:
        return standard_normal(self.latent_dim, self.device)

    @torch.no_grad()
    def sample(self, n, generator=None, condition=None):
        return self.decode_mean(self.sample_codes(n, generator))


def code_discriminator(latent_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """An MLP on codes with ``layers`` hidden ReLU layers and one logit (AAE's and WAE-GAN's)."""
    return mlp([latent_dim, *[hidden] * layers, 1])
