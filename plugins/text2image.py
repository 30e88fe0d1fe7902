"""Text-to-image GAN (Reed, Akata, Yan, Logeswaran, Schiele & Lee, "Generative Adversarial Text to
Image Synthesis", ICML 2016, arXiv:1605.05396): GAN-INT-CLS, with a matching-aware discriminator.

The dataset
-----------
``digits-captions`` (and ``mnist-captions`` by flag) derives a caption for every image from its label
and one measured attribute, stroke weight: an image is ``thick`` when its mean ink exceeds the median
mean ink of its digit in the training split, ``thin`` otherwise (so each word covers half of every
digit).  The caption is one of four phrasings, drawn per image from a generator seeded with the
dataset seed:

* ``a thick seven`` / ``a seven drawn thick`` / ``thick digit seven`` / ``the number seven in thick strokes``.

The phrasing is held out compositionally: in the training and validation splits digit d is never
written with phrasing p when (d + p) % 4 == 0, so each digit is seen in three of the four phrasings;
the test split draws all four.  Test captions of a never-seen (digit, phrasing) pair measure whether
the learned text encoder generalises beyond the sentences it was trained on.  Batches carry
``"caption"`` (word ids, padded with 0 to six words), ``"thick"`` (0 thin, 1 thick) and
``"phrasing"``; ``Dataset.info["ink_threshold"]`` holds the per-digit medians.

The model
---------
* A text encoder phi(t): word embeddings and a GRU (the paper's char-CNN-RNN reads characters of
  bird and flower descriptions; on a six-word vocabulary words are the natural unit, and the paper
  also reports a word-level encoder).  As in the paper it is trained first, alone, with the
  symmetric structured joint-embedding loss of Reed et al. 2016 ("Learning Deep Representations of
  Fine-grained Visual Descriptions", CVPR): compatibility F(v, t) = theta(v) . phi(t) with a small
  image encoder theta, and for every image the hinge max_t' [Delta(y, y') + F(v, t') - F(v, t)] over
  the minibatch's captions (Delta = 1 when the caption's content -- digit and weight -- differs),
  plus the same with images and captions swapped.  The paper pre-trains the encoder before the GAN;
  here that pre-training is the first ``embed_warmup`` (10%) of the budget, after which phi is frozen.
  Measured at 15 s over four seeds: with 10% the digit accuracy was 0.82-0.88 and FID 33-42; with
  20%, 0.73-0.80 and FID 46-97 (fewer GAN steps); with 5%, 0.78-0.85, FID 29-46 and a weaker weight
  accuracy (0.68-0.79 against 0.79-0.89).
* G(z, phi(t)): phi(t) projected by a fully connected layer and leaky ReLU to 128 dimensions (the
  paper's size; it compresses a 1024-d embedding, here phi is 64-d), concatenated to the noise
  z ~ N(0, I) (100-d) and decoded by the DCGAN generator.  Measured at 15 s on digits-captions
  (two seeds, 20% warm-up): with a 16-d projection the 100 noise dimensions drowned the caption
  (digit accuracy 0.47-0.50); at 128 it was 0.73-0.77.
* D(x, phi(t)): the DCGAN discriminator's convolutions down to the start resolution, the compressed
  embedding replicated spatially and concatenated, a 1x1 convolution with batch norm and leaky ReLU,
  then the final convolution to one logit (the paper's layout, at 2x2 instead of 4x4 for 8x8 digits).

Losses (the paper's Algorithm 1, GAN-CLS, with the non-saturating generator loss):

    L_D = log D(x, h) + (log(1 - D(x, h_wrong)) + log(1 - D(G(z, h), h))) / 2
    L_G = log D(G(z, h), h) + log D(G(z, h_int), h_int),   h_int = (h + h_other) / 2   (GAN-INT, beta = 0.5)

where h_wrong is the caption of another image in the batch with different content (rows whose
shuffled caption happens to say the same thing are left out of that term).  Adam, lr 2e-4, beta1
0.5 as in the paper; widths as the genbench DCGAN (64 -> 32 -> 1), minibatch 64 (paper: 64).

``sample(n, generator, condition)`` needs captions: ``condition`` is a LongTensor of word ids
(n, 6) or a list of n caption strings.  ``condition_key = "caption"``, so every metric draws its
captions from the held-out splits.  The family metric ``caption_agreement`` reports, on the test
captions, the fraction of generated images whose digit the dataset's domain classifier reads as the
caption's digit (overall, on the phrasings seen in training and on the never-seen ones) and whose
stroke weight falls on the caption's side of the digit's ink median (with its chance level, the
share of the more common weight word).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
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
from genbench.features import domain_extractor
from genbench.metrics import EvalContext, Metric, draw_samples
from genbench.model import Capability, DataSpec, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import CanvasImages, DCGANDiscriminator, DCGANGenerator, bce_with_logits, canvas_size, dcgan_init

CAPTION_KEY = "caption"
DEFAULT_SEED = 0

# --- captions ------------------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WEIGHT_WORDS = ("thin", "thick")
PHRASINGS = (
    "a {w} {d}",
    "a {d} drawn {w}",
    "{w} digit {d}",
    "the number {d} in {w} strokes",
)
PAD = "<pad>"
VOCAB = (PAD, "a", "the", "drawn", "digit", "number", "in", "strokes", *WEIGHT_WORDS, *DIGIT_WORDS)
CAPTION_LENGTH = max(len(p.split()) for p in PHRASINGS)


def caption_text(digit: int, thick: int, phrasing: int) -> str:
    return PHRASINGS[phrasing].format(d=DIGIT_WORDS[digit], w=WEIGHT_WORDS[thick])


def tokenize(captions: Sequence[str], vocab: Sequence[str] = VOCAB, length: int = CAPTION_LENGTH) -> torch.Tensor:
    """Word ids of ``captions`` (lower-case, split on spaces), padded with 0 to ``length``."""
    index = {w: i for i, w in enumerate(vocab)}
    out = torch.zeros(len(captions), length, dtype=torch.long)
    for row, caption in enumerate(captions):
        words = str(caption).lower().split()
        unknown = [w for w in words if w not in index or w == PAD]
        if unknown:
            raise GenbenchError(f"caption {caption!r} has words outside the vocabulary: {unknown}; "
                                f"the words are {list(vocab[1:])}")
        if not 1 <= len(words) <= length:
            raise GenbenchError(f"caption {caption!r} has {len(words)} words; captions have 1 to {length}")
        out[row, : len(words)] = torch.tensor([index[w] for w in words])
    return out


def detokenize(tokens: torch.Tensor, vocab: Sequence[str] = VOCAB) -> list[str]:
    return [" ".join(vocab[i] for i in row.tolist() if i != 0) for row in tokens]


def seen_phrasing(digit: torch.Tensor, phrasing: torch.Tensor) -> torch.Tensor:
    """Whether the (digit, phrasing) pair occurs in the training split: all but (d + p) % 4 == 0."""
    return (digit + phrasing) % len(PHRASINGS) != 0


def caption_content(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What a caption says, as one index: digit and stroke weight (20 values)."""
    return batch["y"] * len(WEIGHT_WORDS) + batch["thick"]


def mean_ink(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def caption_spec(base: DataSpec, name: str) -> DataSpec:
    extras = {CAPTION_KEY: {"vocab": list(VOCAB), "length": CAPTION_LENGTH, "phrasings": list(PHRASINGS)}}
    return dataclasses.replace(base, name=name, extras=extras)


def make_caption_dataset(base: Dataset, spec: DataSpec, seed: int = DEFAULT_SEED) -> Dataset:
    """The captioned copy of ``base`` (see the module docstring); deterministic for a base and seed."""
    if base.spec.kind != "image" or base.spec.num_classes != len(DIGIT_WORDS):
        raise DatasetError(f"{spec.name}: captions name one of ten digits; base {base.name!r} must be an image set "
                           f"with 10 classes (it is {base.spec.kind} with {base.spec.num_classes} classes)")
    train = base.split("train")
    ink_train, y_train = mean_ink(train["x"].cpu()), train["y"].cpu()
    threshold = torch.stack([ink_train[y_train == d].median() for d in range(len(DIGIT_WORDS))])
    g = torch.Generator().manual_seed(seed)

    def build_split(split, x, y):
        thick = (mean_ink(x) > threshold[y]).long()
        phrasing = torch.randint(len(PHRASINGS), (len(x),), generator=g)
        if split != "test":
            # (d + p) % 4 == 0 is held out: redraw those among the three other phrasings
            shift = torch.randint(1, len(PHRASINGS), (len(x),), generator=g)
            phrasing = torch.where(seen_phrasing(y, phrasing), phrasing, (phrasing + shift) % len(PHRASINGS))
        texts = [caption_text(int(d), int(w), int(p)) for d, w, p in zip(y, thick, phrasing)]
        return {"x": x.clone(), "y": y.clone(), CAPTION_KEY: tokenize(texts), "thick": thick, "phrasing": phrasing}

    return derived_dataset(base, spec, build_split, f"{base.name} with captions of digit and stroke weight "
                           f"(4 phrasings, held-out pairings in test; seed {seed})", ink_threshold=threshold, seed=seed)


DIGITS_CAPTIONS_SPEC = caption_spec(DIGITS_SPEC, "digits-captions")
MNIST_CAPTIONS_SPEC = caption_spec(MNIST_SPEC, "mnist-captions")


def load_digits_captions() -> Dataset:
    return make_caption_dataset(load_digits(), DIGITS_CAPTIONS_SPEC)


def load_mnist_captions(root=None, download=None, limit=None) -> Dataset:
    return make_caption_dataset(load_mnist(root, download, limit), MNIST_CAPTIONS_SPEC)


# --- the networks --------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """phi(t): word embeddings, a GRU, and the hidden state after the caption's last word."""

    def __init__(self, vocab_size: int, word_dim: int, text_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.gru = nn.GRU(word_dim, text_dim, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(tokens))
        last = (tokens != 0).sum(1).clamp(min=1) - 1
        return out[torch.arange(len(tokens), device=tokens.device), last]


class ImageEncoder(nn.Module):
    """theta(v) of the joint embedding: two strided convolutions, global average pooling, a linear map."""

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(32, 64, 3, 2, 1), nn.LeakyReLU(0.2, True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, text_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def joint_embedding_loss(img: torch.Tensor, txt: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Symmetric structured hinge loss (Reed et al. 2016, CVPR) on a minibatch: for each image n,
    max_m [Delta(n, m) + F(v_n, t_m)] - F(v_n, t_n), with Delta(n, m) = 1 when captions n and m
    describe different content, and the same for each caption over the images.  Zero exactly when
    every image scores its own caption at least as high as any other caption of the same content
    and higher by 1 than any caption of other content (and the same for each caption).  Reed et al.
    score an image against a class's captions on average; with twenty contents and four phrasings
    a minibatch holds too few captions per content for that average, so each caption counts alone."""
    scores = img @ txt.T  # F(v_n, t_m)
    delta = (content[:, None] != content[None, :]).to(scores.dtype)
    own = scores.diagonal()
    image_side = (delta + scores).amax(1) - own
    text_side = (delta + scores).amax(0) - own
    return (image_side + text_side).mean()


class CaptionDiscriminator(nn.Module):
    """The DCGAN discriminator's body, then the text embedding joined at the start resolution."""

    def __init__(self, channels: int, size: int, width: int, text_dim: int, text_proj: int):
        super().__init__()
        dcgan = DCGANDiscriminator(channels, size, width)
        self.body = dcgan.net[:-1]
        final = dcgan.net[-1]
        feat, self.start = final.in_channels, final.kernel_size[0]
        self.text = nn.Sequential(nn.Linear(text_dim, text_proj), nn.LeakyReLU(0.2, True))
        self.joint = nn.Sequential(
            nn.Conv2d(feat + text_proj, feat, 1, 1, 0, bias=False), nn.BatchNorm2d(feat), nn.LeakyReLU(0.2, True),
            nn.Conv2d(feat, 1, self.start, 1, 0),
        )

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        t = self.text(h)[:, :, None, None].expand(-1, -1, *feats.shape[-2:])
        return self.joint(torch.cat([feats, t], 1)).flatten()


@dataclass
class Text2ImageConfig:
    noise_dim: int = 100
    word_dim: int = 32
    text_dim: int = 64  # phi(t) (paper: 1024)
    text_proj: int = 128  # projected embedding joined to G's noise and D's features (as the paper)
    width: int = 64  # as the genbench DCGAN
    lr: float = 2e-4
    beta1: float = 0.5
    batch_size: int = 64
    embed_lr: float = 1e-3
    embed_warmup: float = 0.1  # fraction of the budget that pre-trains the text encoder, then frozen
    interpolate: bool = True  # GAN-INT: G also learns on embeddings halfway between two captions
    init_std: float = 0.02


class Text2ImageGAN(CanvasImages, GenerativeModel):
    name = "text2image-gan"
    family = "Text-to-image GAN"
    paper = "Reed et al. 2016, arXiv:1605.05396"
    capabilities = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    data_kinds = frozenset({"image"})
    requires = frozenset({CAPTION_KEY})
    condition_key = CAPTION_KEY
    Config = Text2ImageConfig

    def __init__(self, config: Text2ImageConfig, spec):
        super().__init__(config, spec)
        self.size = canvas_size(spec, self.name)
        caption = spec.extras.get(CAPTION_KEY) or {}
        self.vocab = list(caption.get("vocab", VOCAB))
        self.caption_length = int(caption.get("length", CAPTION_LENGTH))
        channels = spec.shape[0]
        self.text_encoder = TextEncoder(len(self.vocab), config.word_dim, config.text_dim)
        self.image_encoder = ImageEncoder(channels, config.text_dim)
        self.text_to_g = nn.Sequential(nn.Linear(config.text_dim, config.text_proj), nn.LeakyReLU(0.2, True))
        self.generator = DCGANGenerator(config.noise_dim + config.text_proj, channels, self.size, config.width)
        self.discriminator = CaptionDiscriminator(channels, self.size, config.width, config.text_dim,
                                                  config.text_proj)
        dcgan_init(self.generator, config.init_std)
        dcgan_init(self.discriminator, config.init_std)
        betas = (config.beta1, 0.999)
        self.optimizers = {
            "embed": adam([*self.text_encoder.parameters(), *self.image_encoder.parameters()], config.embed_lr,
                          (0.9, 0.999)),
            "g": adam([*self.text_to_g.parameters(), *self.generator.parameters()], config.lr, betas),
            "d": adam(self.discriminator.parameters(), config.lr, betas),
        }

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(tokens)

    def generate(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Canvas images in [-1, 1] from noise ``z`` and text embeddings ``h``."""
        return self.generator(torch.cat([z, self.text_to_g(h)], 1))

    # --- training -----------------------------------------------------------------------------

    def embedding_step(self, batch) -> dict[str, float]:
        x = self.spec.dequantize(batch["x"])
        loss = joint_embedding_loss(self.image_encoder(x * 2 - 1), self.embed_text(batch[CAPTION_KEY]),
                                    caption_content(batch))
        opt = self.optimizers["embed"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"embed_loss": loss.detach()}

    def train_step(self, batch, progress):
        if progress < self.config.embed_warmup:
            return self.embedding_step(batch)
        n = len(batch["x"])
        if n < 2:
            raise GenbenchError(f"{self.name} pairs each image with another image's caption: it needs batches of "
                                f"at least 2 (batch_size is {self.config.batch_size}, the training split has {n})")
        real = self.to_canvas(self.spec.dequantize(batch["x"]))
        with torch.no_grad():
            h = self.embed_text(batch[CAPTION_KEY])
        content = caption_content(batch)
        # every row gets another row's caption (a cyclic shift by 1..n-1); those saying the same
        # thing as the row's own caption are left out of the mismatch term
        perm = torch.roll(torch.arange(n, device=real.device), int(torch.randint(1, n, ())))
        wrong = content[perm] != content
        z = torch.randn(n, self.config.noise_dim, device=real.device)
        fake = self.generate(z, h)
        # D: real image with its caption -> 1; real image with a wrong caption and fake image -> 0
        d_real = bce_with_logits(self.discriminator(real, h), 1.0)
        d_fake = bce_with_logits(self.discriminator(fake.detach(), h), 0.0)
        losses = {}
        if bool(wrong.any()):
            d_wrong = bce_with_logits(self.discriminator(real[wrong], h[perm][wrong]), 0.0)
            d_loss = d_real + 0.5 * (d_wrong + d_fake)
            losses["d_wrong"] = d_wrong.detach()
        else:  # no mismatched caption in this batch: the plain GAN value
            d_loss = d_real + d_fake
        self.optimizers["d"].zero_grad()
        d_loss.backward()
        self.optimizers["d"].step()
        # G: fool D on the caption, and (GAN-INT) on embeddings between two captions
        g_loss = bce_with_logits(self.discriminator(fake, h), 1.0)
        losses.update(d_loss=d_loss.detach(), g_loss=g_loss.detach())
        if self.config.interpolate:
            h_int = 0.5 * (h + h[perm])
            z_int = torch.randn(n, self.config.noise_dim, device=real.device)
            g_int = bce_with_logits(self.discriminator(self.generate(z_int, h_int), h_int), 1.0)
            g_loss = g_loss + g_int
            losses["g_int"] = g_int.detach()
        self.optimizers["g"].zero_grad()
        g_loss.backward()
        self.optimizers["g"].step()
        return losses

    # --- sampling -------------------------------------------------------------------------------

    def captions_to_tokens(self, condition, n: int) -> torch.Tensor:
        how = (f"pass condition= a list of {n} caption strings (e.g. ['a thick seven']) or a LongTensor of word "
               f"ids of shape ({n}, {self.caption_length})")
        if condition is None or isinstance(condition, str):
            raise GenbenchError(f"{self.name} draws one image per caption: {how}")
        if isinstance(condition, (list, tuple)) and all(isinstance(c, str) for c in condition):
            tokens = tokenize(condition, self.vocab, self.caption_length)
        else:
            tokens = torch.as_tensor(condition)
            if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.dim() != 2 \
                    or tokens.shape[1] != self.caption_length:
                raise GenbenchError(f"{self.name}: condition is {tokens.dtype} of shape {tuple(tokens.shape)}; {how}")
        if len(tokens) != n:
            raise GenbenchError(f"{self.name}: {len(tokens)} captions for {n} samples; pass one caption per sample")
        bad = (tokens < 0) | (tokens >= len(self.vocab))
        if bool(bad.any()):
            raise GenbenchError(f"{self.name}: word ids {sorted(set(tokens[bad].tolist()))[:5]} are outside the "
                                f"vocabulary 0..{len(self.vocab) - 1}; build ids with "
                                "genbench_plugins.text2image.tokenize")
        return tokens.long().to(self.device)

    def sample(self, n, generator=None, condition=None):
        tokens = self.captions_to_tokens(condition, n)
        z = torch.randn(n, self.config.noise_dim, generator=generator).to(self.device)
        return self.to_data(self.generate(z, self.embed_text(tokens)))


# --- the family metric ---------------------------------------------------------------------------


class CaptionAgreement(Metric):
    """Does the image say what the caption says?  (module docstring)"""

    name = "caption_agreement"
    headline = {"caption_digit_accuracy": 160, "caption_digit_accuracy_unseen": 170,
                "caption_weight_accuracy": 180}
    columns = {"caption_digit_accuracy": "higher", "caption_digit_accuracy_seen": "higher",
               "caption_digit_accuracy_unseen": "higher", "caption_weight_accuracy": "higher",
               "caption_weight_accuracy_chance": "none"}
    needs = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        if model_cls.condition_key != CAPTION_KEY:
            return False, "only for models that draw images from captions (condition_key 'caption')"
        if CAPTION_KEY not in dataset.spec.extras:
            return False, "dataset has no captions"
        return super().applies(model_cls, dataset)

    def estimator(self, profile) -> str:
        return (f"one image per test caption (test[:{profile.n_likelihood_points}]); digit read by the domain "
                f"classifier (argmax); unseen = (digit, phrasing) pairs absent from training; weight = mean ink "
                f"above/below the digit's training median")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        threshold = ctx.dataset.info.get("ink_threshold")
        if threshold is None:
            raise DatasetError(f"dataset {ctx.dataset.name!r} has no ink_threshold in its info; build captioned sets "
                               "with genbench_plugins.text2image.make_caption_dataset")
        test = {k: v.cpu() for k, v in ctx.test_points().items()}
        images = draw_samples(ctx.model, len(test[CAPTION_KEY]), ctx.generator(offset=53), test[CAPTION_KEY],
                              ctx.device)
        _, logits = domain_extractor(ctx.dataset, ctx.device).features(images)
        right = logits.argmax(1) == test["y"]
        unseen = ~seen_phrasing(test["y"], test["phrasing"])
        thick = (mean_ink(images.clamp(0, 1)) > threshold.cpu()[test["y"]]).long()
        thick_share = float(test["thick"].double().mean())
        result = {
            "caption_digit_accuracy": float(right.double().mean()),
            "caption_weight_accuracy": float((thick == test["thick"]).double().mean()),
            # always answering the more common weight word of these captions
            "caption_weight_accuracy_chance": max(thick_share, 1.0 - thick_share),
        }
        for name, rows in (("seen", ~unseen), ("unseen", unseen)):
            if rows.any():  # the test split holds both; a tiny custom split might not
                result[f"caption_digit_accuracy_{name}"] = float(right[rows].double().mean())
        return result


@genbench.hookimpl
def register_models(register):
    register(Text2ImageGAN)


@genbench.hookimpl
def register_datasets(register):
    register(DatasetEntry("digits-captions", "image", DIGITS_CAPTIONS_SPEC, load_digits_captions,
                          "digits with captions of digit and stroke weight ('a thick seven'), 4 phrasings"))
    register(DatasetEntry("mnist-captions", "image", MNIST_CAPTIONS_SPEC, load_mnist_captions,
                          "MNIST with captions of digit and stroke weight, 4 phrasings", in_default_suite=False))


@genbench.hookimpl
def register_metrics(register):
    register(CaptionAgreement())
