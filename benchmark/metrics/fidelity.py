"""Sample quality: FID, IS, KID and precision/recall, computed by torch-fidelity's own functions
on the features of a named extractor (default: genbench's domain classifier).

genbench extracts the features itself (so real-data statistics can be cached per dataset, split
and extractor, and so non-Inception extractors work on 8x8 images) and hands them to
torch-fidelity's feature-level functions; nothing of the metrics is re-derived here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from genbench.datasets import Dataset
from genbench.features import Extractor, cache_dir, domain_extractor
from genbench.metrics import EvalContext, Metric
from genbench.model import Capability
from genbench.profiles import Profile

# result keys (columns of the leaderboard)
FID, IS, KID, PRECISION, RECALL = "fid", "is", "kid", "precision", "recall"


@dataclass
class FeatureSet:
    features: torch.Tensor  # (n, d) float64, CPU
    logits: torch.Tensor  # (n, classes) float64, CPU

    def fid_stats(self) -> dict:
        return fid_features_to_statistics(self.features)


def reference_features(dataset: Dataset, extractor: Extractor, split: str, limit: int) -> FeatureSet:
    """Features of real data, computed once per (dataset, split, extractor, count) and cached."""
    x = dataset.split(split)["x"][:limit]
    path = cache_dir() / "reference" / f"{dataset.name}-{split}-{len(x)}-{extractor.fingerprint()}.pt"
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return FeatureSet(blob["features"], blob["logits"])
    feats, logits = extractor.features(x)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"features": feats, "logits": logits}, tmp)
    os.replace(tmp, path)
    return FeatureSet(feats, logits)


def fidelity_metrics(gen: FeatureSet, ref: FeatureSet, profile: Profile, seed: int = 0) -> dict[str, float]:
    """FID, IS (of ``gen``), KID and precision/recall of ``gen`` against ``ref`` via torch-fidelity."""
    out = {FID: fid_statistics_to_metric(gen.fid_stats(), ref.fid_stats(), verbose=False)[KEY_METRIC_FID]}
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


def n_generated(dataset: Dataset, profile: Profile) -> int:
    """Generated samples per model: the profile's count, but no more than the held-out real images
    (validation + test) that make the floor row, because FID, KID and precision/recall depend on
    the sample count and the floor is only a floor at the same count."""
    held = len(dataset.split("val")["x"]) + len(dataset.split("test")["x"])
    return min(profile.n_fid_samples, held)


class SampleQuality(Metric):
    name = "sample_quality"
    columns = {FID: "lower", IS: "higher", KID: "lower", PRECISION: "higher", RECALL: "higher"}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})

    def estimator(self, profile: Profile) -> str:
        return (f"torch-fidelity on domain-classifier features; ref=train[:{profile.n_reference}], "
                f"n_gen=min({profile.n_fid_samples}, held-out count), "
                f"KID poly3 {profile.kid_subsets}x{profile.kid_subset_size}, "
                f"IS splits={profile.is_splits}, PR k={profile.prc_neighborhood}")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        ext = domain_extractor(ctx.dataset, ctx.device)
        ref = reference_features(ctx.dataset, ext, "train", ctx.profile.n_reference)
        feats, logits = ext.features(ctx.samples(n_generated(ctx.dataset, ctx.profile)))
        out = fidelity_metrics(FeatureSet(feats, logits), ref, ctx.profile, seed=ctx.seed)
        out["extractor_accuracy"] = ext.heldout_accuracy
        ctx.memo["extractor"] = ext.fingerprint()
        return out


def real_data_floor(dataset: Dataset, profile: Profile, device="cpu") -> dict[str, float]:
    """The held-out real images (validation + test) scored against the training reference: the
    best a model can expect at these sample counts."""
    ext = domain_extractor(dataset, device)
    ref = reference_features(dataset, ext, "train", profile.n_reference)
    held = torch.cat([dataset.split("val")["x"], dataset.split("test")["x"]])[: n_generated(dataset, profile)]
    feats, logits = ext.features(held)
    out = fidelity_metrics(FeatureSet(feats, logits), ref, profile)
    out["extractor_accuracy"] = ext.heldout_accuracy
    out["n_heldout"] = float(len(held))
    return out
