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

What was scaled for 8x8 digits and a CPU budget, and why:

* The couplings' s and t come from one MLP on the whole flattened (masked) input instead of the
  paper's convolutional ResNets with a multi-scale architecture: at 64 dimensions an MLP sees the
  whole image and the factor-out of the multi-scale design saves nothing.  The masks keep the
  paper's order -- checkerboard couplings (alternating the checkerboard and its complement), then
  "channel" couplings: on a 2x2-squeezed image the paper splits the four channels in two halves,
  which on the flattened image is the mask "even rows" versus "odd rows" (alternating).  Point data
  alternates the even and odd coordinates.
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
    n_couplings: int = 8  # images: half checkerboard, half squeezed-channel masks
    hidden: int = 256  # width of each coupling MLP
    n_hidden_layers: int = 2
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
        """Flow input (n, D) to the latent z and the summed coupling log-dets (n,)."""
        total = torch.zeros(y.shape[0], device=y.device, dtype=y.dtype)
        for layer in self.couplings:
            y, logdet = layer(y)
            total = total + logdet
        return y, total

    def inverse_flow(self, z: torch.Tensor) -> torch.Tensor:
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
