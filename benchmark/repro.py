"""The reproduction suite: each family's published claim beside genbench's figure.

A leaderboard ranks implementations against each other; the reproduction suite checks each one
against its own paper.  ``repro.toml`` (shipped with the package) holds one entry per claim: the
model and dataset, a budget of minutes rather than seconds, the column that measures the claim, the
paper's figure and two thresholds that turn genbench's figure into a verdict:

* ``matches``: genbench's mean over the seeds is on the good side of ``match``;
* ``close``: it is on the good side of ``close`` but not of ``match``;
* ``does not``: neither.  The entry's ``note`` says what was measured to explain it.

A figure is either one column of the model's records, that column minus another column of the same
record (``minus``: e.g. the amortization gap minus the approximation gap), or the model's column
minus the same column of another model at the same budget (``relative_to``: e.g. IWAE's bound minus
the VAE's), paired by seed.  Papers report images and protocols that this machine cannot run; each
entry's ``protocol`` says how the paper's setting was scaled down.

``genbench run --suite repro`` runs every entry's trials; ``genbench publish`` writes the table as
``claims.csv`` beside the suite's leaderboards and renders it.  ``stability`` summarises how much a
family's headline figure moves across the seeds of any suite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from genbench.budget import Budget
from genbench.errors import GenbenchError
from genbench.formatting import md_text, number
from genbench.results import ci95

REPRO_SUITE = "repro"
REPRO_FILE = Path(__file__).with_name("repro.toml")
VERDICTS = ("matches", "close", "does not")

ENTRY_KEYS = {
    "model": "model name (see `genbench list`)",
    "dataset": "dataset name",
    "budget": 'budget string such as "60s"',
    "seeds": "number of seeds (whole number >= 1)",
    "config": "table of overrides of the model's config (may be empty)",
    "metric": "column of the record's metrics that measures the claim",
    "minus": "optional: a column of the same record subtracted from metric",
    "relative_to": "optional: a model whose metric (same dataset, budget, seed) is subtracted",
    "direction": '"higher" or "lower": which side of the thresholds is good',
    "paper": "the paper's figure in the metric's units (omit for a claim the paper shows only qualitatively)",
    "match": "threshold of a 'matches' verdict",
    "close": "threshold of a 'close' verdict",
    "claim": "one sentence: what the paper showed",
    "source": "the paper and where in it",
    "protocol": "the paper's protocol against the scaled one here, and why",
    "note": "optional: what was measured about this entry (a longer run, a sweep)",
}
REQUIRED = ("model", "dataset", "budget", "seeds", "metric", "direction", "match", "close", "claim", "source",
            "protocol")


@dataclass(frozen=True)
class Claim:
    model: str
    dataset: str
    budget: str
    seeds: int
    metric: str
    direction: str
    match: float
    close: float
    claim: str
    source: str
    protocol: str
    config: dict = field(default_factory=dict, hash=False)
    minus: str = ""
    relative_to: str = ""
    paper: float | None = None
    note: str = ""

    @property
    def figure_text(self) -> str:
        text = self.metric if not self.minus else f"{self.metric} - {self.minus}"
        return f"{text} ({self.model} - {self.relative_to})" if self.relative_to else text

    def good(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.direction == "higher" else value <= threshold

    def verdict(self, value: float) -> str:
        if self.good(value, self.match):
            return "matches"
        return "close" if self.good(value, self.close) else "does not"


def load_claims(path: str | Path = REPRO_FILE) -> list[Claim]:
    """Every ``[[entry]]`` of a reproduction file, checked: an error names the file, the entry and
    the key."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise GenbenchError(f"reproduction file {str(path)!r} cannot be read ({exc.strerror or exc}); "
                            "reinstall genbench or give the path of a TOML file with [[entry]] tables") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenbenchError(f"reproduction file {str(path)!r} is not valid TOML: {exc}") from None
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise GenbenchError(f"reproduction file {str(path)!r} has no [[entry]] tables")
    claims, seen = [], {}
    for i, raw in enumerate(entries, 1):
        where = f"reproduction file {str(path)!r}, entry {i}"
        claim = _claim(raw, where)
        key = (claim.model, claim.dataset, Budget.parse(claim.budget).text)
        if key in seen and seen[key] != claim.config:
            raise GenbenchError(f"{where}: {claim.model} on {claim.dataset} at {claim.budget} is already an "
                                "entry with another config; one leaderboard row is one setup, so give it "
                                "another budget")
        seen[key] = claim.config
        claims.append(claim)
    return claims


def _claim(raw, where: str) -> Claim:
    if not isinstance(raw, dict):
        raise GenbenchError(f"{where}: an entry is a table of keys ({', '.join(ENTRY_KEYS)})")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise GenbenchError(f"{where}: unknown keys {unknown}; allowed: {sorted(ENTRY_KEYS)}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise GenbenchError(f"{where}: missing {missing}; each entry needs {list(REQUIRED)}")

    def bad(key):
        return GenbenchError(f"{where}: {key} must be a {ENTRY_KEYS[key]}, got {raw[key]!r}")

    for key in ("model", "dataset", "budget", "metric", "claim", "source", "protocol", "minus", "relative_to",
                "note"):
        if key in raw and not isinstance(raw[key], str):
            raise bad(key)
    for key in ("match", "close", "paper"):
        if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], int | float)
                           or not math.isfinite(raw[key])):
            raise bad(key)
    if isinstance(raw["seeds"], bool) or not isinstance(raw["seeds"], int) or raw["seeds"] < 1:
        raise bad("seeds")
    if raw["direction"] not in ("higher", "lower"):
        raise bad("direction")
    if not isinstance(raw.get("config", {}), dict):
        raise bad("config")
    try:
        Budget.parse(raw["budget"])
    except GenbenchError as exc:
        raise GenbenchError(f"{where}: {exc}") from None
    claim = Claim(**{k: raw[k] for k in raw if k != "paper"},
                  paper=float(raw["paper"]) if "paper" in raw else None)
    if claim.direction == "higher" and claim.close > claim.match or \
            claim.direction == "lower" and claim.close < claim.match:
        raise GenbenchError(f"{where}: close ({claim.close}) must be easier to reach than match ({claim.match}) "
                            f"when {claim.direction} is better")
    return claim


def plan_repro_trials(manager, claims: list[Claim], profile: str = "quick") -> list:
    """The trials of every claim (and of the models claims are measured against), each once."""
    from genbench.suite import check_overrides, plan_trials

    trials, keys = [], set()
    for c in claims:
        check_overrides(manager.models.get(c.model), c.config, f"reproduction entry {c.model} on {c.dataset}")
        wanted = [(c.model, c.config)] + ([(c.relative_to, {})] if c.relative_to else [])
        for model, config in wanted:
            for t in plan_trials(manager, [model], [c.dataset], Budget.parse(c.budget), c.seeds, profile,
                                 config={model: config} if config else None):
                key = (t.model, t.dataset, t.seed, t.budget.kind, t.budget.amount)
                if key not in keys:
                    keys.add(key)
                    trials.append(t)
    return trials


# ----------------------------------------------------------------------------- figures and verdicts


def _config_of(row: dict) -> dict:
    cfg = row.get("config") or {}
    if isinstance(cfg, str):
        try:
            cfg = json.loads(cfg)
        except ValueError:
            cfg = {}
    return cfg if isinstance(cfg, dict) else {}


def _rows_of(rows: list[dict], model: str, claim: Claim, config: dict) -> dict[int, dict]:
    budget = Budget.parse(claim.budget)
    out = {}
    for r in rows:
        if (r["model"] == model and r["dataset"] == claim.dataset and r["budget_kind"] == budget.kind
                and math.isclose(float(r["budget_amount"]), budget.amount)
                and all(_config_of(r).get(k) == v for k, v in config.items())):
            out[int(r["seed"])] = r
    return out


def _value(row: dict, claim: Claim) -> float | None:
    def num(key):
        v = row.get(key)
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    v = num(claim.metric)
    if v is not None and claim.minus:
        w = num(claim.minus)
        v = None if w is None else v - w
    return v


def claim_row(claim: Claim, rows: list[dict], family: str = "") -> dict:
    """One line of the reproduction table: the paper's figure, genbench's (mean, 95% interval, over
    the seeds that finished), the verdict and its reason."""
    mine = _rows_of(rows, claim.model, claim, claim.config)
    other = _rows_of(rows, claim.relative_to, claim, {}) if claim.relative_to else {}
    values, missing = [], []
    for seed in range(claim.seeds):
        r = mine.get(seed)
        if r is None or r["status"] != "ok":
            missing.append(f"seed {seed}: " + ("not run" if r is None else (r.get("reason") or r["status"])))
            continue
        v = _value(r, claim)
        if claim.relative_to:
            o = other.get(seed)
            w = _value(o, claim) if o is not None and o["status"] == "ok" else None
            v = None if v is None or w is None else v - w
        if v is None:
            missing.append(f"seed {seed}: no {claim.figure_text}")
            continue
        values.append(v)
    mean, half = ci95(values)
    out = {"family": family, "model": claim.model, "dataset": claim.dataset, "budget": claim.budget,
           "claim": claim.claim, "source": claim.source, "figure": claim.figure_text, "direction": claim.direction,
           "paper": claim.paper, "genbench": mean if values else None,
           "genbench_ci95": half if len(values) > 1 else None, "seeds": f"{len(values)}/{claim.seeds}",
           "seeds_matching": sum(claim.good(v, claim.match) for v in values),
           "match": claim.match, "close": claim.close, "protocol": claim.protocol,
           "samples": next((r.get("samples") for r in mine.values() if r.get("samples")), "")}
    if not values:
        out["verdict"] = "not run"
        out["reason"] = "; ".join(missing) or "no trial"
        return out
    out["verdict"] = claim.verdict(mean)
    side = ">=" if claim.direction == "higher" else "<="
    reason = (f"genbench {mean:.4g} (seeds meeting 'matches': {out['seeds_matching']}/{len(values)}); "
              f"matches needs {side} {claim.match:g}, close {side} {claim.close:g}")
    if missing:
        reason += "; " + "; ".join(missing)
    if claim.note:
        reason += ". " + claim.note
    out["reason"] = reason
    return out


def claims_table(claims: list[Claim], rows: list[dict], families: dict[str, str] | None = None) -> list[dict]:
    families = families or {}
    return [claim_row(c, rows, families.get(c.model, "")) for c in claims]


# ----------------------------------------------------------------------------- stability across seeds


def headline_metric(rows: list[dict]) -> str | None:
    """The figure a family's stability is judged by: FID on images, mode KL on toy mixtures, NLL
    otherwise (every one lower-is-better)."""
    for m in ("fid", "mode_kl", "nll"):
        if any(isinstance(r.get(m), int | float) and math.isfinite(r[m]) for r in rows):
            return m
    return None


UNSTABLE_RATIO = 2.0  # worst seed / best seed above which a row is called unstable ...
UNSTABLE_SPREAD = {"fid": 10.0, "mode_kl": 0.1, "nll": 1.0}  # ... when they also differ by this much


def stability(rows: list[dict]) -> list[dict]:
    """Per (dataset, model, budget) with at least two finished seeds: the headline figure of every
    seed, its median, best and worst, and whether a seed failed or the worst seed is both more than
    UNSTABLE_RATIO times the best and worse by UNSTABLE_SPREAD (so 0.002 against 0.004 nats of mode
    KL, two near-perfect fits, is not called unstable)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("status") in ("ok", "failed", "partial"):
            groups.setdefault((r["dataset"], r["model"], r.get("budget", "")), []).append(r)
    out = []
    for (dataset, model, budget), rs in sorted(groups.items()):
        metric = headline_metric(rs)
        if metric is None:
            continue
        rs = sorted(rs, key=lambda r: int(r["seed"]))
        vals = [(int(r["seed"]), r.get(metric) if r["status"] == "ok" else None) for r in rs]
        finite = sorted(v for _, v in vals if isinstance(v, int | float) and math.isfinite(v))
        if len(vals) < 2 or not finite:
            continue
        best, worst = finite[0], finite[-1]
        failed = sum(1 for _, v in vals if v is None or not math.isfinite(v))
        ratio = worst / best if best > 0 else None
        unstable = failed > 0 or (ratio is not None and ratio > UNSTABLE_RATIO
                                  and worst - best > UNSTABLE_SPREAD[metric])
        out.append({"dataset": dataset, "model": model, "budget": budget, "metric": metric,
                    "per_seed": " / ".join("failed" if v is None else f"{v:.4g}" for _, v in vals),
                    "median": finite[len(finite) // 2] if len(finite) % 2 else
                    (finite[len(finite) // 2 - 1] + finite[len(finite) // 2]) / 2,
                    "best": best, "worst": worst, "worst_over_best": ratio, "failed_seeds": failed,
                    "verdict": "unstable" if unstable else "stable"})
    return out


def stability_plot(table: list[dict], trial_rows: list[dict], path: Path) -> Path | None:
    """One panel per dataset: every seed's headline figure per model (log axis), so a family that
    works for one seed in three shows as one low dot and two high ones."""
    if not table:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = sorted({t["dataset"] for t in table})
    fig = Figure(figsize=(9, 2.8 * len(datasets)), dpi=90)
    FigureCanvasAgg(fig)
    for k, ds in enumerate(datasets, 1):
        ax = fig.add_subplot(len(datasets), 1, k)
        lines = [t for t in table if t["dataset"] == ds]
        metric = lines[0]["metric"]
        for i, t in enumerate(lines):
            ys = [r[metric] for r in trial_rows if r["dataset"] == ds and r["model"] == t["model"]
                  and r.get("budget", "") == t["budget"] and r.get("status") == "ok"
                  and isinstance(r.get(metric), int | float) and math.isfinite(r[metric]) and r[metric] > 0]
            ax.scatter([i] * len(ys), ys, color="tab:red" if t["verdict"] == "unstable" else "tab:blue", s=18)
        ax.set_yscale("log")
        ax.set_xticks(range(len(lines)), [t["model"] for t in lines], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric} (lower is better)", fontsize=8)
        ax.set_title(f"{ds}: one dot per seed (red: unstable)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------------- publishing

CLAIMS_CSV = "claims.csv"
STABILITY_CSV = "stability.csv"
STABILITY_PNG = "plots/stability.png"
CLAIM_COLUMNS = ("family", "model", "dataset", "budget", "verdict", "paper", "genbench", "genbench_ci95", "seeds",
                 "seeds_matching", "figure", "direction", "match", "close", "claim", "source", "protocol", "reason",
                 "samples")
STABILITY_COLUMNS = ("dataset", "model", "budget", "metric", "per_seed", "median", "best", "worst",
                     "worst_over_best", "failed_seeds", "verdict")


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    import pandas as pd

    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=list(columns)).to_csv(
        index=False, float_format="%.6g")


def render_suite(out_dir: Path, suite_dir: Path, trial_rows: list[dict], write, families: dict | None = None,
                 claims: list[Claim] | None = None) -> tuple[list[str], list[Path]]:
    """The reproduction table (for the ``repro`` suite) and the stability table and figure (for a
    suite with two or more seeds of a row), written beside the suite's CSVs with ``write(path, text)``;
    returns the README lines and the files written."""
    from urllib.parse import quote

    def link(path: Path) -> str:
        return quote(path.relative_to(out_dir).as_posix())

    lines, files = [], []
    if suite_dir.name == REPRO_SUITE:
        families = {**(families or {}), **{r["model"]: r["family"] for r in trial_rows if r.get("family")}}
        table = claims_table(load_claims() if claims is None else claims, trial_rows, families)
        path = suite_dir / CLAIMS_CSV
        write(path, _csv(table, CLAIM_COLUMNS))
        files.append(path)
        counts = {v: sum(r["verdict"] == v for r in table) for v in (*VERDICTS, "not run")}
        lines += [f"## {suite_dir.name}: paper vs genbench", "",
                  "Each family's published claim under its paper's protocol, scaled to minutes on this machine "
                  "(the *protocol* column says how), beside genbench's figure: the mean over seeds ± a 95% "
                  "interval. *matches*: the mean is on the good side of the entry's match threshold; *close*: "
                  "of its close threshold; *does not*: neither, with what was measured in *reason*. "
                  f"Verdicts: {', '.join(f'{n} {v}' for v, n in counts.items() if n)}. "
                  f"Table: [{CLAIMS_CSV}]({link(path)}); entries: `genbench/repro.toml`; "
                  "run them with `genbench run --suite repro`.", "",
                  "| family | model | dataset | budget | claim (source) | figure | paper | genbench | verdict | "
                  "reason | protocol | samples |",
                  "|:--|:--|:--|:--|:--|:--|--:|--:|:--|:--|:--|:--|"]
        for r in table:
            ci = r["genbench_ci95"]
            ours = number(r["genbench"]) + (f" ± {number(ci)}" if ci is not None else "")
            grid = (f"![{md_text(r['model'])}]({quote(str(Path(suite_dir.name) / r['samples']))})"
                    if r.get("samples") and (suite_dir / r["samples"]).exists() else "")
            cells = [*(md_text(r[k]) for k in ("family", "model", "dataset", "budget")),
                     f"{md_text(r['claim'])} ({md_text(r['source'])})", md_text(r["figure"]),
                     number(r["paper"]) or "qualitative", ours, f"**{r['verdict']}**", md_text(r["reason"]),
                     md_text(r["protocol"]), grid]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    table = stability(trial_rows)
    if table and max(len(t["per_seed"].split(" / ")) for t in table) >= 3:
        path = suite_dir / STABILITY_CSV
        write(path, _csv(table, STABILITY_COLUMNS))
        files.append(path)
        plot = stability_plot(table, trial_rows, suite_dir / STABILITY_PNG)
        files.append(plot)
        unstable = [t for t in table if t["verdict"] == "unstable"]
        lines += [f"## {suite_dir.name}: stability across seeds", "",
                  "Every seed's headline figure (FID on images, mode KL on toy mixtures, NLL otherwise; lower is "
                  f"better). A row is *unstable* when a seed failed or its worst seed is more than "
                  f"{UNSTABLE_RATIO:g}× its best and worse by at least "
                  + ", ".join(f"{v:g} ({k})" for k, v in UNSTABLE_SPREAD.items())
                  + f": {len(unstable)} of {len(table)} rows. "
                  f"Table: [{STABILITY_CSV}]({link(path)}).", "",
                  f"![stability]({link(plot)})", "",
                  "| dataset | model | budget | metric | per seed | worst / best | verdict |",
                  "|:--|:--|:--|:--|:--|--:|:--|"]
        for t in table:
            cells = [*(md_text(t[k]) for k in ("dataset", "model", "budget")), t["metric"], t["per_seed"],
                     number(t["worst_over_best"]), t["verdict"]]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines, files
