"""Result records (one JSON file per trial, written atomically) and leaderboards built from them."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RECORD_SCHEMA = 2  # 2: held-out sample quality, model selection, CPU-time budgets
REFERENCE_MODEL = "real-heldout"  # the reference row: held-out real data scored like a model


def _atomic_write(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a folder in the way, Ctrl-C: no half-written temp file stays
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so a reader never sees half a file.
    On failure the temp file is removed and the error raised (the target is left as it was)."""
    _atomic_write(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``atomic_write_text`` for binary files (sample grids)."""
    _atomic_write(path, data)


def write_error(exc: OSError, path: Path | str) -> str:
    """A failed write as a reader reads it: what went wrong, and where."""
    import errno

    where = Path(path)
    folder = where.parent
    if exc.errno == errno.ENOSPC:
        return f"no space left in {folder}"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded in {folder}"
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {folder}"
    if exc.errno == errno.EISDIR or (exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and where.is_dir()):
        return f"a folder is in the way of {where}"
    if exc.errno == errno.ENOTDIR:
        return f"a file is in the way of the folder {folder}"
    return f"cannot write {where}: {exc.strerror or exc}"


def write_advice(exc: OSError) -> str:
    """What to do about a failed write before running the same command again."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "make the runs folder writable (or choose another --runs-dir)"
    if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOTEMPTY):
        return "move what is in the way"
    return "fix the cause"


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of genbench's own source tree ("-dirty" when tracked files differ from it), or
    "unknown" outside a git checkout (an installed wheel).  Recorded with every result so a row
    can be traced to the code that produced it."""
    import subprocess

    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def _clean(value):
    """JSON has no NaN/inf: store them as None (the leaderboard shows an empty cell)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def record_text(record: dict) -> str:
    return json.dumps(_clean(record), indent=2, sort_keys=True, default=str)


def write_record(path: Path, record: dict) -> None:
    atomic_write_text(path, record_text(record))


def trial_dir(runs_dir: Path, suite: str) -> Path:
    return Path(runs_dir) / suite / "trials"


def _one_component(name: str, what: str) -> None:
    from genbench.errors import GenbenchError

    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.sep in name or (os.altsep and os.altsep in name)):
        raise GenbenchError(f"{what} {name!r} is not a file name (no path separators, not '.' or '..')")


def inside(path: Path, folder: Path, what: str) -> Path:
    """``path``, after checking that it resolves inside ``folder`` (defence in depth: every name
    that builds a path is validated where it is registered or given)."""
    from genbench.errors import GenbenchError

    real, root = Path(path).resolve(), Path(folder).resolve()
    if real != root and root not in real.parents:
        raise GenbenchError(f"{what} {str(path)!r} would be written outside {str(folder)!r}; "
                            "model, dataset and suite names must be plain names")
    return Path(path)


def record_path(runs_dir: Path, suite: str, trial_id: str) -> Path:
    """``<runs>/<suite>/trials/<trial_id>.json``, refusing any suite or trial id that would put
    it anywhere else (where `load_records` would never read it, or outside the runs folder)."""
    _one_component(suite, "suite name")
    _one_component(trial_id, "trial id")
    folder = trial_dir(runs_dir, suite)
    return inside(folder / f"{trial_id}.json", folder, "trial record")


def unsaved_dir(runs_dir: Path, suite: str) -> Path:
    """Where a record that could not be written into the runs folder is kept until the next run of
    the suite moves it there: ``<system temp>/genbench-unsaved/<runs folder hash>/<suite>/``."""
    import tempfile

    digest = hashlib.sha256(str(Path(runs_dir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "genbench-unsaved" / digest / suite


def keep_unsaved(runs_dir: Path, suite: str, record: dict) -> Path:
    """Write ``record`` to its fallback file (see :func:`unsaved_dir`); raises OSError if even that fails."""
    folder = unsaved_dir(runs_dir, suite)
    path = inside(folder / f"{record['trial_id']}.json", folder, "kept record")
    atomic_write_text(path, record_text(record))
    return path


def recover_unsaved(runs_dir: Path, suite: str) -> tuple[list[str], list[str]]:
    """Move the records kept by :func:`keep_unsaved` into the suite's trials folder.

    Returns (trial ids moved, one line per record that still cannot be moved).  A kept record is
    moved only where the trials folder holds no newer record of the same trial."""
    folder = unsaved_dir(runs_dir, suite)
    moved, problems = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict) or rec.get("schema") != RECORD_SCHEMA or not rec.get("trial_id"):
                raise ValueError("not a genbench trial record")
            target = record_path(runs_dir, suite, rec["trial_id"])
        except Exception as exc:  # a damaged kept file is reported, never fatal
            problems.append(f"kept record {path} not restored: {exc}")
            continue
        try:
            current = json.loads(target.read_text()) if target.is_file() else None
        except (OSError, ValueError):
            current = None
        newer = isinstance(current, dict) and (current.get("finished") or "") > (rec.get("finished") or "")
        try:
            if not newer:
                atomic_write_text(target, path.read_text())
            path.unlink()
        except OSError as exc:
            problems.append(f"{write_error(exc, target)}: the result of {rec['trial_id']} stays kept in {path}; "
                            f"{write_advice(exc)} and run the same command again")
            continue
        moved.append(rec["trial_id"])
    return moved, problems


def load_records(runs_dir: Path, suite: str | None = None) -> list[dict]:
    """Every readable record under ``runs_dir`` (one suite, or all).  Unreadable or foreign files
    are skipped with a warning, never fatal: one corrupt file must not hide the other results."""

    runs_dir = Path(runs_dir)
    pattern = f"{suite}/trials/*.json" if suite else "*/trials/*.json"
    records = []
    for path in sorted(runs_dir.glob(pattern)):
        try:
            rec = json.loads(path.read_text())
            lines = set_aside_invalid_metrics(rec) if isinstance(rec, dict) else []
            check_record(rec)
            for line in lines:
                _warn_once(path, f"{path}: {line}")
        except (OSError, ValueError) as exc:
            _warn_once(path, f"skipping {path}: {exc}. Delete or move the file if it is not a genbench record.")
            continue
        records.append(rec)
    return records


_WARNED: set[tuple[str, int, int, str]] = set()


def _warn_once(path: Path, text: str) -> None:
    """One run reads the folder several times: say each thing once per file version."""
    import warnings

    try:
        stat = path.stat()
        seen = (str(path), stat.st_size, stat.st_mtime_ns, text)
    except OSError:
        seen = (str(path), -1, -1, text)
    if seen not in _WARNED:
        _WARNED.add(seen)
        warnings.warn(text, stacklevel=3)

# the keys every reader of a record relies on, with their types
class RecordBudget(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    kind: str
    amount: float
    text: str = ""


class TrialRecord(BaseModel):
    """What every reader of a trial record relies on, checked when a record is read
    (:func:`check_record`): a record that is not one (another tool's JSON, an older genbench's)
    is one clear line naming the first field that is wrong, and the other records are read on.
    Keys beyond these (config, timings, estimators, ...) are kept as written."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    record_schema: int = Field(alias="schema")
    trial_id: str
    model: str
    dataset: str
    seed: int
    status: Literal["ok", "failed", "reference"]
    budget: RecordBudget
    metrics: dict[str, float | None] = {}  # null: measured, not finite
    marks: dict[str, str] = {}
    warnings: list[str] = []
    finished: str | None = None

    @field_validator("record_schema")
    @classmethod
    def _this_schema(cls, value: int) -> int:
        if value != RECORD_SCHEMA:
            raise ValueError(f"written by another genbench (record schema {value}, this one reads {RECORD_SCHEMA})")
        return value


def check_record(rec) -> None:
    """ValueError with one line naming the first field of ``rec`` a reader would trip over (see
    :class:`TrialRecord`); metric values that are not numbers are set aside before this
    (:func:`set_aside_invalid_metrics`)."""
    if not isinstance(rec, dict) or "schema" not in rec:
        raise ValueError("not a genbench trial record")
    try:
        TrialRecord.model_validate(rec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the record"
        where = "schema" if where == "record_schema" else where
        if first["type"] == "missing":
            raise ValueError(f"the record has no {where!r}") from None
        value = first.get("input")
        why = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"].lower()
        raise ValueError(f"{where!r} is {type(value).__name__} {value!r}: {why}") from None


def set_aside_invalid_metrics(rec: dict) -> list[str]:
    """Metric values that are not numbers (null stands for a measured, non-finite value) moved from
    ``metrics`` to ``invalid_metrics``, so every reader sees numbers only; one line per value."""
    metrics = rec.get("metrics") or {}
    if not isinstance(metrics, dict):
        return []  # not a table at all: check_record says so
    bad = {k: v for k, v in metrics.items()
           if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))}
    if bad:
        rec["metrics"] = {k: v for k, v in metrics.items() if k not in bad}
        rec["invalid_metrics"] = bad
    return [f"metric {k!r} is {type(v).__name__} {v!r}, not a number: left out" for k, v in bad.items()]


def ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of a 95% Student-t interval (NaN half-width for a single seed)."""
    from scipy import stats

    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def metric_columns(records: Iterable[dict]) -> list[str]:
    cols: list[str] = []
    for rec in records:
        for c in rec.get("metrics", {}):
            if c not in cols:
                cols.append(c)
    return cols


def metric_selection(record: dict) -> dict | None:
    """The record's metric selection (``--metrics`` / ``--skip-metrics``) as stored, or None where
    every metric scored the trial (and in records written before selections existed)."""
    chosen = record.get("metric_selection")
    if not isinstance(chosen, dict) or (not chosen.get("metrics") and not chosen.get("skip_metrics")):
        return None
    return chosen


def latest_protocol(group: list[dict]) -> tuple[list[dict], int]:
    """Keep the trials of the most recently finished (config, profile, metric selection) of a row: a
    suite re-run with another config must not pool old and new seeds, nor a seed scored by every
    metric with one scored by a few.  Records without a config (a worker that crashed before
    building the model) stay with the row."""
    def protocol(r):
        return json.dumps([r.get("config") or None, r.get("profile"), metric_selection(r)], sort_keys=True,
                          default=str)

    known = [r for r in group if r.get("config")]
    if len({protocol(r) for r in known}) <= 1:
        return group, 0
    latest = protocol(max(known, key=lambda r: r.get("finished") or ""))
    kept = [r for r in group if not r.get("config") or protocol(r) == latest]
    return kept, len(group) - len(kept)


def _budget_key(record: dict) -> tuple[str, float]:
    return record["budget"]["kind"], float(record["budget"]["amount"])


def model_budget_groups(records: list[dict]) -> list[tuple[str, list[dict]]]:
    """``records`` (of one dataset) grouped by model and budget, each group sorted by seed: a suite
    run at several budgets (`--budgets`) has one row per model and budget.  Groups are ordered by
    budget kind and amount, then model, with the reference rows last."""
    keys = {(r["model"], *_budget_key(r)) for r in records}
    return [(model, sorted((r for r in records if r["model"] == model and _budget_key(r) == (kind, amount)),
                           key=lambda r: r["seed"]))
            for model, kind, amount in sorted(keys, key=lambda k: (k[0] == REFERENCE_MODEL, k[1], k[2], k[0]))]


def setup_hash(model: str, dataset: str, kind: str, amount: float, profile: str, config: dict,
               selection: dict | None = None) -> str:
    """Hash of what makes a row: the trial key without the seed (so every seed of a row shares it).
    A metric selection (``--metrics``) is part of it; scored by every metric, a row keeps the hash
    it had before selections existed."""
    what = {"model": model, "dataset": dataset, "budget": [kind, float(amount)], "profile": profile, "config": config}
    if selection:
        what["metric_selection"] = selection
    blob = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def record_setup(rec: dict) -> str:
    """The setup hash of a trial record: the hash every seed of its leaderboard row shares."""
    b = rec["budget"]
    return setup_hash(rec["model"], rec["dataset"], b["kind"], b["amount"], rec.get("profile", ""),
                      rec.get("config") or {}, metric_selection(rec))



@dataclass
class SeedSummary:
    """One leaderboard row's metric cells from its finished seeds (:func:`summarise_seeds`): what
    the terminal table (:func:`leaderboard`) and the published CSV (``genbench.publish.aggregate``)
    both show, computed once, by this code."""

    cells: dict[str, float]  # each metric's mean and, as "<metric>_ci95", its interval's half-width
    values: dict[str, list[float]]  # each metric's finite per-seed values (what significance tests use)
    marks: dict[str, str]  # column -> why its value is not a plain number (the seeds' own, chance levels)
    warnings: list[str]  # findings about the whole row, with the seeds they were made on
    coverage: list[str]  # "<metric>: 2/3 seeds" where the mean covers fewer seeds than finished


def summarise_seeds(seeds: list[tuple[int, dict, dict | None, list | None]], metrics: list[str],
                    directions: dict[str, str] | None = None) -> SeedSummary:
    """The metric cells of one row from its finished ``seeds``, each ``(seed, metric values,
    marks, warnings)`` as the trial recorded them; ``directions`` decides which side of a chance
    level is bad."""
    from genbench.ranking import chance_marks, finite, merge_marks, seed_marks, seed_warnings

    cells, values, coverage = {}, {}, []
    for m in metrics:
        per_seed = [vals.get(m) for _, vals, _, _ in seeds]
        cells[m], cells[f"{m}_ci95"] = ci95(per_seed)
        values[m] = finite(per_seed)
        if 0 < len(values[m]) < len(seeds):  # the mean covers fewer seeds than the seeds column says
            coverage.append(f"{m}: {len(values[m])}/{len(seeds)} seeds")
    marks = merge_marks(seed_marks((seed, m) for seed, _, m, _ in seeds),
                        chance_marks({m: cells[m] for m in metrics}, directions))
    found = seed_warnings((seed, w) for seed, _, _, w in seeds)
    return SeedSummary(cells, values, marks, found, coverage)


def leaderboard(records: list[dict], dataset: str, directions: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per model on ``dataset``: metric means with 95% intervals over seeds, status,
    budget and its use (steps as the rounded mean: a step count is a whole number), estimator and
    extractor names, versions; ``marks`` (column -> reason, JSON), ``warnings`` (JSON) and ``notes``
    as :mod:`genbench.ranking` defines them.

    ``df.attrs["bold"]`` maps each metric column to the row positions that are bold by the rules of
    :func:`genbench.ranking.bold_cells` under ``directions`` (column -> "higher" | "lower" | "none")."""
    from genbench.ranking import Entry, bold_cells, dumps_marks, dumps_warnings, notes_text

    recs = [r for r in records if r["dataset"] == dataset]
    cols = metric_columns(recs)
    rows, entries = [], []
    for model, group in model_budget_groups(recs):
        group, superseded = latest_protocol(group)
        ok = [r for r in group if r["status"] in ("ok", "reference")]
        first = (ok or group)[0]
        row = {
            "model": model,
            "family": first.get("family", ""),
            "dataset": dataset,
            "status": first["status"] if ok and len(ok) == len(group) else ("partial" if ok else "failed"),
            "seeds": f"{len(ok)}/{len(group)}",
            "budget": first["budget"].get("text", ""),
            "budget_kind": first["budget"]["kind"],
            "budget_amount": first["budget"]["amount"],
        }
        for key in ("seconds", "steps", "flops"):
            row[f"used_{key}"] = ci95([r["used"][key] for r in ok])[0] if ok else math.nan
        if ok and math.isfinite(row["used_steps"]):
            row["used_steps"] = round(row["used_steps"])
        row["device"] = first.get("device", "")
        summary = summarise_seeds([(r["seed"], r["metrics"], r.get("marks"), r.get("warnings")) for r in ok],
                                  cols, directions)
        row.update(summary.cells)
        gaps = list(summary.coverage)
        for r in ok:
            errors = sorted(r.get("metric_errors", {}).items())
            gaps.extend(f"{m} failed (seed {r['seed']}): {err}" for m, err in errors)
        if superseded:
            gaps.append(f"{superseded} older trial(s) with another config, profile or metric selection left out")
        marks, found = summary.marks, summary.warnings
        row["notes"] = notes_text(marks, found, gaps)
        row["marks"], row["warnings"] = dumps_marks(marks), dumps_warnings(found)
        entries.append(Entry(summary.values, marks, found, contender=model != REFERENCE_MODEL and bool(ok)
                             and first["status"] != "reference"))
        row["reason"] = "; ".join(f"seed {r['seed']}: {r['reason']}" for r in group if r["status"] == "failed")
        row["empty_cells"] = "; ".join(f"{m}: {why}" for m, why in sorted(first.get("not_applicable", {}).items()))
        row["estimators"] = json.dumps(first.get("estimators", {}), sort_keys=True)
        row["extractor"] = first.get("extractor") or ""
        row["profile"] = first.get("profile", "")
        row["config_hash"] = record_setup(first)  # the row's setup (every seed's); records keep each trial's key
        row["genbench_version"] = first["versions"]["genbench"]
        row["torch_version"] = first["versions"]["torch"]
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["bold"] = bold_cells(entries, cols, directions or {})
    return df


TIMING_KEYS = ("train_s", "eval_s", "eval_cpu_s", "prepare_s")  # seconds of a trial's phases (``record["timings"]``)


def _seconds(value) -> float | None:
    """A timing as a float, or None where it is missing or not a number (records of older versions)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def timings_table(records: list[dict], dataset: str) -> pd.DataFrame:
    """Where each model's time went on ``dataset``, one row per model and budget: the mean over its
    finished seeds of ``train_s``, ``eval_s`` and ``prepare_s`` and of each metric's seconds
    (``record["timings"]["metrics"]``), metric columns by name.  All are wall seconds.  A record
    from before a timing was kept adds nothing to its mean: a model none of whose seeds has it
    shows NaN there (blank in a table)."""
    recs = [r for r in records if r["dataset"] == dataset and r["model"] != REFERENCE_MODEL]
    metric_names = sorted({name for r in recs for name in _per_metric(r)})
    rows = []
    for model, group in model_budget_groups(recs):
        group, _ = latest_protocol(group)
        ok = [r for r in group if r["status"] == "ok"]
        row = {"model": model, "budget": group[0]["budget"].get("text", ""), "seeds": f"{len(ok)}/{len(group)}"}
        timings = [r.get("timings") if isinstance(r.get("timings"), dict) else {} for r in ok]
        for key in TIMING_KEYS:
            row[key] = _mean([_seconds(t.get(key)) for t in timings])
        for name in metric_names:
            row[name] = _mean([_seconds(_per_metric(r).get(name)) for r in ok])
        rows.append(row)
    df = pd.DataFrame(rows, columns=["model", "budget", "seeds", *TIMING_KEYS, *metric_names])
    df.attrs["metrics"] = metric_names
    return df


def _per_metric(record: dict) -> dict:
    timings = record.get("timings")
    per_metric = timings.get("metrics") if isinstance(timings, dict) else None
    return per_metric if isinstance(per_metric, dict) else {}


def _mean(values: list[float | None]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def trials_table(records: list[dict]) -> pd.DataFrame:
    """Every trial (every seed) as one flat row."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in ("trial_id", "model", "family", "dataset", "seed", "status", "reason",
                                      "profile", "config_hash", "device")}
        row.update({"budget_kind": r["budget"]["kind"], "budget_amount": r["budget"]["amount"]})
        row.update({f"used_{k}": v for k, v in r.get("used", {}).items()})
        row.update(r.get("metrics", {}))
        row["marks"] = json.dumps(r["marks"], sort_keys=True, ensure_ascii=False) if r.get("marks") else ""
        row["warnings"] = json.dumps(r["warnings"], ensure_ascii=False) if r.get("warnings") else ""
        rows.append(row)
    return pd.DataFrame(rows)


def write_leaderboards(records: list[dict], out_dir: Path) -> list[Path]:
    paths = []
    for dataset in sorted({r["dataset"] for r in records}):
        df = leaderboard(records, dataset)
        path = Path(out_dir) / f"leaderboard-{dataset}.csv"
        atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
        paths.append(path)
    path = Path(out_dir) / "trials.csv"
    atomic_write_text(path, trials_table(records).to_csv(index=False, float_format="%.6g"))
    return paths + [path]
