"""InfoGAN (Chen, Duan, Houthooft, Schulman, Sutskever & Abbeel, "InfoGAN: Interpretable
Representation Learning by Information Maximizing Generative Adversarial Nets", NIPS 2016,
arXiv:1606.03657).

The generator's input is split into incompressible noise z and latent codes c; the minimax game
adds the variational lower bound of the mutual information I(c; G(z, c)),

    min_{G,Q} max_D  V(D, G) - lambda * L_I(G, Q),
    L_I(G, Q) = E_{c ~ P(c), x ~ G(z, c)}[log Q(c | x)] + H(c)  <=  I(c; G(z, c)),

where Q(c | x) is a head on the discriminator's body (it shares every convolution with D).  The
MNIST setting of the paper, followed here: one categorical code with 10 categories, two continuous
codes uniform on [-1, 1], 62 noise variables uniform on [-1, 1]; Q is a softmax for the categorical
code and a factored Gaussian for the continuous codes; lambda = 1 for the categorical code and a
smaller weight for the continuous codes, "to ensure that lambda L_I, which now involves differential
entropy, is on the same scale as GAN objectives" (the paper's section 6) -- 0.1 here, the value
common to re-implementations of the MNIST experiment (the authors' released MNIST code instead
fixes Q's standard deviation at 1 and uses weight 1; ``q_learn_std=False, lambda_cont=1.0``
reproduces that).  The discriminator, its body and Q maximise L_I together with the GAN value
(the authors' code subtracts lambda L_I from both the discriminator's and the generator's losses);
the generator uses the non-saturating loss.  Adam with beta1 0.5 and lr 1e-3 for G, as in the
paper's MNIST experiment; D and Q also use 1e-3 here (paper: 2e-4, see below).

Architecture (the paper's MNIST table): G is FC 1024-BN-ReLU, FC (H/4 x W/4 x 128)-BN-ReLU, 4x4
up-convolution 64 stride 2-BN-ReLU, 4x4 up-convolution to the image with a tanh output; D is
4x4 conv 64 stride 2-lReLU, 4x4 conv 128 stride 2-BN-lReLU, FC 1024-BN-lReLU, FC output; Q is
FC 128-BN-lReLU on D's 1024-d layer, then FC to the code parameters; leaky slope 0.1.  MNIST
(28x28) uses that layout as published (a 7x7 start); the 8x8 digits start from 2x2.  Scaled for a
CPU budget of seconds: the convolution widths 64/128 become 32/64 and the FC widths 1024 become
256 (``width`` and ``hidden``) -- at 8x8 the published widths cost four times the time per step
and the budget then buys too few steps to learn digits at all -- and the minibatch is 64 (the
authors' code: 128) for twice the updates per second.  The paper calls its networks DCGAN-style;
the output is DCGAN's tanh, the images living in [-1, 1] inside the model (background -1) and
mapped to [0, 1] by (x + 1) / 2 (the authors' code draws a sigmoid mean on [0, 1] instead, which
here takes several hundred more updates to leave its first, collapsed samples).  The
discriminator's learning rate is raised from 2e-4 to G's 1e-3: a budget of seconds buys about a
thousand updates, and with D five times slower than G the samples of each code stay close
together within that time (low recall, and codes that share digits).

``sample(n, generator, condition)`` honours ``condition``: integer values of the categorical code,
one per sample (Capability.CONDITIONAL); the noise and the continuous codes are always drawn from
``generator``.  The family metric ``infogan_code_accuracy`` generates samples per code value,
classifies them with the dataset's domain classifier, matches codes to classes by the Hungarian
algorithm and reports the accuracy under that matching (the paper's 5% error on MNIST).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.errors import GenbenchError
from genbench.features import domain_extractor
from genbench.metrics import EvalContext, Metric, draw_samples
from genbench.model import Capability, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import bce_with_logits, check_image_spec, crop_to, dcgan_init, pad_to

LOG_2PI = math.log(2 * math.pi)


@dataclass
class InfoGANConfig:
    noise_dim: int = 62
    n_continuous: int = 2  # continuous codes, uniform on [-1, 1]
    lambda_cat: float = 1.0
    lambda_cont: float = 0.1
    q_learn_std: bool = True  # Q's Gaussian has a learnt std (False: std 1, as the authors' MNIST code)
    width: int = 32  # channels of D's first / G's last hidden convolution (paper: 64); the other has 2x
    hidden: int = 256  # width of the fully connected layers (paper: 1024)
    q_hidden: int = 128
    lr_d: float = 1e-3  # discriminator and Q (paper: 2e-4; see the module docstring)
    lr_g: float = 1e-3
    beta1: float = 0.5
    batch_size: int = 64
    leak: float = 0.1
    init_std: float = 0.02


class InfoGenerator(nn.Module):
    def __init__(self, in_dim: int, channels: int, start: tuple[int, int], width: int, hidden: int):
        super().__init__()
        self.start = start
        c2 = 2 * width
        self.fc = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(True),
            nn.Linear(hidden, c2 * start[0] * start[1]), nn.BatchNorm1d(c2 * start[0] * start[1]), nn.ReLU(True),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(c2, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h = self.fc(latent)
        return self.conv(h.reshape(len(h), -1, *self.start))


class InfoDiscriminator(nn.Module):
    """D's body (two strided convolutions and an FC layer) with two heads: D's logit and Q."""

    def __init__(self, channels: int, start: tuple[int, int], width: int, hidden: int, q_hidden: int,
                 q_out: int, leak: float):
        super().__init__()
        c2 = 2 * width
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(leak, True),
            nn.Conv2d(width, c2, 4, 2, 1), nn.BatchNorm2d(c2), nn.LeakyReLU(leak, True),
            nn.Flatten(),
            nn.Linear(c2 * start[0] * start[1], hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(leak, True),
        )
        self.d_head = nn.Linear(hidden, 1)
        self.q_head = nn.Sequential(
            nn.Linear(hidden, q_hidden), nn.BatchNorm1d(q_hidden), nn.LeakyReLU(leak, True),
            nn.Linear(q_hidden, q_out),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.d_head(h).flatten(), self.q_head(h)


class InfoGAN(GenerativeModel):
    name = "infogan"
    family = "InfoGAN"
    paper = "Chen et al. 2016, arXiv:1606.03657"
    capabilities = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    data_kinds = frozenset({"image"})
    Config = InfoGANConfig
    n_categories = 10  # the categorical code (the paper's MNIST setting); read by infogan_code_accuracy

    def __init__(self, config: InfoGANConfig, spec):
        super().__init__(config, spec)
        channels, h, w = check_image_spec(spec, self.name)
        # two stride-2 layers: the canvas side must be a multiple of 4 (8 and 28 are)
        self.canvas = (4 * math.ceil(h / 4), 4 * math.ceil(w / 4))
        start = (self.canvas[0] // 4, self.canvas[1] // 4)
        self.n_continuous = config.n_continuous
        self.latent_dim = config.noise_dim + self.n_categories + self.n_continuous
        q_out = self.n_categories + self.n_continuous * (2 if config.q_learn_std else 1)
        self.generator = InfoGenerator(self.latent_dim, channels, start, config.width, config.hidden)
        self.discriminator = InfoDiscriminator(channels, start, config.width, config.hidden, config.q_hidden,
                                               q_out, config.leak)
        dcgan_init(self, config.init_std)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "g": adam(self.generator.parameters(), config.lr_g, betas),
            "d": adam(self.discriminator.parameters(), config.lr_d, betas),
        }

    # --- latent codes ---------------------------------------------------------------------

    def draw_codes(self, n: int, generator: torch.Generator | None, condition=None):
        """(noise, categorical code values, continuous codes), drawn on the CPU from ``generator``
        (global RNG when None) and moved to the model's device."""
        if condition is None:
            cat = torch.randint(self.n_categories, (n,), generator=generator)
        else:
            cat = self.check_condition(condition, n)
        noise = torch.rand(n, self.config.noise_dim, generator=generator) * 2 - 1
        cont = torch.rand(n, self.n_continuous, generator=generator) * 2 - 1
        device = self.device
        return noise.to(device), cat.to(device), cont.to(device)

    def check_condition(self, condition, n: int) -> torch.Tensor:
        cat = torch.as_tensor(condition).cpu()
        if cat.is_floating_point() or cat.is_complex() or cat.dtype == torch.bool:
            raise GenbenchError(f"{self.name}: condition must hold integer categorical code values "
                                f"(a LongTensor of shape ({n},)), not {cat.dtype}")
        if cat.shape != (n,):
            raise GenbenchError(f"{self.name}: condition has shape {tuple(cat.shape)}; pass one categorical "
                                f"code value per sample, shape ({n},)")
        if n and (int(cat.min()) < 0 or int(cat.max()) >= self.n_categories):
            raise GenbenchError(f"{self.name}: condition values must lie in 0..{self.n_categories - 1} "
                                f"(the categorical code), got {int(cat.min())}..{int(cat.max())}")
        return cat.long()

    def latent(self, noise: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        return torch.cat([noise, F.one_hot(cat, self.n_categories).to(noise.dtype), cont], dim=1)

    # --- the objective --------------------------------------------------------------------

    def info_loglik(self, q_out: torch.Tensor, cat: torch.Tensor, cont: torch.Tensor):
        """Monte Carlo estimates of E[log Q(c_cat | x)] and E[log Q(c_cont | x)] (summed over the
        continuous codes) on generated x.  Adding H(c) (log 10 and n_cont * log 2) gives L_I."""
        k = self.n_categories
        cat_ll = -F.cross_entropy(q_out[:, :k], cat)
        mean = q_out[:, k : k + self.n_continuous]
        if self.config.q_learn_std:
            # bounded so a collapsing std cannot make the continuous term dominate the game
            log_std = q_out[:, k + self.n_continuous :].clamp(-5.0, 2.0)
        else:
            log_std = torch.zeros_like(mean)
        z = (cont - mean) * torch.exp(-log_std)
        cont_ll = (-0.5 * z**2 - log_std - 0.5 * LOG_2PI).sum(1).mean()
        return cat_ll, cont_ll

    def code_entropy(self) -> float:
        """H(c): log K for the uniform categorical code plus log 2 per U[-1, 1] continuous code."""
        return math.log(self.n_categories) + self.n_continuous * math.log(2.0)

    # --- images: [0, 1] data <-> the generator's [-1, 1] canvas ------------------------------

    def to_canvas(self, x: torch.Tensor) -> torch.Tensor:
        return pad_to(x * 2 - 1, self.canvas[0], value=-1.0)

    def to_data(self, canvas: torch.Tensor) -> torch.Tensor:
        return crop_to((canvas + 1) / 2, self.spec.shape)

    def train_step(self, batch, progress):
        real = self.to_canvas(self.spec.dequantize(batch["x"]))
        n = real.shape[0]
        noise, cat, cont = self.draw_codes(n, None)
        fake = self.generator(self.latent(noise, cat, cont))
        lam_cat, lam_cont = self.config.lambda_cat, self.config.lambda_cont
        # D and Q: maximise the GAN value and L_I
        d_real, _ = self.discriminator(real)
        d_fake, q_fake = self.discriminator(fake.detach())
        d_adv = bce_with_logits(d_real, 1.0) + bce_with_logits(d_fake, 0.0)
        cat_ll, cont_ll = self.info_loglik(q_fake, cat, cont)
        d_loss = d_adv - lam_cat * cat_ll - lam_cont * cont_ll
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        # G: non-saturating loss, and maximise L_I through the updated Q
        g_fake, q_fake = self.discriminator(fake)
        cat_ll, cont_ll = self.info_loglik(q_fake, cat, cont)
        g_adv = bce_with_logits(g_fake, 1.0)
        g_loss = g_adv - lam_cat * cat_ll - lam_cont * cont_ll
        self.optimizers["g"].zero_grad()
        g_loss.backward()
        self.optimizers["g"].step()
        mi = cat_ll.detach() + cont_ll.detach() + self.code_entropy()
        return {"d_loss": d_adv.detach(), "g_loss": g_adv.detach(), "q_cat_nll": -cat_ll.detach(),
                "q_cont_nll": -cont_ll.detach(), "mi_lower_bound": mi}

    def sample(self, n, generator=None, condition=None):
        noise, cat, cont = self.draw_codes(n, generator, condition)
        return self.to_data(self.generator(self.latent(noise, cat, cont)))


# --- the family metric ---------------------------------------------------------------------


def hungarian_accuracy(codes: torch.Tensor, labels: torch.Tensor, n_codes: int, n_labels: int) -> float:
    """Accuracy of predicting ``labels`` from ``codes`` under the one-to-one matching of codes to
    labels that maximises it (the Hungarian algorithm on the confusion counts); codes left
    unmatched (more codes than labels) count as errors."""
    from scipy.optimize import linear_sum_assignment

    codes, labels = torch.as_tensor(codes).long().flatten(), torch.as_tensor(labels).long().flatten()
    if codes.shape != labels.shape:
        raise GenbenchError(f"hungarian_accuracy: {len(codes)} codes but {len(labels)} labels; pass one label per code")
    if len(codes) == 0:
        raise GenbenchError("hungarian_accuracy: no samples; pass at least one code and label")
    counts = torch.zeros(n_codes, n_labels, dtype=torch.float64)
    counts.index_put_((codes, labels), torch.ones(len(codes), dtype=torch.float64), accumulate=True)
    rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
    return float(counts[rows, cols].sum()) / len(codes)


class InfoGANCodeAccuracy(Metric):
    name = "infogan_code_accuracy"
    headline = {"infogan_code_accuracy": 185}
    columns = {"infogan_code_accuracy": "higher"}
    needs = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        if not isinstance(getattr(model_cls, "n_categories", None), int):
            return False, "only for models with a categorical latent code (class attribute n_categories)"
        if dataset.spec.num_classes is None:
            return False, "the dataset has no class labels to match the codes to"
        return super().applies(model_cls, dataset)

    def per_code(self, profile) -> int:
        return max(10, profile.n_fid_samples // 10)

    def estimator(self, profile) -> str:
        return (f"{self.per_code(profile)} samples per categorical code value, labelled by the domain "
                f"classifier (argmax of its logits); codes matched one-to-one to classes by the Hungarian "
                f"algorithm on the confusion counts; accuracy under that matching")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        model = ctx.model
        k, per = model.n_categories, self.per_code(ctx.profile)
        codes = torch.arange(k).repeat_interleave(per)
        images = draw_samples(model, len(codes), ctx.generator(offset=31), codes, ctx.device)
        ext = domain_extractor(ctx.dataset, ctx.device)
        _, logits = ext.features(images)
        labels = logits.argmax(1)
        return {"infogan_code_accuracy": hungarian_accuracy(codes, labels, k, int(ctx.dataset.spec.num_classes))}


@genbench.hookimpl
def register_models(register):
    register(InfoGAN)


@genbench.hookimpl
def register_metrics(register):
    register(InfoGANCodeAccuracy())
