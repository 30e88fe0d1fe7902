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

The package: :mod:`~genbench.publish.table` (typed cells and tables, the CSV codec),
:mod:`~genbench.publish.rows` (records to trial rows to leaderboard rows, merging),
:mod:`~genbench.publish.render` (the Markdown page and the summaries), :mod:`~genbench.publish.plots`
(budget and training curves), and here :func:`publish`, which runs them, and the command.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from genbench.errors import GenbenchError
from genbench.publish.render import (
    render,
)
from genbench.publish.rows import (
    aggregate,
    backed_rows,
    curves_name,
    merge_trials,
    row_key,
    safe_name,
    sample_name,
    select_records,
    trial_row,
)
from genbench.publish.table import (
    FLOAT,
    TRIAL_HEAD,
    TRIAL_TAIL,
    Table,
    board_table,
    trial_table,
    write_bytes_if_changed,
    write_if_changed,
)
from genbench.ranking import (
    metric_directions,
)
from genbench.results import (
    load_records,
)

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
        write_if_changed(trials_path, trials.to_csv())
        write_if_changed(board_path, board.to_csv())
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
            write_bytes_if_changed(suite_dir / chosen["samples"], sources[id(chosen)].read_bytes())


def _copy_curves(new_rows: list[dict], sources: dict[int, Path], suite_dir: Path) -> None:
    """Each row's training curves (``genbench run`` writes them per trial) from its lowest seed
    that finished and has them, under :func:`curves_name`; a row without new curves keeps its file."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in new_rows:
        if r["status"] == "ok" and id(r) in sources and sources[id(r)].exists():
            groups[row_key(r)].append(r)
    for rows in groups.values():
        chosen = min(rows, key=lambda r: r["seed"])
        write_bytes_if_changed(suite_dir / curves_name(chosen), sources[id(chosen)].read_bytes())


def _drop_unreferenced_samples(suite_dir: Path) -> None:
    referenced = set()
    for path in suite_dir.glob("*-trials.csv"):
        referenced |= {r["samples"] for r in Table.read(path, TRIAL_HEAD, TRIAL_TAIL).rows if r.get("samples")}
    for png in sorted((suite_dir / "samples").glob("*--seed*.png")):
        if f"samples/{png.name}" not in referenced:
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
