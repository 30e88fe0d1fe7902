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

The package: :mod:`~genbench_plugins.text2image.dataset`, :mod:`~genbench_plugins.text2image.model` and
:mod:`~genbench_plugins.text2image.metric`, one file each; here the hooks that register them.
"""

from __future__ import annotations

import genbench
from genbench.datasets import DatasetEntry
from genbench_plugins.text2image.dataset import (
    CAPTION_KEY,
    CAPTION_LENGTH,
    DEFAULT_SEED,
    DIGIT_WORDS,
    DIGITS_CAPTIONS_SPEC,
    MNIST_CAPTIONS_SPEC,
    PAD,
    PHRASINGS,
    VOCAB,
    WEIGHT_WORDS,
    caption_content,
    caption_spec,
    caption_text,
    detokenize,
    load_digits_captions,
    load_mnist_captions,
    make_caption_dataset,
    mean_ink,
    seen_phrasing,
    tokenize,
)
from genbench_plugins.text2image.metric import CaptionAgreement
from genbench_plugins.text2image.model import (
    CaptionDiscriminator,
    ImageEncoder,
    Text2ImageConfig,
    Text2ImageGAN,
    TextEncoder,
    joint_embedding_loss,
)


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


__all__ = ["CAPTION_KEY", "CAPTION_LENGTH", "CaptionAgreement", "CaptionDiscriminator", "DEFAULT_SEED",
           "DIGITS_CAPTIONS_SPEC", "DIGIT_WORDS", "ImageEncoder", "MNIST_CAPTIONS_SPEC", "PAD", "PHRASINGS",
           "Text2ImageConfig", "Text2ImageGAN", "TextEncoder", "VOCAB", "WEIGHT_WORDS", "caption_content",
           "caption_spec", "caption_text", "detokenize", "joint_embedding_loss", "load_digits_captions",
           "load_mnist_captions", "make_caption_dataset", "mean_ink", "seen_phrasing", "tokenize"]
