"""The text-to-image GAN's networks and its objective (see :mod:`genbench_plugins.text2image`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genbench.errors import GenbenchError
from genbench.model import Capability, GenerativeModel
from genbench.optim import adam
from genbench.toolkit import CanvasImages, DCGANDiscriminator, DCGANGenerator, bce_with_logits, canvas_size, dcgan_init
from genbench_plugins.text2image.dataset import (
    CAPTION_KEY,
    CAPTION_LENGTH,
    VOCAB,
    caption_content,
    tokenize,
)

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


