"""`genbench publish`: leaderboards a reader can trust, open and merge.

From the trial records of a runs folder (what `genbench run` writes) this writes, per suite and
dataset::

    <out>/<suite>/<dataset>.csv          one row per (model, budget): each metric as the mean over
                                         seeds and the half-width of its 95% interval (``<col>_ci95``),
                                         the status, and the row's provenance
    <out>/<suite>/<dataset>-trials.csv   one row per trial (every seed): the source of the rows above
    <out>/<suite>/samples/*.png          one sample picture per row (its lowest seed that finished)
    <out>/<suite>/plots/*.png            budget curves: a headline metric against the budget
    <out>/<suite>/summary.csv            where the suite has two or more datasets: per model, the
                                         interquartile mean of normalised scores across them with a
                                         stratified-bootstrap 95% interval
    <out>/README.md                      every table rendered as one page

Marks, flags and bold follow :mod:`genbench.ranking`: a value whose own diagnostic failed, or that
sits at or below its chance level, is marked (†) with its reason in the row's ``notes``; a row with
a finding about the whole trial (it copies training data) is flagged (⚠); bold is the best mean and
every model that Welch's t-test on the per-seed values does not separate from it.

Every row says where it came from: genbench, torch, torch-fidelity and Python versions, the git
commit of the code that ran, the device, the budget (kind, amount, what was used), the evaluation
profile, each estimator's settings and sample counts (``estimators``, JSON), the feature extractor
and its weights hash, the model config and its hash, the date the row's last trial finished, and
the command that reproduces it.

What makes the files trustworthy:

* Deterministic.  The same records give byte-identical CSVs: no publish-time dates, rows and
  columns in a fixed order, floats written as Python's shortest repr that reads back to the same
  float (``float(cell)`` is exactly the recorded value).
* Mergeable.  Rows are keyed by (model, budget) within a (suite, dataset) file.  Records for a key
  replace the published trials of that key when their config hash differs (the config or the
  protocol changed) and join them seed by seed when it is the same (more seeds, or seeds run on
  another machine); keys the records do not mention are kept as published.  The per-trial CSV is
  the source of truth: the leaderboard CSV is recomputed from it, so a row is never duplicated.
* Never loses or invents a result.  The newest trial wins (by its ``finished`` time): an older
  runs folder published again leaves newer published rows as they are, and a failed trial never
  replaces a finished one (a failed setup never replaces a published setup that has finished
  trials).  A published trial row is kept only while it carries the provenance of a real record
  (``trial_key``, ``config_hash``, ``finished``); one without is dropped, and a metric value that
  is not a number is left out; each of these is one line in :attr:`Published.warnings`.
* Safe to open.  A text cell that a spreadsheet would run as a formula (one starting with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading apostrophe, and so does one
  starting with an apostrophe, so reading a cell back is unambiguous (:func:`unescape_text`).
  Numbers are never written as text, so negative numbers stay numbers.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import re
import shlex
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from genbench.errors import GenbenchError
from genbench.formatting import md_text, number
from genbench.overrides import set_text
from genbench.ranking import (
    FLAG,
    MARK,
    TEST,
    ColumnFacts,
    Entry,
    bold_cells,
    chance_marks,
    direction_of,
    dumps_marks,
    dumps_warnings,
    finite,
    flagged,
    loads,
    marked,
    merge_marks,
    metric_directions,
    notes_text,
    summary_rows,
)
from genbench.repro import REPRO_SUITE, render_suite
from genbench.results import (
    REFERENCE_MODEL,
    atomic_write_bytes,
    atomic_write_text,
    ci95,
    load_records,
    metric_selection,
    record_setup,
    summarise_seeds,
)

TEXT, INT, FLOAT, BOOL = "text", "int", "float", "bool"

THUMB = 280  # widest sample picture shown in a README table, in pixels (an 8 x 8 grid of 32-pixel images)
TABLE_METRICS = 6  # metric columns of a README table; the CSV linked under it has all of them
# a README table shows a likelihood once: in bits/dim where there is a bits/dim column
TWINS = {"nll": "bpd", "iwae": "iwae_bpd", "ais": "ais_bpd"}
# Budget curves: per group, the first column present is plotted (bits/dim where there is one).
CURVES = (("fid",), ("bpd", "nll"), ("iwae_bpd", "iwae"), ("ais_bpd", "ais"), ("hq_pct",), ("fid_target",))
# curves drawn on a log y axis: a distance between distributions spans orders of magnitude over a
# budget range (FID 300 at a tiny budget, 20 at a large one); any other positive metric whose values
# span a factor of ten or more is drawn on one too
LOG_Y = ("fid", "fid_target", "fid_inception", "kid")
BUDGET_UNITS = {"seconds": "compute seconds", "steps": "optimisation steps", "flops": "FLOPs"}

# Columns of the per-trial CSV around the metric columns, with the type each is written as.
TRIAL_HEAD = (("suite", TEXT), ("dataset", TEXT), ("model", TEXT), ("family", TEXT), ("budget", TEXT),
              ("budget_kind", TEXT), ("budget_amount", FLOAT), ("seed", INT), ("status", TEXT),
              ("used_seconds", FLOAT), ("used_steps", INT), ("used_flops", FLOAT), ("flops_exact", BOOL),
              ("overrun", FLOAT), ("train_s", FLOAT), ("eval_s", FLOAT))
PROVENANCE = (("profile", TEXT), ("estimators", TEXT), ("extractor", TEXT), ("extractor_weights", TEXT),
              ("config_hash", TEXT), ("config", TEXT), ("plugin", TEXT), ("device", TEXT),
              ("genbench_version", TEXT), ("torch_version", TEXT), ("torch_fidelity_version", TEXT),
              ("python_version", TEXT), ("git_commit", TEXT))
# ``marks`` (column -> reason, JSON), ``warnings`` (JSON list), ``selection`` (the model-selection
# history, JSON) and ``metric_selection`` (--metrics / --skip-metrics, JSON; empty: every metric) are
# the record's own fields: a leaderboard is recomputed from this file alone
TRIAL_TAIL = (("reason", TEXT), ("fault", TEXT), ("metric_errors", TEXT), ("empty_cells", TEXT), ("marks", TEXT),
              ("warnings", TEXT), ("selection", TEXT), ("metric_selection", TEXT), *PROVENANCE,
              ("trial_key", TEXT), ("trial_id", TEXT), ("started", TEXT), ("finished", TEXT), ("command", TEXT),
              ("samples", TEXT))
# Columns of the leaderboard CSV around the metric columns (each metric ``m`` is ``m``, ``m_ci95``).
BOARD_HEAD = (("suite", TEXT), ("dataset", TEXT), ("model", TEXT), ("family", TEXT), ("budget", TEXT),
              ("budget_kind", TEXT), ("budget_amount", FLOAT), ("status", TEXT), ("seeds", INT),
              ("seeds_ok", INT), ("used_seconds", FLOAT), ("used_steps", INT), ("used_flops", FLOAT))
# ``notes``: why a cell is marked and what was found about the row, as a reader reads it; ``marks``
# and ``warnings``: the same as JSON, for programs
BOARD_TAIL = (("notes", TEXT), ("marks", TEXT), ("warnings", TEXT), ("reason", TEXT), ("metric_errors", TEXT),
              ("empty_cells", TEXT), *PROVENANCE, ("date", TEXT),
              ("command", TEXT), ("samples", TEXT))
KEY = ("model", "budget_kind", "budget_amount")  # a row of a (suite, dataset) file
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


# ----------------------------------------------------------------------------- cells


def escape_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: a leading apostrophe before a formula start."""
    return "'" + text if text.startswith(FORMULA_START) else text


def unescape_text(cell: str) -> str:
    """The text that :func:`escape_text` escaped."""
    return cell[1:] if cell.startswith("'") else cell


def format_cell(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if kind == TEXT:
        return escape_text(str(value))
    if kind == BOOL:
        return "true" if value else "false"
    if kind == INT:
        return str(int(value))
    value = float(value)
    return repr(value) if math.isfinite(value) else ""


def parse_cell(cell: str, kind: str, where: str):
    if kind == TEXT:
        return unescape_text(cell)
    if cell == "":
        return None
    try:
        if kind == BOOL:
            return {"true": True, "false": False}[cell.lower()]
        if kind == INT:
            try:
                return int(cell)
            except ValueError:  # boards published before step counts were whole numbers hold their mean
                return round(float(cell))
        return float(cell)
    except (KeyError, ValueError):
        raise GenbenchError(f"{where}: {cell!r} is not a {kind}; the published CSVs are written by "
                            "`genbench publish`: restore the file from version control or delete it to publish "
                            "afresh") from None


@dataclass
class Table:
    """One published CSV: typed columns and rows of plain Python values (text unescaped)."""

    columns: list[str]
    types: dict[str, str]
    rows: list[dict] = field(default_factory=list)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([escape_text(c) for c in self.columns])
        for row in self.rows:
            writer.writerow([format_cell(row.get(c), self.types[c]) for c in self.columns])
        return buf.getvalue()

    def frame(self) -> pd.DataFrame:
        """The table as pandas sees it once read back (numbers as floats, text as text)."""
        return pd.DataFrame([[row.get(c) for c in self.columns] for row in self.rows], columns=self.columns)

    @classmethod
    def read(cls, path: Path, head: tuple, tail: tuple, metric_suffix: bool = False) -> Table:
        fixed = dict(head + tail)
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            try:
                header = [unescape_text(c) for c in next(reader)]
            except StopIteration:
                header = []
            missing = [c for c in (*KEY, "seed" if not metric_suffix else "seeds", "config_hash") if c not in header]
            if missing:
                raise GenbenchError(f"{path} is not a genbench leaderboard CSV (no columns {missing}); move it "
                                    "away or choose another --out")
            types = {c: fixed.get(c, FLOAT) for c in header}
            rows = []
            for n, cells in enumerate(reader, start=2):
                if len(cells) != len(header):
                    raise GenbenchError(f"{path}, line {n}: {len(cells)} cells for {len(header)} columns; restore "
                                        "the file from version control or delete it to publish afresh")
                rows.append({c: parse_cell(v, types[c], f"{path}, line {n}, column {c}")
                             for c, v in zip(header, cells)})
        return cls(header, types, rows)


def trial_table(rows: list[dict], facts: ColumnFacts) -> Table:
    """The per-trial CSV: metric columns in the registered metrics' headline order, then the rest
    alphabetically (a column of a metric not installed at publish time is one of the rest)."""
    metrics = facts.order({c for r in rows for c in r} - {c for c, _ in TRIAL_HEAD + TRIAL_TAIL})
    types = {**dict(TRIAL_HEAD), **{m: FLOAT for m in metrics}, **dict(TRIAL_TAIL)}
    return Table([c for c, _ in TRIAL_HEAD] + metrics + [c for c, _ in TRIAL_TAIL], types, sort_rows(rows))


def board_table(rows: list[dict], metrics: list[str]) -> Table:
    cols = [c for m in metrics for c in (m, f"{m}_ci95")]
    types = {**dict(BOARD_HEAD), **{c: FLOAT for c in cols}, **dict(BOARD_TAIL)}
    return Table([c for c, _ in BOARD_HEAD] + cols + [c for c, _ in BOARD_TAIL], types, sort_rows(rows))


def sort_rows(rows: list[dict]) -> list[dict]:
    """Budgets in order, models by name, the reference row last, seeds in order."""
    return sorted(rows, key=lambda r: (r["model"] == REFERENCE_MODEL, r["budget_kind"], r["budget_amount"],
                                       r["model"], r.get("seed") or 0))


# ----------------------------------------------------------------------------- records -> trial rows


def _known_config(rec: dict) -> bool:
    # a trial that died before its config was built (a crashed or hung worker) records {}
    return bool(rec.get("config")) or rec.get("status") == "reference"


def select_records(records: list[dict]) -> dict[tuple, list[dict]]:
    """Per (suite, dataset, model, budget kind, amount): the records of its newest setup, one per seed.

    A runs folder can hold several setups of one row (the config or the profile changed between
    runs); the one whose latest trial finished last is the row.  Failed records that do not know
    their config fill in the seeds that setup lacks."""
    by_row: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        b = rec["budget"]
        by_row[(rec["suite"], rec["dataset"], rec["model"], b["kind"], float(b["amount"]))].append(rec)
    out = {}
    for row_key, recs in by_row.items():
        setups: dict[str, list[dict]] = defaultdict(list)
        for rec in recs:
            if _known_config(rec):
                setups[record_setup(rec)].append(rec)
        unknown = [r for r in recs if not _known_config(r)]
        if setups:
            chosen = max(setups, key=lambda h: (max(r.get("finished") or "" for r in setups[h]), h))
            picked = _one_per_seed(setups[chosen])
            seen = {r["seed"] for r in picked}
            picked += [r for r in _one_per_seed(unknown) if r["seed"] not in seen]
            setup = chosen
        else:
            picked = _one_per_seed(unknown)
            setup = record_setup(picked[0])
        out[row_key] = [(rec, setup) for rec in sorted(picked, key=lambda r: r["seed"])]
    return out


def _one_per_seed(recs: list[dict]) -> list[dict]:
    newest = {}
    for rec in sorted(recs, key=lambda r: (r.get("finished") or "", r.get("trial_id") or "")):
        newest[rec["seed"]] = rec
    return list(newest.values())


def _pairs(mapping: dict | None) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted((mapping or {}).items()))


def split_extractor(fingerprint: str | None) -> tuple[str, str]:
    """"name@hash; name@hash" -> ("name; name", "hash; hash")."""
    if not fingerprint:
        return "", ""
    names, hashes = [], []
    for part in fingerprint.split("; "):
        name, _, weights = part.partition("@")
        names.append(name)
        hashes.append(weights)
    return "; ".join(names), "; ".join(hashes)


def budget_text(budget: dict) -> str:
    return "" if budget["kind"] == "none" else str(budget.get("text") or budget["amount"])


def reproduce_command(suite: str, model: str, dataset: str, budget: str, seeds: int, profile: str,
                      overrides: dict | None = None, selection: dict | None = None) -> str:
    """The `genbench run` command that produces the row (finished trials are skipped, so running it
    where the row's records are only adds what is missing)."""
    if model == REFERENCE_MODEL:
        parts = ["genbench", "run", "--model", "MODEL", "--dataset", dataset, "--profile", profile]
        if suite != profile:
            parts += ["--suite", suite]
        return shlex.join(parts) + "  # MODEL: any model; every run on an image dataset computes this row"
    parts = ["genbench", "run", "--model", model, "--dataset", dataset, "--budget", budget, "--seeds", str(seeds),
             "--profile", profile]
    if suite != profile:
        parts += ["--suite", suite]
    # each config override as a --set flag; a value no flag can spell (a dict) goes to a suite file
    in_file = {}
    for name, value in sorted((overrides or {}).items()):
        flag = set_text(value)
        if flag is None:
            in_file[name] = value
        else:
            parts += ["--set", f"{model}.{name}={flag}"]
    for flag, key in (("--metrics", "metrics"), ("--skip-metrics", "skip_metrics")):
        if selection and selection.get(key):
            parts += [flag, ",".join(selection[key])]
    text = shlex.join(parts)
    if in_file:
        sets = ", ".join(f"{k} = {json.dumps(v)}" for k, v in in_file.items())
        text += f"  # plus --suite-file FILE.toml with [config.{model}] {sets}"
    return text


def config_overrides(model: str, config: dict, defaults: dict[str, dict]) -> dict | None:
    """The fields of ``config`` that differ from the family's defaults (None: family unknown here)."""
    if model not in defaults or not config:
        return None
    base = json.loads(json.dumps(defaults[model], default=str))
    return {k: v for k, v in config.items() if base.get(k, object()) != v}


def trial_row(rec: dict, setup: str, defaults: dict[str, dict], notes: list[str] | None = None) -> dict:
    """One record as a flat row of the per-trial CSV; a metric value that is not a number is left
    out, with one line in ``notes``."""
    used, timings, ver = rec.get("used") or {}, rec.get("timings") or {}, rec.get("versions") or {}
    budget = rec["budget"]
    extractor, weights = split_extractor(rec.get("extractor"))
    config = rec.get("config") or {}
    profile = rec.get("profile", "")
    row = {
        "suite": rec["suite"], "dataset": rec["dataset"], "model": rec["model"], "family": rec.get("family") or "",
        "budget": budget_text(budget), "budget_kind": budget["kind"], "budget_amount": float(budget["amount"]),
        "seed": int(rec["seed"]), "status": rec["status"],
        "used_seconds": used.get("seconds"), "used_steps": used.get("steps"), "used_flops": used.get("flops"),
        "flops_exact": used.get("flops_exact"), "overrun": used.get("overrun"),
        "train_s": timings.get("train_s"), "eval_s": timings.get("eval_s"),
        "reason": rec.get("reason") or "", "fault": rec.get("fault") or "",
        "metric_errors": _pairs(rec.get("metric_errors")), "empty_cells": _pairs(rec.get("not_applicable")),
        "profile": profile, "estimators": json.dumps(rec.get("estimators") or {}, sort_keys=True),
        "extractor": extractor, "extractor_weights": weights, "config_hash": setup,
        "config": json.dumps(config, sort_keys=True) if config else "", "plugin": rec.get("plugin") or "",
        "device": rec.get("device") or "", "genbench_version": ver.get("genbench", ""),
        "torch_version": ver.get("torch", ""), "torch_fidelity_version": ver.get("torch_fidelity", ""),
        "python_version": ver.get("python", ""),
        "git_commit": ver.get("git_commit") or rec.get("git_commit") or "unknown",
        "trial_key": rec.get("config_hash") or "", "trial_id": rec.get("trial_id") or "",
        "started": rec.get("started") or "", "finished": rec.get("finished") or "",
        "command": reproduce_command(rec["suite"], rec["model"], rec["dataset"], budget_text(budget),
                                     int(rec["seed"]) + 1, profile,
                                     config_overrides(rec["model"], config, defaults), metric_selection(rec)),
        "samples": "",
        "marks": dumps_marks(rec.get("marks") or {}), "warnings": dumps_warnings(rec.get("warnings") or []),
        "selection": json.dumps(rec["selection"], sort_keys=True, default=str) if rec.get("selection") else "",
        "metric_selection": json.dumps(metric_selection(rec), sort_keys=True) if metric_selection(rec) else "",
    }
    for name, value in {**(rec.get("metrics") or {}), **(rec.get("invalid_metrics") or {})}.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            row[name] = float(value)
        elif value is None:  # measured but not finite (the record stores NaN as null): an empty cell
            row[name] = None
        elif notes is not None:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
            notes.append(f"{rec.get('trial_id') or _describe(row)}: metric {name!r} has the non-numeric value "
                         f"{shown} ({type(value).__name__}); left out of the CSVs")
    return row


# ----------------------------------------------------------------------------- trial rows -> leaderboard rows


def _joined(rows: list[dict], column: str) -> str:
    """The distinct values of a provenance column over a row's trials (normally exactly one)."""
    seen = []
    for r in rows:
        v = r.get(column) or ""
        if v and v not in seen:
            seen.append(v)
    return " | ".join(seen)


def aggregate(rows: list[dict], metrics: list[str], defaults: dict[str, dict],
              directions: dict[str, str] | None = None) -> dict:
    """The leaderboard row of one (model, budget): means and 95% intervals over the seeds that
    finished; status ok / partial / failed / reference; failed seeds with their reasons."""
    rows = sorted(rows, key=lambda r: r["seed"])
    ok = [r for r in rows if r["status"] in ("ok", "reference")]
    first = (ok or rows)[0]
    if first["status"] == "reference":
        status = "reference"
    else:
        status = "ok" if ok and len(ok) == len(rows) else ("partial" if ok else "failed")
    out = {c: first[c] for c in ("suite", "dataset", "model", "family", "budget", "budget_kind", "budget_amount")}
    out.update(status=status, seeds=len(rows), seeds_ok=len(ok))
    for key in ("used_seconds", "used_steps", "used_flops"):
        out[key] = ci95([r.get(key) for r in ok])[0] if ok else None
    if out["used_steps"] is not None and math.isfinite(out["used_steps"]):
        out["used_steps"] = round(out["used_steps"])  # a step count is a whole number
    # the metric cells, marks and findings of the terminal leaderboard's row, by the same code
    summary = summarise_seeds([(r["seed"], r, loads(r.get("marks"), {}), loads(r.get("warnings"), [])) for r in ok],
                              metrics, directions)
    out.update(summary.cells)
    marks, found = summary.marks, summary.warnings
    out.update(notes=notes_text(marks, found), marks=dumps_marks(marks), warnings=dumps_warnings(found))
    out["reason"] = "; ".join(f"seed {r['seed']}: {r['reason']}" for r in rows if r["status"] == "failed")
    out["metric_errors"] = "; ".join(f"seed {r['seed']}: {r['metric_errors']}" for r in rows if r["metric_errors"])
    out["empty_cells"] = first.get("empty_cells") or ""
    for col, _ in PROVENANCE:
        out[col] = _joined(ok or rows, col)
    out["date"] = max((r.get("finished") or "" for r in rows), default="")
    config = json.loads(first["config"]) if first.get("config") else {}
    out["command"] = reproduce_command(first["suite"], first["model"], first["dataset"], first["budget"],
                                       max(r["seed"] for r in rows) + 1, first.get("profile") or "",
                                       config_overrides(first["model"], config, defaults),
                                       json.loads(first.get("metric_selection") or "null"))
    out["samples"] = next((r["samples"] for r in rows if r.get("samples")), "")
    return out


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in KEY)


_EPOCH = _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
_HASH = re.compile(r"[0-9a-f]{16}")


def finished_at(row: dict) -> _dt.datetime | None:
    """When a trial row's trial finished (its ``finished`` cell), None when it does not say."""
    try:
        when = _dt.datetime.fromisoformat(str(row.get("finished") or ""))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def _newest(rows: list[dict]) -> _dt.datetime:
    return max((finished_at(r) or _EPOCH for r in rows), default=_EPOCH)


def _finished(row: dict) -> bool:
    return row["status"] in ("ok", "reference")


def _describe(row: dict) -> str:
    return f"{row['model']} {row.get('budget') or '-'} seed {row['seed']}"


def _replaces(new: dict, old: dict) -> bool:
    """Whether the trial row ``new`` replaces the published ``old`` of the same setup and seed: a
    failed trial never replaces a finished one; otherwise the newer one wins (a tie: the new one)."""
    if _finished(old) and not _finished(new):
        return False
    if _finished(new) and not _finished(old):
        return True
    return (finished_at(new) or _EPOCH) >= (finished_at(old) or _EPOCH)


def merge_trials(published: list[dict], new: list[dict], notes: list[str] | None = None) -> list[dict]:
    """Published trial rows updated with new ones: per (model, budget), new rows replace the
    published ones when the config hash differs and join them by seed when it is the same.

    The newest wins: new rows of another config replace the published ones only when their
    newest trial finished no earlier than the published ones' newest, and only when they have a
    finished trial or the published ones have none; a new row of the same config replaces the
    published row of its seed by :func:`_replaces`.  What is kept instead of a new row is one line
    in ``notes``.

    Rows of trials that died before their config was known (a crashed worker) are taken to be new
    attempts at the published setup: they replace the same seeds where those did not finish."""
    notes = notes if notes is not None else []
    incoming: dict[tuple, list[dict]] = defaultdict(list)
    for r in new:
        incoming[row_key(r)].append(r)
    merged = [r for r in published if row_key(r) not in incoming]
    for key, rows in incoming.items():
        old = [r for r in published if row_key(r) == key]
        if not old:
            merged += rows
            continue
        if not any(r.get("config") for r in rows):
            for r in rows:
                r["config_hash"] = old[0]["config_hash"]
        if {r["config_hash"] for r in old} == {rows[0]["config_hash"]}:
            by_seed = {r["seed"]: r for r in old}
            for r in rows:
                current = by_seed.get(r["seed"])
                if current is None or _replaces(r, current):
                    by_seed[r["seed"]] = r
                elif _finished(current) and not _finished(r):
                    notes.append(f"{_describe(r)}: the failed trial ({r.get('finished') or 'no date'}) does not "
                                 f"replace the published finished one ({current.get('finished') or 'no date'})")
                else:
                    notes.append(f"{_describe(r)}: the published trial ({current.get('finished')}) is newer than "
                                 f"the record ({r.get('finished') or 'no date'}) and is kept")
            merged += list(by_seed.values())
        elif not any(_finished(r) for r in rows) and any(_finished(r) for r in old):
            merged += old
            notes.append(f"{rows[0]['model']} {rows[0].get('budget') or '-'}: the records (another config) all failed; "
                         "the published finished trials are kept")
        elif _newest(rows) < _newest(old):
            merged += old
            notes.append(f"{rows[0]['model']} {rows[0].get('budget') or '-'}: the published trials (another config, "
                         f"finished {max(r.get('finished') or '' for r in old)}) are newer than the records "
                         f"(finished {max(r.get('finished') or '' for r in rows) or 'no date'}) and are kept")
        else:
            merged += rows
    return merged


def provenance_gap(row: dict) -> str | None:
    """Why a published trial row is not backed by a real record (None: it is): every row that
    `genbench publish` writes from a record has a trial key, a config hash and a finished time; a
    reference row has a config hash and its trial id."""
    if not _HASH.fullmatch(str(row.get("config_hash") or "")):
        return "it has no config_hash"
    if row.get("status") == "reference":
        return None if str(row.get("trial_id") or "").startswith(f"{REFERENCE_MODEL}--") else "it has no trial_id"
    if not _HASH.fullmatch(str(row.get("trial_key") or "")):
        return "it has no trial_key"
    if finished_at(row) is None:
        return "it has no finished time"
    return None


def backed_rows(table: Table, path: Path, notes: list[str]) -> list[dict]:
    """The rows of a published per-trial CSV that carry a real record's provenance; each other row
    is dropped with one line in ``notes``.  (The published CSVs are the only copy of old runs, so a
    row with its provenance is kept although no record in this runs folder backs it.)"""
    kept = []
    for n, row in enumerate(table.rows, start=2):
        gap = provenance_gap(row)
        if gap is None:
            kept.append(row)
        else:
            notes.append(f"{path}, line {n}: row {_describe(row)} dropped: {gap}, so no trial record backs it "
                         "(rows that `genbench publish` writes carry trial_key, config_hash and finished)")
    return kept


# ----------------------------------------------------------------------------- file names


def safe_name(name: str) -> str:
    """A file-name-safe form of a plugin's name (with a short hash when characters were replaced,
    so two names never share a file)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "_"
    if clean != name:
        clean += "-" + hashlib.sha256(name.encode()).hexdigest()[:6]
    return clean


def sample_name(row: dict) -> str:
    budget = row["budget"] or "nobudget"
    return f"samples/{safe_name(row['dataset'])}--{safe_name(row['model'])}--{safe_name(budget)}--seed{row['seed']}.png"


def curves_name(row: dict) -> str:
    """Where a row's training curves are published: one file per row (its lowest finished seed)."""
    budget = row["budget"] or "nobudget"
    return f"curves/{safe_name(row['dataset'])}--{safe_name(row['model'])}--{safe_name(budget)}.csv"


# ----------------------------------------------------------------------------- publish


@dataclass
class Published:
    """What one `genbench publish` wrote: the tables per (suite, dataset) and every file."""

    boards: dict[tuple[str, str], Table] = field(default_factory=dict)
    trials: dict[tuple[str, str], Table] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    readme: Path | None = None
    plots: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line per row dropped, kept or left out


def config_defaults(manager) -> dict[str, dict]:
    import dataclasses

    if manager is None:
        return {}
    out = {}
    for name in manager.models:
        try:
            out[name] = dataclasses.asdict(manager.models.get(name).make_config({}))
        except Exception:  # a family whose defaults do not build: its commands just carry no overrides
            continue
    return out


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)


def _write_bytes_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def publish(runs_dir: str | Path, out_dir: str | Path = "leaderboards", suites: Iterable[str] | None = None,
            manager=None) -> Published:
    """Merge the records under ``runs_dir`` into the leaderboards under ``out_dir`` and render them.

    ``suites``: the suites to take from ``runs_dir`` (default: every one there).  ``manager``
    (a :class:`~genbench.manager.PluginManager`) supplies each metric's direction (for the bold
    best values) and each family's default config (for the config overrides in commands)."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise GenbenchError(f"runs folder {str(runs_dir)!r} does not exist; give the --runs-dir that "
                            "`genbench run` wrote to (default: runs)")
    available = sorted(p.parent.name for p in runs_dir.glob("*/trials") if p.is_dir())
    wanted = list(suites) if suites else available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise GenbenchError(f"no suite {unknown[0]!r} under {str(runs_dir)!r}; suites there: "
                            f"{', '.join(available) or '(none)'}")
    # the folder names the suite (a renamed folder's records still say the old name)
    records = [dict(r, suite=s) for s in wanted for r in load_records(runs_dir, s)]
    if not records:
        raise GenbenchError(f"no trial records under {str(runs_dir)!r} (suites: {', '.join(wanted) or 'none'}); "
                            "run `genbench run` first")
    defaults = config_defaults(manager)
    facts = metric_directions(manager)
    result = Published()
    selected = select_records(records)
    by_file: dict[tuple[str, str], list] = defaultdict(list)
    for (suite, dataset, *_), picked in selected.items():
        by_file[(suite, dataset)].extend(picked)
    for (suite, dataset), picked in sorted(by_file.items()):
        suite_dir = out_dir / suite
        new_rows, sources, curve_sources = [], {}, {}
        for rec, setup in picked:
            row = trial_row(rec, setup, defaults, result.warnings)
            new_rows.append(row)
            if rec.get("samples"):
                sources[id(row)] = runs_dir / suite / rec["samples"]
            if rec.get("curves"):
                curve_sources[id(row)] = runs_dir / suite / rec["curves"]
        trials_path = suite_dir / f"{safe_name(dataset)}-trials.csv"
        board_path = suite_dir / f"{safe_name(dataset)}.csv"
        if trials_path.exists():
            published = backed_rows(Table.read(trials_path, TRIAL_HEAD, TRIAL_TAIL), trials_path, result.warnings)
        elif board_path.exists():
            raise GenbenchError(f"{board_path} exists without {trials_path.name}, the per-trial CSV it is "
                                "computed from; restore that file, or delete both to publish afresh")
        else:
            published = []
        merged = merge_trials(published, new_rows, result.warnings)
        _pick_samples(merged, new_rows, sources, suite_dir)
        _copy_curves(new_rows, curve_sources, suite_dir)
        trials = trial_table(merged, facts)
        metrics = [c for c in trials.columns if trials.types[c] == FLOAT and c not in dict(TRIAL_HEAD)]
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for r in trials.rows:
            groups[row_key(r)].append(r)
        board = board_table([aggregate(g, metrics, defaults, facts) for g in groups.values()], metrics)
        _write_if_changed(trials_path, trials.to_csv())
        _write_if_changed(board_path, board.to_csv())
        result.boards[(suite, dataset)], result.trials[(suite, dataset)] = board, trials
        result.files += [board_path, trials_path]
    for suite in sorted({s for s, _ in by_file}):
        _drop_unreferenced_samples(out_dir / suite)
    result.readme, result.plots = render(out_dir, facts)
    return result


def _pick_samples(merged: list[dict], new_rows: list[dict], sources: dict[int, Path], suite_dir: Path) -> None:
    """For each row the new records touch, one sample grid: that of its lowest seed that finished,
    copied under a stable name (a row the new records do not touch keeps what it had)."""
    touched = {row_key(r) for r in new_rows}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in merged:
        if row_key(r) in touched:
            groups[row_key(r)].append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r["seed"])
        chosen = None
        for r in rows:
            if r["status"] == "ok" and (id(r) in sources and sources[id(r)].exists()
                                        or id(r) not in sources and r.get("samples")):
                chosen = r
                break
        for r in rows:
            if r is not chosen:
                r["samples"] = ""
        if chosen is not None and id(chosen) in sources:
            chosen["samples"] = sample_name(chosen)
            _write_bytes_if_changed(suite_dir / chosen["samples"], sources[id(chosen)].read_bytes())


def _copy_curves(new_rows: list[dict], sources: dict[int, Path], suite_dir: Path) -> None:
    """Each row's training curves (``genbench run`` writes them per trial) from its lowest seed
    that finished and has them, under :func:`curves_name`; a row without new curves keeps its file."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in new_rows:
        if r["status"] == "ok" and id(r) in sources and sources[id(r)].exists():
            groups[row_key(r)].append(r)
    for rows in groups.values():
        chosen = min(rows, key=lambda r: r["seed"])
        _write_bytes_if_changed(suite_dir / curves_name(chosen), sources[id(chosen)].read_bytes())


def _drop_unreferenced_samples(suite_dir: Path) -> None:
    referenced = set()
    for path in suite_dir.glob("*-trials.csv"):
        referenced |= {r["samples"] for r in Table.read(path, TRIAL_HEAD, TRIAL_TAIL).rows if r.get("samples")}
    for png in sorted((suite_dir / "samples").glob("*--seed*.png")):
        if f"samples/{png.name}" not in referenced:
            png.unlink()


# ----------------------------------------------------------------------------- rendering


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def read_board(path: Path) -> Table:
    return Table.read(path, BOARD_HEAD, BOARD_TAIL, metric_suffix=True)


def board_metrics(table: Table) -> list[str]:
    fixed = {c for c, _ in BOARD_HEAD + BOARD_TAIL}
    return [c for c in table.columns if c not in fixed and not c.endswith("_ci95")]


def headline(table: Table, rows: list[dict], facts: ColumnFacts) -> list[str]:
    present = [m for m in board_metrics(table) if any(r.get(m) is not None for r in rows)]
    shown = [m for m in facts.headline(present) if TWINS.get(m) not in present]
    return shown[:TABLE_METRICS] or present[:TABLE_METRICS]


def best_values(rows: list[dict], metrics: list[str], directions: dict[str, str]) -> dict[str, float]:
    """Per metric with a direction ("higher" or "lower"), the best mean among the models' rows (the
    reference row is a level, not a contender; flagged rows and marked cells do not count); only
    where the rows differ (all tied: none is best)."""
    best = {}
    for m in metrics:
        direction = direction_of(m, directions)
        if direction == "none":
            continue
        vals = [r[m] for r in rows if r["status"] in ("ok", "partial") and r.get(m) is not None
                and m not in row_marks(r) and not row_warnings(r)]
        if len(set(vals)) >= 2:
            best[m] = min(vals) if direction == "lower" else max(vals)
    return best


def row_marks(row: dict) -> dict[str, str]:
    """Column -> reason of a board row: its seeds' marks and any cell at or below its chance level
    (computed again from the means, so a board published before marks existed shows them too)."""
    marks = loads(row.get("marks"), {})
    means = {c: v for c, v in row.items() if isinstance(v, float) and not c.endswith("_ci95")}
    extra = {c: why for c, why in chance_marks(means).items() if why not in marks.get(c, "")}
    return merge_marks(marks, extra)


def row_warnings(row: dict) -> list[str]:
    return loads(row.get("warnings"), [])


def seed_values(trials: list[dict]) -> dict[tuple, dict[str, list[float]]]:
    """Per board row key, column -> the values of its seeds that finished (what the t-test compares)."""
    out: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    fixed = {c for c, _ in TRIAL_HEAD + TRIAL_TAIL}
    for r in trials:
        if r["status"] not in ("ok", "reference"):
            continue
        for c, v in r.items():
            if c not in fixed and finite([v]):
                out[row_key(r)][c].append(float(v))
    return out


def bold_rows(rows: list[dict], metrics: list[str], directions: dict[str, str],
              seeds: dict[tuple, dict[str, list[float]]] | None = None) -> dict[str, set[int]]:
    """Column -> the indices of ``rows`` set in bold (:func:`genbench.ranking.bold_cells`).  Without
    ``seeds`` each row counts as one seed at its mean."""
    entries = []
    for r in rows:
        values = (seeds or {}).get(row_key(r)) or {m: finite([r.get(m)]) for m in metrics}
        entries.append(Entry({m: list(values.get(m, [])) for m in metrics}, row_marks(r), row_warnings(r),
                             contender=r["model"] != REFERENCE_MODEL and r["status"] in ("ok", "partial")))
    return bold_cells(entries, metrics, directions)


def markdown_table(rows: list[dict], metrics: list[str], directions: dict[str, str],
                   seeds: dict[tuple, dict[str, list[float]]] | None = None) -> list[str]:
    """A Markdown table of board rows: ↓/↑ on columns with a direction, bold by
    :func:`bold_rows`, MARK after a marked value, FLAG before a flagged model, and a notes column
    with the reasons where any row has one."""
    arrows = {"lower": " ↓", "higher": " ↑"}
    notes = [notes_text(row_marks(r), row_warnings(r)) for r in rows]
    heads = ["model", "family", "status", "seeds", "steps",
             *[m + arrows.get(direction_of(m, directions), "") for m in metrics], *(["notes"] if any(notes) else [])]
    lines = ["| " + " | ".join(md_text(h) for h in heads) + " |",
             "|" + "|".join([":--"] * 3 + ["--:"] * (len(heads) - 3 - any(notes)) + [":--"] * any(notes)) + "|"]
    bold = bold_rows(rows, metrics, directions, seeds)
    for i, r in enumerate(rows):
        marks = row_marks(r)
        steps = r.get("used_steps")
        cells = [md_text(flagged(r["model"], bool(row_warnings(r)))), md_text(r["family"]), md_text(r["status"]),
                 f"{r['seeds_ok']}/{r['seeds']}",
                 str(round(steps)) if steps is not None and r["model"] != REFERENCE_MODEL else ""]
        for m in metrics:
            text = number(r.get(m))
            if text and r.get(f"{m}_ci95") is not None:
                text += f" ± {number(r[f'{m}_ci95'], 2)}"
            text = marked(text, m in marks)
            if text and i in bold.get(m, ()):
                text = f"**{text}**"
            cells.append(text)
        if any(notes):
            cells.append(md_text(notes[i], 400))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


LEGEND = (f"Bold: the best mean and every model not significantly different from it ({TEST}; a one-seed row "
          f"competes only where no row has more seeds). {MARK}: the value failed its own diagnostic or is at or "
          f"below its chance level; {FLAG}: a finding about the whole row (e.g. it copies training data). Neither "
          "is ever bold, nor is `real-heldout` or a column without a direction (chance levels, statistics with no "
          "better side); the reasons are in *notes*.")


def render(out_dir: Path, directions: ColumnFacts) -> tuple[Path, list[Path]]:
    """README.md, the budget-curve and training-curve plots and each suite's ``summary.csv`` from every leaderboard CSV
    under ``out_dir``."""
    out_dir = Path(out_dir)
    boards = sorted(p for p in out_dir.glob("*/*-trials.csv"))
    sections, toc, plots = [], [], []
    by_suite: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    suite_trials: dict[Path, list[dict]] = defaultdict(list)
    for trials_path in boards:
        suite_dir = trials_path.parent
        board_path = suite_dir / (trials_path.name[: -len("-trials.csv")] + ".csv")
        if not board_path.exists():
            continue
        table = read_board(board_path)
        if not table.rows:
            continue
        trial_rows = Table.read(trials_path, TRIAL_HEAD, TRIAL_TAIL).rows
        suite_trials[suite_dir].extend(trial_rows)
        seeds = seed_values(trial_rows)
        suite, dataset = table.rows[0]["suite"], table.rows[0]["dataset"]
        by_suite[suite_dir.name][dataset] = [
            {"model": r["model"], "budget": r["budget"], "status": r["status"],
             "values": seeds.get(row_key(r)) or {}, "marks": row_marks(r), "warnings": row_warnings(r)}
            for r in table.rows]
        curves = plot_budget_curves(table, suite_dir, directions)
        plots += curves
        training = plot_training_curves(table, suite_dir)
        plots += training
        title = f"{suite} / {dataset}"
        toc.append(f"- [{md_text(title)}](#{_anchor(title)})")
        sections += _section(table, title, out_dir, board_path, trials_path, curves, directions, seeds, training)
    summaries = []
    # each family against its own paper (the repro suite), and how much every row moves across seeds
    families = {r["model"]: r["family"] for rows in suite_trials.values() for r in rows if r.get("family")}
    for suite_dir in sorted(suite_trials, key=lambda d: (d.name != REPRO_SUITE, d.name)):
        lines, written = render_suite(out_dir, suite_dir, suite_trials[suite_dir], _write_if_changed, families)
        summaries += lines
        toc[:0] = [f"- [{md_text(line[3:])}](#{_anchor(line[3:])})" for line in lines if line.startswith("## ")]
        plots += [p for p in written if p.suffix == ".png"]
    for suite in sorted(by_suite):
        rows = write_summary(out_dir / suite, by_suite[suite], directions)
        if rows:
            title = f"{suite}: across datasets"
            summaries += _summary_section(rows, title, out_dir, out_dir / suite / SUMMARY)
            toc.insert(0, f"- [{md_text(title)}](#{_anchor(title)})")
    _drop_stale_plots(out_dir, plots)
    lines = [
        "# genbench leaderboards",
        "",
        "Written by `genbench publish` from the trial records of `genbench run`. Each row is one model trained "
        "under one compute budget on one dataset and scored with one evaluation protocol. Numbers are means over "
        "seeds ± the half-width of a 95% Student-t interval (no ± with one seed); ↓ lower is better, ↑ higher is "
        "better; `real-heldout` is held-out real data (the validation split) scored like a model against the "
        "same test split: the level real data reaches at these sample counts, not a floor. Sample-quality "
        "headline columns compare samples with the test split; each trial is evaluated at its "
        "best-on-validation state. *steps* is the number of optimisation steps the budget bought (the "
        "rounded mean over seeds).",
        "",
        LEGEND,
        "",
        "The tables show headline metrics; the CSV linked under each has every metric with its interval and "
        "each row's provenance: genbench, torch and torch-fidelity versions, git commit, device, budget used, "
        "evaluation profile, estimator settings and sample counts, feature extractor and weights hash, config, "
        "and the command that reproduces the row. The per-trial CSV has every seed.",
        "",
        *toc,
        "",
        *summaries,
        *sections,
    ]
    readme = out_dir / "README.md"
    _write_if_changed(readme, "\n".join(lines).rstrip() + "\n")
    return readme, plots


# ----------------------------------------------------------------------------- summary across datasets

SUMMARY = "summary.csv"
SUMMARY_COLUMNS = (("suite", TEXT), ("model", TEXT), ("budget", TEXT), ("iqm", FLOAT), ("iqm_low", FLOAT),
                   ("iqm_high", FLOAT), ("datasets", INT), ("of_datasets", INT), ("scores", INT),
                   ("metrics", TEXT), ("left_out", TEXT))
SUMMARY_TEXT = ("Interquartile mean (IQM: the mean of the middle 50%) of normalised scores over the suite's "
                "datasets and seeds, with a 95% stratified-bootstrap interval (seeds resampled within each dataset, "
                "2000 resamples; Agarwal et al. 2021). Each dataset is scored by its first metric among fid, mode_kl, "
                "bpd, nll that two or more models report; a seed's score is (value − worst) / (anchor − worst), "
                "oriented so higher is better, where worst is the worst model mean on that dataset and anchor is "
                "`real-heldout` where the dataset has that row, else the best model mean: 1 = as good as held-out "
                "real data (or the best model), 0 = the worst model. Flagged rows and marked cells are left out. "
                "Models scored on fewer datasets than the others are not directly comparable: rows are ordered by the "
                "number of datasets scored (*datasets*), then by IQM.")


def write_summary(suite_dir: Path, datasets: dict[str, list[dict]], directions: dict[str, str]) -> list[dict]:
    """``<suite>/summary.csv`` (see ``SUMMARY_TEXT``); removed where the suite no longer has two
    datasets to summarise."""
    rows = summary_rows(datasets, directions, REFERENCE_MODEL)
    path = suite_dir / SUMMARY
    if not rows:
        if path.exists():
            path.unlink()
        return []
    rows = [dict(r, suite=suite_dir.name) for r in rows]
    cols = [c for c, _ in SUMMARY_COLUMNS]
    _write_if_changed(path, Table(cols, dict(SUMMARY_COLUMNS), rows).to_csv())
    return rows


def _summary_section(rows: list[dict], title: str, out_dir: Path, path: Path) -> list[str]:
    out = [f"## {md_text(title)}", "", SUMMARY_TEXT, "",
           f"Table: [{md_text(path.name)}]({_link(out_dir, path)})", "",
           "| model | budget | IQM [95% interval] | datasets | scored by |", "|:--|:--|--:|--:|:--|"]
    for r in rows:
        interval = f"{r['iqm']:.3f} [{r['iqm_low']:.3f}, {r['iqm_high']:.3f}]" if r["scores"] else ""
        scored = r["metrics"] + (f"; left out: {r['left_out']}" if r["left_out"] else "")
        out.append(f"| {md_text(r['model'])} | {md_text(r['budget'])} | {interval} | "
                   f"{r['datasets']}/{r['of_datasets']} | {md_text(scored, 300)} |")
    return out + [""]


def _link(out_dir: Path, path: Path) -> str:
    return quote(path.relative_to(out_dir).as_posix())


def _section(table: Table, title: str, out_dir: Path, board_path: Path, trials_path: Path, curves: list[Path],
             directions: ColumnFacts, seeds: dict[tuple, dict[str, list[float]]] | None = None,
             training: list[Path] = ()) -> list[str]:
    rows = table.rows
    reference = [r for r in rows if r["model"] == REFERENCE_MODEL]
    models = [r for r in rows if r["model"] != REFERENCE_MODEL]
    budgets = sorted({(r["budget_kind"], r["budget_amount"], r["budget"]) for r in models})
    out = [f"## {md_text(title)}", "",
           f"Full table: [{md_text(board_path.name)}]({_link(out_dir, board_path)}) · every seed: "
           f"[{md_text(trials_path.name)}]({_link(out_dir, trials_path)})", ""]
    for kind, amount, text in budgets or [("none", 0.0, "")]:
        shown = [r for r in models if (r["budget_kind"], r["budget_amount"]) == (kind, amount)] + reference
        metrics = headline(table, shown, directions)
        if budgets:
            out += [f"### budget {md_text(text)} ({BUDGET_UNITS.get(kind, kind)})", ""]
        out += markdown_table(shown, metrics, directions, seeds) + [""]
        failed = [r for r in shown if r.get("reason")]
        if failed:
            out += ["Failed trials:", ""]
            out += [f"- {md_text(r['model'])}: {md_text(r['reason'], 300)}" for r in failed]
            out.append("")
        grids = [r for r in shown if r.get("samples") and (board_path.parent / r["samples"]).exists()]
        if grids:
            out += ["Samples (the lowest seed that finished):", ""]
            for start in range(0, len(grids), 4):
                chunk = grids[start:start + 4]
                out.append("| " + " | ".join(md_text(r["model"]) for r in chunk) + " |")
                out.append("|" + "|".join([":-:"] * len(chunk)) + "|")
                out.append("| " + " | ".join(_thumbnail(out_dir, board_path.parent / r["samples"], r["model"])
                                             for r in chunk) + " |")
                out.append("")
    if curves:
        out += ["### budget curves", ""]
        out += [f"![{md_text(p.stem)}]({_link(out_dir, p)})" for p in curves]
        out.append("")
    if training:
        out += ["### training curves", "",
                "Every loss each model's `train_step` returned, against the step (the lowest seed that finished; "
                "the CSVs are under `curves/`).", ""]
        out += [f"![{md_text(p.stem)}]({_link(out_dir, p)})" for p in training]
        out.append("")
    out += _provenance(rows) + [""]
    return out


def _thumbnail(out_dir: Path, png: Path, model: str) -> str:
    """A sample picture at its own size up to ``THUMB`` pixels wide (pixel blocks stay sharp where it
    is not scaled), linked to the full picture (input -> output panels are wider than a grid)."""
    data = png.read_bytes()[:24]
    native = int.from_bytes(data[16:20], "big") if data[:8] == b"\x89PNG\r\n\x1a\n" else THUMB
    link = _link(out_dir, png)
    return (f'<a href="{link}"><img src="{link}" width="{min(native, THUMB)}" '
            f'alt="samples of {md_text(model)}"></a>')


def _provenance(rows: list[dict]) -> list[str]:
    def distinct(col: str) -> str:
        vals = sorted({v for r in rows for v in str(r.get(col) or "").split(" | ") if v})
        return ", ".join(vals) if vals else "unknown"

    extractors = sorted({(r["extractor"], r["extractor_weights"]) for r in rows if r.get("extractor")})
    feat = "; ".join(f"{md_text(n)} (weights {md_text(w)})" for n, w in extractors) or "none"
    return [f"<sub>Profile {md_text(distinct('profile'))} · features {feat} · device "
            f"{md_text(distinct('device'))} · genbench {md_text(distinct('genbench_version'))}, torch "
            f"{md_text(distinct('torch_version'))}, commit {md_text(distinct('git_commit'))}</sub>"]


def plot_budget_curves(table: Table, suite_dir: Path, directions: dict[str, str]) -> list[Path]:
    """One PNG per headline metric (and budget kind) where the file has two or more budgets: the
    metric's mean against the budget per model, with 95% intervals as error bars and the real-data
    level as a dashed line.  The budget axis is logarithmic where the budgets are spaced
    geometrically (:func:`_geometric`), the metric axis where :func:`_log_y` says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in table.rows if r["model"] != REFERENCE_MODEL and r["status"] in ("ok", "partial")]
    reference = next((r for r in table.rows if r["model"] == REFERENCE_MODEL), None)
    written = []
    for kind in sorted({r["budget_kind"] for r in rows}):
        at_kind = [r for r in rows if r["budget_kind"] == kind]
        amounts = sorted({r["budget_amount"] for r in at_kind})
        if len(amounts) < 2:
            continue
        for group in CURVES:
            metric = next((m for m in group if sum(r.get(m) is not None for r in at_kind) >= 2), None)
            if metric is None:
                continue
            fig = Figure(figsize=(7.5, 4.2), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            values = [r[metric] for r in at_kind if r.get(metric) is not None]
            if reference is not None and reference.get(metric) is not None:
                values.append(reference[metric])
            log_y = _log_y(metric, values)
            for i, model in enumerate(sorted({r["model"] for r in at_kind})):
                pts = sorted((r["budget_amount"], r[metric], r.get(f"{metric}_ci95") or 0.0, r["family"])
                             for r in at_kind if r["model"] == model and r.get(metric) is not None)
                if not pts:
                    continue
                xs, ys, es, fams = zip(*pts)
                # on a log axis a bar reaching zero or below would vanish: stop it just above zero
                low = [min(e, 0.95 * y) for y, e in zip(ys, es)] if log_y else es
                ax.errorbar(xs, ys, yerr=[low, es], capsize=3, label=f"{model} ({fams[0]})", **_style(i))
            if reference is not None and reference.get(metric) is not None:
                ax.axhline(reference[metric], color="gray", linestyle="--", linewidth=1, label="real held-out")
            log_x = _geometric(amounts)
            ax.set_xscale("log" if log_x else "linear")
            if log_y:
                ax.set_yscale("log")
            labels = {r["budget_amount"]: r["budget"] for r in at_kind}
            ax.set_xticks(amounts)
            ax.set_xticklabels([labels[a] for a in amounts])
            ax.minorticks_off()
            better = direction_of(metric, directions)
            said = [f"{better} is better"] * (better != "none") + ["log scale"] * log_y
            ax.set_ylabel(metric + (f" ({', '.join(said)})" if said else "") + ", mean ± 95% interval")
            ax.set_xlabel(f"budget ({BUDGET_UNITS.get(kind, kind)}" + (", log scale)" if log_x else ")"))
            ax.set_title(f"{table.rows[0]['dataset']}: {metric} against budget (suite {table.rows[0]['suite']})")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the curves
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
            path = suite_dir / "plots" / f"{safe_name(table.rows[0]['dataset'])}-{metric}-vs-{kind}.png"
            _write_bytes_if_changed(path, buf.getvalue())
            written.append(path)
    return written


def _geometric(amounts: list[float]) -> bool:
    """Whether budgets are spaced geometrically (10s, 30s, 90s) rather than evenly (10s, 20s, 30s):
    their ratios vary less than their differences.  Two budgets: geometric when ten or more apart."""
    if len(amounts) < 3:
        return amounts[-1] >= 10 * amounts[0] > 0
    if amounts[0] <= 0:
        return False
    diffs = [b - a for a, b in zip(amounts, amounts[1:])]
    ratios = [b / a for a, b in zip(amounts, amounts[1:])]
    return max(ratios) / min(ratios) < max(diffs) / min(diffs)


def _log_y(metric: str, values: list[float]) -> bool:
    vals = finite(values)
    if not vals or min(vals) <= 0:
        return False
    return metric in LOG_Y or max(vals) >= 10 * min(vals)


def _style(i: int) -> dict:
    """Line style of the i-th model: ten strong colours with circles, then their light shades with
    squares, then the same with triangles (a full suite has more than ten models)."""
    from matplotlib import colormaps

    color = colormaps["tab10"](i % 10) if i // 10 % 2 == 0 else colormaps["tab20"](2 * (i % 10) + 1)
    return {"color": color, "marker": "os^"[i // 20 % 3]}


def plot_training_curves(table: Table, suite_dir: Path, columns: int = 4) -> list[Path]:
    """One PNG per budget of the file: a panel per model whose curves were published
    (:func:`curves_name`), each loss against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    written = []
    rows = [r for r in table.rows if r["model"] != REFERENCE_MODEL and (suite_dir / curves_name(r)).exists()]
    for budget in sorted({r["budget"] for r in rows}):
        shown = sorted((r for r in rows if r["budget"] == budget), key=lambda r: r["model"])
        n_rows = -(-len(shown) // columns)
        fig = Figure(figsize=(3.2 * min(columns, len(shown)), 2.4 * n_rows), dpi=100)
        FigureCanvasAgg(fig)
        for i, r in enumerate(shown):
            curve = pd.read_csv(suite_dir / curves_name(r))
            ax = fig.add_subplot(n_rows, min(columns, len(shown)), i + 1)
            losses = [c for c in curve.columns if c not in ("step", "progress")]
            for j, name in enumerate(losses):
                ax.plot(curve["step"], curve[name], label=name, linewidth=1, color=_style(j)["color"])
            ax.set_title(r["model"], fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(f"{table.rows[0]['dataset']}: training losses at budget {budget} (suite {table.rows[0]['suite']})",
                     fontsize=10)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
        path = suite_dir / "plots" / f"{safe_name(table.rows[0]['dataset'])}-training-vs-step-{safe_name(budget)}.png"
        _write_bytes_if_changed(path, buf.getvalue())
        written.append(path)
    return written


def _drop_stale_plots(out_dir: Path, keep: list[Path]) -> None:
    """Plots are derived from the CSVs: one the CSVs no longer call for is removed."""
    keep = {p.resolve() for p in keep}
    for png in out_dir.glob("*/plots/*-vs-*.png"):
        if png.resolve() not in keep and any(png.parent.parent.glob("*-trials.csv")):
            png.unlink()


# ----------------------------------------------------------------------------- command line


def cmd_publish(args, manager, console) -> int:
    from rich.text import Text

    from genbench.results import write_error

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise GenbenchError(f"--out {args.out!r} is a file, not a folder; give the folder of the published "
                            "leaderboards (default leaderboards)")
    try:
        result = publish(Path(args.runs_dir), out, args.suite, manager)
    except OSError as exc:  # the runs folder's records are untouched: publishing again after the fix is safe
        where = exc.filename or out
        raise GenbenchError(f"{write_error(exc, where)}: the leaderboards were not all written; "
                            "free space or make that folder writable (or give another --out) and run `genbench "
                            "publish` again (the records in "
                            f"{args.runs_dir} are unchanged)") from None
    for line in result.warnings:
        console.print(Text("warning: " + line, style="yellow"))
    for (suite, dataset), board in sorted(result.boards.items()):
        trials = result.trials[(suite, dataset)]
        console.print(f"{suite}/{dataset}: {len(board.rows)} rows, {len(trials.rows)} trials")
    console.print(f"wrote {len(result.files)} CSVs, {len(result.plots)} plots and {result.readme}")
    return 0


def record_rows(records: list[dict]) -> list[dict]:
    """Records as the rows of a published per-trial CSV: the newest setup of each row, one record
    per seed (the selection and flattening of :func:`publish`)."""
    return [trial_row(rec, setup, {}) for picked in select_records(records).values() for rec, setup in picked]
