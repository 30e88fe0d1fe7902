"""genbench from Python: run trials and read leaderboards as pandas DataFrames.

For a notebook or a script, the two things ``genbench run`` and ``genbench leaderboard`` do::

    from genbench import api

    df = api.run(models=["vae", "gan"], datasets=["ring8"], budget="200steps", seeds=2,
                 profile="test", runs_dir="runs")
    df[["model", "seed", "status", "parzen", "mode_kl"]]     # one row per trial

    boards = api.leaderboard(runs_dir="runs", suite="test")   # {dataset: DataFrame}
    boards["ring8"][["model", "seeds", "parzen", "parzen_ci95", "notes"]]

:func:`run` plans and runs the trials exactly as ``genbench run`` does (the same planning, the same
executors, the same runs folder: a finished trial is not run again, and the CLI's
``genbench leaderboard`` shows what the API ran); :func:`leaderboard` is the aggregation that
``genbench leaderboard`` prints (mean and 95% interval over seeds per model and budget).  Bad
arguments raise :class:`genbench.errors.GenbenchError` (or its subclass ``UnknownNameError``) with
one line that says what to give instead.

This module is ``genbench.api``; the package is to export the two functions as ``genbench.run``
and ``genbench.leaderboard`` as well (through its lazy name table), so both spellings will work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from genbench.errors import GenbenchError, UnknownNameError

DEFAULT_RUNS_DIR = "runs"  # as `genbench run --runs-dir`
FIRST_COLUMNS = ["model", "dataset", "seed", "budget", "status", "reason"]


def run(models: str | Iterable[str] | None = None, datasets: str | Iterable[str] | None = None,
        budget: str | Iterable[str] | None = None, seeds: int = 1, profile: str = "quick",
        config: dict | None = None, metrics: str | Iterable[str] | None = None,
        skip_metrics: str | Iterable[str] | None = None, runs_dir: str | Path = DEFAULT_RUNS_DIR,
        suite: str | None = None, executor: str = "local", workers: int | None = None, as_frame: bool = True,
        *, device: str = "auto", rerun: bool = False, plugins: Iterable[str] = (), quiet: bool = False,
        keep_weights: bool = False):
    """Train and evaluate every (model, dataset, seed) asked for, under one budget; return the trials.

    Arguments (the ``genbench run`` flag of the same name in brackets):

    - ``models``: model names, e.g. ``["vae", "gan"]`` (``--model``; ``genbench list`` shows them).
    - ``datasets``: dataset names (``--dataset``); None: each model's default datasets.
    - ``budget``: ``"30s"``, ``"2000steps"``, ``"1e12flop"`` ...; a list runs every trial at each
      budget (``--budgets``); None: the profile's budget.
    - ``seeds``: number of seeds, 0..seeds-1 (``--seeds``).
    - ``profile``: evaluation protocol, ``"quick"``, ``"standard"`` or ``"test"`` (``--profile``).
    - ``config``: overrides of a family's config, ``{"vae": {"latent_dim": 4}}``, checked like a
      suite file's ``[config.vae]`` table (unknown fields and wrong types are refused).
    - ``metrics`` / ``skip_metrics``: evaluate only these metrics / every metric but these, as
      names (``"sample_quality"``, ``"ais"``) or a column that stands for its metric (``"fid"``);
      a list or a comma-separated string.  The selection is part of each trial: the other metrics'
      columns are empty with the reason in ``not_applicable`` (``--metrics``, ``--skip-metrics``).
    - ``runs_dir`` and ``suite``: results go to ``runs_dir/suite/`` (suite default: the profile's
      name), as with ``--runs-dir`` and ``--suite``.
    - ``executor``: ``"local"`` (isolated worker processes), ``"inline"`` (in this process: the
      quickest for a few small trials) or ``"ray"``; ``workers``: processes of the local executor.
    - ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``), ``rerun`` (run finished trials again),
      ``plugins`` (local plugin files, ``--plugin``), ``quiet`` (no progress display).
    - ``keep_weights``: keep each finished trial's evaluated state under ``runs_dir/suite/weights/``
      for ``genbench evaluate`` (``--keep-weights``; the record's ``weights`` names the file).

    Returns a pandas DataFrame with one row per trial: ``model``, ``dataset``, ``seed``, ``budget``,
    ``status`` ("ok" or "failed"), ``reason`` (why it failed), then every metric column (NaN where
    a metric did not apply, was not selected or was not finite), then the trial's id, profile,
    config hash, device and budget use.  With ``as_frame=False``, the list of trial records (the
    dicts stored as ``trials/*.json``, with config, timings, ``not_applicable`` and every
    estimator's name)."""
    from rich.console import Console

    from genbench.budget import Budget
    from genbench.executors import ExecutorOptions
    from genbench.manager import PluginManager
    from genbench.metrics import select_metrics
    from genbench.profiles import get_profile
    from genbench.results import record_text
    from genbench.suite import check_suite_name, plan_trials, run_suite

    model_names = _names(models, "models")
    if not model_names:
        raise GenbenchError('models: name at least one model, e.g. models=["vae"] (`genbench list` shows them)')
    dataset_names = _names(datasets, "datasets") or None
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GenbenchError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    if config is not None and not (isinstance(config, dict) and all(isinstance(v, dict) for v in config.values())):
        raise GenbenchError('config must be a dict of model name -> {field: value}, e.g. {"vae": {"hidden": 200}}, '
                            f"got {config!r}")
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise GenbenchError(f"runs_dir {str(runs_dir)!r} is a file, not a folder; give a folder (it is created if "
                            "missing)")
    manager = PluginManager(plugin_files=list(plugins))
    texts = _names(budget, "budget") or [get_profile(profile).budget]
    budgets = list({(b.kind, b.amount): b for b in map(Budget.parse, texts)}.values())  # "60s" == "1m"
    selection = select_metrics(manager.metrics, metrics, skip_metrics)
    trials = [t for b in budgets for t in plan_trials(manager, model_names, dataset_names, b, seeds, profile,
                                                      config=config, metrics=selection)]
    suite_name = check_suite_name(suite or profile, "suite")
    options = ExecutorOptions(kind=executor, workers=workers, device=device, plugin_files=tuple(plugins),
                              keep_weights=bool(keep_weights)).validate()
    console = Console(quiet=quiet)
    records = run_suite(manager, trials, runs, suite_name, device=device, rerun=rerun, console=console,
                        options=options)
    # each trial's record as stored (non-finite values as None), whether it ran now or before
    by_id = {r["trial_id"]: json.loads(record_text(r)) for r in records}
    ids = [t.trial_id(manager.models.get(t.model)) for t in trials]
    mine = [by_id[i] for i in ids if i in by_id]
    return trials_frame(mine) if as_frame else mine


def trials_frame(records: list[dict]) -> pd.DataFrame:
    """Trial records as one flat row each: ``FIRST_COLUMNS``, every metric column, then the rest
    of :func:`genbench.results.trials_table`."""
    from genbench.results import metric_columns, trials_table

    df = trials_table(records)
    if df.empty:
        return pd.DataFrame(columns=FIRST_COLUMNS)
    df["budget"] = [r["budget"].get("text", "") for r in records]
    metric_cols = metric_columns(records)
    rest = [c for c in df.columns if c not in FIRST_COLUMNS and c not in metric_cols]
    df = df[FIRST_COLUMNS + metric_cols + rest]
    df[metric_cols] = df[metric_cols].astype(float)  # None (not measured, not finite) -> NaN
    return df


def leaderboard(runs_dir: str | Path = DEFAULT_RUNS_DIR, suite: str = "quick", dataset: str | None = None,
                *, plugins: Iterable[str] = ()) -> dict[str, pd.DataFrame] | pd.DataFrame:
    """The leaderboard of ``runs_dir/suite/``, as ``genbench leaderboard`` aggregates it: one row
    per model and budget, with ``seeds`` ("finished/run"), each metric's mean over seeds and its
    95% interval (``<metric>_ci95``), ``notes`` (marked values, seeds missing from a mean),
    ``empty_cells`` (why a metric's cells are empty: not applicable, or not selected) and the
    estimators, extractor and versions.  ``df.attrs["bold"]`` maps a metric column to the row
    positions that are bold (the best mean and every row not significantly different from it).

    Returns a dict dataset name -> DataFrame, or one DataFrame when ``dataset`` is given."""
    from genbench.manager import PluginManager
    from genbench.ranking import metric_directions
    from genbench.results import leaderboard as board
    from genbench.results import load_records
    from genbench.suite import check_suite_name

    check_suite_name(suite, "suite")
    records = load_records(Path(runs_dir), suite)
    if not records:
        raise GenbenchError(f"no results for suite {suite!r} under {str(runs_dir)!r}; run api.run(...) first "
                            "(or pass the suite= and runs_dir= it wrote to)")
    directions = metric_directions(PluginManager(plugin_files=list(plugins)))
    names = sorted({r["dataset"] for r in records})
    if dataset is None:
        return {name: board(records, name, directions) for name in names}
    if dataset not in names:
        raise UnknownNameError(f"suite {suite!r} has no results on dataset {dataset!r}; datasets with results: "
                               f"{', '.join(names)}")
    return board(records, dataset, directions)


def _names(value, what: str) -> list[str]:
    """A name or a list of names (a comma-separated string too) as a list, each once, in order."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    try:
        items = list(value)
    except TypeError:
        raise GenbenchError(f"{what} must be a name or a list of names, got {value!r}") from None
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise GenbenchError(f"{what} must be a name or a list of names, got {bad[0]!r} in {items!r}")
    return list(dict.fromkeys(v.strip() for v in items if v.strip()))
