"""The key-patch GAN's networks and its objective (see :mod:`genbench_plugins.puzzle_gan`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from genbench.errors import GenbenchError
from genbench.model import Capability, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import (
    CanvasImages,
    DCGANDiscriminator,
    DCGANGenerator,
    bce_with_logits,
    canvas_size,
    crop_to,
    dcgan_init,
    pad_to,
)
from genbench_plugins.puzzle_gan.dataset import (
    MASK_KEY,
    N_PATCHES,
    PATCHES,
    PATCHES_KEY,
    patch_side,
)

# --- the networks --------------------------------------------------------------------------------


class PartEncoder(nn.Module):
    """One code per patch (shared weights); the codes of an image's patches are summed."""

    def __init__(self, channels: int, side: int, code_dim: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * side * side, code_dim), nn.LeakyReLU(0.2, True),
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        n, k = patches.shape[:2]
        return self.net(patches.flatten(0, 1)).reshape(n, k, -1).sum(1)


@dataclass
class PuzzleGANConfig:
    code_dim: int = 128
    noise_dim: int = 8  # see the module docstring: at 64 the generator collapsed within the quick budget
    width: int = 64  # as the genbench DCGAN
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64
    lambda_start: float = 100.0  # spatial and appearance weights, decayed log-linearly over the budget
    lambda_end: float = 10.0  # (authors' code: 1e-2 -> 1e-4 over epochs; see the module docstring)
    g_every: int = 1  # one G step per this many D steps (authors' code: 2)
    init_std: float = 0.02


class PuzzleGAN(CanvasImages, GenerativeModel):
    name = "puzzle-gan"
    family = "Key-patch GAN"
    paper = "Lee et al. 2018, arXiv:1703.10730"
    capabilities = frozenset({Capability.SAMPLE, Capability.CONDITIONAL, PATCHES})
    data_kinds = frozenset({"image"})
    requires = frozenset({PATCHES_KEY, MASK_KEY})
    condition_key = PATCHES_KEY
    Config = PuzzleGANConfig

    def __init__(self, config: PuzzleGANConfig, spec):
        super().__init__(config, spec)
        if config.g_every < 1 or config.batch_size < 2:
            raise GenbenchError(f"{self.name}: g_every must be at least 1 (got {config.g_every}) and batch_size at "
                                f"least 2 (got {config.batch_size}): D's composites pair each image with another")
        self.size = canvas_size(spec, self.name)
        info = spec.extras.get(PATCHES_KEY) or {}
        self.n_patches = int(info.get("count", N_PATCHES))
        self.side = int(info.get("side", patch_side(spec)))
        channels = spec.shape[0]
        self.encoder = PartEncoder(channels, self.side, config.code_dim)
        self.mask_generator = DCGANGenerator(config.code_dim, 1, self.size, config.width)
        self.image_generator = DCGANGenerator(config.code_dim + config.noise_dim, channels, self.size, config.width)
        self.discriminator = DCGANDiscriminator(channels, self.size, config.width)
        # DCGAN initialisation for the DCGAN parts; the part encoder keeps PyTorch's default (fan-in
        # scaled) initialisation: at N(0, 0.02) its codes come out ~100x smaller than the noise
        # they are joined to, and the generators learn to ignore the patches
        for net in (self.mask_generator, self.image_generator, self.discriminator):
            dcgan_init(net, config.init_std)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "g": adam([*self.encoder.parameters(), *self.mask_generator.parameters(),
                       *self.image_generator.parameters()], config.lr, betas),
            "d": adam(self.discriminator.parameters(), config.lr, betas),
        }
        self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))

    def forward_parts(self, patches: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image on the canvas in [-1, 1], mask on the canvas in [0, 1]) from patches in [0, 1]."""
        code = self.encoder(patches * 2 - 1)
        mask = (self.mask_generator(code) + 1) / 2  # the DCGAN generator's tanh, mapped to (0, 1)
        return self.image_generator(torch.cat([code, z], 1)), mask

    def loss_weight(self, progress: float) -> float:
        a, b = math.log(self.config.lambda_start), math.log(self.config.lambda_end)
        return math.exp(a + (b - a) * min(max(progress, 0.0), 1.0))

    # --- training -----------------------------------------------------------------------------

    def train_step(self, batch, progress):
        x = self.spec.dequantize(batch["x"])
        real = self.to_canvas(x)
        n = len(real)
        if n < 2:
            raise GenbenchError(f"{self.name}: a batch of {n} image has no other image to build D's composites "
                                "from; use a training split of at least 2 images")
        gt_mask = pad_to(batch[MASK_KEY], self.size, value=0.0)
        # another training image for the composites (the authors draw it from outside the batch;
        # a derangement of the batch serves the same purpose)
        other = real[torch.roll(torch.arange(n, device=real.device), 1)]
        z = torch.rand(n, self.config.noise_dim, device=real.device) * 2 - 1
        fake, mask = self.forward_parts(batch[PATCHES_KEY], z)
        wrong_parts = gt_mask * other + (1 - gt_mask) * real
        wrong_rest = gt_mask * real + (1 - gt_mask) * other
        d = self.discriminator
        d_loss = (bce_with_logits(d(real), 1.0) + bce_with_logits(d(fake.detach()), 0.0)
                  + bce_with_logits(d(wrong_parts), 0.0) + bce_with_logits(d(wrong_rest), 0.0))
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        self.d_steps += 1
        losses = {"d_loss": d_loss.detach()}
        if int(self.d_steps) % self.config.g_every == 0:
            lam = self.loss_weight(progress)
            adv = bce_with_logits(self.discriminator(fake), 1.0)
            spatial = (mask - gt_mask).abs().mean()
            # compared in [0, 1], where masked-out pixels (0) agree with the digits' black background
            appearance = (mask * (fake + 1) / 2 - gt_mask * (real + 1) / 2).abs().mean()
            g_loss = adv + lam * (spatial + appearance)
            self.optimizers["g"].zero_grad()
            g_loss.backward()
            self.optimizers["g"].step()
            losses.update(g_loss=adv.detach(), spatial=spatial.detach(), appearance=appearance.detach())
        return losses

    # --- completion -------------------------------------------------------------------------------

    def check_patches(self, patches, n: int | None = None) -> torch.Tensor:
        want = (self.n_patches, self.spec.shape[0], self.side, self.side)
        if patches is None:
            raise GenbenchError(f"{self.name} completes images from key patches: pass condition= a tensor of shape "
                                f"(n, {', '.join(map(str, want))}) with values in [0, 1]")
        patches = torch.as_tensor(patches)
        if patches.dim() != 5 or tuple(patches.shape[1:]) != want or (n is not None and len(patches) != n):
            raise GenbenchError(f"{self.name}: patches have shape {tuple(patches.shape)}; expected "
                                f"({n if n is not None else 'n'}, {', '.join(map(str, want))})")
        if not patches.is_floating_point():
            raise GenbenchError(f"{self.name}: patches are {patches.dtype}; pass floats in [0, 1] "
                                "(e.g. uint8 pixels divided by 255)")
        if patches.numel() and (float(patches.min()) < 0 or float(patches.max()) > 1):
            raise GenbenchError(f"{self.name}: patch values range over [{float(patches.min()):.3g}, "
                                f"{float(patches.max()):.3g}]; pass pixels scaled to [0, 1] like the dataset's images")
        return patches.float().to(self.device)

    def complete(self, patches: torch.Tensor, generator: torch.Generator | None = None, n: int | None = None):
        """(images, masks) in data shape and [0, 1] from key ``patches`` (n, K, C, s, s); ``n``, when
        given, is the number of patch sets the caller expects."""
        patches = self.check_patches(patches, n)
        z = (torch.rand(len(patches), self.config.noise_dim, generator=generator) * 2 - 1).to(self.device)
        canvas, mask = self.forward_parts(patches, z)
        return self.to_data(canvas), crop_to(mask, self.spec.shape)

    def sample(self, n, generator=None, condition=None):
        return self.complete(condition, generator, n)[0]


