"""Deep convolutional GAN (Radford, Metz & Chintala, "Unsupervised Representation Learning with
Deep Convolutional Generative Adversarial Networks", ICLR 2016, arXiv:1511.06434).

The paper's architecture guidelines, followed as published:

* the generator projects the noise to a small spatial map and grows it with fractionally-strided
  (transposed) 4x4 convolutions of stride 2; batch norm and ReLU after every layer but the output,
  which is tanh (images live in [-1, 1] inside the model and are mapped to [0, 1] by (x + 1) / 2);
* the discriminator mirrors it with strided 4x4 convolutions, LeakyReLU(0.2), batch norm on every
  layer except its input layer (and its output), no pooling and no fully connected hidden layers;
* weights from N(0, 0.02); Adam with lr 2e-4 and beta1 0.5; minibatch 128; the GAN value function
  with the non-saturating generator loss (maximise log D(G(z))), one D step per G step.

Scaled to the data and to a CPU budget of seconds: the paper's 4x4x1024 projection grown to 64x64
becomes a 2x2 map grown to 8x8 for the digits (two doublings, widths 64 -> 32 -> 1), and a 4x4 map
grown to 32x32 for MNIST (widths 64 -> 32 -> 16 -> 1), whose 28x28 images are padded onto the
32x32 canvas inside the model and generated images cropped back to 28x28.  The width of the first
generator layer (``width``, 1024 in the paper) is 64 and the minibatch 64 (paper: 128): on two CPU
cores a step of the 128-wide net at batch 128 takes about six times as long, and within a budget of
seconds the number of updates, not their width, decides whether digits appear (600 steps of this
net already draw recognisable digits).  The noise is 100-d as in the paper but standard normal
instead of uniform on [-1, 1] (as in the widely used reference implementation), so that the prior
has full support and the generator can be scored by AIS under the Gaussian observation model p(x|z) = N(G(z), sigma^2 I)
(Wu et al. 2017) exposed through ``decode`` and ``prior``.

Batch norm runs on batch statistics while training; ``sample`` and ``decode`` run the generator on
its running statistics (the caller puts the model in eval mode, as the evaluator does), so that
every image depends only on its own noise vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import genbench
from genbench.model import Capability, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import (
    CanvasImages,
    DCGANDiscriminator,
    DCGANGenerator,
    GaussianObservationDecoder,
    bce_with_logits,
    canvas_size,
    dcgan_init,
)


@dataclass
class DCGANConfig:
    latent_dim: int = 100
    width: int = 64  # channels of G's first and D's last convolution (paper: 1024); halved per doubling
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64  # paper: 128
    init_std: float = 0.02
    obs_sigma: float = 0.1  # std of the Gaussian observation model used only for likelihood estimates


class DCGAN(CanvasImages, GaussianObservationDecoder, GenerativeModel):
    name = "dcgan"
    family = "DCGAN"
    paper = "Radford, Metz & Chintala 2016, arXiv:1511.06434"
    capabilities = frozenset({Capability.SAMPLE, Capability.DECODER})
    data_kinds = frozenset({"image"})
    Config = DCGANConfig

    def __init__(self, config: DCGANConfig, spec):
        super().__init__(config, spec)
        self.size = canvas_size(spec, self.name)
        self.latent_dim = config.latent_dim
        channels = spec.shape[0]
        self.generator = DCGANGenerator(config.latent_dim, channels, self.size, config.width)
        self.discriminator = DCGANDiscriminator(channels, self.size, config.width)
        dcgan_init(self, config.init_std)
        # channels-last weights (and the canvas below): the same convolutions, in the layout oneDNN's
        # and cuDNN's kernels prefer; on one CPU thread a digits G+D forward and backward ran 1.15-1.25x
        # faster than in the default layout
        self.to(memory_format=torch.channels_last)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "g": adam(self.generator.parameters(), config.lr, betas),
            "d": adam(self.discriminator.parameters(), config.lr, betas),
        }

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] of shape ``(*z.shape[:-1], *spec.shape)``."""
        flat = z.reshape(-1, self.latent_dim)
        return self.to_data(self.generator(flat)).reshape(*z.shape[:-1], *self.spec.shape)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """-[log D(x) + log(1 - D(G(z)))] averaged over each batch; 2 log 2 when D outputs 1/2.
        Real and generated batches go through D separately, so batch norm never mixes them."""
        return bce_with_logits(self.discriminator(real), 1.0) + bce_with_logits(self.discriminator(fake), 0.0)

    def train_step(self, batch, progress):
        # dequantised as every family sees the data: D would otherwise tell real from generated
        # images by the discrete pixel levels alone
        real = self.to_canvas(self.spec.dequantize(batch["x"])).contiguous(memory_format=torch.channels_last)
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
        fake = self.generator(z)
        d_loss = self.discriminator_loss(real, fake.detach())
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        # non-saturating generator loss: maximise log D(G(z)).  D's weights are frozen for it, so
        # the backward pass computes only the gradients G's update uses (D's would be discarded)
        self.discriminator.requires_grad_(False)
        try:
            g_loss = bce_with_logits(self.discriminator(fake), 1.0)
            self.optimizers["g"].zero_grad()
            g_loss.backward()
        finally:
            self.discriminator.requires_grad_(True)
        self.optimizers["g"].step()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}


@genbench.hookimpl
def register_models(register):
    register(DCGAN)
