"""Sample quality: FID, IS, KID and precision/recall, computed by torch-fidelity's own functions
on the features of a named extractor (default: genbench's domain classifier).

The headline columns compare the samples with the *test* split, which neither the model nor the
domain classifier saw: against the training split a model that returns its training images would
beat real data (measured on digits: FID 4.1 against 19.0 for held-out images, precision 1.00).  The
same figures against the training split are kept as ``*_train`` columns.  The generated-sample
count equals the validation split's size (capped by the profile), the count at which the
``real-heldout`` row scores validation images: the rows are comparable.

genbench extracts the features itself (so real-data statistics can be cached per dataset, split
and extractor, and so non-Inception extractors work on 8x8 images) and hands them to
torch-fidelity's feature-level functions; nothing of the metrics is re-derived here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from genbench.datasets import Dataset
from genbench.features import Extractor, cache_dir, content_digest, domain_extractor, load_verified, save_verified
from genbench.metrics import EvalContext, Metric
from genbench.model import Capability
from genbench.profiles import Profile

# result keys (columns of the leaderboard)
FID, IS, KID, PRECISION, RECALL = "fid", "is", "kid", "precision", "recall"
TRAIN_SUFFIX = "_train"  # the same figure against the training split
FID_TRAIN, KID_TRAIN = FID + TRAIN_SUFFIX, KID + TRAIN_SUFFIX
PRECISION_TRAIN, RECALL_TRAIN = PRECISION + TRAIN_SUFFIX, RECALL + TRAIN_SUFFIX
HEADLINE_SPLIT, SAMPLES_SPLIT = "test", "val"  # compared against; the real-heldout row's "samples"


@dataclass
class FeatureSet:
    features: torch.Tensor  # (n, d) float64, CPU
    logits: torch.Tensor  # (n, classes) float64, CPU

    def fid_stats(self) -> dict:
        return fid_features_to_statistics(self.features)


def fid(gen: FeatureSet, ref: FeatureSet) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (torch-fidelity's)."""
    return float(fid_statistics_to_metric(gen.fid_stats(), ref.fid_stats(), verbose=False)[KEY_METRIC_FID])


def fid_between(generated: torch.Tensor, reference: torch.Tensor, extractor: Extractor) -> float:
    """FID between two image batches in [0, 1] on the features of ``extractor`` (e.g.
    :func:`genbench.features.domain_extractor`), for a family's own metric: a stage, a domain, a
    condition.  Nothing is cached; the headline FID goes through :func:`reference_features`."""
    return fid(FeatureSet(*extractor.features(generated)), FeatureSet(*extractor.features(reference)))


def reference_features(dataset: Dataset, extractor: Extractor, split: str, limit: int) -> FeatureSet:
    """Features of real data, computed once per (dataset, split, extractor, count) and cached in a
    verified file (:func:`genbench.features.save_verified`: rebuilt when it does not match)."""
    x = dataset.split(split)["x"][:limit]
    path = cache_dir() / "reference" / f"{dataset.name}-{split}-{len(x)}-{extractor.fingerprint()}.pt"
    producer = {"kind": "reference-features", "dataset": dataset.name, "split": split, "count": len(x),
                "extractor": extractor.fingerprint(), "weights": extractor.weights_hash,
                "images": content_digest({"x": x}, {})}
    loaded = load_verified(path, producer, keys=("features", "logits"))
    if loaded is not None:
        return FeatureSet(loaded[0]["features"], loaded[0]["logits"])
    feats, logits = extractor.features(x)
    save_verified(path, {"features": feats, "logits": logits}, producer)
    return FeatureSet(feats, logits)


def fidelity_metrics(gen: FeatureSet, ref: FeatureSet, profile: Profile, seed: int = 0) -> dict[str, float]:
    """FID, IS (of ``gen``), KID and precision/recall of ``gen`` against ``ref`` via torch-fidelity."""
    out = {FID: fid(gen, ref)}
    out[IS] = isc_features_to_metric(gen.logits, splits=profile.is_splits, rng_seed=seed)[KEY_METRIC_ISC_MEAN]
    subset = min(profile.kid_subset_size, len(gen.features), len(ref.features))
    kid = kid_features_to_metric(
        gen.features, ref.features, kid_subsets=profile.kid_subsets, kid_subset_size=subset,
        kid_degree=3, kid_gamma=None, kid_coef0=1, kid_kernel="poly", rng_seed=seed, verbose=False,
    )
    out[KID] = kid[KEY_METRIC_KID_MEAN]
    # torch-fidelity's convention: features_1 = generated, features_2 = real.  Its results are
    # checked against the definitions of Kynkaenniemi et al. (2019) in tests/test_metrics_inception.py.
    prc = prc_features_to_metric(
        gen.features.float(), ref.features.float(), prc_neighborhood=profile.prc_neighborhood,
        prc_batch_size=1000, save_cpu_ram=True, verbose=False,
    )
    out[PRECISION], out[RECALL] = prc[KEY_METRIC_PRECISION], prc[KEY_METRIC_RECALL]
    return out


def heldout_and_train(gen: FeatureSet, test: FeatureSet, train: FeatureSet, profile: Profile,
                      seed: int = 0) -> dict[str, float]:
    """``fidelity_metrics`` of ``gen`` against the held-out ``test`` reference (headline columns) and
    against the ``train`` reference (``*_train`` columns; IS needs no reference and is not repeated)."""
    out = fidelity_metrics(gen, test, profile, seed)
    vs_train = fidelity_metrics(gen, train, profile, seed)
    out.update({k + TRAIN_SUFFIX: v for k, v in vs_train.items() if k != IS})
    return out


def n_generated(dataset: Dataset, profile: Profile) -> int:
    """Generated samples per model: the profile's count, but no more than the validation images that
    the ``real-heldout`` row scores in their place, because FID, KID and precision/recall depend on
    the sample count and the rows are only comparable at the same count."""
    return min(profile.n_fid_samples, len(dataset.split(SAMPLES_SPLIT)["x"]))


def reference_counts(dataset: Dataset, profile: Profile) -> dict[str, int]:
    """The real images each split contributes: reference statistics and generated count."""
    return {split: min(profile.n_reference, len(dataset.split(split)["x"])) for split in (HEADLINE_SPLIT, "train")}


def generated_features(ctx: EvalContext, extractor: Extractor, n: int) -> FeatureSet:
    """Features of ``ctx.samples(n)`` under ``extractor``, computed once per context (the sample
    quality and memorisation metrics share them)."""
    key = f"features:{extractor.fingerprint()}:{n}"
    if key not in ctx.memo:
        ctx.memo[key] = FeatureSet(*extractor.features(ctx.samples(n)))
    return ctx.memo[key]


def estimator_text(profile: Profile, dataset: Dataset | None = None, features: str = "domain-classifier") -> str:
    """The protocol of the sample-quality columns, with the counts (exact ones when ``dataset`` is given)."""
    if dataset is None:
        counts = (f"ref={HEADLINE_SPLIT}[:{profile.n_reference}] (train[:{profile.n_reference}] for *_train), "
                  f"n_gen=min({profile.n_fid_samples}, {SAMPLES_SPLIT} count)")
    else:
        c = reference_counts(dataset, profile)
        counts = (f"ref={HEADLINE_SPLIT} n={c[HEADLINE_SPLIT]} (train n={c['train']} for *_train), "
                  f"n_gen={n_generated(dataset, profile)}")
    return (f"torch-fidelity on {features} features; {counts}, KID poly3 {profile.kid_subsets}x"
            f"{profile.kid_subset_size}, IS splits={profile.is_splits} (left out for a set without classes), "
            f"PR k={profile.prc_neighborhood}")


class SampleQuality(Metric):
    name = "sample_quality"
    headline = {"fid": 10, "precision": 20, "recall": 30, "kid": 300, "is": 310}
    columns = {FID: "lower", IS: "higher", KID: "lower", PRECISION: "higher", RECALL: "higher",
               FID_TRAIN: "lower", KID_TRAIN: "lower", PRECISION_TRAIN: "higher", RECALL_TRAIN: "higher"}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})

    def estimator(self, profile: Profile) -> str:
        return estimator_text(profile)

    def prepare(self, dataset: Dataset, profile: Profile, device) -> None:
        """The domain classifier (trained on first use) and the real images' features, cached."""
        ext = domain_extractor(dataset, device)
        for split in (HEADLINE_SPLIT, "train"):
            reference_features(dataset, ext, split, profile.n_reference)

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        ext = domain_extractor(ctx.dataset, ctx.device)
        test = reference_features(ctx.dataset, ext, HEADLINE_SPLIT, ctx.profile.n_reference)
        train = reference_features(ctx.dataset, ext, "train", ctx.profile.n_reference)
        gen = generated_features(ctx, ext, n_generated(ctx.dataset, ctx.profile))
        out = without_meaningless_is(ctx.dataset, heldout_and_train(gen, test, train, ctx.profile, seed=ctx.seed))
        out["extractor_accuracy"] = ext.heldout_accuracy
        ctx.memo["extractor"] = ext.fingerprint()
        return out


def without_meaningless_is(dataset: Dataset, out: dict[str, float]) -> dict[str, float]:
    """IS left out for a set without classes: its classifier tells quarter turns apart, and every
    upright image (real or generated) is one "class", so IS would be about 1 for any model."""
    from genbench.features import rotation_task

    if rotation_task(dataset):
        out = {k: v for k, v in out.items() if k not in (IS, f"{IS}_train")}
    return out


def real_heldout_metrics(dataset: Dataset, profile: Profile, device="cpu") -> dict[str, float]:
    """The validation images scored like a model's samples: against the test split (headline
    columns) and the training split (``*_train``), at the models' generated count.  Neither split
    was seen by the images' "model", so this is the level real data reaches at these counts -- a
    model can beat it by chance or by copying (the memorisation columns tell which), so it is
    a level, not a floor."""
    ext = domain_extractor(dataset, device)
    test = reference_features(dataset, ext, HEADLINE_SPLIT, profile.n_reference)
    train = reference_features(dataset, ext, "train", profile.n_reference)
    x = dataset.split(SAMPLES_SPLIT)["x"][: n_generated(dataset, profile)]
    out = without_meaningless_is(dataset, heldout_and_train(FeatureSet(*ext.features(x)), test, train, profile))
    out["extractor_accuracy"] = ext.heldout_accuracy
    out["n_heldout"] = float(len(x))
    return out
