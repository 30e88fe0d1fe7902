"""From trial records to published rows: the records a row keeps, one flattened row per trial, the
leaderboard row of a (model, budget), and merging new trials into what is published.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import shlex
from collections import defaultdict
from pathlib import Path

from genbench.overrides import set_text
from genbench.publish.table import (
    KEY,
    PROVENANCE,
    Table,
)
from genbench.ranking import (
    dumps_marks,
    dumps_warnings,
    loads,
    notes_text,
)
from genbench.results import (
    REFERENCE_MODEL,
    ci95,
    metric_selection,
    record_setup,
    summarise_seeds,
)

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


