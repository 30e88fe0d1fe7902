"""Sample-quality metrics validated: FID and KID against torchmetrics on the same features, precision
and recall against their definition (Kynkaenniemi et al. 2019), the PacGAN mode metrics on a perfect
and a collapsed sampler, and the Inception-v3 extractor (torch-fidelity's) with stand-in weights of
the right shapes -- and its refusal when the weights file is missing."""

import dataclasses
import math

import pytest
import torch
from conftest import build
from torch import nn

from genbench.metrics import EvalContext
from genbench.metrics.fidelity import FID, IS, KID, PRECISION, RECALL, FeatureSet, fid, fidelity_metrics
from genbench.metrics.inception import (
    PUBLISHED_FID,
    PUBLISHED_IS,
    WEIGHTS_ENV,
    InceptionSampleQuality,
    InceptionSettings,
    InceptionWeightsMissing,
    file_hash,
    inception_extractor,
    resolve_weights,
    to_uint8_rgb,
    weights_available,
)
from genbench.metrics.modes import mode_metrics
from genbench.profiles import get_profile

# --- FID / KID against torchmetrics ------------------------------------------------------------------


class Projection(nn.Module):
    """A fixed random projection of flattened images: the shared 'feature extractor'."""

    num_features = 12

    def __init__(self, dim):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(dim, self.num_features, generator=g, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x.flatten(1).double() @ self.w / 4)


@pytest.fixture(scope="module")
def real_and_fake(digits):
    real = digits.split("train")["x"][:400]
    g = torch.Generator().manual_seed(1)
    fake = (digits.split("val")["x"][:200] + 0.15 * torch.randn(200, 1, 8, 8, generator=g)).clamp(0, 1)
    fake = torch.cat([fake, digits.split("test")["x"][:200]])  # 400 images, partly noisy
    return real, fake


def _genbench(real, fake, proj, **profile_overrides):
    profile = dataclasses.replace(get_profile("test"), **profile_overrides)
    fr, ff = proj(real), proj(fake)
    return fidelity_metrics(FeatureSet(ff, ff), FeatureSet(fr, fr), profile)


def test_fid_matches_torchmetrics(real_and_fake):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = real_and_fake
    proj = Projection(64)
    tm = FrechetInceptionDistance(feature=proj)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    want = float(tm.compute())
    got = _genbench(real, fake, proj)[FID]
    assert want > 1e-3  # a non-trivial distance
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics_on_identical_subsets(real_and_fake):
    """With one subset holding every sample both libraries compute the same unbiased MMD."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = real_and_fake
    proj = Projection(64)
    tm = KernelInceptionDistance(feature=proj, subsets=1, subset_size=len(real))
    tm.update(real, real=True)
    tm.update(fake, real=False)
    want = float(tm.compute()[0])
    got = _genbench(real, fake, proj, kid_subsets=1, kid_subset_size=len(real))[KID]
    assert want > 0
    assert got == pytest.approx(want, rel=1e-6)


# --- precision and recall against their definition ---------------------------------------------------


def _pr(gen, real, k=3):
    profile = dataclasses.replace(get_profile("test"), prc_neighborhood=k)
    out = fidelity_metrics(FeatureSet(gen, gen), FeatureSet(real, real), profile)
    return out[PRECISION], out[RECALL]


def _pr_by_definition(gen, real, k=3):
    """Kynkaenniemi et al. 2019: precision = share of generated samples inside some real sample's
    k-NN ball; recall = share of real samples inside some generated sample's k-NN ball."""

    def radii(a):
        return torch.cdist(a, a).kthvalue(k + 1, dim=1).values

    def covered(points, centres):
        return (torch.cdist(points, centres) <= radii(centres)).any(1).double().mean().item()

    return covered(gen, real), covered(real, gen)


def test_precision_recall_follow_the_definition():
    """torch-fidelity 0.4.0 through fidelity_metrics (generated first, real second): checked that the
    two numbers are not swapped -- a collapsed generator has high precision and low recall."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(600, 8, generator=g, dtype=torch.float64)
    # drawn from the real set: every sample is a real point, so precision is 1
    subset = real[torch.randperm(600, generator=g)[:300]]
    p, r = _pr(subset, real)
    assert p == 1.0 and r > 0.8
    # collapsed onto one real point (plus tiny noise): precise but with no recall
    collapsed = real[7] + 1e-3 * torch.randn(300, 8, generator=g, dtype=torch.float64)
    p, r = _pr(collapsed, real)
    assert p > 0.95 and r < 0.02
    # shifted far away: neither
    p, r = _pr(real + 10.0, real)
    assert p == 0.0 and r == 0.0
    for gen in (subset, collapsed, real[:200] * 1.5):
        assert _pr(gen, real) == pytest.approx(_pr_by_definition(gen, real), abs=1e-6)


# --- PacGAN mode metrics --------------------------------------------------------------------------------


def test_mode_metrics_on_perfect_and_collapsed_samplers(ring8):
    centres, std = ring8.modes.cpu(), ring8.mode_std
    perfect = ring8.split("test")["x"].cpu()
    out = mode_metrics(perfect, centres, std)
    assert out["modes"] == 8
    # a 2-D Gaussian puts 1 - exp(-9/2) = 98.9% of its mass within 3 std
    assert out["hq_pct"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=1.0)
    assert out["mode_kl"] < 0.01
    g = torch.Generator().manual_seed(0)
    collapsed = centres[3] + std * torch.randn(1000, 2, generator=g)
    out = mode_metrics(collapsed, centres, std)
    assert out["modes"] == 1 and out["mode_kl"] == pytest.approx(math.log(8))


# --- Inception-v3 (torch-fidelity's extractor) ------------------------------------------------------


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """torch-fidelity's Inception-v3 structure with random weights, saved as a state dict: the same
    keys and shapes as the real file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Skeleton(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random initialisation

    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    skeleton = Skeleton("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    path = folder / "stand-in-inception.pth"
    torch.save(skeleton.state_dict(), path)
    return path


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.delenv("GENBENCH_DOWNLOAD", raising=False)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def test_missing_weights_are_refused_with_the_fix(tmp_path, monkeypatch, manager, digits, no_download):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    ok, why = weights_available()
    assert not ok and str(expected) in why and "GENBENCH_DOWNLOAD=1" in why and WEIGHTS_ENV in why
    with pytest.raises(InceptionWeightsMissing, match="Inception-v3 weights not found at"):
        resolve_weights()
    ok, why = InceptionSampleQuality().applies(manager.models.get("vae"), digits)
    assert not ok and why.startswith(f"Inception-v3 weights not found at {expected}")
    # a path the user names is never replaced by a download, even when downloads are allowed
    monkeypatch.setenv("GENBENCH_DOWNLOAD", "1")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(InceptionWeightsMissing, match="nowhere.pth"):
        inception_extractor()


def test_images_are_converted_as_torch_fidelity_expects():
    x = torch.tensor([0.0, 0.5, 1.0, 1.2]).view(1, 1, 2, 2)
    out = to_uint8_rgb(x)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == [0, 0, 0] and out[0, 0].flatten().tolist() == [0, 128, 255, 255]
    with pytest.raises(Exception, match="1 or 3"):
        to_uint8_rgb(torch.zeros(1, 2, 4, 4))


def test_features_from_local_weights(stand_in_weights, digits, no_download):
    ext = inception_extractor(stand_in_weights)
    feats, logits = ext.features(digits.split("test")["x"][:3])
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()
    assert feats.dtype == torch.float64
    assert ext.fingerprint() == f"inception-v3-compat@{file_hash(stand_in_weights)[:12]}"
    assert inception_extractor(stand_in_weights) is ext  # loaded once


def test_inception_metric_with_weights_from_the_environment(stand_in_weights, monkeypatch, manager, digits,
                                                           no_download):
    monkeypatch.setenv(WEIGHTS_ENV, str(stand_in_weights))
    metric = InceptionSampleQuality()
    vae = manager.models.get("vae")
    assert metric.applies(vae, digits) == (True, "")
    profile = dataclasses.replace(get_profile("test"), n_fid_samples=6, n_reference=6, kid_subsets=2,
                                  kid_subset_size=4, is_splits=2)
    ctx = EvalContext(build(vae, digits), digits, profile, seed=0, device="cpu")
    out = metric.compute(ctx)
    assert set(out) == set(metric.columns) - {PUBLISHED_FID, PUBLISHED_IS}  # the standard profile's only
    assert all(math.isfinite(v) for v in out.values())
    assert ctx.memo["extractor"] == f"inception-v3-compat@{file_hash(stand_in_weights)[:12]}"
    assert "inception-v3-compat" in metric.estimator(profile) and "ref=test[:6]" in metric.estimator(profile)
    # headline columns against the held-out test split, *_train against the training split
    test = ext_features(stand_in_weights, digits.split("test")["x"][:6])
    train = ext_features(stand_in_weights, digits.split("train")["x"][:6])
    gen = ext_features(stand_in_weights, ctx.samples(6))
    assert out["fid_inception"] == pytest.approx(fidelity_metrics(gen, test, profile)[FID])
    assert out["fid_train_inception"] == pytest.approx(fidelity_metrics(gen, train, profile)[FID])


def ext_features(weights, x):
    return FeatureSet(*inception_extractor(weights).features(x))


def test_the_standard_profile_adds_the_published_50k_protocol(stand_in_weights, monkeypatch, manager, digits,
                                                               no_download):
    """FID of published_n generated images against the training statistics and their IS; the
    standard profile's count is 50,000, a test sets 12 to check the computation itself."""
    monkeypatch.setenv(WEIGHTS_ENV, str(stand_in_weights))
    metric = InceptionSampleQuality()
    assert InceptionSampleQuality.settings("standard").published_n == 50_000
    assert InceptionSampleQuality.settings("quick").published_n == 0
    assert "FID of 50000 generated vs train" in metric.estimator(get_profile("standard"))
    assert metric.allowance("standard") >= 3600
    profile = dataclasses.replace(get_profile("test"), n_fid_samples=6, n_reference=8, kid_subsets=2,
                                  kid_subset_size=4, is_splits=2)
    vae = manager.models.get("vae")
    ctx = EvalContext(build(vae, digits), digits, profile, seed=0, device="cpu",
                      settings={metric.name: InceptionSettings(published_n=12)})
    out = metric.compute(ctx)
    train = ext_features(stand_in_weights, digits.split("train")["x"][:8])
    many = ext_features(stand_in_weights, ctx.samples(12))
    assert out[PUBLISHED_FID] == pytest.approx(fid(many, train))
    assert out[PUBLISHED_IS] == pytest.approx(fidelity_metrics(many, train, profile)[IS])
    assert out["fid_inception"] != out[PUBLISHED_FID]  # 6 samples against test, not 12 against train
