"""Which cells a leaderboard marks, flags and sets in bold, and the across-dataset summary.

One set of rules for the terminal table (`genbench run`, `genbench leaderboard`) and the
published page (`genbench publish`):

* A **marked** cell (``MARK``, a dagger after the number) holds a value that is not to be read as
  a plain number: its estimator's own diagnostic failed (``record["marks"]``, written by the
  metric), or a family metric came out at or below its chance level (a column ``m`` whose sibling
  ``m_chance`` is at least as good).  The reason is in the row's notes.  A multi-seed cell is
  marked when any of its seeds is ("seed 1: reason").
* A **flagged** row (``FLAG`` before the model name) carries a finding about the whole trial
  (``record["warnings"]``, e.g. its samples copy the training data); the finding is in its notes.
* **Bold** is the best mean of a column with a direction ("higher" or "lower" is better) and every
  row whose per-seed values do not differ from the best row's by Welch's t-test at 5%.  Never bold:
  the reference row, a flagged row, a marked cell, a column without a direction (``"none"``: chance
  levels, reference figures, statistics such as a memorisation test whose value has no better
  side).  A one-seed row cannot be tested, so it competes only where every contender has one seed.
* The **summary** over a suite's datasets is the interquartile mean (IQM) of normalised scores
  with a stratified-bootstrap 95% interval (Agarwal et al. 2021, "Deep RL at the Edge of the
  Statistical Precipice"); see :func:`normalise` for the scores and :func:`summary_rows`.
"""

from __future__ import annotations

import json
import math
import warnings as _warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

RANKED = ("higher", "lower")  # the directions a column can be ranked by; anything else is "none"
ALPHA = 0.05
TEST = "Welch's t-test (unequal variances) at 5% on the per-seed values"
MARK = "†"
FLAG = "⚠"
CHANCE_SUFFIX = "_chance"
# the metric an across-dataset summary scores a dataset by: the first of these with a direction that
# two or more models report (sample quality on image sets; on toy mixtures the KL of the samples'
# mode histogram to the true weights, which -- unlike the high-quality share -- a sampler collapsed
# onto one mode cannot win; likelihood where neither is measured)
SUMMARY_METRICS = ("fid", "mode_kl", "bpd", "nll")
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0  # fixed, so publishing the same trials twice writes the same intervals


def direction_of(column: str, directions: dict[str, str]) -> str:
    """"higher", "lower" or "none".  A chance level is a yardstick, not a score: it has no direction
    whatever a plugin declares."""
    if column.endswith(CHANCE_SUFFIX):
        return "none"
    d = directions.get(column, "none")
    return d if d in RANKED else "none"


class ColumnFacts(dict):
    """Column -> "higher" | "lower" | "none", as the registered metrics declare them, and
    ``ranks``: column -> headline rank (``Metric.headline``).  Terminal, CSV and page order their
    metric columns by it (:meth:`order`), so a metric's headline columns come from the metric."""

    def __init__(self, directions=(), ranks=None):
        super().__init__(directions)
        self.ranks: dict[str, int] = dict(ranks or {})

    def headline(self, columns: Iterable[str]) -> list[str]:
        """The headline columns among ``columns``, by rank (then name)."""
        return sorted((c for c in set(columns) if c in self.ranks), key=lambda c: (self.ranks[c], c))

    def order(self, columns: Iterable[str]) -> list[str]:
        """``columns``: the headline ones by rank, then every other alphabetically."""
        columns = set(columns)
        first = self.headline(columns)
        return first + sorted(columns - set(first))


def metric_directions(manager) -> ColumnFacts:
    """The column facts (direction, headline rank) of every registered metric."""
    if manager is None:
        return ColumnFacts()
    directions, ranks = {}, {}
    for metric in manager.metrics.values():
        directions.update(dict(metric.columns))
        ranks.update(dict(getattr(metric, "headline", {}) or {}))
    return ColumnFacts(directions, ranks)


def finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]


def mean(values: Iterable) -> float:
    vals = finite(values)
    return sum(vals) / len(vals) if vals else math.nan


# ----------------------------------------------------------------------------- marks and flags


def seed_marks(per_seed: Iterable[tuple[int, dict | None]]) -> dict[str, str]:
    """Column -> "seed 0: reason; seed 2: reason" from each seed's ``record["marks"]``."""
    out: dict[str, list[str]] = {}
    for seed, marks in per_seed:
        for column, reason in sorted((marks or {}).items()):
            out.setdefault(column, []).append(f"seed {seed}: {reason}")
    return {c: "; ".join(v) for c, v in out.items()}


def seed_warnings(per_seed: Iterable[tuple[int, Sequence[str] | None]]) -> list[str]:
    """Each finding once, with the seeds it was made on: ["seed 0, 1: copies training data ..."]."""
    seen: dict[str, list[int]] = {}
    for seed, found in per_seed:
        for reason in found or ():
            seen.setdefault(reason, []).append(seed)
    return [f"seed {', '.join(map(str, seeds))}: {reason}" for reason, seeds in seen.items()]


def chance_marks(means: dict[str, float], directions: dict[str, str] | None = None) -> dict[str, str]:
    """Column -> reason, for every ``m`` whose mean is no better than that of its sibling
    ``m_chance`` (what a model that ignores its input scores)."""
    out = {}
    for column, value in means.items():
        chance = means.get(column + CHANCE_SUFFIX)
        if column.endswith(CHANCE_SUFFIX) or not finite([value]) or not finite([chance]):
            continue
        lower = (directions or {}).get(column) == "lower"
        if (value >= chance) if lower else (value <= chance):
            out[column] = f"{'above' if lower else 'below'} its chance level {chance:.3g}"
    return out


def merge_marks(*sources: dict[str, str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for marks in sources:
        for column, reason in marks.items():
            out.setdefault(column, []).append(reason)
    return {c: "; ".join(v) for c, v in sorted(out.items())}


def notes_text(marks: dict[str, str], warnings: Sequence[str], others: Sequence[str] = ()) -> str:
    """The notes of a row: its findings (flag), then why each marked cell is marked, then the rest."""
    parts = [f"{FLAG} {w}" for w in warnings]
    by_reason: dict[str, list[str]] = {}  # one estimator's failed check marks all its columns: say it once
    for column, reason in sorted(marks.items()):
        by_reason.setdefault(reason, []).append(f"{column}{MARK}")
    parts += [f"{', '.join(columns)}: {reason}" for reason, columns in by_reason.items()]
    return "; ".join([*parts, *others])


def marked(text: str, is_marked: bool) -> str:
    return f"{text}{MARK}" if text and is_marked else text


def flagged(name: str, is_flagged: bool) -> str:
    return f"{FLAG} {name}" if is_flagged else name


def dumps_marks(marks: dict[str, str]) -> str:
    return json.dumps(marks, sort_keys=True, ensure_ascii=False) if marks else ""


def dumps_warnings(warnings: Sequence[str]) -> str:
    return json.dumps(list(warnings), ensure_ascii=False) if warnings else ""


def loads(text: str | None, empty):
    """A JSON cell of a CSV (``marks``, ``warnings``) back to its value; an empty cell is ``empty``."""
    if not text:
        return empty
    try:
        value = json.loads(text)
    except ValueError:
        return empty
    return value if isinstance(value, type(empty)) else empty


# ----------------------------------------------------------------------------- bold


@dataclass
class Entry:
    """One leaderboard row as the ranking sees it."""

    values: dict[str, list[float]]  # column -> the per-seed values (finite ones)
    marks: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    contender: bool = True  # False: the reference row, a failed row


def _differs(a: list[float], b: list[float], alpha: float) -> bool:
    """Whether Welch's t-test rejects equal means at ``alpha`` (two-sided)."""
    from scipy import stats

    if np.var(a) == 0 and np.var(b) == 0:  # the test is undefined; constant seeds differ iff means do
        return mean(a) != mean(b)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(a, b, equal_var=False).pvalue
    return bool(p < alpha) if math.isfinite(p) else mean(a) != mean(b)


def bold_cells(entries: Sequence[Entry], columns: Iterable[str], directions: dict[str, str],
               alpha: float = ALPHA) -> dict[str, set[int]]:
    """Column -> the indices of ``entries`` whose cell is bold (see the module's rules)."""
    out: dict[str, set[int]] = {}
    for column in columns:
        out[column] = set()
        direction = direction_of(column, directions)
        if direction == "none":
            continue
        contenders = [i for i, e in enumerate(entries)
                      if e.contender and not e.warnings and column not in e.marks and finite(e.values.get(column, []))]
        means = {i: mean(entries[i].values[column]) for i in contenders}
        if len(set(means.values())) < 2:  # one contender, or all tied: nothing stands out
            continue
        tested = [i for i in contenders if len(finite(entries[i].values[column])) >= 2]
        pool = tested or contenders  # a one-seed row competes only where no row can be tested
        pick = min if direction == "lower" else max
        best = pick(pool, key=lambda i: means[i])
        if not tested:
            out[column] = {i for i in pool if means[i] == means[best]}
            continue
        top = finite(entries[best].values[column])
        out[column] = {i for i in pool if i == best or not _differs(finite(entries[i].values[column]), top, alpha)}
    return out


# ----------------------------------------------------------------------------- summary across datasets


def iqm(scores: Iterable[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean, 25% cut at each end)."""
    from scipy import stats

    vals = np.asarray(finite(scores), dtype=float)
    return float(stats.trim_mean(vals, 0.25)) if len(vals) else math.nan


def stratified_bootstrap(strata: Sequence[Sequence[float]], statistic=iqm, reps: int = BOOTSTRAP_REPS,
                         seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float, float]:
    """``statistic`` of all scores pooled, and its percentile interval from ``reps`` stratified
    bootstrap resamples: each stratum (a dataset) resampled with replacement on its own (its seeds),
    so every resample keeps every dataset in its proportion.

    rliable implements the same, but its import chain (arch) fails against the installed pandas, so
    the resampling is written here with numpy: a fixed generator keeps published intervals
    byte-identical from one publish to the next."""
    strata = [np.asarray(finite(s), dtype=float) for s in strata]
    strata = [s for s in strata if len(s)]
    if not strata:
        return math.nan, math.nan, math.nan
    point = round(statistic(np.concatenate(strata)), 12)  # no 1e-17 where the scores cancel exactly
    rng = np.random.default_rng(seed)
    draws = [s[rng.integers(0, len(s), size=(reps, len(s)))] for s in strata]
    stats = np.array([statistic(np.concatenate([d[k] for d in draws])) for k in range(reps)])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return point, round(float(lo), 12), round(float(hi), 12)


def normalise(values: Sequence[float], model_means: Sequence[float], reference: float | None,
              direction: str) -> list[float]:
    """Per-seed values of one (dataset, metric) as scores where 0 is the worst model's mean and 1 is
    the real-data reference (held-out data scored like a model) or, without one, the best model's
    mean: ``(v - worst) / (anchor - worst)`` oriented so that better is higher.  A model better than
    the anchor scores above 1; a seed worse than the worst mean scores below 0."""
    means = finite(model_means)
    if not means or direction not in RANKED:
        return [math.nan for _ in values]
    worst = max(means) if direction == "lower" else min(means)
    best = min(means) if direction == "lower" else max(means)
    anchor = reference if reference is not None and finite([reference]) else best
    if (direction == "lower" and not anchor < worst) or (direction == "higher" and not anchor > worst):
        anchor = best  # the reference is no better than every model (a noisy floor): fall back
    if anchor == worst:
        return [math.nan for _ in values]
    return [(v - worst) / (anchor - worst) if finite([v]) else math.nan for v in values]


def summary_metric(columns_present: dict[str, int], directions: dict[str, str]) -> str | None:
    """The metric a dataset is scored by: the first of ``SUMMARY_METRICS`` with a direction that at
    least two models report (``columns_present``: column -> number of models with a value)."""
    for column in SUMMARY_METRICS:
        if columns_present.get(column, 0) >= 2 and direction_of(column, directions) != "none":
            return column
    return None


def summary_rows(datasets: dict[str, list[dict]], directions: dict[str, str], reference_model: str) -> list[dict]:
    """One row per (model, budget) of a suite: the IQM of its normalised scores over the suite's
    datasets with a stratified-bootstrap 95% interval, models scored on the most datasets first.

    ``datasets``: dataset -> its leaderboard rows, each a dict with ``model``, ``budget``,
    ``status``, ``values`` (column -> per-seed values), ``marks`` and ``warnings``.  A dataset
    enters where two or more models report its summary metric; flagged rows and marked cells stay
    out of the scores (they are not plain numbers), and so do failed rows."""
    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    used: dict[str, str] = {}
    left_out: dict[tuple[str, str], list[str]] = {}
    for dataset, rows in sorted(datasets.items()):
        contenders = [r for r in rows if r["model"] != reference_model and r["status"] in ("ok", "partial")]
        present: dict[str, int] = {}
        for r in contenders:
            for column, vals in r["values"].items():
                if finite(vals):
                    present[column] = present.get(column, 0) + 1
        metric = summary_metric(present, directions)
        if metric is None:
            continue
        used[dataset] = metric
        direction = direction_of(metric, directions)
        clean = [r for r in contenders
                 if not r["warnings"] and metric not in r["marks"] and finite(r["values"].get(metric, []))]
        for r in contenders:
            if r not in clean and finite(r["values"].get(metric, [])):
                why = "flagged" if r["warnings"] else "marked"
                left_out.setdefault((r["model"], r["budget"]), []).append(f"{dataset} ({why})")
        ref = next((mean(r["values"].get(metric, [])) for r in rows if r["model"] == reference_model), None)
        model_means = [mean(r["values"][metric]) for r in clean]
        for r in clean:
            vals = finite(r["values"][metric])
            scores.setdefault((r["model"], r["budget"]), {})[dataset] = normalise(vals, model_means, ref, direction)
    if len(used) < 2:
        return []
    out = []
    for key in sorted(set(left_out) - set(scores)):  # every value of the row was flagged or marked: say so
        out.append({"model": key[0], "budget": key[1], "iqm": math.nan, "iqm_low": math.nan, "iqm_high": math.nan,
                    "datasets": 0, "of_datasets": len(used), "scores": 0, "metrics": "",
                    "left_out": "; ".join(left_out[key])})
    for (model, budget), per_dataset in sorted(scores.items()):
        strata = [per_dataset[d] for d in sorted(per_dataset)]
        point, lo, hi = stratified_bootstrap(strata)
        out.append({"model": model, "budget": budget, "iqm": point, "iqm_low": lo, "iqm_high": hi,
                    "datasets": len(per_dataset), "of_datasets": len(used),
                    "scores": len(np.concatenate([np.asarray(s) for s in strata])),
                    "metrics": "; ".join(f"{d}: {used[d]}" for d in sorted(per_dataset)),
                    "left_out": "; ".join(left_out.get((model, budget), []))})
    # models scored on more datasets first: an IQM over one dataset does not outrank one over four
    out.sort(key=lambda r: (-r["datasets"], -(r["iqm"] if finite([r["iqm"]]) else -math.inf), r["model"], r["budget"]))
    return out
