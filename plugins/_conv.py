"""Convolutional building blocks shared by the DCGAN, InfoGAN and progressive GAN families.

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
