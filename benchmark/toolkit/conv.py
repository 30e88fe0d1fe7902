"""Convolutional building blocks for image families: canvas geometry, DCGAN's initialisation and
its generator and discriminator sized to a ``DataSpec``.

Image geometry: convolutional generators grow their output by factors of two, so a model works on
a square canvas whose side is a power of two (8 for the 8x8 digits, 32 for 28x28 MNIST).  Real
images are padded onto that canvas inside the model and generated images are cropped back to the
data's shape, so ``sample`` always returns tensors of ``spec.shape``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genbench.errors import GenbenchError
from genbench.model import DataSpec


def check_image_spec(spec: DataSpec, model: str) -> tuple[int, int, int]:
    """(channels, height, width) of an image spec, or a clear error for anything else."""
    if spec.kind != "image" or len(spec.shape) != 3:
        raise GenbenchError(
            f"{model} models images of shape (C, H, W); {spec.name!r} is {spec.kind!r} data of shape "
            f"{tuple(spec.shape)}: pick an image dataset (e.g. digits or mnist)")
    c, h, w = spec.shape
    if min(h, w) < 4:
        raise GenbenchError(f"{model} needs images of at least 4x4 pixels; {spec.name!r} has {h}x{w}")
    return c, h, w


def canvas_size(spec: DataSpec, model: str) -> int:
    """Side of the power-of-two square canvas that holds an image of ``spec`` (8 -> 8, 28 -> 32)."""
    _, h, w = check_image_spec(spec, model)
    return 2 ** math.ceil(math.log2(max(h, w)))


def pad_to(x: torch.Tensor, size: int, value: float = 0.0) -> torch.Tensor:
    """Centre ``x`` (N, C, H, W) on a ``size`` x ``size`` canvas filled with ``value``."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top), value=value)


def crop_to(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The central ``shape[-2:]`` window of ``x`` (the inverse of :func:`pad_to`)."""
    h, w = shape[-2:]
    size_h, size_w = x.shape[-2:]
    if (size_h, size_w) == (h, w):
        return x
    top, left = (size_h - h) // 2, (size_w - w) // 2
    return x[..., top : top + h, left : left + w]


class CanvasImages:
    """For models that work on a [-1, 1] square canvas of side ``self.size``: data images in [0, 1]
    of ``self.spec.shape`` to the canvas (background -1) and back."""

    def to_canvas(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to(x * 2 - 1, self.size, value=-1.0)

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return crop_to((canvas + 1) / 2, self.spec.shape)


def dcgan_init(module: nn.Module, std: float = 0.02) -> None:
    """Radford et al. 2016: every weight from N(0, 0.02); batch-norm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std) weights and zero biases for every convolution (the papers' initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def check_divisible_size(name: str, spec: DataSpec, factor: int) -> None:
    """An image spec whose height and width a network that halves the map ``log2(factor)`` times can take."""
    if spec.kind != "image" or len(spec.shape) != 3 or spec.shape[1] % factor or spec.shape[2] % factor:
        raise GenbenchError(
            f"{name} needs images of shape (C, H, W) with H and W divisible by {factor}; "
            f"{spec.name} has shape {spec.shape}: crop or pad the images"
        )


def doublings(start: int, size: int) -> int:
    """How many factor-two upsamplings take a ``start`` x ``start`` map to ``size`` x ``size``."""
    n = round(math.log2(size / start))
    if start * 2**n != size or n < 1:
        raise GenbenchError(f"cannot grow a {start}x{start} map to {size}x{size} by doubling")
    return n


def start_resolution(size: int) -> int:
    """The spatial side a generator starts from: 2x2 for an 8x8 canvas (two doublings; a 4x4 start
    would leave one transposed convolution to draw the whole digit), DCGAN's 4x4 from 16x16 up."""
    return 2 if size <= 8 else 4


def widths(width: int, n: int) -> list[int]:
    """Channels of the ``n`` feature maps from the smallest spatial size up: width, width/2, ..."""
    return [max(8, width // 2**i) for i in range(n)]


class DCGANGenerator(nn.Module):
    """Radford et al. 2016's generator: z projected to a ``start`` x ``start`` map by a transposed
    convolution, then stride-2 transposed convolutions with batch norm and ReLU that double the map and
    halve the channels up to the ``size`` x ``size`` canvas, tanh output in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int):
        super().__init__()
        start = start_resolution(size)
        ch = widths(width, doublings(start, size))
        # "project and reshape": a transposed convolution of a 1x1 input is a dense layer to a map
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch[0], start, 1, 0, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU(True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ch[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """The mirror image of :class:`DCGANGenerator`: stride-2 convolutions with batch norm (none on the
    first) and LeakyReLU 0.2 from the canvas down to the start size, then one logit per image."""

    def __init__(self, channels: int, size: int, width: int):
        super().__init__()
        start = start_resolution(size)
        ch = widths(width, doublings(start, size))[::-1]  # from the canvas down to the start size
        layers: list[nn.Module] = [nn.Conv2d(channels, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for a, b in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ch[-1], 1, start, 1, 0)]  # one logit from the start x start map
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)
