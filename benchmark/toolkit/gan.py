"""Adversarial training pieces for generator families: the GAN losses, WGAN-GP's gradient penalty,
and the Gaussian observation model that lets AIS estimate a generator's likelihood."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genbench.nn import diag_gaussian, randn, standard_normal


def bce_with_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of every logit against the constant label ``target`` (batch mean).

    The GAN losses of Goodfellow et al. 2014 are built from it: the discriminator minimises
    ``bce_with_logits(D(x), 1) + bce_with_logits(D(G(z)), 0)``; the non-saturating generator loss
    is ``bce_with_logits(D(G(z)), 1)``, i.e. -log D(G(z))."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """The hinge loss of geometric GAN / SN-GAN for the critic: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


def hinge_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge loss: -E[D(G(z))]."""
    return -fake_scores.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's penalty E[(||grad_x_hat critic(x_hat)||_2 - 1)^2] at x_hat = alpha real + (1 - alpha) fake
    (Gulrajani et al. 2017), one x_hat per row.  ``alpha`` (broadcastable to ``real``) is drawn
    uniformly per row when not given; a critic with several scores per image (a patch critic) has
    them summed.  The penalty is differentiable in the critic's weights (``create_graph``); ``fake``
    is detached, so it never trains the generator."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    # The critic gets a non-leaf alias: the budget's FLOP counter hooks module inputs for backward,
    # and autograd.grad cannot run such a hook on a leaf tensor.
    (grad,) = torch.autograd.grad(critic(x_hat.view_as(x_hat)).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


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
