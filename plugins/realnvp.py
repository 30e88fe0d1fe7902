"""RealNVP (Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017).

A stack of affine coupling layers with alternating binary masks b:

    y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x)),    log|det dy/dx| = sum (1 - b) * s(b * x),

with the log-scale bounded as s = scale * tanh(.) (the paper's tanh-bounded scale, with a learned
per-dimension factor), a standard normal base density, and exact maximum-likelihood training.

Images go through the paper's pre-processing first: x in [0, 1] maps to logit(lam + (1 - 2 lam) x)
with lam = 0.05 (the symmetric form, so 0 and 1 map to +-logit(0.95)); its log-determinant is part
of ``log_likelihood``, so the reported likelihood is the density of the dequantised data on
[0, 1]^D, the same quantity every other family reports (``DataSpec.bits_per_dim`` applies).  2-D
point data is modelled directly, without the logit map.

Two architectures, chosen by the image size (``arch = "auto"``):

* **multi-scale** (images of 16 pixels a side or more: MNIST, CIFAR-10, SVHN, image folders), the
  paper's design (its section 3.6): at each scale three checkerboard couplings, a 2x2 squeeze
  (``pixel_unshuffle``), three channel couplings on the squeezed image, and half of the channels
  factored out to the standard normal base; the last scale has four checkerboard couplings.  s and
  t come from a convolutional ResNet (3x3 convolutions, residual blocks, ReLU).  The paper's
  CIFAR-10 setting is two scales (it down-scales once), 8 residual blocks and 64 feature maps;
  the defaults here keep the two scales and scale the ResNets to 2 blocks of 32 feature maps for a
  CPU budget (``n_scales``, ``n_blocks``, ``conv_width`` restore the paper's).  A checkerboard
  coupling's network sees the mask as one more input channel, so it knows which pixels it is given.
* **MLP** (8x8 digits and 2-D points): the couplings' s and t come from one MLP on the whole
  flattened (masked) input: at 64 dimensions an MLP sees the whole image and the factor-out of the
  multi-scale design saves nothing.  The masks keep the
  paper's order -- checkerboard couplings (alternating the checkerboard and its complement), then
  "channel" couplings: on a 2x2-squeezed image the paper splits the four channels in two halves,
  which on the flattened image is the mask "even rows" versus "odd rows" (alternating).  Point data
  alternates the even and odd coordinates.
What else was scaled for a CPU budget, and why:

* No batch normalisation and no weight normalisation in the couplings: batch statistics would make
  the density of a point depend on its batch (or on running averages that lag the weights), and
  the metrics call ``log_likelihood`` in whatever mode the runner left the model.  The last layer
  of every coupling network starts at zero, so the flow starts as the identity (stable from step 0).
* Adam with the paper's L2 penalty of 5e-5 on the weights, the paper's batch size of 64.

Samples are drawn by inverting the couplings exactly; image samples are clamped to [0, 1], the
support of the data (the logit map's inverse covers a slightly wider interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.errors import GenbenchError
from genbench.model import Capability, GenerativeModel
from genbench.nn import log_normal_std, mlp, randn
from genbench.optim import adam


@dataclass
class RealNVPConfig:
    arch: str = "auto"  # "multiscale" (images of 16 pixels a side or more), "mlp" (smaller images, points)
    n_couplings: int = 8  # mlp: half checkerboard, half squeezed-channel masks
    hidden: int = 256  # mlp: width of each coupling MLP
    n_hidden_layers: int = 2  # mlp
    n_scales: int = 2  # multiscale: scales, each but the last ending in a squeeze and a factor-out (paper, CIFAR-10: 2)
    n_blocks: int = 2  # multiscale: residual blocks of each coupling's ResNet (paper, CIFAR-10: 8)
    conv_width: int = 32  # multiscale: feature maps of each coupling's ResNet (paper, CIFAR-10: 64)
    logit_lambda: float = 0.05  # the paper's alpha of the logit pre-processing (images only)
    lr: float = 1e-3
    weight_decay: float = 5e-5  # the paper's L2 penalty on the weights
    batch_size: int = 64


def checkerboard_mask(h: int, w: int) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return ((i + j) % 2).float()


def squeezed_channel_mask(h: int, w: int) -> torch.Tensor:
    """The paper's channel mask after a 2x2 squeeze, seen on the unsqueezed image: the squeeze
    puts pixel (i, j) in channel 2 (i mod 2) + (j mod 2), so the first half of the channels are
    exactly the even rows."""
    i = torch.arange(h).unsqueeze(1).expand(h, w)
    return (i % 2 == 0).float()


def coupling_masks(spec, n: int) -> list[torch.Tensor]:
    """Masks (1 = passed through and conditioned on) for ``n`` couplings, flattened to (D,)."""
    if spec.kind == "image":
        h, w = spec.shape[-2:]
        c = spec.shape[0] if len(spec.shape) == 3 else 1
        n_checker = (n + 1) // 2
        masks = []
        for k in range(n):
            base = checkerboard_mask(h, w) if k < n_checker else squeezed_channel_mask(h, w)
            m = base if k % 2 == 0 else 1 - base
            masks.append(m.expand(c, h, w).reshape(-1))
        return masks
    even = (torch.arange(spec.dim) % 2 == 0).float()
    return [even if k % 2 == 0 else 1 - even for k in range(n)]


class AffineCoupling(nn.Module):
    """One affine coupling layer with a fixed binary mask."""

    def __init__(self, mask: torch.Tensor, hidden: int, n_hidden_layers: int):
        super().__init__()
        d = mask.numel()
        if d < 2:
            raise GenbenchError("a coupling layer needs at least 2 dimensions to split; "
                                "RealNVP cannot model 1-D data")
        self.register_buffer("mask", mask.float())
        self.net = mlp([d] + [hidden] * n_hidden_layers + [2 * d])
        # zero output layer: s = t = 0, the layer starts as the identity
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(d))

    def _s_t(self, x_masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.net(x_masked).chunk(2, dim=-1)
        free = 1 - self.mask
        # masking s and t keeps the passed-through half exactly unchanged and out of the log-det
        return self.scale * torch.tanh(raw_s) * free, t * free

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data-to-latent direction: y and log|det dy/dx| (shape (n,))."""
        s, t = self._s_t(x * self.mask)
        y = x * self.mask + (1 - self.mask) * (x * torch.exp(s) + t)
        return y, s.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._s_t(y * self.mask)  # y * mask == x * mask
        return y * self.mask + (1 - self.mask) * ((y - t) * torch.exp(-s))


# --- the paper's multi-scale architecture (convolutional couplings) --------------------------


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, h):
        return h + self.body(h)


class ConvCoupling(nn.Module):
    """An affine coupling on images (n, C, H, W): ``kind="checker"`` passes one colour of a
    checkerboard through and transforms the other (``parity`` picks which); ``kind="channel"``
    passes one half of the channels (``parity``) and transforms the other.  s = scale * tanh(.) per
    channel, as in the MLP couplings; the ResNet's last convolution starts at zero (identity)."""

    def __init__(self, kind: str, parity: int, channels: int, size: tuple[int, int], width: int, n_blocks: int):
        super().__init__()
        self.kind, self.parity = kind, parity
        if kind == "checker":
            mask = checkerboard_mask(*size)
            self.register_buffer("mask", (mask if parity == 0 else 1 - mask).view(1, 1, *size))
            n_in, n_out = channels + 1, channels
        else:
            if channels % 2:
                raise GenbenchError(f"realnvp: a channel coupling needs an even number of channels, got {channels}")
            n_in = n_out = channels // 2
        self.inp = nn.Conv2d(n_in, width, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(n_blocks)])
        self.out = nn.Conv2d(width, 2 * n_out, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = nn.Parameter(torch.ones(1, n_out, 1, 1))

    def _s_t(self, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_s, t = self.out(F.relu(self.blocks(self.inp(given)))).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def _checker_s_t(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """s and t of a checkerboard coupling from the passed-through pixels (and the mask as one
        more channel), zero on those pixels so that they stay exactly as they are."""
        m = self.mask
        s, t = self._s_t(torch.cat([x * m, m.expand(len(x), 1, *m.shape[-2:])], dim=1))
        return s * (1 - m), t * (1 - m)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.chunk(2, dim=1)
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data-to-latent direction: y and log|det dy/dx| (shape (n,))."""
        if self.kind == "checker":
            m = self.mask
            s, t = self._checker_s_t(x)
            return x * m + (1 - m) * (x * torch.exp(s) + t), s.flatten(1).sum(-1)
        kept, changed = self._split(x)
        s, t = self._s_t(kept)
        return self._join(kept, changed * torch.exp(s) + t), s.flatten(1).sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "checker":
            m = self.mask
            s, t = self._checker_s_t(y)  # y * mask == x * mask
            return y * m + (1 - m) * ((y - t) * torch.exp(-s))
        kept, changed = self._split(y)
        s, t = self._s_t(kept)
        return self._join(kept, (changed - t) * torch.exp(-s))


class MultiScaleFlow(nn.Module):
    """The paper's multi-scale flow on images of shape (C, H, W), between flattened tensors: the
    latent is every factored-out half and the last scale's output, flattened and concatenated (all
    of it under the standard normal base)."""

    def __init__(self, shape: tuple[int, int, int], n_scales: int, width: int, n_blocks: int):
        super().__init__()
        c, h, w = shape
        if n_scales < 1:
            raise GenbenchError(f"realnvp: n_scales={n_scales}; at least 1 is needed")
        if h % 2 ** (n_scales - 1) or w % 2 ** (n_scales - 1) or min(h, w) < 2 ** n_scales:
            raise GenbenchError(f"realnvp: {h}x{w} images cannot be squeezed {n_scales - 1} time(s) (each halves "
                                f"both sides); use fewer n_scales or arch=\"mlp\"")
        self.shape = shape
        self.pre, self.post, self.factored = nn.ModuleList(), nn.ModuleList(), []
        for _ in range(n_scales - 1):
            self.pre.append(self._couplings("checker", 3, c, (h, w), width, n_blocks))
            c, h, w = 4 * c, h // 2, w // 2
            self.post.append(self._couplings("channel", 3, c, (h, w), width, n_blocks))
            c //= 2
            self.factored.append((c, h, w))  # the half that leaves the flow here
        self.last = self._couplings("checker", 4, c, (h, w), width, n_blocks)
        self.last_shape = (c, h, w)

    @staticmethod
    def _couplings(kind: str, n: int, channels: int, size: tuple[int, int], width: int, n_blocks: int):
        """``n`` couplings of one kind, alternating which half is passed through."""
        return nn.ModuleList(ConvCoupling(kind, k % 2, channels, size, width, n_blocks) for k in range(n))

    @staticmethod
    def _run(layers, y, total):
        for layer in layers:
            y, logdet = layer(y)
            total = total + logdet
        return y, total

    def forward(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = flat.view(len(flat), *self.shape)
        total = torch.zeros(len(flat), device=flat.device, dtype=flat.dtype)
        zs = []
        for pre, post in zip(self.pre, self.post):
            y, total = self._run(pre, y, total)
            y, total = self._run(post, F.pixel_unshuffle(y, 2), total)
            z, y = y.chunk(2, dim=1)
            zs.append(z.flatten(1))
        y, total = self._run(self.last, y, total)
        return torch.cat([*zs, y.flatten(1)], dim=1), total

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        sizes = [math.prod(s) for s in (*self.factored, self.last_shape)]
        parts = list(z.split(sizes, dim=1))
        y = parts.pop().view(len(z), *self.last_shape)
        for layer in reversed(self.last):
            y = layer.inverse(y)
        for pre, post, shape in reversed(list(zip(self.pre, self.post, self.factored))):
            y = torch.cat([parts.pop().view(len(z), *shape), y], dim=1)
            for layer in reversed(post):
                y = layer.inverse(y)
            y = F.pixel_shuffle(y, 2)
            for layer in reversed(pre):
                y = layer.inverse(y)
        return y.flatten(1)


def choose_arch(config, spec) -> str:
    if config.arch not in ("auto", "mlp", "multiscale"):
        raise GenbenchError(f"realnvp: arch={config.arch!r}; use auto, mlp or multiscale")
    if config.arch != "auto":
        if config.arch == "multiscale" and spec.kind != "image":
            raise GenbenchError("realnvp: arch=\"multiscale\" is for images; use arch=\"mlp\" for point data")
        return config.arch
    return "multiscale" if spec.kind == "image" and min(spec.shape[-2:]) >= 16 else "mlp"


class RealNVP(GenerativeModel):
    name = "realnvp"
    family = "Normalizing flow (RealNVP)"
    paper = "Dinh, Sohl-Dickstein & Bengio 2017, arXiv:1605.08803"
    capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
    data_kinds = frozenset({"image", "points"})
    Config = RealNVPConfig

    def __init__(self, config: RealNVPConfig, spec):
        super().__init__(config, spec)
        if config.n_couplings < 2:
            raise GenbenchError(f"realnvp: n_couplings={config.n_couplings}; at least 2 are needed so "
                                "that every dimension is transformed (use n_couplings >= 2)")
        if not 0.0 < config.logit_lambda < 0.5:
            raise GenbenchError(f"realnvp: logit_lambda={config.logit_lambda} must lie in (0, 0.5)")
        self.use_logit = spec.kind == "image"
        self.arch = choose_arch(config, spec)
        if self.arch == "multiscale":
            shape = tuple(spec.shape) if len(spec.shape) == 3 else (1, *spec.shape)
            self.flow = MultiScaleFlow(shape, config.n_scales, config.conv_width, config.n_blocks)
        else:
            self.couplings = nn.ModuleList(
                AffineCoupling(m, config.hidden, config.n_hidden_layers)
                for m in coupling_masks(spec, config.n_couplings))
        decay = [p for n, p in self.named_parameters() if n.endswith("weight")]
        rest = [p for n, p in self.named_parameters() if not n.endswith("weight")]
        self.optimizers = {"flow": adam(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=config.lr)}

    # --- the logit pre-processing (images) ---------------------------------------------------

    def preprocess(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data x (n, D) to the flow's input y and log|det dy/dx| (n,)."""
        if not self.use_logit:
            return x, torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        lam = self.config.logit_lambda
        p = lam + (1 - 2 * lam) * x
        y = torch.log(p) - torch.log1p(-p)
        # d logit(p)/dx = (1 - 2 lam) / (p (1 - p)); log p(1-p) = -softplus(-y) - softplus(y)
        logdet = (math.log(1 - 2 * lam) + F.softplus(-y) + F.softplus(y)).sum(-1)
        return y, logdet

    def postprocess(self, y: torch.Tensor) -> torch.Tensor:
        if not self.use_logit:
            return y
        lam = self.config.logit_lambda
        return (torch.sigmoid(y) - lam) / (1 - 2 * lam)

    # --- the flow ------------------------------------------------------------------------------

    def forward_flow(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow input (n, D) to the latent z (n, D) and the summed coupling log-dets (n,)."""
        if self.arch == "multiscale":
            return self.flow(y)
        total = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
        for layer in self.couplings:
            y, logdet = layer(y)
            total = total + logdet
        return y, total

    def inverse_flow(self, z: torch.Tensor) -> torch.Tensor:
        if self.arch == "multiscale":
            return self.flow.inverse(z)
        for layer in reversed(self.couplings):
            z = layer.inverse(z)
        return z

    def log_likelihood(self, x):
        flat = x.flatten(1)
        if flat.shape[1] != self.spec.dim:
            raise GenbenchError(f"realnvp: expected inputs with {self.spec.dim} values each "
                                f"(shape {self.spec.shape}), got shape {tuple(x.shape[1:])}")
        # a little slack: bin centre plus uniform noise can round a hair below 0 or above 1
        if self.use_logit and (float(flat.min()) < -1e-5 or float(flat.max()) > 1 + 1e-5):
            raise GenbenchError("realnvp: image inputs must lie in [0, 1] (dequantised data, "
                                "DataSpec.dequantize); got values outside that interval")
        y, logdet_pre = self.preprocess(flat)
        z, logdet_flow = self.forward_flow(y)
        return log_normal_std(z) + logdet_flow + logdet_pre

    def train_step(self, batch, progress):
        return self.maximum_likelihood_step(batch, "flow")

    def sample(self, n, generator=None, condition=None):
        z = randn((n, self.spec.dim), generator, self.device)
        x = self.postprocess(self.inverse_flow(z))
        if self.use_logit:
            x = x.clamp(0.0, 1.0)
        return x.reshape(n, *self.spec.shape)


@genbench.hookimpl
def register_models(register):
    register(RealNVP)
