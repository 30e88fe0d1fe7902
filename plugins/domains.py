"""Derived multi-domain image sets for image-to-image translation, and the metrics that score a
translator on them.

Datasets
--------
A base image set (scikit-learn digits, or MNIST) is split into visual *domains* by applying a
fixed transform to each image:

* ``original`` -- the image itself;
* ``inverted`` -- ``1 - x`` (white digits become black strokes on white; bin centres stay bin centres);
* ``rotated``  -- a quarter turn counter-clockwise;
* ``thick``    -- morphological dilation with the 3x3 cross (plus-shaped) structuring element: every
  pixel takes the maximum of itself and its four neighbours.  The full 3x3 square (max-pool 3x3,
  stride 1) turns an 8x8 digit into a blob that no longer reads as a digit; the cross widens each
  stroke by about one pixel and keeps the digit legible.  Values stay on the quantisation grid.

Each base image appears in exactly one domain: a seeded permutation deals the images of every split
to the domains in turn (so the domains are balanced to within one image), and the image is stored
only in its dealt domain.  The sets are therefore *unpaired* by construction -- no image is present
in two domains, so a translator cannot learn the mapping from pairs.

Each split holds ``"x"`` (the images of all domains), ``"y"`` (the base digit label) and
``"domain"`` (the domain index, a LongTensor).  ``DataSpec.extras["domain"]["names"]`` lists the
domains in index order; ``Dataset.info["base"]`` keeps the base dataset for the label-preservation
metric.

Registered: ``digits-domains`` (all four domains, for StarGAN), ``digits-pair`` (original <-> thick,
for CycleGAN), and ``mnist-domains`` / ``mnist-pair`` (not in the default suite).  The pair is
original <-> thick rather than original <-> inverted because inversion is a per-pixel affine map
(one 1x1 convolution with weight -1 and bias 1 solves it, and mean brightness alone separates the
domains), whereas thickening is spatial and not injective: the generator must learn a local
non-linear filter, its inverse must thin strokes, and cycle consistency has real work to do.

Metrics
-------
For every ordered pair of distinct domains (source s, target t) on the test split (the first
``profile.n_likelihood_points`` test images, all 447 of digits in the quick profile):

* ``cycle_error``: mean absolute pixel error between x and translate(translate(x, s, t), t, s);
* ``target_accuracy``: the fraction of translations that a *domain-index classifier* (genbench's
  ``DomainClassifier`` trained once per derived dataset on its training split to predict the domain
  index, cached like every domain classifier) assigns to the target domain t;
* ``label_preservation``: the fraction of translations whose digit the base dataset's digit
  classifier (``genbench.features.domain_extractor`` of the base set, trained on original-domain
  digits only) reads as the source image's digit label, after mapping the translation back into the
  ``original`` domain with the target domain's known inverse transform: ``1 - x`` for inverted,
  a quarter turn clockwise for rotated, identity for original, and for thick the erosion with the
  same cross (the adjoint of the dilation: erode(dilate(x)) is the morphological closing of x, the
  closest image to x whose dilation it is).  ``label_preservation_oracle`` is the same measure on a
  perfect translator (the known transforms applied to the base images), the ceiling a model can reach;
* ``fid_target``: FID (torch-fidelity's statistics functions, as in ``genbench.metrics.fidelity``)
  of all translations into t, pooled over sources, against the real test images of domain t, on the
  domain-index classifier's penultimate features.

Pair values are averaged over sources into per-target columns (``target_accuracy_thick``, ...), and
the headline columns are the means over targets.  ``domain_classifier_accuracy`` and
``digit_classifier_accuracy`` report the two classifiers' held-out accuracies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
from genbench.features import Extractor, domain_extractor
from genbench.metrics import EvalContext, Metric
from genbench.model import Capability, DataSpec
from genbench.profiles import Profile
from genbench.toolkit import DOMAIN_KEY, domain_index_extractor, domain_names, fid_between

DEFAULT_SEED = 0
TRANSLATE_CHUNK = 500  # images translated per call: keeps temporaries small

Translator = Callable[[torch.Tensor, int, int], torch.Tensor]


# --- domain transforms ------------------------------------------------------------------------


def _cross_neighbours(x: torch.Tensor, fill: float) -> torch.Tensor:
    """The image and its four axis-aligned shifts, stacked on a new leading dimension."""
    p = F.pad(x, (1, 1, 1, 1), value=fill)
    return torch.stack([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]])


def dilate(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale dilation with the 3x3 cross (outside the image counts as background)."""
    return _cross_neighbours(x, 0.0).amax(0)


def erode(x: torch.Tensor) -> torch.Tensor:
    """Grey-scale erosion with the 3x3 cross.  Outside the image counts as ink, so a stroke that
    touches the border is not eaten away by the border itself."""
    return _cross_neighbours(x, 1.0).amin(0)


def invert(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x


def rotate(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, 1, dims=(-2, -1))


def unrotate(x: torch.Tensor) -> torch.Tensor:
    return torch.rot90(x, -1, dims=(-2, -1))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass(frozen=True)
class Domain:
    """A visual domain: how to make it from an original image, and how to map back."""

    name: str
    forward: Callable[[torch.Tensor], torch.Tensor]
    to_original: Callable[[torch.Tensor], torch.Tensor]
    exact_inverse: bool  # to_original(forward(x)) == x for every x


DOMAINS: dict[str, Domain] = {
    "original": Domain("original", _identity, _identity, True),
    "inverted": Domain("inverted", invert, invert, True),
    "rotated": Domain("rotated", rotate, unrotate, True),
    "thick": Domain("thick", dilate, erode, False),
}

FOUR_DOMAINS = ("original", "inverted", "rotated", "thick")
PAIR_DOMAINS = ("original", "thick")


def domain_spec(base: DataSpec, name: str, domains: Sequence[str]) -> DataSpec:
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown or len(set(domains)) != len(domains) or len(domains) < 2:
        raise DatasetError(
            f"{name}: domains must be two or more distinct names from {sorted(DOMAINS)}; got {list(domains)}"
        )
    return dataclasses.replace(base, name=name, extras={DOMAIN_KEY: {"names": list(domains)}})


def deal_domains(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Domain index per image: a random permutation dealt round-robin (balanced to within one)."""
    out = torch.empty(n, dtype=torch.long)
    out[torch.randperm(n, generator=generator)] = torch.arange(n) % k
    return out


def make_domain_dataset(base: Dataset, spec: DataSpec, seed: int = DEFAULT_SEED) -> Dataset:
    """The derived set described by ``spec`` (see :func:`domain_spec`) built from ``base``.

    Deterministic for a given base and seed: the domain of every image is drawn from one CPU
    generator seeded with ``seed``, split after split."""
    if base.spec.kind != "image":
        raise DatasetError(f"{spec.name}: domains are image transforms; base {base.name!r} holds {base.spec.kind}")
    names = domain_names(spec)
    g = torch.Generator().manual_seed(seed)

    def build_split(split, x, y):
        dom = deal_domains(len(x), len(names), g)
        out = torch.empty_like(x)
        for k, name in enumerate(names):
            mask = dom == k
            out[mask] = DOMAINS[name].forward(x[mask])
        return {"x": out, "y": y.clone(), DOMAIN_KEY: dom}

    return derived_dataset(base, spec, build_split, f"{base.name} split into domains {names} (unpaired, seed {seed})",
                           domains=names, seed=seed)


DIGITS_DOMAINS_SPEC = domain_spec(DIGITS_SPEC, "digits-domains", FOUR_DOMAINS)
DIGITS_PAIR_SPEC = domain_spec(DIGITS_SPEC, "digits-pair", PAIR_DOMAINS)
MNIST_DOMAINS_SPEC = domain_spec(MNIST_SPEC, "mnist-domains", FOUR_DOMAINS)
MNIST_PAIR_SPEC = domain_spec(MNIST_SPEC, "mnist-pair", PAIR_DOMAINS)


def load_digits_domains() -> Dataset:
    return make_domain_dataset(load_digits(), DIGITS_DOMAINS_SPEC)


def load_digits_pair() -> Dataset:
    return make_domain_dataset(load_digits(), DIGITS_PAIR_SPEC)


def load_mnist_domains(root=None, download=None, limit=None) -> Dataset:
    return make_domain_dataset(load_mnist(root, download, limit), MNIST_DOMAINS_SPEC)


def load_mnist_pair(root=None, download=None, limit=None) -> Dataset:
    return make_domain_dataset(load_mnist(root, download, limit), MNIST_PAIR_SPEC)


DOMAIN_DATASETS = [
    DatasetEntry("digits-domains", "image", DIGITS_DOMAINS_SPEC, load_digits_domains,
                 "digits dealt to 4 unpaired domains: original, inverted, rotated, thick"),
    DatasetEntry("digits-pair", "image", DIGITS_PAIR_SPEC, load_digits_pair,
                 "digits dealt to 2 unpaired domains: original, thick"),
    DatasetEntry("mnist-domains", "image", MNIST_DOMAINS_SPEC, load_mnist_domains,
                 "MNIST dealt to 4 unpaired domains: original, inverted, rotated, thick", in_default_suite=False),
    DatasetEntry("mnist-pair", "image", MNIST_PAIR_SPEC, load_mnist_pair,
                 "MNIST dealt to 2 unpaired domains: original, thick", in_default_suite=False),
]


# --- classifiers used by the metrics ------------------------------------------------------------


def base_dataset(dataset: Dataset) -> Dataset:
    base = dataset.info.get("base")
    if base is None:
        raise DatasetError(
            f"dataset {dataset.name!r} does not name its base image set (Dataset.info['base']); "
            "build derived sets with genbench_plugins.domains.make_domain_dataset"
        )
    return base


def digit_extractor(dataset: Dataset, device="cpu") -> Extractor:
    """The base dataset's cached digit classifier (trained on original-domain images only)."""
    return domain_extractor(base_dataset(dataset), device)


# --- metric functions ---------------------------------------------------------------------------


@torch.no_grad()
def _translate(translate: Translator, x: torch.Tensor, source: int, target: int) -> torch.Tensor:
    out = [translate(chunk, source, target).detach().float().cpu() for chunk in x.split(TRANSLATE_CHUNK)]
    return torch.cat(out) if out else x.new_zeros((0, *x.shape[1:])).cpu()


def _predict(extractor: Extractor, x: torch.Tensor) -> torch.Tensor:
    return extractor.features(x)[1].argmax(1)


def translation_scores(translate: Translator, data: dict[str, torch.Tensor], names: Sequence[str],
                       domain_classifier: Extractor, digit_classifier: Extractor,
                       base_x: torch.Tensor | None = None) -> dict[str, float]:
    """Cycle error, target accuracy, label preservation and target FID of ``translate`` on ``data``
    (a split: ``"x"``, ``"y"``, ``"domain"``), per target and averaged (see the module docstring).

    ``translate(x, source_index, target_index)`` maps a batch of images.  ``base_x``, the base
    images the split was made from (same order), adds ``label_preservation_oracle``."""
    x, y, dom = data["x"].cpu(), data["y"].cpu(), data[DOMAIN_KEY].cpu()
    k = len(names)
    present = [d for d in range(k) if bool((dom == d).any())]
    if len(present) < 2:
        raise GenbenchError(f"translation metrics need test images of two or more domains; found {present}")
    per_target: dict[str, dict[str, float]] = {}
    for t in present:
        cyc, acc, keep, fakes = [], [], [], []
        for s in present:
            if s == t:
                continue
            xs, ys = x[dom == s], y[dom == s]
            fake = _translate(translate, xs, s, t)
            if fake.shape != xs.shape:
                raise GenbenchError(f"translate(x, {s}, {t}) returned shape {tuple(fake.shape)} for input "
                                    f"{tuple(xs.shape)}; a translation must keep the image shape")
            back = _translate(translate, fake, t, s)
            cyc.append(float((back - xs).abs().mean()))
            acc.append(float((_predict(domain_classifier, fake) == t).double().mean()))
            as_original = DOMAINS[names[t]].to_original(fake)
            keep.append(float((_predict(digit_classifier, as_original) == ys).double().mean()))
            fakes.append(fake)
        per_target[names[t]] = {
            "cycle_error": sum(cyc) / len(cyc),
            "target_accuracy": sum(acc) / len(acc),
            "label_preservation": sum(keep) / len(keep),
            "fid_target": fid_between(torch.cat(fakes), x[dom == t], domain_classifier),
        }
    out: dict[str, float] = {}
    for column in ("cycle_error", "target_accuracy", "label_preservation", "fid_target"):
        values = [v[column] for v in per_target.values()]
        out[column] = sum(values) / len(values)
        for name, v in per_target.items():
            out[f"{column}_{name}"] = v[column]
    if base_x is not None:
        out["label_preservation_oracle"] = oracle_label_preservation(base_x.cpu(), y, dom, names, digit_classifier)
    return out


def oracle_label_preservation(base_x: torch.Tensor, y: torch.Tensor, dom: torch.Tensor, names: Sequence[str],
                              digit_classifier: Extractor) -> float:
    """Label preservation of a perfect translator: each image's base version sent into every other
    domain by the known transform, then mapped back and averaged as the metric does."""
    present = [d for d in range(len(names)) if bool((dom == d).any())]
    per_target = []
    for t in present:
        target = DOMAINS[names[t]]
        keep = []
        for s in present:
            if s != t:
                mapped = target.to_original(target.forward(base_x[dom == s]))
                keep.append(float((_predict(digit_classifier, mapped) == y[dom == s]).double().mean()))
        per_target.append(sum(keep) / len(keep))
    return sum(per_target) / len(per_target)


class TranslationMetrics(Metric):
    """Cycle error, target-domain accuracy, label preservation and target FID (module docstring)."""

    name = "translation"
    headline = {"cycle_error": 130, "target_accuracy": 140, "label_preservation": 150, "fid_target": 330}
    columns = {
        "cycle_error": "lower", "target_accuracy": "higher", "label_preservation": "higher",
        "fid_target": "lower", "label_preservation_oracle": "higher",
        "domain_classifier_accuracy": "higher", "digit_classifier_accuracy": "higher",
    }  # plus per-target columns <column>_<domain name>, which depend on the dataset
    needs = frozenset({Capability.TRANSLATE})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset: Dataset) -> tuple[bool, str]:
        ok, why = super().applies(model_cls, dataset)
        if not ok:
            return ok, why
        if DOMAIN_KEY not in dataset.spec.extras:
            return False, "dataset has no domains"
        return True, ""

    def estimator(self, profile: Profile) -> str:
        return (f"test[:{profile.n_likelihood_points}], every ordered pair of domains; target accuracy and "
                "FID (torch-fidelity) on a domain-index classifier; label preservation by the base set's "
                "digit classifier after the target domain's inverse transform (erosion for thick)")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        names = domain_names(ctx.dataset.spec)
        data = {key: v.cpu() for key, v in ctx.test_points().items()}
        domain_clf = domain_index_extractor(ctx.dataset, ctx.device)
        digit_clf = digit_extractor(ctx.dataset, ctx.device)
        base_x = base_dataset(ctx.dataset).split("test")["x"][: len(data["x"])]
        model = ctx.model

        def translate(x, s, t):
            return model.translate(x.to(ctx.device), s, t)

        model.eval()
        try:
            out = translation_scores(translate, data, names, domain_clf, digit_clf, base_x)
        finally:
            model.train()
        out["domain_classifier_accuracy"] = domain_clf.heldout_accuracy
        out["digit_classifier_accuracy"] = digit_clf.heldout_accuracy
        return out


@genbench.hookimpl
def register_datasets(register):
    for entry in DOMAIN_DATASETS:
        register(entry)


@genbench.hookimpl
def register_metrics(register):
    register(TranslationMetrics())
