"""Memorisation and held-out sample quality: samplers that a benchmark must see through.

A plugin registered inside the test process brings three samplers of digits -- exact training
images drawn with replacement, uniform noise, one training image repeated -- and each is scored by
the sample-quality and memorisation metrics under the "test" profile.  The measures themselves are
checked on small hand-made sets against their definitions (Mann-Whitney U by counting pairs, C_T
in closed form for copies, authenticity by hand, density/coverage against the authors' prdc)."""

import math

import pytest
import torch

from genbench.features import domain_extractor
from genbench.manager import PluginManager
from genbench.metrics import EvalContext
from genbench.metrics.fidelity import (
    FID,
    FID_TRAIN,
    PRECISION,
    RECALL,
    FeatureSet,
    SampleQuality,
    fidelity_metrics,
    n_generated,
)
from genbench.metrics.memorisation import (
    AUTHENTICITY,
    COVERAGE,
    CT,
    CT_FLAG,
    DENSITY,
    NN_RATIO,
    Memorisation,
    authenticity,
    data_copying_ct,
    density_coverage,
    mann_whitney_z,
    nn_ratio,
    training_cells,
)
from genbench.profiles import get_profile
from genbench.reference import reference_record

SAMPLERS_PLUGIN = '''
from dataclasses import dataclass

import torch

import genbench
from genbench.datasets import load_digits


@dataclass
class NoConfig:
    pass


class Fixed(genbench.GenerativeModel):
    """A sampler with no training: what it returns is fixed by the subclass."""
    family = "Test sampler"
    Config = NoConfig
    capabilities = frozenset({genbench.Capability.SAMPLE})
    data_kinds = frozenset({"image"})

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.train_x = load_digits().split("train")["x"]

    def train_step(self, batch, progress):
        return {}


class Copier(Fixed):
    name = "copier"

    def sample(self, n, generator=None, condition=None):
        return self.train_x[torch.randint(0, len(self.train_x), (n,), generator=generator)]


class Noise(Fixed):
    name = "noise"

    def sample(self, n, generator=None, condition=None):
        return torch.rand(n, *self.spec.shape, generator=generator)


class OneImage(Fixed):
    name = "one-image"

    def sample(self, n, generator=None, condition=None):
        return self.train_x[3:4].repeat(n, 1, 1, 1)


@genbench.hookimpl
def register_models(register):
    for cls in (Copier, Noise, OneImage):
        register(cls)
'''

PROFILE = get_profile("test")


@pytest.fixture(scope="module")
def samplers(tmp_path_factory):
    path = tmp_path_factory.mktemp("plugins") / "samplers_plugin.py"
    path.write_text(SAMPLERS_PLUGIN)
    return PluginManager(plugin_files=[path])


@pytest.fixture(scope="module")
def scored(samplers, digits):
    """name -> (values, warnings) of the sample-quality and memorisation metrics."""
    out = {}
    for name in ("copier", "noise", "one-image"):
        cls = samplers.models.get(name)
        ctx = EvalContext(cls(cls.make_config(), digits.spec), digits, PROFILE, seed=0, device="cpu")
        values = {}
        for metric in (samplers.metrics.get(SampleQuality.name), samplers.metrics.get(Memorisation.name)):
            assert metric.applies(cls, digits) == (True, "")
            values.update(metric.compute(ctx))
        out[name] = values, ctx.warnings
    return out


@pytest.fixture(scope="module")
def real_row(digits, tmp_path_factory):
    """The real-heldout reference record (validation images as samples)."""
    return reference_record(digits, PROFILE, "memo", torch.device("cpu"), tmp_path_factory.mktemp("runs") / "memo")


# --- the samplers on digits ----------------------------------------------------------------------------


def test_generated_count_is_the_reference_rows_count(digits, real_row):
    n = n_generated(digits, PROFILE)
    assert n == min(PROFILE.n_fid_samples, len(digits.split("val")["x"])) == 200
    assert real_row["metrics"]["n_heldout"] == n
    estimator = real_row["estimators"][SampleQuality.name]
    assert f"n_gen={n}" in estimator and f"ref=test n={len(digits.split('test')['x'])}" in estimator
    # headline columns against the test split, *_train against the training split
    ext = domain_extractor(digits)
    val = FeatureSet(*ext.features(digits.split("val")["x"][:n]))
    for split, key in (("test", FID), ("train", FID_TRAIN)):
        ref = FeatureSet(*ext.features(digits.split(split)["x"][: PROFILE.n_reference]))
        assert real_row["metrics"][key] == pytest.approx(fidelity_metrics(val, ref, PROFILE)[FID])


def test_copier_is_flagged_and_wins_against_train_only(scored, real_row):
    values, warnings = scored["copier"]
    real = real_row["metrics"]
    # against the training split the copier beats real data, the failure the held-out protocol fixes
    assert values[FID_TRAIN] < real[FID_TRAIN] / 3
    assert len(warnings) == 1 and warnings[0].startswith("copies training data: C_T=")
    # every sample lies at distance 0 of the training set: U = 0 in each tested cell, so each
    # Z_U = -sqrt(3 m n / (m + n + 1)) <= -sqrt(3 * 20 * n / (21 + n)), far below the flag
    assert values[CT] < 2 * CT_FLAG
    assert values[AUTHENTICITY] == 0.0  # inside the ball of its own source image
    # T' holds len(test) of the 1000 training images: copies of those read 0, the others ~1
    assert values[NN_RATIO] < 0.75 and values[NN_RATIO] < real[NN_RATIO] - 0.3


def test_noise_scores_far_from_real_data(scored, real_row):
    values, warnings = scored["noise"]
    real = real_row["metrics"]
    assert values[FID] > 10 * real[FID]
    assert values[RECALL] < 0.05 and values[COVERAGE] < 0.05 and values[DENSITY] < 0.05
    assert values[AUTHENTICITY] > 0.95 and not warnings  # far from everything: not a copy
    assert values[CT] > 3 or math.isnan(values[CT])  # farther from T than fresh data: underfitting


def test_one_repeated_image_is_flagged(scored, real_row):
    values, warnings = scored["one-image"]
    real = real_row["metrics"]
    assert values[FID] > 10 * real[FID]
    assert values[RECALL] < 0.05
    # one image covers at most the test points whose 5-NN ball holds it
    assert values[COVERAGE] < 0.05
    assert values[AUTHENTICITY] == 0.0
    assert values[CT] < 2 * CT_FLAG and len(warnings) == 1


def test_validation_images_are_not_flagged(real_row, digits):
    real = real_row["metrics"]
    assert real_row["warnings"] == []
    # val and test are exchangeable: C_T is a weighted mean of about-N(0, 1) Z-scores
    assert abs(real[CT]) < 2.5
    assert 0.8 < real[NN_RATIO] < 1.25
    assert 0.4 < real[AUTHENTICITY] < 0.9
    assert 0.5 < real[PRECISION] and 0.5 < real[RECALL] and 0.5 < real[COVERAGE]
    assert set(Memorisation.columns) | set(SampleQuality.columns) <= set(real)


# --- the measures against their definitions ----------------------------------------------------------


def test_mann_whitney_z_counts_pairs():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (23,), generator=g).double()  # ties on purpose
    b = torch.randint(0, 6, (31,), generator=g).double()
    u = ((a[:, None] > b[None]).double() + 0.5 * (a[:, None] == b[None]).double()).sum().item()
    m, n = len(a), len(b)
    assert mann_whitney_z(a, b) == pytest.approx((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def test_ct_of_exact_copies_in_closed_form():
    g = torch.Generator().manual_seed(0)
    centres = 6 * torch.randn(4, 3, generator=g, dtype=torch.float64)
    blob = lambda n: centres[torch.arange(n) % 4] + torch.randn(n, 3, generator=g, dtype=torch.float64)  # noqa: E731
    train, test = blob(400), blob(200)
    copies = train[torch.randint(0, 400, (160,), generator=g)]
    kmeans = training_cells(train, 4, seed=0)
    ct, used = data_copying_ct(copies, test, train, 4, 20, kmeans=kmeans)
    m = torch.bincount(torch.as_tensor(kmeans.predict(copies.numpy())), minlength=4).double()
    n = torch.bincount(torch.as_tensor(kmeans.predict(test.numpy())), minlength=4).double()
    z = -torch.sqrt(3 * m * n / (m + n + 1))  # U = 0: every copy is nearer T than every test point
    assert used == 4
    assert ct == pytest.approx((n * z).sum().item() / n.sum().item(), rel=1e-9)
    fresh, _ = data_copying_ct(blob(160), test, train, 4, 20, kmeans=kmeans)
    assert abs(fresh) < 3
    # a cell with fewer than tau generated samples is skipped: all copies of one cell -> that cell alone
    one_cell = train[torch.as_tensor(kmeans.labels_) == 0][:30]
    ct, used = data_copying_ct(one_cell, test, train, 4, 20, kmeans=kmeans)
    assert used == 1 and ct == pytest.approx(-math.sqrt(3 * 30 * n[0].item() / (30 + n[0].item() + 1)))


def test_authenticity_by_hand():
    train = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)  # own-NN radii 1, 1, 2
    gen = torch.tensor([[0.4], [1.9], [6.0], [-2.0]], dtype=torch.float64)
    # 0.4 -> t=0, 0.4 <= 1 inauthentic; 1.9 -> t=1, 0.9 <= 1 inauthentic; 6 -> t=3, 3 > 2; -2 -> t=0, 2 > 1
    assert authenticity(gen, train) == 0.5
    assert authenticity(train, train) == 0.0


def test_nn_ratio_of_equal_sets():
    g = torch.Generator().manual_seed(0)
    held = torch.randn(50, 4, generator=g, dtype=torch.float64)
    gen = torch.randn(30, 4, generator=g, dtype=torch.float64)
    assert nn_ratio(gen, held.clone(), held) == pytest.approx(1.0)  # the same set on both sides
    assert nn_ratio(held[:30], held, torch.randn(50, 4, generator=g, dtype=torch.float64)) < 1e-6  # copies


def test_density_and_coverage_match_prdc():
    prdc = pytest.importorskip("prdc")
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 6, generator=g, dtype=torch.float64)
    spread = torch.randn(200, 6, generator=g, dtype=torch.float64) * 1.3 + 0.2
    collapsed = real[:1].repeat(50, 1) + 1e-3  # beside a real point, not on it: no ties at a radius
    for fake in (spread, collapsed):
        want = prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
        density, coverage = density_coverage(real, fake, 5)
        assert density == pytest.approx(want["density"]) and coverage == pytest.approx(want["coverage"])
