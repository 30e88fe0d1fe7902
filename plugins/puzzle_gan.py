"""Key-patch "puzzle" GAN (Lee, Yun, Choi, Yoo, Yang & Oh, "Unsupervised Holistic Image Generation
from Key Local Patches", ECCV 2018, arXiv:1703.10730): given a few local patches of an image, with
no hint of where they belong, generate the whole image and a mask of where the patches sit in it.

The dataset
-----------
``digits-patches`` (and ``mnist-patches`` by flag) cuts K = 3 square key patches from every image:
side 3 on the 8x8 digits, 10 on 28x28 MNIST (3/8 of the side).  The paper takes its key patches from
an objectness detector's boxes on faces and cars; on digits the informative regions are the strokes,
so patch positions are drawn with probability proportional to the ink in the window plus a small
floor (a generator seeded with the dataset seed); a new window may share at most one row or one
column with an earlier one (on the 8x8 digits there is always room for that).  Batches carry ``"patches"`` (N, K,
C, s, s), ``"patch_mask"`` (N, 1, H, W; 1 on the union of the patch windows, the paper's ground-truth
mask) and ``"patch_pos"`` (N, K, 2; top-left row and column).

The model (the authors' losses and schedule, at digit scale)
------------------------------------------------------------
* A part encoder shared by the K patches (two 3x3 convolutions with leaky ReLU and a linear layer;
  the authors resize each patch to the full image and run a deep encoder on it -- on 3x3 patches
  that adds nothing but cost, so the encoder reads the patch at its own size); the K codes are
  summed, as in the paper, so the order of the patches does not matter.
* A mask generator and an image generator, both DCGAN generators: the mask generator decodes the
  summed code (sigmoid output), the image generator decodes the code joined to noise z ~ U[-1, 1]
  (8-d, see below).  The two are independent, as in the authors' residual-block variant; their
  U-net variant also feeds the mask generator's feature maps to the image generator.
* A DCGAN discriminator on whole images.

Losses, as in the authors' code (``x`` real, ``x'`` another training image, ``M`` the true mask):

    L_D = -log D(x) - log(1 - D(G)) - log(1 - D(M x' + (1 - M) x)) - log(1 - D(M x + (1 - M) x'))
    L_G = -log D(G) + lambda_M |M_G - M|_1 + lambda_A |M_G * G - M * x|_1

The two composites teach D that real patches pasted into the wrong image are fake, so G must make
the rest of the image agree with the patches (the adversarial loss); the spatial loss lambda_M
trains the mask; the appearance loss lambda_A keeps the patches unchanged where the mask puts them.

Scaled to 8x8 digits and a budget of seconds, each choice measured on digits-patches at 15 s:

* Both weights decay log-linearly over the budget's progress, as the authors' code decays them over
  epochs, but from 100 to 10 instead of 1e-2 to 1e-4: the L1 terms are means over the pixels of an
  8x8 image, and at the published weights the adversarial term alone shaped the output (the
  generator collapsed to one digit whatever the patches).  At 10 -> 1 the patches came out no
  closer to their inputs than a random digit's windows (at-truth fidelity 0.685, chance 0.695); at
  100 -> 10, 0.73 on two seeds with FID 23-24; at 1000 -> 100, 0.755 but FID 64.
* The appearance loss compares the masked images in [0, 1], where a masked-out pixel (0) agrees with
  the digits' black background; in the generator's [-1, 1] range a masked-out pixel is 0, mid-grey,
  and the loss pulled every pixel the mask left out towards grey.
* One G step per D step (the authors: one per two D steps): D sees four terms per step; at 2:1,
  FID 31 against 23 at 1:1 (same seed; with the weaker 10 -> 1 weights D won outright at 2:1,
  FID 288 against 164).
* 8 noise dimensions (z ~ U[-1, 1]): with the weaker 10 -> 1 weights, 64 dimensions collapsed the
  generator towards a few digits in all three seeds tried (FID 156-284) and 8 did not (26-40); at
  the final weights the two are close (FID 24.5 with 64, 22.6 with 8, and at-truth fidelity 0.716
  against 0.735).

Adam with lr 2e-4 and beta1 0.5 for all networks, as in the authors' code.

``sample(n, generator, condition)`` needs key patches: ``condition`` is a tensor (n, K, C, s, s);
``complete(patches, generator)`` returns the image and the mask.  ``condition_key = "patches"``, so
FID and the sample grid use held-out patches.  The family metric ``patch_completion`` reports, on
the test images: ``mask_iou`` (the mask thresholded where it best fits the validation images'
true masks, ``mask_threshold``, against the test images' true masks; the chance mask below gets its
threshold the same way, so neither side is held to a threshold the other is not) and
``mask_iou_half`` (thresholded at 1/2);
``patch_fidelity`` (1 - mean absolute pixel difference between each input patch and the generated
image at the window where it matches best -- the problem gives no positions, so a patch counts as
kept wherever it reappears; pixels in [0, 1]); ``patch_fidelity_at_truth`` (the same at the patch's
true position); and ``patch_fidelity_chance`` / ``patch_fidelity_at_truth_chance``, the two scores
of the patches against a different real test image: what an image that ignores its patches scores
(digits share so many stroke windows that the best-window chance level is high); and
``mask_iou_chance``, the IoU of the best constant mask (the training masks' mean, thresholded where
it best fits the training masks), what a model that predicts one mask whatever its patches scores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import genbench
from genbench.datasets import (
    DIGITS_SPEC,
    MNIST_SPEC,
    Dataset,
    DatasetEntry,
    derived_dataset,
    load_digits,
    load_mnist,
)
from genbench.errors import DatasetError, GenbenchError
from genbench.metrics import SAMPLE_CHUNK, EvalContext, Metric, evaluating
from genbench.model import Capability, DataSpec, GenerativeModel
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

PATCHES_KEY = "patches"
PATCHES = "patches"  # the capability: completes whole images from key patches (needed by KeyPatchMetrics)
MASK_KEY = "patch_mask"
POS_KEY = "patch_pos"
N_PATCHES = 3
DEFAULT_SEED = 0
INK_FLOOR = 0.05  # added to each window's mean ink, so empty windows stay possible

# --- the dataset ---------------------------------------------------------------------------------


def patch_side(spec: DataSpec) -> int:
    return max(2, round(3 * min(spec.shape[-2:]) / 8))


def choose_windows(x: torch.Tensor, k: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left (row, col) of ``k`` windows per image, drawn in proportion to ink + INK_FLOOR; a
    window that would share two or more rows and two or more columns with an earlier one is
    excluded while any other remains."""
    n, _, h, w = x.shape
    ink = F.avg_pool2d(x.mean(1, keepdim=True), side, stride=1).flatten(1) + INK_FLOOR  # (n, P)
    cols = w - side + 1
    rows_of = torch.arange(ink.shape[1]) // cols
    cols_of = torch.arange(ink.shape[1]) % cols
    allowed = torch.ones_like(ink, dtype=torch.bool)
    out = torch.empty(n, k, 2, dtype=torch.long)
    for j in range(k):
        weights = torch.where(allowed, ink, torch.zeros_like(ink))
        empty = weights.sum(1) == 0
        weights[empty] = ink[empty]
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        r, c = rows_of[pick], cols_of[pick]
        out[:, j, 0], out[:, j, 1] = r, c
        near = ((rows_of[None] - r[:, None]).abs() < side - 1) & ((cols_of[None] - c[:, None]).abs() < side - 1)
        allowed &= ~near
    return out


def cut_patches(x: torch.Tensor, pos: torch.Tensor, side: int) -> torch.Tensor:
    """The windows of ``x`` (N, C, H, W) at ``pos`` (N, K, 2) as (N, K, C, side, side)."""
    n, k = pos.shape[:2]
    offs = torch.arange(side, device=x.device)
    rows = (pos[..., 0:1].to(x.device) + offs)  # (N, K, s)
    cols = (pos[..., 1:2].to(x.device) + offs)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    patches = x[idx_n, :, rows[:, :, :, None], cols[:, :, None, :]]  # (N, K, s, s, C)
    return patches.permute(0, 1, 4, 2, 3).contiguous()


def windows_mask(pos: torch.Tensor, side: int, shape: tuple[int, int]) -> torch.Tensor:
    """1 on the union of the windows at ``pos`` (N, K, 2), shape (N, 1, H, W)."""
    h, w = shape
    r = torch.arange(h)[None, None, :]
    c = torch.arange(w)[None, None, :]
    in_r = (r >= pos[..., 0:1]) & (r < pos[..., 0:1] + side)  # (N, K, H)
    in_c = (c >= pos[..., 1:2]) & (c < pos[..., 1:2] + side)
    return (in_r[..., :, None] & in_c[..., None, :]).any(1, keepdim=True).float()


def patch_spec(base: DataSpec, name: str) -> DataSpec:
    side = patch_side(base)
    extras = {PATCHES_KEY: {"count": N_PATCHES, "side": side}, MASK_KEY: {}, POS_KEY: {}}
    return dataclasses.replace(base, name=name, extras=extras)


def make_patch_dataset(base: Dataset, spec: DataSpec, seed: int = DEFAULT_SEED) -> Dataset:
    """Key patches of every image of ``base`` (module docstring); deterministic for a base and seed."""
    if base.spec.kind != "image":
        raise DatasetError(f"{spec.name}: key patches are cut from images; base {base.name!r} holds {base.spec.kind}")
    side, k = spec.extras[PATCHES_KEY]["side"], spec.extras[PATCHES_KEY]["count"]
    g = torch.Generator().manual_seed(seed)

    def build_split(split, x, y):
        pos = choose_windows(x, k, side, g)
        return {"x": x.clone(), "y": y.clone(), PATCHES_KEY: cut_patches(x, pos, side),
                MASK_KEY: windows_mask(pos, side, x.shape[-2:]), POS_KEY: pos}

    return derived_dataset(base, spec, build_split, f"{base.name} with {k} key patches of {side}x{side} per image, "
                           f"drawn by ink (seed {seed})", seed=seed)


DIGITS_PATCHES_SPEC = patch_spec(DIGITS_SPEC, "digits-patches")
MNIST_PATCHES_SPEC = patch_spec(MNIST_SPEC, "mnist-patches")


def load_digits_patches() -> Dataset:
    return make_patch_dataset(load_digits(), DIGITS_PATCHES_SPEC)


def load_mnist_patches(root=None, download=None, limit=None) -> Dataset:
    return make_patch_dataset(load_mnist(root, download, limit), MNIST_PATCHES_SPEC)


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


# --- the family metric ---------------------------------------------------------------------------


def best_window_error(images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Per patch, the least mean absolute difference between it and any window of its image:
    (N, C, H, W) and (N, K, C, s, s) -> (N, K)."""
    n, k, c, s, _ = patches.shape
    windows = F.unfold(images, s)  # (N, C*s*s, P)
    flat = patches.reshape(n, k, c * s * s, 1)
    return (windows[:, None] - flat).abs().mean(2).amin(2)


def at_truth_error(images: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return (cut_patches(images, pos, patches.shape[-1]) - patches).abs().flatten(2).mean(2)


def mask_iou(pred: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per image, IoU of ``pred > threshold`` and ``truth > 1/2`` (1 when both are empty)."""
    p, t = (pred > threshold).flatten(1), (truth > 0.5).flatten(1)
    inter, union = (p & t).sum(1).double(), (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


MASK_THRESHOLDS = tuple(i / 20 for i in range(1, 20))


def best_threshold(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """The threshold of a soft mask with the highest mean IoU against ``truth`` (chosen on validation
    images, so that the model's mask and the constant chance mask are both thresholded where they do
    best, and neither on the test images)."""
    scores = [float(mask_iou(pred, truth, t).mean()) for t in MASK_THRESHOLDS]
    return MASK_THRESHOLDS[max(range(len(scores)), key=scores.__getitem__)]


def best_constant_mask(train_masks: torch.Tensor) -> torch.Tensor:
    """The one mask a model that ignores its patches would predict: the training masks' mean,
    thresholded where its mean IoU with the training masks is highest."""
    mean = train_masks.mean(0, keepdim=True)
    levels = torch.unique(mean)
    if len(levels) > 32:  # large images: 32 quantiles of the mean are plenty
        levels = torch.unique(torch.quantile(levels, torch.linspace(0, 1, 32)))
    candidates = [(mean >= t).float() for t in levels]
    scores = [float(mask_iou(c.expand_as(train_masks), train_masks).mean()) for c in candidates]
    return candidates[max(range(len(scores)), key=scores.__getitem__)]


class PatchCompletion(Metric):
    """Mask IoU and how unchanged the key patches come out (module docstring)."""

    name = "patch_completion"
    headline = {"mask_iou": 190, "mask_iou_chance": 191, "patch_fidelity_at_truth": 195,
                "patch_fidelity_at_truth_chance": 196}
    columns = {"mask_iou": "higher", "mask_iou_half": "higher", "mask_threshold": "none",
               "mask_iou_chance": "none", "patch_fidelity": "higher",
               "patch_fidelity_at_truth": "higher", "patch_fidelity_chance": "none",
               "patch_fidelity_at_truth_chance": "none"}
    needs = frozenset({PATCHES})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        missing = {PATCHES_KEY, MASK_KEY, POS_KEY} - set(dataset.spec.extras)
        if missing:
            return False, f"dataset has no {', '.join(sorted(missing))}"
        return super().applies(model_cls, dataset)

    def estimator(self, profile) -> str:
        return (f"one completion per test image (test[:{profile.n_likelihood_points}]); IoU of mask > t, t chosen "
                f"on the validation images (mask_iou_half: t = 1/2); chance = the best constant mask; "
                f"fidelity = 1 - mean |patch - best-matching window| (pixels in [0, 1]); chance = patches "
                f"against the next real test image")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        test = {k: v.cpu() for k, v in ctx.test_points().items()}
        n_val = min(ctx.profile.n_likelihood_points, len(ctx.dataset.split("val")[PATCHES_KEY]))
        val = {k: v[:n_val].cpu() for k, v in ctx.dataset.split("val").items()}
        g = ctx.generator(offset=67)
        model = ctx.model

        def complete(patches):
            images, masks = [], []
            with evaluating(model):
                for chunk in patches.split(SAMPLE_CHUNK):
                    img, mask = model.complete(chunk.to(ctx.device), generator=g)
                    images.append(img.float().cpu().clamp(0, 1))
                    masks.append(mask.float().cpu())
            return torch.cat(images), torch.cat(masks)

        images, masks = complete(test[PATCHES_KEY])
        threshold = best_threshold(complete(val[PATCHES_KEY])[1], val[MASK_KEY])
        patches = test[PATCHES_KEY]
        shuffled = torch.roll(test["x"], 1, 0)
        return {
            "mask_iou": float(mask_iou(masks, test[MASK_KEY], threshold).mean()),
            "mask_iou_half": float(mask_iou(masks, test[MASK_KEY]).mean()),
            "mask_threshold": threshold,
            "mask_iou_chance": float(mask_iou(best_constant_mask(ctx.dataset.split("train")[MASK_KEY].cpu()),
                                              test[MASK_KEY]).mean()),
            "patch_fidelity": 1.0 - float(best_window_error(images, patches).mean()),
            "patch_fidelity_at_truth": 1.0 - float(at_truth_error(images, patches, test[POS_KEY]).mean()),
            "patch_fidelity_chance": 1.0 - float(best_window_error(shuffled, patches).mean()),
            "patch_fidelity_at_truth_chance": 1.0 - float(at_truth_error(shuffled, patches, test[POS_KEY]).mean()),
        }


@genbench.hookimpl
def register_models(register):
    register(PuzzleGAN)


@genbench.hookimpl
def register_datasets(register):
    register(DatasetEntry("digits-patches", "image", DIGITS_PATCHES_SPEC, load_digits_patches,
                          f"digits with {N_PATCHES} key patches of 3x3 per image and their mask"))
    register(DatasetEntry("mnist-patches", "image", MNIST_PATCHES_SPEC, load_mnist_patches,
                          f"MNIST with {N_PATCHES} key patches of 10x10 per image and their mask",
                          in_default_suite=False))


@genbench.hookimpl
def register_metrics(register):
    register(PatchCompletion())
