"""Memorisation: do the samples copy the training data?  And density and coverage beside P/R.

All measures live in the domain classifier's feature space (``genbench.features.domain_extractor``),
with the training split T, the held-out test split P (never seen by the model nor by the
classifier) and the generated samples Q:

* ``ct`` -- the data-copying test statistic C_T of Meehan, Chaudhuri and Dasgupta (2020), "A
  Non-Parametric Test to Detect Data-Copying in Generative Models".  T is cut into k cells by
  k-means; in each cell pi the distances of Q's and P's points to their nearest training point of
  that cell are compared by the Mann-Whitney U statistic, as the Z-score
  Z_U(pi) = (U - m n / 2) / sqrt(m n (m + n + 1) / 12), U counting the pairs where the generated
  point lies farther from T than the test point.  Cells holding fewer than tau generated samples
  are skipped (the paper's Pi_tau), and C_T = sum_pi P(pi) Z_U(pi) / sum_pi P(pi) over the rest,
  weighted by the share of test points in each cell.  C_T << 0: samples closer to the training
  data than fresh data is (copying); ~0: as close as fresh data; >> 0: farther (underfitting).
  The column has no simple direction: |C_T| near 0 is best.
* ``authenticity`` -- Alaa et al. (2022), "How Faithful is your Synthetic Data?": a generated
  sample g with nearest training point t* is inauthentic when d(g, t*) <= d(t*, T \\ {t*}), i.e.
  it sits inside the ball that t*'s own nearest neighbour defines; authenticity is the share of
  authentic samples (higher is better; fresh real data reaches the level of the reference row).
* ``nn_ratio`` -- mean over g of d_NN(g, T') / d_NN(g, P), T' a fixed random subset of T of P's
  size, so both nearest-neighbour distances come from sets of the same size: about 1 for a model
  that generalises, below for one that sits on its training data (0 for exact copies of T').
* ``density`` and ``coverage`` -- Naeem et al. (2020), "Reliable Fidelity and Diversity Metrics
  for Generative Models", with k nearest neighbours, of Q against P.

A row is flagged (``ctx.warn``) as copying the training data when C_T < ``CT_FLAG`` or
authenticity < ``AUTHENTICITY_FLAG`` (see ``copy_finding``).

The settings (cells, tau, k, counts) are the metric's own, per evaluation profile
(``Memorisation.Settings``); every count is named in the estimator string.  Distances are
computed in chunks: large temporaries are slow on small machines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genbench.features import domain_extractor
from genbench.metrics import EvalContext, Metric
from genbench.metrics.fidelity import generated_features, n_generated, reference_features
from genbench.model import Capability
from genbench.profiles import Profile

# result keys (columns of the leaderboard)
CT, AUTHENTICITY, NN_RATIO, DENSITY, COVERAGE = "ct", "authenticity", "nn_ratio", "density", "coverage"

# Copy flag.  Under the null (samples as fresh as held-out data) every Z_U(pi) is about N(0, 1) and
# C_T, a weighted mean of them, has a standard deviation of at most 1: C_T < -3 happens by chance
# less than once in 700.  Authenticity of fresh real data sits near the reference row's level
# (0.63 on digits); below a third of it, most samples sit inside training points' own balls.
CT_FLAG = -3.0
AUTHENTICITY_FLAG = 0.2

DISTANCE_CHUNK = 2_000_000  # entries of one distance block (16 MB of float64)


@dataclass(frozen=True)
class MemorisationSettings:
    """The memorisation metric's settings (defaults: the quick profile's).  The paper uses tau =
    20 / m (at least 20 generated samples per tested cell) and more cells for more data; with
    digits' 447 test points, 10 cells leave ~45 test points per cell."""

    cells: int = 10  # k-means cells of the training features (C_T)
    min_cell_samples: int = 20  # tau as a count: a cell needs this many generated samples to be tested
    k: int = 5  # nearest neighbours of density and coverage (Naeem et al. use 5)
    n_train: int = 60_000  # training images compared against (at most the split): a copy of one beyond is unseen
    seed: int = 0  # k-means initialisation and the T' subset of nn_ratio


def settings_for(profile: Profile) -> MemorisationSettings:
    """The memorisation settings under ``profile`` (the `real-heldout` reference row uses them too)."""
    return Memorisation.settings(profile)


# --- chunked nearest-neighbour helpers -------------------------------------------------------------


def _rows_per_chunk(cols: int) -> int:
    return max(1, DISTANCE_CHUNK // max(1, cols))


def nearest(a: torch.Tensor, b: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest Euclidean distances from each row of ``a`` to the rows of ``b`` (ascending),
    and their indices into ``b``."""
    values, indices = [], []
    for chunk in a.split(_rows_per_chunk(len(b))):
        d = torch.cdist(chunk, b)
        v, i = d.topk(k, dim=1, largest=False)
        values.append(v)
        indices.append(i)
    return torch.cat(values), torch.cat(indices)


def self_radius(x: torch.Tensor, k: int, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Distance of each point of ``x`` (or of ``x[rows]``) to its k-th nearest *other* point of ``x``:
    the k + 1-th smallest distance, the smallest being the point itself."""
    query = x if rows is None else x[rows]
    return nearest(query, x, k + 1)[0][:, k]


def within_radius_counts(q: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """For each row of ``q``: how many ``centres`` have it strictly inside their ball of ``radii``."""
    out = []
    for chunk in q.split(_rows_per_chunk(len(centres))):
        out.append((torch.cdist(chunk, centres) < radii).sum(1))
    return torch.cat(out)


# --- the measures ----------------------------------------------------------------------------------------


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int) -> tuple[float, float]:
    """Naeem et al. (2020), eqs. (3)-(4), with the strict inequality of the authors' code (prdc):
    density = 1/(k M) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))]; coverage = 1/N sum_i 1[exists j:
    Y_j in B(X_i, NND_k(X_i))].  Written over chunked distances instead of calling prdc, which
    builds the full N x N real-real matrix (400 MB for 10,000 test images) and prints on every call;
    tests/test_metrics_memorisation.py checks the two agree."""
    radii = self_radius(real, k)
    density = within_radius_counts(fake, real, radii).double().sum().item() / (k * len(fake))
    coverage = (nearest(real, fake)[0][:, 0] < radii).double().mean().item()
    return density, coverage


def authenticity(gen: torch.Tensor, train: torch.Tensor) -> float:
    """Alaa et al. (2022): share of generated samples farther from their nearest training point t*
    than t* is from its own nearest other training point.  (Written here because the authors' code
    ships inside a large framework; the rule is three lines.)"""
    d_gen, idx = nearest(gen, train)
    nearest_train = idx[:, 0].unique()
    radius = torch.empty(len(train), dtype=train.dtype)
    radius[nearest_train] = self_radius(train, 1, nearest_train)
    return (d_gen[:, 0] > radius[idx[:, 0]]).double().mean().item()


def nn_ratio(gen: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor, seed: int = 0) -> float:
    """Mean over generated samples of d_NN(g, T') / d_NN(g, P), with T' a fixed random subset of the
    training features of the held-out set's size (nearest-neighbour distances shrink with the set's
    size, so unequal sets would read as copying)."""
    m = min(len(train), len(heldout))
    g = torch.Generator().manual_seed(seed)
    t_sub = train[torch.randperm(len(train), generator=g)[:m]]
    p_sub = heldout[torch.randperm(len(heldout), generator=g)[:m]]
    d_train, d_held = nearest(gen, t_sub)[0][:, 0], nearest(gen, p_sub)[0][:, 0]
    return (d_train / d_held.clamp_min(1e-12)).mean().item()


def training_cells(train: torch.Tensor, cells: int, seed: int):
    """k-means of the training features (scikit-learn, fixed seed): the cells of C_T."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=cells, n_init=1, random_state=seed).fit(train.numpy())


def mann_whitney_z(gen_d: torch.Tensor, test_d: torch.Tensor) -> float:
    """Z_U of Meehan et al. (2020): U counts the (generated, test) pairs with the generated point
    farther from the training data (ties count half; scipy's U of the first sample), standardised
    under the null of exchangeable distances."""
    from scipy.stats import mannwhitneyu

    m, n = len(gen_d), len(test_d)
    u = mannwhitneyu(gen_d.numpy(), test_d.numpy(), alternative="two-sided", method="asymptotic").statistic
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def data_copying_ct(gen: torch.Tensor, test: torch.Tensor, train: torch.Tensor, cells: int,
                    min_cell_samples: int, seed: int = 0, kmeans=None) -> tuple[float, int]:
    """C_T of Meehan et al. (2020) and the number of cells it was computed over (0: none had
    ``min_cell_samples`` generated samples, C_T is NaN)."""
    kmeans = kmeans or training_cells(train, cells, seed)
    t_cell = torch.as_tensor(kmeans.labels_)
    g_cell = torch.as_tensor(kmeans.predict(gen.numpy()))
    p_cell = torch.as_tensor(kmeans.predict(test.numpy()))
    weighted, weight, used = 0.0, 0.0, 0
    for c in range(kmeans.n_clusters):
        g_in, p_in, t_in = gen[g_cell == c], test[p_cell == c], train[t_cell == c]
        if len(g_in) < min_cell_samples or len(p_in) == 0:
            continue  # outside Pi_tau (or a cell no test point falls in: weight 0)
        z = mann_whitney_z(nearest(g_in, t_in)[0][:, 0], nearest(p_in, t_in)[0][:, 0])
        share = len(p_in) / len(test)
        weighted, weight, used = weighted + share * z, weight + share, used + 1
    return (weighted / weight if used else float("nan")), used


_KMEANS: dict[tuple, object] = {}


def cached_training_cells(train: torch.Tensor, settings: MemorisationSettings, cache_key: tuple | None = None):
    """:func:`training_cells` of ``train``, fitted once per process for each ``cache_key`` (which
    names ``train``; None: fitted anew)."""
    key = None if cache_key is None else (*cache_key, settings.cells, settings.seed)
    kmeans = _KMEANS.get(key) if key is not None else None
    if kmeans is None:
        kmeans = training_cells(train, settings.cells, settings.seed)
        if key is not None:
            _KMEANS[key] = kmeans
    return kmeans


def memorisation_metrics(gen: torch.Tensor, test: torch.Tensor, train: torch.Tensor,
                         settings: MemorisationSettings, cache_key: tuple | None = None) -> dict[str, float]:
    """Every column of this module for generated features ``gen`` (float64, CPU), against the
    held-out ``test`` and the ``train`` features.  ``cache_key`` names ``train`` so its k-means
    cells are fitted once per process."""
    kmeans = cached_training_cells(train, settings, cache_key)
    ct, used = data_copying_ct(gen, test, train, settings.cells, settings.min_cell_samples, kmeans=kmeans)
    density, coverage = density_coverage(test, gen, settings.k)
    return {CT: ct, "ct_cells": float(used), AUTHENTICITY: authenticity(gen, train),
            NN_RATIO: nn_ratio(gen, train, test, settings.seed), DENSITY: density, COVERAGE: coverage}


def copy_finding(values: dict[str, float]) -> str | None:
    """The row's copy flag, or None: C_T below ``CT_FLAG`` or authenticity below
    ``AUTHENTICITY_FLAG``."""
    ct, auth = values[CT], values[AUTHENTICITY]
    if not (ct < CT_FLAG or auth < AUTHENTICITY_FLAG):
        return None
    ct_text = f"{ct:.1f}" if math.isfinite(ct) else "untestable (no cell holds enough samples)"
    return (f"copies training data: C_T={ct_text}, authenticity {auth:.2f} (flagged when C_T < {CT_FLAG:g} "
            f"or authenticity < {AUTHENTICITY_FLAG:g}; nn_ratio {values[NN_RATIO]:.2f})")


def real_features(dataset, profile: Profile, device="cpu"):
    """(extractor, train features, held-out test features) that every row is compared with."""
    settings = settings_for(profile)
    ext = domain_extractor(dataset, device)
    train = reference_features(dataset, ext, "train", settings.n_train).features
    test = reference_features(dataset, ext, "test", profile.n_reference).features
    return ext, train, test


class Memorisation(Metric):
    """Data-copying test C_T, authenticity and nn_ratio on domain-classifier features, plus
    density/coverage against the test split; a row that copies is flagged (``copy_finding``)."""

    name = "memorisation"
    columns = {CT: "none", AUTHENTICITY: "higher", NN_RATIO: "higher", DENSITY: "higher", COVERAGE: "higher"}
    # density and coverage sit beside precision and recall in the CSV; in a six-column table the
    # family metrics come first, so they follow them
    headline = {DENSITY: 200, COVERAGE: 210, AUTHENTICITY: 220}
    Settings = MemorisationSettings
    profile_settings = {"test": {"cells": 5, "n_train": 1_000}, "standard": {"cells": 25}}
    needs = frozenset({Capability.SAMPLE})
    data_kinds = frozenset({"image"})

    def estimator(self, profile: Profile) -> str:
        s = settings_for(profile)
        return (f"domain-classifier features; train=train[:{s.n_train}], held-out=test[:{profile.n_reference}], "
                f"n_gen=min({profile.n_fid_samples}, val count); C_T (Meehan et al. 2020) over {s.cells} k-means "
                f"cells (seed {s.seed}), cells with < {s.min_cell_samples} samples skipped; authenticity (Alaa et al. "
                f"2022); nn_ratio with equal-size train/held-out sets; density/coverage (Naeem et al. 2020) k={s.k} "
                f"vs test; flagged as copying when C_T < {CT_FLAG:g} or authenticity < {AUTHENTICITY_FLAG:g}")

    def prepare(self, dataset, profile: Profile, device) -> None:
        """The real images' features and the k-means cells of the training features, cached."""
        ext, train, _ = real_features(dataset, profile, device)
        cached_training_cells(train, settings_for(profile), (dataset.name, len(train), ext.fingerprint()))

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        ext, train, test = real_features(ctx.dataset, ctx.profile, ctx.device)
        gen = generated_features(ctx, ext, n_generated(ctx.dataset, ctx.profile)).features
        out = memorisation_metrics(gen, test, train, ctx.settings_of(self),
                                   cache_key=(ctx.dataset.name, len(train), ext.fingerprint()))
        if math.isnan(out[CT]):
            ctx.mark(CT, f"no k-means cell holds {ctx.settings_of(self).min_cell_samples} generated samples")
        finding = copy_finding(out)
        if finding:
            ctx.warn(finding)
        return out
