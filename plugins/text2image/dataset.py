"""The caption task sets (``digits-captions``, ``mnist-captions``): captions of digit and stroke
weight in four phrasings, tokenised, with held-out pairings in the test split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from genbench.datasets import (
    DIGITS_SPEC,
    MNIST_SPEC,
    Dataset,
    derived_dataset,
    load_digits,
    load_mnist,
)
from genbench.errors import DatasetError, GenbenchError
from genbench.model import DataSpec

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


