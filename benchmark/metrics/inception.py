"""The standard extractor: FID, IS, KID and precision/recall on Inception-v3 features.

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (registered there as
``inception-v3-compat``: the TensorFlow Inception graph of the original FID and IS code, converted
to PyTorch), loaded from a local weights file -- never downloaded unless the user opts in with
``GENBENCH_DOWNLOAD=1``.  The file is looked up, in order, at the path given as an argument, at
``$GENBENCH_INCEPTION_WEIGHTS``, and in the torch hub cache where torch-fidelity itself stores it
(``torch.hub.get_dir()/checkpoints/weights-inception-2015-12-05-6726825d.pth``).

Images are handed over as torch-fidelity expects them: uint8, 3 channels (grey images repeated),
any size (the extractor resizes to 299x299 inside, with TensorFlow-compatible bilinear
interpolation).  FID, KID and precision/recall use the 2048-d pool features, IS the unbiased logits,
as torch-fidelity's defaults for this extractor; the metrics themselves are the same torch-fidelity
functions as the domain-classifier columns (``genbench.metrics.fidelity.fidelity_metrics``), under
the same held-out protocol: headline columns against the test split, ``*_train_inception`` against
the training split, at the same generated count.

The ``standard`` profile adds the published protocol (Heusel et al. 2017; Salimans et al. 2016):
``fid50k_inception``, the FID of 50,000 generated images against the training split's statistics
(all of it, up to the profile's reference count), and ``is50k_inception``, the IS of those 50,000 in
10 splits: the figures papers report on CIFAR-10, CelebA and the MNIST family.  Their count does not
match the ``real-heldout`` row's, so they are comparable with papers, not with that row.  Pushing
50,000 images through Inception-v3 at 299x299 takes hours on a CPU: the standard profile is meant
for a GPU.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, isc_features_to_metric

from genbench.datasets import allow_download
from genbench.errors import GenbenchError
from genbench.metrics import EvalContext, Metric
from genbench.metrics.fidelity import (
    FID,
    FID_TRAIN,
    HEADLINE_SPLIT,
    IS,
    KID,
    KID_TRAIN,
    PRECISION,
    PRECISION_TRAIN,
    RECALL,
    RECALL_TRAIN,
    estimator_text,
    fid,
    generated_features,
    heldout_and_train,
    n_generated,
    reference_features,
)
from genbench.model import Capability
from genbench.profiles import Profile

EXTRACTOR_NAME = "inception-v3-compat"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "GENBENCH_INCEPTION_WEIGHTS"
FEATURE_LAYER, LOGITS_LAYER = "2048", "logits_unbiased"
INCEPTION_BATCH = 32  # 299x299 activations of a larger batch are hundreds of MB on a CPU
SUFFIX = "_inception"  # column suffix: fid_inception, is_inception, ...


class InceptionWeightsMissing(GenbenchError):
    """The Inception-v3 weights file is not on this machine and downloading was not allowed."""


def default_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def weights_path(path: str | os.PathLike | None = None) -> Path:
    """Where the weights are looked for: ``path``, else ``$GENBENCH_INCEPTION_WEIGHTS``, else the
    torch hub cache."""
    if path is not None:
        return Path(path)
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else default_weights_path()


def missing_message(path: Path) -> str:
    return (f"Inception-v3 weights not found at {path}. Put torch-fidelity's {WEIGHTS_FILE} there (or point "
            f"${WEIGHTS_ENV} at the file), or set GENBENCH_DOWNLOAD=1 to let torch-fidelity download it into "
            f"{default_weights_path().parent}")


def weights_available(path: str | os.PathLike | None = None) -> tuple[bool, str]:
    p = weights_path(path)
    if p.is_file():
        return True, ""
    if path is None and os.environ.get(WEIGHTS_ENV) is None and allow_download():
        return True, ""  # fetched on first use
    return False, missing_message(p)


def resolve_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file, downloading it into the torch hub cache only when the user opted in."""
    p = weights_path(path)
    if p.is_file():
        return p
    if path is None and os.environ.get(WEIGHTS_ENV) is None and allow_download():
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, map_location="cpu", progress=False)
        if p.is_file():
            return p
    raise InceptionWeightsMissing(missing_message(p))


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] of shape (n, C, H, W), C in {1, 3}, as uint8 RGB (grey repeated)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise GenbenchError(f"Inception-v3 takes images of shape (n, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class InceptionExtractor:
    """torch-fidelity's Inception-v3 with the name and weights hash a result row needs."""

    name: str
    model: torch.nn.Module
    weights_hash: str

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2048-d pool features, unbiased logits), float64 on the CPU."""
        device = next(self.model.parameters()).device
        feats, logits = [], []
        for chunk in x.split(INCEPTION_BATCH):
            f, lg = self.model(to_uint8_rgb(chunk).to(device))
            feats.append(f.double().cpu())
            logits.append(lg.double().cpu())
        return torch.cat(feats), torch.cat(logits)

    def fingerprint(self) -> str:
        return f"{self.name}@{self.weights_hash[:12]}"


_MEMO: dict[tuple, InceptionExtractor] = {}


def inception_extractor(path: str | os.PathLike | None = None, device="cpu") -> InceptionExtractor:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` loaded from the local weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    p = resolve_weights(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns, str(device))
    if key not in _MEMO:
        model = FeatureExtractorInceptionV3(EXTRACTOR_NAME, [FEATURE_LAYER, LOGITS_LAYER],
                                            feature_extractor_weights_path=str(p))
        _MEMO[key] = InceptionExtractor(EXTRACTOR_NAME, model.to(device), file_hash(p))
    return _MEMO[key]


PUBLISHED_FID, PUBLISHED_IS = "fid50k" + SUFFIX, "is50k" + SUFFIX  # the published protocol's columns


@dataclass(frozen=True)
class InceptionSettings:
    published_n: int = 0  # generated images of the published FID / IS (against train); 0 = not computed


class InceptionSampleQuality(Metric):
    name = "sample_quality_inception"
    headline = {"fid_inception": 340}
    columns = {FID + SUFFIX: "lower", IS + SUFFIX: "higher", KID + SUFFIX: "lower",
               PRECISION + SUFFIX: "higher", RECALL + SUFFIX: "higher",
               FID_TRAIN + SUFFIX: "lower", KID_TRAIN + SUFFIX: "lower",
               PRECISION_TRAIN + SUFFIX: "higher", RECALL_TRAIN + SUFFIX: "higher",
               PUBLISHED_FID: "lower", PUBLISHED_IS: "higher"}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})
    Settings = InceptionSettings
    profile_settings = {"standard": {"published_n": 50_000}}
    allowance_s = {"standard": 6 * 3600.0}  # 50,000 generated images through Inception-v3 (hours on a CPU)

    def applies(self, model_cls, dataset):
        ok, why = super().applies(model_cls, dataset)
        if not ok:
            return ok, why
        return weights_available()

    def estimator(self, profile: Profile) -> str:
        text = estimator_text(profile, features=f"{EXTRACTOR_NAME} (pool 2048 / unbiased logits)")
        n = self.settings(profile).published_n
        if n:
            text += (f"; published protocol: {PUBLISHED_FID} = FID of {n} generated vs train[:{profile.n_reference}], "
                     f"{PUBLISHED_IS} = IS of those {n} in {profile.is_splits} splits")
        return text

    def prepare(self, dataset, profile: Profile, device) -> None:
        """The network (loaded once per process) and the real images' features, cached."""
        ext = inception_extractor(device=device)
        for split in (HEADLINE_SPLIT, "train"):
            reference_features(dataset, ext, split, profile.n_reference)

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        ext = inception_extractor(device=ctx.device)
        test = reference_features(ctx.dataset, ext, HEADLINE_SPLIT, ctx.profile.n_reference)
        train = reference_features(ctx.dataset, ext, "train", ctx.profile.n_reference)
        gen = generated_features(ctx, ext, n_generated(ctx.dataset, ctx.profile))
        out = heldout_and_train(gen, test, train, ctx.profile, seed=ctx.seed)
        published = ctx.settings_of(self).published_n
        if published:
            many = generated_features(ctx, ext, published)
            out[PUBLISHED_FID.removesuffix(SUFFIX)] = fid(many, train)
            out[PUBLISHED_IS.removesuffix(SUFFIX)] = isc_features_to_metric(  # ImageNet's classes: any images
                many.logits, splits=ctx.profile.is_splits, rng_seed=ctx.seed)[KEY_METRIC_ISC_MEAN]
        fingerprint = ext.fingerprint()
        # the record has one extractor field: name both when the domain classifier ran too
        previous = ctx.memo.get("extractor")
        ctx.memo["extractor"] = fingerprint if not previous or previous == fingerprint else f"{previous}; {fingerprint}"
        return {k + SUFFIX: v for k, v in out.items()}
