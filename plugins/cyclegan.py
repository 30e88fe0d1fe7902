"""CycleGAN (Zhu, Park, Isola & Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks", ICCV 2017).

Two generators G: A -> B and F: B -> A and two discriminators D_A, D_B, trained on unpaired images
with the paper's full objective (its eq. 3, with the least-squares GAN loss of its section 4):

    L(G, F, D_A, D_B) = L_LSGAN(G, D_B) + L_LSGAN(F, D_A) + lambda * L_cyc(G, F)
                        + lambda_identity * lambda * L_identity(G, F)

* adversarial: D minimises (D(y) - 1)^2 + D(G(x))^2 (halved, as in the paper's section 7.1), the
  generator minimises (D(G(x)) - 1)^2;
* cycle consistency: L1 of F(G(a)) - a plus G(F(b)) - b, lambda = 10;
* identity: L1 of G(b) - b plus F(a) - a, weighted 0.5 * lambda.  The paper introduces it for
  painting <-> photo (section 5.2) and its reference implementation uses it by default
  (``--lambda_identity 0.5``); it is on here because on original <-> thick it asks each generator to
  leave images already in its output domain nearly unchanged, which fits the task.  Set
  ``lambda_identity = 0`` for eq. 3 alone;
* discriminators updated on a history of 50 generated images (section 7.1, after Shrivastava et al.);
* Adam, lr 2e-4, beta1 0.5; the learning rate is constant for the first half of training and decays
  linearly to zero over the second half (the paper's 100 + 100 epochs, here fractions of the budget);
* weights initialised from N(0, 0.02), instance normalisation, as in the paper.

Scaled for 8x8 images under a seconds-long CPU budget: the ResNet generator keeps the paper's shape
(convolution, one stride-2 down-sampling, residual blocks, one up-sampling, convolution, tanh) with
16 base channels instead of 64, 2 residual blocks instead of 6-9 and 3x3 instead of 7x7 outer kernels;
the PatchGAN discriminator has two convolutions before its patch map instead of four (its patches
cover most of an 8x8 image).  Minibatches of 64 images of both domains (about 32 per domain) replace
the paper's batch size 1, which wastes a CPU.

Images are in [0, 1]; the networks see them scaled to [-1, 1] as in the paper.

``translate(x, source, target)`` maps between the two domains (given by index or name).  ``sample(n)``
needs no data at evaluation time: ``train_step`` keeps a bounded ring buffer of the most recent
training images (``sample_buffer`` of them, with their domains, saved in the state dict), and
``sample`` draws ``n`` of them with the caller's generator and translates each into the other domain,
so samples follow the dataset's mixture of domains as the sample-quality metrics expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.errors import GenbenchError
from genbench.model import Capability, DataSpec, GenerativeModel
from genbench.optim import adam, linear_decay, set_lr
from genbench.toolkit import (
    DOMAIN_KEY,
    RecentImages,
    batch_domains,
    check_divisible_size,
    domain_index,
    domain_names,
    init_normal,
)


@dataclass
class CycleGANConfig:
    width: int = 16  # base channels of generators and discriminators (paper: 64)
    n_res: int = 2  # residual blocks of each generator (paper: 6 at 128px, 9 at 256px)
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # as a fraction of lambda_cycle (reference implementation); 0 = off
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64  # both domains together (paper: 1)
    pool_size: int = 50  # history of generated images shown to the discriminators
    decay_from: float = 0.5  # fraction of the budget after which the learning rate decays linearly to 0
    sample_buffer: int = 256  # recent training images kept for sample()


# --- networks (shared with StarGAN, whose generator is adapted from CycleGAN's) ------------------


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect"),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Convolution, one stride-2 down-sampling, residual blocks, one up-sampling, convolution and tanh:
    CycleGAN's generator (Johnson et al. 2016) at the scale of small images.  Input and output in [-1, 1]."""

    def __init__(self, in_channels: int, out_channels: int, width: int, n_res: int, padding_mode: str = "reflect"):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, padding_mode=padding_mode),
            nn.InstanceNorm2d(w, affine=True), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.InstanceNorm2d(2 * w, affine=True), nn.ReLU(),
            *[ResidualBlock(2 * w) for _ in range(n_res)],
            nn.ConvTranspose2d(2 * w, w, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(w, affine=True), nn.ReLU(),
            nn.Conv2d(w, out_channels, 3, padding=1, padding_mode=padding_mode),
            nn.Tanh(),
        )
        init_normal(self)

    def forward(self, x):
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) with two convolutions: one real/fake score per patch."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.InstanceNorm2d(2 * w, affine=True), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 1, 3, padding=1),
        )
        init_normal(self)

    def forward(self, x):
        return self.net(x)


# --- losses -------------------------------------------------------------------------------------


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss, halved as in the paper: 0.5 [(D(y) - 1)^2 + D(G(x))^2]."""
    return 0.5 * (((d_real - 1) ** 2).mean() + (d_fake**2).mean())


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: (D(G(x)) - 1)^2."""
    return ((d_fake - 1) ** 2).mean()


class ImagePool(nn.Module):
    """The history buffer of generated images (Shrivastava et al. 2017) that the discriminators see.

    Until full it stores and returns each new image; then each new image is, with probability 1/2,
    returned as is, and otherwise swapped for a random stored one (which is returned).  Draws from
    torch's global generator, which the runner seeds per trial.  The stored images are buffers, so
    a checkpoint keeps them and a resumed trial takes the same steps."""

    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.size = size
        self.register_buffer("images", torch.zeros(size, *shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            filled = int(self.count)
            if filled < self.size:
                self.images[filled] = image
                self.count += 1
                out.append(image)
            elif float(torch.rand(())) < 0.5:
                j = int(torch.randint(self.size, ()))
                out.append(self.images[j].clone())
                self.images[j] = image
            else:
                out.append(image)
        return torch.stack(out)


# --- the model ----------------------------------------------------------------------------------


class CycleGAN(GenerativeModel):
    name = "cyclegan"
    family = "CycleGAN"
    paper = "Zhu et al. 2017, arXiv:1703.10593"
    capabilities = frozenset({Capability.SAMPLE, Capability.TRANSLATE})
    data_kinds = frozenset({"image"})
    requires = frozenset({DOMAIN_KEY})
    Config = CycleGANConfig

    @classmethod
    def applies_to(cls, spec: DataSpec) -> tuple[bool, str]:
        ok, why = super().applies_to(spec)
        if not ok:
            return ok, why
        n = len(domain_names(spec))
        if n != 2:
            return False, (f"cyclegan translates between two domains; {spec.name} has {n} "
                           "(use a pair such as digits-pair)")
        return True, ""

    def __init__(self, config: CycleGANConfig, spec: DataSpec):
        super().__init__(config, spec)
        ok, why = self.applies_to(spec)
        if not ok:
            raise GenbenchError(why)
        check_divisible_size(self.name, spec, 2)
        if config.batch_size < 8:
            raise GenbenchError(f"cyclegan: batch_size {config.batch_size} is too small to hold both domains; "
                                "use 8 or more")
        self.domains = domain_names(spec)
        c, w = spec.shape[0], config.width
        self.g_ab = ResnetGenerator(c, c, w, config.n_res)  # G: A -> B
        self.g_ba = ResnetGenerator(c, c, w, config.n_res)  # F: B -> A
        self.d_a = PatchDiscriminator(c, w)
        self.d_b = PatchDiscriminator(c, w)
        self.recent = RecentImages(config.sample_buffer, spec.shape)
        self.pool_a, self.pool_b = ImagePool(config.pool_size, spec.shape), ImagePool(config.pool_size, spec.shape)
        betas = (config.beta1, 0.999)
        gen_params = [*self.g_ab.parameters(), *self.g_ba.parameters()]
        disc_params = [*self.d_a.parameters(), *self.d_b.parameters()]
        self.optimizers = {
            "g": adam(gen_params, lr=config.lr, betas=betas),
            "d": adam(disc_params, lr=config.lr, betas=betas),
        }

    # --- translation in [0, 1] image space ---

    def generator_for(self, source: int, target: int) -> nn.Module:
        return self.g_ab if (source, target) == (0, 1) else self.g_ba

    def translate(self, x: torch.Tensor, source: int | str, target: int | str) -> torch.Tensor:
        s, t = domain_index(self.domains, source), domain_index(self.domains, target)
        if s == t:
            return x.clone()
        return (self.generator_for(s, t)(x * 2 - 1) + 1) / 2

    # --- the objective, on images scaled to [-1, 1] ---

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generators' terms of the full objective, plus the fakes for the discriminator step."""
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        adv = lsgan_g_loss(self.d_b(fake_b)) + lsgan_g_loss(self.d_a(fake_a))
        cycle = F.l1_loss(self.g_ba(fake_b), real_a) + F.l1_loss(self.g_ab(fake_a), real_b)
        if self.config.lambda_identity > 0:
            identity = F.l1_loss(self.g_ab(real_b), real_b) + F.l1_loss(self.g_ba(real_a), real_a)
        else:
            identity = torch.zeros((), device=real_a.device)
        lam = self.config.lambda_cycle
        total = adv + lam * cycle + self.config.lambda_identity * lam * identity
        return {"g_loss": total, "adv": adv, "cycle": cycle, "identity": identity,
                "fake_a": fake_a, "fake_b": fake_b}

    def train_step(self, batch, progress):
        x, domain = batch["x"], batch_domains(batch, self.name)
        self.recent.add(x, domain)
        real_a, real_b = x[domain == 0] * 2 - 1, x[domain == 1] * 2 - 1
        if len(real_a) == 0 or len(real_b) == 0:
            raise GenbenchError(f"cyclegan: a batch held only one domain ({len(real_a)} A, {len(real_b)} B images); "
                                "raise batch_size so every batch holds both")
        for opt in self.optimizers.values():
            set_lr(opt, linear_decay(self.config.lr, progress, self.config.decay_from))

        # generators, with the discriminators held fixed
        for p in [*self.d_a.parameters(), *self.d_b.parameters()]:
            p.requires_grad_(False)
        g = self.generator_losses(real_a, real_b)
        self.optimizers["g"].zero_grad()
        g["g_loss"].backward()
        self.optimizers["g"].step()
        for p in [*self.d_a.parameters(), *self.d_b.parameters()]:
            p.requires_grad_(True)

        # discriminators, on real images and on fakes drawn from the history
        fake_a, fake_b = self.pool_a.query(g["fake_a"]), self.pool_b.query(g["fake_b"])
        d_a = lsgan_d_loss(self.d_a(real_a), self.d_a(fake_a))
        d_b = lsgan_d_loss(self.d_b(real_b), self.d_b(fake_b))
        self.optimizers["d"].zero_grad()
        (d_a + d_b).backward()
        self.optimizers["d"].step()
        return {"g_loss": g["g_loss"].detach(), "cycle": g["cycle"].detach(), "identity": g["identity"].detach(),
                "g_adv": g["adv"].detach(), "d_a": d_a.detach(), "d_b": d_b.detach()}

    @torch.no_grad()
    def sample(self, n, generator=None, condition=None):
        x, domain = self.recent.draw(n, generator, self.name)
        out = torch.empty_like(x)
        for s in (0, 1):
            mask = domain == s
            if mask.any():
                out[mask] = self.translate(x[mask], s, 1 - s)
        return out


@genbench.hookimpl
def register_models(register):
    register(CycleGAN)
