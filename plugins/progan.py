"""Progressive GAN (Karras, Aila, Laine & Lehtinen, "Progressive Growing of GANs for Improved
Quality, Stability, and Variation", ICLR 2018, arXiv:1710.10196).

Generator and discriminator grow together, one resolution doubling per stage.  When a stage
begins its new blocks fade in: the generator's output is (1 - alpha) * upsample(toRGB(old)) +
alpha * toRGB(new block(old)), the discriminator's input path is blended the same way (the
downsampled image through the old fromRGB versus the new fromRGB and block), and the real images
are blended alike between the stage's resolution and the previous one upsampled (the authors'
code), with alpha rising linearly from 0 to 1; then the stage trains with alpha = 1.  The paper's
other ingredients, as published:

* the WGAN-GP loss (Gulrajani et al. 2017) with lambda = 10 and the drift term
  epsilon_drift * E[D(x)^2], epsilon_drift = 0.001, keeping the critic's output near zero;
* equalised learning rate (weights from N(0, 1), scaled at run time by He's constant), pixelwise
  feature normalisation after every 3x3 convolution of the generator (and of the latent), the
  minibatch standard deviation as an extra feature map before the critic's last block (whole
  minibatch, as the paper describes it);
* blocks of two 3x3 convolutions with LeakyReLU(0.2), nearest-neighbour upsampling in G and
  average pooling in D, 1x1 toRGB/fromRGB layers; the first block maps the latent to the smallest
  map with a dense layer; the critic ends with a 3x3 convolution, a dense "convolution" over the
  whole smallest map and a linear output;
* Adam with lr 0.001, beta1 0, beta2 0.99, epsilon 1e-8, its state reset when a stage begins
  (the authors' code resets it for every new level of detail).

The schedule follows the budget, not epochs (``progress`` in ``train_step``): the last stage gets
the share ``last_share`` (0.8) of the budget and the S - 1 stages before it split the rest equally; a
stage after the first spends ``fade`` (one half) of such a share fading in -- the paper's 800k
images of fade-in followed by 800k of stabilisation, in units of budget -- and the last stage,
once faded in, trains for the rest of the budget, as the authors' released schedule keeps training
at the final resolution.  ``last_share = 1 / S`` gives every stage an equal share; ``last_share =
1`` trains the full network from the start, without growing (the paper's non-growing baseline).

Scaled to the data and to a CPU budget of seconds: the paper grows 4x4 -> 1024x1024 with 512
feature maps at low resolution; here the 8x8 digits grow 2x2 -> 4x4 -> 8x8 and MNIST, padded onto
a 32x32 canvas inside the model (generated images are cropped back to 28x28), grows
4x4 -> 8x8 -> 16x16 -> 32x32.  The feature maps are 32 at the two lowest resolutions and halve
per doubling above (``width``) and the latent has 128 dimensions (paper: 512): the gradient
penalty's double backward pass makes a step about three times the cost of a plain GAN step.  The
minibatch is 32 (paper: 16; the authors' code uses larger ones at low resolution) and the critic
takes two steps per generator step (``n_critic = 2``; paper: 1): with the raised learning rate
below and one critic step, the critic falls behind the generator (its Wasserstein estimate turns
negative) and training diverges on some seeds.  The learning rate is 0.01 instead of 0.001: with the equalised
learning rate every weight is N(0, 1), so an Adam step changes each weight by about lr of its own
scale -- the paper's 0.001 is sized for millions of images, and within the ~1000 steps a budget of
seconds buys it leaves the networks near their initialisation (on the digits, FID about 950 after
1000 steps at 0.001 against about 150 at 0.01).  Samples come from the paper's running average of
the generator's weights (``ema_decay``), with the decay scaled from the paper's 0.999 over some
hundred thousand steps to 0.99 (a time constant of 100 steps) for the ~1000 steps a budget of
seconds buys; ``ema_decay = 0`` samples from the generator itself.

``sample`` always returns full-resolution images: the current stage's output (blended if training
ended during a fade-in), upsampled with nearest neighbour to the full canvas when training stopped
before the last stage.  ``sample_at_stage(n, stage, generator)`` gives the stabilised output of an
earlier stage at its own resolution, used by the family metric ``progan_stage_fid``.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.errors import GenbenchError
from genbench.features import domain_extractor
from genbench.metrics import SAMPLE_CHUNK, EvalContext, Metric
from genbench.model import Capability, GenerativeModel
from genbench.nn import randn
from genbench.optim import adam
from genbench.toolkit import canvas_size, crop_to, doublings, fid_between, gradient_penalty, pad_to, start_resolution

SQRT2 = math.sqrt(2.0)
MAX_STAGES = 4  # 4x4 -> 32x32 (MNIST); the digits have 3


@dataclass
class ProGANConfig:
    latent_dim: int = 128
    width: int = 32  # feature maps at the two lowest resolutions (paper: 512); halved per doubling above
    min_width: int = 8
    lr: float = 1e-2  # paper: 1e-3 (see the module docstring)
    beta1: float = 0.0
    beta2: float = 0.99
    adam_eps: float = 1e-8
    batch_size: int = 32  # paper: 16
    lambda_gp: float = 10.0
    eps_drift: float = 1e-3
    n_critic: int = 2  # critic steps per generator step (paper: 1)
    fade: float = 0.5  # share of a stage's unit (after the first) spent fading in the new blocks
    last_share: float = 0.8  # share of the budget given to the last stage (1 / stages: equal shares)
    ema_decay: float = 0.99  # running average of G's weights used for sampling (0: none)


def schedule(progress: float, n_stages: int, fade: float = 0.5, last: float | None = None) -> tuple[int, float]:
    """(stage, alpha) at ``progress``.  The last stage gets the share ``last`` of the budget (equal
    shares when None) and the stages before it split the rest equally; a stage after the first
    fades in over ``fade`` of one such share, the last stage included, and alpha rises linearly
    from 0 at the stage's start to 1 (the first stage has nothing to fade in: alpha = 1)."""
    progress = min(max(float(progress), 0.0), 1.0)
    if n_stages == 1:
        return 0, 1.0
    if last is None:
        p = progress * n_stages
    else:  # in units of one earlier stage's share of the budget, (1 - last) / (n_stages - 1)
        p = progress * (n_stages - 1) / (1.0 - last) if last < 1.0 else float(n_stages)
    stage = min(int(p), n_stages - 1)
    if stage == 0:
        return 0, 1.0
    local = p - stage
    return stage, 1.0 if fade <= 0 else min(1.0, local / fade)


# --- the paper's layers ----------------------------------------------------------------------


class EqualizedConv2d(nn.Module):
    """Equalised learning rate: N(0, 1) weights scaled by gain / sqrt(fan_in) at every call."""

    def __init__(self, cin: int, cout: int, kernel: int, gain: float = SQRT2, padding: int | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin * kernel * kernel)
        self.padding = kernel // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    def __init__(self, cin: int, cout: int, gain: float = SQRT2):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = gain / math.sqrt(cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each pixel's feature vector scaled to unit average square (the paper's eq. in section 4.2)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


def minibatch_stddev(x: torch.Tensor) -> torch.Tensor:
    """Append one feature map holding the minibatch standard deviation averaged over all features
    and positions (section 3 of the paper)."""
    std = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-8).mean()
    return torch.cat([x, std.expand(x.shape[0], 1, *x.shape[2:])], dim=1)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def downsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)


def stage_widths(n_stages: int, width: int, min_width: int) -> list[int]:
    return [max(min_width, width // 2 ** max(0, s - 1)) for s in range(n_stages)]


class ProGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, start: int, widths: list[int]):
        super().__init__()
        self.start = start
        w0 = widths[0]
        # the dense layer that makes the first map; gain as the authors' code (sqrt(2) / 4 at 4x4)
        self.dense = EqualizedLinear(latent_dim, w0 * start * start, gain=SQRT2 / start)
        self.base_conv = EqualizedConv2d(w0, w0, 3)
        self.blocks = nn.ModuleList([nn.Identity()])  # stage 0 is the base
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.ModuleList([EqualizedConv2d(a, b, 3), EqualizedConv2d(b, b, 3)]))
        self.to_rgb = nn.ModuleList([EqualizedConv2d(w, channels, 1, gain=1.0) for w in widths])

    def block(self, s: int, h: torch.Tensor) -> torch.Tensor:
        conv1, conv2 = self.blocks[s]
        h = upsample(h)
        return pixel_norm(lrelu(conv2(pixel_norm(lrelu(conv1(h))))))

    def forward(self, z: torch.Tensor, stage: int, alpha: float = 1.0) -> torch.Tensor:
        """Images in [-1, 1] (unbounded: the output layer is linear) at stage ``stage``'s resolution."""
        h = self.dense(pixel_norm(z)).reshape(len(z), -1, self.start, self.start)
        h = pixel_norm(lrelu(h))
        h = pixel_norm(lrelu(self.base_conv(h)))
        for s in range(1, stage):
            h = self.block(s, h)
        if stage == 0:
            return self.to_rgb[0](h)
        new = self.to_rgb[stage](self.block(stage, h))
        if alpha >= 1.0:
            return new
        old = upsample(self.to_rgb[stage - 1](h))
        return torch.lerp(old, new, alpha)


class ProDiscriminator(nn.Module):
    def __init__(self, channels: int, start: int, widths: list[int]):
        super().__init__()
        w0 = widths[0]
        self.from_rgb = nn.ModuleList([EqualizedConv2d(channels, w, 1) for w in widths])
        self.blocks = nn.ModuleList([nn.Identity()])
        for a, b in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.ModuleList([EqualizedConv2d(b, b, 3), EqualizedConv2d(b, a, 3)]))
        self.final_conv = EqualizedConv2d(w0 + 1, w0, 3)
        self.final_dense = EqualizedConv2d(w0, w0, start, padding=0)  # a dense layer over the start map
        self.out = EqualizedLinear(w0, 1, gain=1.0)

    def block(self, s: int, h: torch.Tensor) -> torch.Tensor:
        conv1, conv2 = self.blocks[s]
        return downsample(lrelu(conv2(lrelu(conv1(h)))))

    def forward(self, x: torch.Tensor, stage: int, alpha: float = 1.0) -> torch.Tensor:
        h = lrelu(self.from_rgb[stage](x))
        if stage > 0:
            h = self.block(stage, h)
            if alpha < 1.0:
                h = torch.lerp(lrelu(self.from_rgb[stage - 1](downsample(x))), h, alpha)
            for s in range(stage - 1, 0, -1):
                h = self.block(s, h)
        h = lrelu(self.final_conv(minibatch_stddev(h)))
        h = lrelu(self.final_dense(h))
        return self.out(h.flatten(1)).flatten()


class ProGAN(GenerativeModel):
    name = "progan"
    family = "ProGAN"
    paper = "Karras et al. 2018, arXiv:1710.10196"
    capabilities = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})
    Config = ProGANConfig
    progressive = True  # grows through resolution stages; read by progan_stage_fid

    def __init__(self, config: ProGANConfig, spec):
        super().__init__(config, spec)
        if not 0.0 <= config.fade <= 1.0:
            raise GenbenchError(f"{self.name}: fade={config.fade} is the share of a stage spent fading in its "
                                f"new blocks; pick a value in [0, 1] (the paper's schedule is 0.5)")
        if not 0.0 < config.last_share <= 1.0:
            raise GenbenchError(f"{self.name}: last_share={config.last_share} is the share of the budget given to "
                                f"the last stage; pick a value in (0, 1] (1: no growing, the full network "
                                f"from the start)")
        if config.n_critic < 1:
            raise GenbenchError(f"{self.name}: n_critic={config.n_critic} is the number of critic steps per "
                                f"generator step; pick a whole number >= 1")
        if not 0.0 <= config.ema_decay < 1.0:
            raise GenbenchError(f"{self.name}: ema_decay={config.ema_decay} is the decay of the running average "
                                f"of the generator's weights; pick a value in [0, 1) (0: sample from G itself)")
        self.size = canvas_size(spec, self.name)
        start = start_resolution(self.size)
        self.n_stages = doublings(start, self.size) + 1
        self.resolutions = [start * 2**s for s in range(self.n_stages)]
        widths = stage_widths(self.n_stages, config.width, config.min_width)
        channels = spec.shape[0]
        self.latent_dim = config.latent_dim
        self.generator = ProGenerator(config.latent_dim, channels, start, widths)
        self.discriminator = ProDiscriminator(channels, start, widths)
        # the running average of G's weights that samples are drawn from (a copy of G when ema_decay = 0)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)
        # where training is (saved with the weights, so a resumed or loaded model samples the same)
        self.register_buffer("stage", torch.tensor(0))
        self.register_buffer("alpha", torch.tensor(1.0))
        betas = (config.beta1, config.beta2)
        self.optimizers = {
            "g": adam(self.generator.parameters(), config.lr, betas, config.adam_eps),
            "d": adam(self.discriminator.parameters(), config.lr, betas, config.adam_eps),
        }

    # --- data at a stage's resolution -------------------------------------------------------

    def real_at(self, x: torch.Tensor, stage: int, alpha: float) -> torch.Tensor:
        """Real images ([0, 1], data shape) on the model's [-1, 1] canvas, average-pooled to the
        stage's resolution and, during a fade-in, blended with the previous resolution alike."""
        canvas = pad_to(x * 2 - 1, self.size, value=-1.0)
        xs = downsample(canvas, self.size // self.resolutions[stage])
        if stage > 0 and alpha < 1.0:
            xs = torch.lerp(upsample(downsample(xs)), xs, alpha)
        return xs

    def to_full(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images at any stage's resolution -> [0, 1] images of the data's shape."""
        full = upsample(images, self.size // images.shape[-1])
        return crop_to(((full + 1) / 2).clamp(0, 1), self.spec.shape)

    # --- training -------------------------------------------------------------------------------

    def enter_stage(self, stage: int) -> None:
        self.stage.fill_(stage)
        for opt in self.optimizers.values():
            opt.state = defaultdict(dict)

    def train_step(self, batch, progress):
        stage, alpha = schedule(progress, self.n_stages, self.config.fade, self.config.last_share)
        if stage != int(self.stage):
            self.enter_stage(stage)
        self.alpha.fill_(alpha)
        real = self.real_at(self.spec.dequantize(batch["x"]), stage, alpha)

        def critic(x):
            return self.discriminator(x, stage, alpha)

        for _ in range(self.config.n_critic):
            z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
            fake = self.generator(z, stage, alpha)
            # critic: E[D(fake)] - E[D(real)] + lambda * GP + eps_drift * E[D(real)^2]
            d_real, d_fake = critic(real), critic(fake.detach())
            wdist = d_real.mean() - d_fake.mean()
            gp = gradient_penalty(critic, real, fake.detach())
            drift = (d_real**2).mean()
            d_loss = -wdist + self.config.lambda_gp * gp + self.config.eps_drift * drift
            self.optimizers["d"].zero_grad()
            d_loss.backward()
            self.optimizers["d"].step()
        # generator: maximise E[D(G(z))]
        g_loss = -critic(fake).mean()
        self.optimizers["g"].zero_grad()
        g_loss.backward()
        self.optimizers["g"].step()
        self.update_ema()
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "wdist": wdist.detach(), "gp": gp.detach(),
                "stage": float(stage), "alpha": float(alpha)}

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- decay * G_ema + (1 - decay) * G, every weight (a plain copy when decay = 0)."""
        decay = self.config.ema_decay
        ema, live = list(self.generator_ema.parameters()), list(self.generator.parameters())
        if decay == 0.0:
            torch._foreach_copy_(ema, live)
        else:
            torch._foreach_lerp_(ema, live, 1.0 - decay)

    # --- sampling -------------------------------------------------------------------------------

    def sample(self, n, generator=None, condition=None):
        z = randn((n, self.latent_dim), generator, self.device)
        return self.to_full(self.generator_ema(z, int(self.stage), float(self.alpha)))

    def selectable(self) -> bool:
        """Model selection (genbench.selection) compares only states of the full-resolution model,
        faded in: an earlier stage is a lower-resolution model, not an earlier state of this one."""
        return int(self.stage) == self.n_stages - 1 and float(self.alpha) >= 1.0

    def sample_at_stage(self, n: int, stage: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [0, 1] from stage ``stage``'s own output (alpha = 1) at its resolution,
        shape ``(n, C, r, r)`` with r = ``resolutions[stage]`` on the model's square canvas."""
        reached = int(self.stage)
        if not 0 <= stage <= reached:
            raise GenbenchError(f"{self.name}: stage {stage} was not reached in training (stages 0..{reached} "
                                f"were, of 0..{self.n_stages - 1}); train with a larger budget")
        z = randn((n, self.latent_dim), generator, self.device)
        return ((self.generator_ema(z, stage, 1.0) + 1) / 2).clamp(0, 1)


# --- the family metric -------------------------------------------------------------------------


def stage_column(stage: int) -> str:
    return f"fid_stage{stage + 1}"


class ProGANStageFID(Metric):
    """FID of each reached stage's own output against the real data blurred to that stage's
    resolution.  The stages are scored with the trained model's weights: an earlier stage's toRGB
    layer stops learning once its successor has faded in while the blocks it reads keep changing,
    so its FID measures what is left of that stage at the end of training, not its best."""

    name = "progan_stage_fid"
    columns = {stage_column(s): "lower" for s in range(MAX_STAGES)}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        if not getattr(model_cls, "progressive", False) or not hasattr(model_cls, "sample_at_stage"):
            return False, "only for progressively grown models (sample_at_stage)"
        return super().applies(model_cls, dataset)

    def estimator(self, profile) -> str:
        return (f"FID (torch-fidelity) per growth stage on domain-classifier features: {profile.n_fid_samples} "
                f"samples of the stage's own output (current weights, alpha 1), nearest-upsampled to full size, "
                f"against train[:{profile.n_reference}] average-pooled to the stage's resolution and "
                f"nearest-upsampled back; fid_stage1 is the lowest resolution; stages not reached in "
                f"training have no column")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        model = ctx.model
        ext = domain_extractor(ctx.dataset, ctx.device)
        real = ctx.dataset.split("train")["x"][: ctx.profile.n_reference].cpu()
        n = ctx.profile.n_fid_samples
        out = {}
        model.eval()
        try:
            for stage in range(int(model.stage) + 1):
                factor = model.size // model.resolutions[stage]
                blurred = crop_to(upsample(downsample(pad_to(real, model.size), factor), factor), model.spec.shape)
                g = ctx.generator(offset=101 + stage)
                chunks = []
                with torch.no_grad():
                    for start in range(0, n, SAMPLE_CHUNK):
                        k = min(SAMPLE_CHUNK, n - start)
                        small = model.sample_at_stage(k, stage, generator=g).float().cpu()
                        chunks.append(crop_to(upsample(small, factor), model.spec.shape))
                out[stage_column(stage)] = fid_between(torch.cat(chunks), blurred, ext)
        finally:
            model.train()
        return out


@genbench.hookimpl
def register_models(register):
    register(ProGAN)


@genbench.hookimpl
def register_metrics(register):
    register(ProGANStageFID())
