"""The `genbench` command line: list, run, evaluate, check, publish, leaderboard."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from genbench.errors import GenbenchError
from genbench.profiles import PROFILES, get_profile

# torch, rich and the plugins are imported inside the commands that use them, so that
# `genbench --help` and a mistyped flag answer at once
if TYPE_CHECKING:
    from rich.console import Console

    from genbench.manager import PluginManager

DEFAULT_RUNS = "runs"
PIPE_WIDTH = 120  # console width when stdout is not a terminal and COLUMNS is not set

SET_HELP = ("override a field of a model's config, typed by the field's annotation (repeatable), "
            "e.g. --set vae.lr=3e-4 --set vae.hidden=200")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbench", description="Fixed-budget benchmark of deep generative models.")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a local plugin file (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="registered models, datasets and metrics")
    ls.add_argument("-v", "--verbose", action="store_true",
                    help="every dataset each model applies to, its plugin, and every metric column")
    ls.add_argument("--json", action="store_true", help="print the facts as JSON (and nothing else) on stdout")

    r = sub.add_parser("run", help="train and evaluate models under one budget")
    r.add_argument("--all", action="store_true", help="every registered model on every dataset of the profile")
    r.add_argument("--model", action="append", help="model name (repeatable)")
    r.add_argument("--dataset", action="append", help="dataset name (repeatable)")
    r.add_argument("--budget", default=None, help="30s | 10m | 1h | 2000steps | 1e12flop (default: the profile's)")
    r.add_argument("--budgets", default=None, metavar="B1,B2,...",
                   help="run every trial at each of these budgets, e.g. 10s,30s,90s (for the budget curves "
                        "of `genbench publish`)")
    r.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1; default 1, or each "
                                                             "reproduction entry's own)")
    r.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="evaluation protocol")
    r.add_argument("--metrics", default=None, metavar="NAME,...",
                   help="evaluate only these metrics (names as `genbench list` shows them; a column such as fid "
                        "stands for its metric); the others' cells stay empty, and the selection is part of the "
                        "trial: a trial scored by every metric is not reused for it, nor the other way round")
    r.add_argument("--skip-metrics", default=None, metavar="NAME,...",
                   help="evaluate every metric but these, e.g. ais,posterior_gaps (recorded like --metrics)")
    r.add_argument("--suite", default=None,
                   help="suite name (folder under the runs dir; default: the profile); `--suite repro` alone runs "
                        "the reproduction suite: each family's published claim at its own budget")
    r.add_argument("--suite-file", default=None, help="TOML file with models, datasets, budget, seeds, profile")
    r.add_argument("--set", action="append", default=[], metavar="MODEL.FIELD=VALUE", dest="sets",
                   help=SET_HELP + "; recorded in the trial's config and its hash as a --suite-file "
                        "[config.MODEL] table is, and wins over the suite file's value for the same field")
    r.add_argument("--runs-dir", default=DEFAULT_RUNS)
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--rerun", action="store_true",
                   help="run every trial again (by default finished trials are skipped and failed ones retried)")
    r.add_argument("--executor", default="local", choices=["local", "inline", "ray"],
                   help="local: isolated worker processes (default); inline: in this process, for debugging; "
                        "ray: Ray tasks on a local instance or a cluster")
    r.add_argument("--workers", type=int, default=None,
                   help="worker processes of the local executor (default: one per CPU core, at most 8, "
                        "each with 1 torch thread; 1 on a GPU)")
    r.add_argument("--address", default=None, help="Ray cluster head, host:6379 (with --executor ray)")
    r.add_argument("--trial-timeout", type=float, default=None, metavar="SECONDS",
                   help="training time limit per trial (default: 3x a time budget + 120 s; "
                        "12 h for step/FLOP budgets)")
    r.add_argument("--eval-timeout", type=float, default=None, metavar="SECONDS",
                   help="limit for loading data and for evaluation, each (default by profile)")
    r.add_argument("--memory-limit", type=float, default=8.0, metavar="GIB",
                   help="address space a trial may add to its worker's, in GiB (default 8; 0 = no cap)")
    r.add_argument("--checkpoint-every", type=float, default=0.25, metavar="FRACTION",
                   help="checkpoint each trial at this fraction of its budget (default 0.25; 0 = never)")
    r.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per trial (default 1 on a CPU: a seconds budget counts the trial's CPU time "
                        "and all its threads share it)")
    r.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="also write each trial's training losses and metrics to DIR/<trial_id>/ for TensorBoard "
                        '(needs the tensorboard package: pip install "genbench[tensorboard]")')
    r.add_argument("--keep-weights", action="store_true",
                   help="keep each finished trial's trained state (the best-on-validation state it was evaluated "
                        "at) in <runs>/<suite>/weights/<trial_id>.pt, so `genbench evaluate` can score it with new "
                        "metrics without training again; off by default: a file is 0.03-3.7 MB on the embedded sets "
                        "(vae on digits 1.7 MB, dcgan 0.4 MB), 60 MB per seed and budget for --all; a finished "
                        "trial is skipped as usual: add --rerun to train it again with its weights kept")

    ev = sub.add_parser("evaluate", help="score finished trials again from their kept weights (run --keep-weights), "
                                         "without training",
                        description="Score finished trials again from the weights `genbench run --keep-weights` "
                                    "kept, and update their records in place (training figures untouched). Exit "
                                    "code 0: every matching trial was scored; 1: one or more were not (one line "
                                    "each says why, e.g. no kept weights); 2: nothing to do or a bad argument.")
    ev.add_argument("--runs-dir", default=DEFAULT_RUNS)
    ev.add_argument("--suite", default="quick", help="suite folder under the runs dir (default quick)")
    ev.add_argument("--model", action="append", help="only this model's trials (repeatable)")
    ev.add_argument("--dataset", action="append", help="only trials on this dataset (repeatable)")
    ev.add_argument("--profile", action="append", choices=sorted(PROFILES),
                    help="only trials run under this profile (repeatable); each trial is scored under its own "
                         "profile, so its row stays comparable with the others")
    ev.add_argument("--metrics", default=None, metavar="NAME,...",
                    help="compute only these metrics (as `genbench run --metrics`); their columns are replaced and "
                         "every other metric's columns keep the values they had")
    ev.add_argument("--skip-metrics", default=None, metavar="NAME,...",
                    help="compute every metric but these; the skipped ones keep the values they had")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")

    c = sub.add_parser("check", help="check that a model honours the contract (a micro-budget run)")
    c.add_argument("models", nargs="*", metavar="MODEL", help="model names (see `genbench list`)")
    c.add_argument("--all", action="store_true", help="check every registered model")
    c.add_argument("--dataset", action="append", help="dataset to check on (default: one per data kind)")
    c.add_argument("--steps", type=int, default=4, help="training steps per build (default 4)")
    c.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    c.add_argument("--set", action="append", default=[], metavar="MODEL.FIELD=VALUE", dest="sets", help=SET_HELP)
    c.add_argument("--json", action="store_true",
                   help="print the checks as JSON (and nothing else) on stdout; the exit code is the same")

    dt = sub.add_parser("data", help="each known dataset: its shape, whether its files are present, where they go",
                        description="Each registered dataset with its shape, whether its files are under "
                                    "$GENBENCH_DATA (embedded and derived sets need none) and where they go. "
                                    "genbench never downloads unless GENBENCH_DOWNLOAD=1.")
    dt.add_argument("--json", action="store_true", help="print the table as JSON on stdout")

    np_ = sub.add_parser("new-plugin", help="write a package skeleton for a new model family",
                         description="Write NAME/ with a pyproject.toml (entry point in the `genbench` group), "
                                     "a model family that passes `genbench check` as written (a generative "
                                     "moment-matching network: edit it into yours) and a test that runs the "
                                     "contract check through genbench.testing.check_model.")
    np_.add_argument("name", metavar="NAME", help="the model's name, lowercase with hyphens (e.g. my-model)")
    np_.add_argument("--dir", default=".", help="folder to create NAME/ in (default: the current folder)")

    pb = sub.add_parser("publish", help="write leaderboard CSVs with provenance, sample grids, budget curves and a "
                                        "rendered README (merged into what --out already holds)")
    pb.add_argument("--runs-dir", default=DEFAULT_RUNS)
    pb.add_argument("--suite", action="append",
                    help="suite to publish (repeatable; default: every suite in --runs-dir)")
    pb.add_argument("--out", default="leaderboards", help="folder of the published leaderboards (default leaderboards)")

    lb = sub.add_parser("leaderboard", help="show the leaderboard of a suite")
    lb.add_argument("--suite", default="quick")
    lb.add_argument("--runs-dir", default=DEFAULT_RUNS)
    lb.add_argument("--dataset", action="append")
    lb.add_argument("--timings", action="store_true",
                    help="show where each model's time went (train_s, eval_s and each metric's seconds) "
                         "instead of its metrics")
    lb.add_argument("--json", action="store_true",
                    help="print the leaderboard rows (the CSV's columns) as JSON, per dataset, on stdout")
    return p


def _fmt(value, half=None) -> str:
    """Four significant digits, the interval's half-width two, in plain notation where it is short
    (``2367 ± 370``, not ``2367 ± 3.7e+02``)."""
    from genbench.formatting import number

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = number(value)
    if half is not None and not (isinstance(half, float) and math.isnan(half)):
        text += f" ± {number(half, 2)}"
    return text


def _steps(value) -> str:
    """A step count is a whole number: the rounded mean over seeds."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return str(round(value))


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def terminal_columns(present: list[str], facts) -> list[str]:
    """The metric columns of the terminal table: every headline column the registered metrics
    declare (``Metric.headline``; ``facts`` is :func:`genbench.ranking.metric_directions`), in rank
    order (sample quality, likelihood, the families' own metrics, then the secondary ones); the CSVs
    have every column.  Chance levels stay out: a cell at or below its chance level is marked instead."""
    from genbench.ranking import CHANCE_SUFFIX

    return [c for c in facts.headline(present) if not c.endswith(CHANCE_SUFFIX)]


STATUS_WIDTH = 24  # a failed row's reason wraps inside this many characters of the status column


def table_width(widths: list[int]) -> int:
    """Characters a rich table (default box, padding of one space) takes with columns this wide:
    each cell's two spaces of padding, a border between columns and one at either edge."""
    return sum(w + 3 for w in widths) + 1


def pack_columns(widths: dict[str, int], first: list[int], repeated: list[int], width: int) -> list[list[str]]:
    """Deal the metric columns ``widths`` (name -> width of its widest cell or header, in display
    order) into tables that each fit ``width`` characters.  ``first`` and ``repeated`` are the
    widths of the other columns of the first table (model, status, ..., notes) and of every later
    one (the model again, so its rows read on their own).  Each table gets at least one metric
    column, however narrow the terminal: a number is never cut to fit."""
    tables: list[list[str]] = []
    current: list[str] = []
    others = first
    for col in widths:
        if current and table_width([*others, *(widths[c] for c in current), widths[col]]) > width:
            tables.append(current)
            current, others = [], repeated
        current.append(col)
    return [*tables, current]


def show_leaderboard(console: Console, records: list[dict], datasets: list[str] | None = None,
                     directions=None) -> None:
    """One rich table per dataset, with every column of :func:`terminal_columns`.  Numbers are never
    cut: the metric columns that do not fit the console's width beside the model, status, seeds,
    steps and notes go on into further tables below (each headed by the model again).  Marks, flags
    and bold follow :mod:`genbench.ranking`: a cell ending in † is not a plain number, a row starting
    with ⚠ carries a finding about the whole trial, bold is the best mean and every row not
    significantly different from it.  The notes column numbers the rows that have notes; the notes
    follow the tables in full, so a narrow terminal does not fold them into a column a dozen
    characters wide."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    from genbench.ranking import FLAG, MARK, TEST, flagged, loads, marked, metric_directions
    from genbench.results import REFERENCE_MODEL, leaderboard

    if directions is None:  # the registered metrics' directions and headline columns
        from genbench.manager import PluginManager

        directions = metric_directions(PluginManager())

    for ds in sorted({r["dataset"] for r in records}):
        if datasets and ds not in datasets:
            continue
        df = leaderboard(records, ds, directions)
        measured = {m for r in records if r["dataset"] == ds for m in r.get("metrics", {})}
        present = [c for c in df.columns if c in measured and df[c].notna().any()]
        cols = terminal_columns(present, directions)
        bold = df.attrs.get("bold", {})
        warned = [bool(loads(w, [])) for w in df["warnings"]]
        several = df.loc[df["budget_kind"] != "none", "budget"].nunique() > 1  # a suite run with --budgets

        # every cell first, as text, so that each column's width is known before the tables are laid out
        rows, footnotes = [], []
        for pos, (_, row) in enumerate(df.iterrows()):
            status = (Text(row["status"]) if row["status"] != "failed"
                      else Text.assemble(("failed", "red"), " " + _shorten(str(row["reason"]), 50)))
            marks = loads(row["marks"], {})
            cells = {"model": Text(flagged(row["model"], warned[pos])), "status": status,
                     "seeds": Text(str(row["seeds"])),
                     "steps": Text(_steps(row["used_steps"]) if row["model"] != REFERENCE_MODEL else "")}
            if several:
                cells["budget"] = Text(str(row["budget"]))
            for c in cols:
                text = marked(_fmt(row[c], row.get(f"{c}_ci95")), c in marks)
                cells[c] = Text(text, style="bold" if pos in bold.get(c, ()) else "")
            if row["notes"]:
                footnotes.append(f"[{len(footnotes) + 1}] {row['model']}: {row['notes']}")
            cells["notes"] = Text(f"[{len(footnotes)}]" if row["notes"] else "")
            rows.append(cells)

        def width_of(head: str, rows=rows) -> int:
            widest = max([cell_len(head), *(r[head].cell_len for r in rows)])
            return min(widest, STATUS_WIDTH) if head == "status" else widest

        keys = ["model", *(["budget"] if several else [])]
        first = [*keys, "status", "seeds", "steps"]
        groups = pack_columns({c: width_of(c) for c in cols}, [width_of(h) for h in [*first, "notes"]],
                              [width_of(h) for h in keys], console.width)
        for i, group in enumerate(groups):
            title = f"genbench leaderboard: {ds}" + (f" (continued, {i + 1}/{len(groups)})" if i else "")
            table = Table(title=title, header_style="bold")
            heads = [*(first if i == 0 else keys), *group, *(["notes"] if i == 0 else [])]
            for head in heads:
                # only the status (a failed row's reason) may wrap; names and numbers stay whole
                table.add_column(head, justify="left" if head in ("model", "status") else "right",
                                 no_wrap=head != "status", max_width=STATUS_WIDTH if head == "status" else None)
            for cells in rows:
                table.add_row(*(cells[h] for h in heads))
            console.print(table)
        for note in footnotes:
            console.print(Text(_shorten(note, 600)))
        extractor = next((e for e in df["extractor"] if e), "")
        caption = (f"± is a 95% interval over seeds; bold: the best mean and every row not significantly different "
                   f"from it ({TEST}; a one-seed row competes only where no row has more seeds); {MARK}: the value "
                   f"failed its own check or is at or below its chance level; {FLAG}: a finding about the whole row, "
                   f"never bold; reasons in notes; every column and empty cell's reason in the CSV")
        console.print(Text(("features: " + extractor + "; " if extractor else "") + caption, style="dim"))


def _seconds(value) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.2f}"


def show_timings(console: Console, records: list[dict], datasets: list[str] | None = None) -> None:
    """One rich table per dataset of where each model's time went: the mean over finished seeds of
    training, evaluation, one-off preparation and each metric (:func:`genbench.results.timings_table`)."""
    from rich.table import Table
    from rich.text import Text

    from genbench.results import TIMING_KEYS, timings_table

    for ds in sorted({r["dataset"] for r in records}):
        if datasets and ds not in datasets:
            continue
        df = timings_table(records, ds)
        if df.empty:
            continue
        several = df["budget"].nunique() > 1
        table = Table(title=f"genbench timings: {ds} (seconds)", header_style="bold")
        heads = ["model", *(["budget"] if several else []), "seeds", *TIMING_KEYS, *df.attrs["metrics"]]
        for head in heads:
            table.add_column(head, justify="left" if head == "model" else "right", overflow="fold")
        for _, row in df.iterrows():
            table.add_row(str(row["model"]), *([str(row["budget"])] if several else []), str(row["seeds"]),
                          *(_seconds(row[c]) for c in [*TIMING_KEYS, *df.attrs["metrics"]]))
        console.print(table)
        console.print(Text("wall seconds (time.perf_counter), but eval_cpu_s: the evaluation's CPU time, the clock "
                           "of a CPU seconds budget; mean over finished seeds; train_s includes model "
                           "selection; prepare_s is one-off work cached per dataset (a classifier trained on first "
                           "use), outside eval_s; work that metrics share is counted in the first metric that does "
                           "it (AIS's run in ais, not again in posterior_gaps); blank: not applicable, or a record "
                           "written before the time was kept", style="dim"))


def list_facts(manager: PluginManager) -> dict:
    """What `genbench list` shows, as plain data (the JSON of `genbench list --json`)."""
    from genbench.suite import default_datasets, runs_by_default

    defaults = default_datasets(manager)
    models = []
    for name in manager.models:
        cls = manager.models.get(name)
        models.append({
            "name": name, "family": cls.family, "capabilities": sorted(cls.capabilities),
            "all_datasets": [d for d in defaults if runs_by_default(cls, manager.datasets.get(d).spec)],
            "datasets": manager.datasets_for(cls), "plugin": manager.plugin_of("model", name), "paper": cls.paper,
        })
    datasets = []
    for name in manager.datasets:
        e = manager.datasets.get(name)
        datasets.append({"name": name, "kind": e.kind, "shape": list(e.spec.shape),
                         "in_default_suite": e.in_default_suite, "description": e.description})
    metrics = []
    for name in manager.metrics:
        m = manager.metrics.get(name)
        metrics.append({"name": name, "columns": list(m.columns), "needs": m.needs_text(),
                        "data_kinds": sorted(m.data_kinds)})
    return {"models": models, "datasets": datasets, "metrics": metrics, "broken_plugins": dict(manager.broken)}


def cmd_list(manager: PluginManager, console: Console, verbose: bool = False) -> None:
    """One line per model (the datasets `--all` runs it on), dataset and metric; ``verbose`` adds
    every dataset a model applies to and its plugin, and wraps long cells instead of cutting them."""
    facts = list_facts(manager)
    if verbose:
        models = [(m["name"], m["family"], ", ".join(m["capabilities"]), ", ".join(m["datasets"]),
                   ", ".join(m["all_datasets"]), m["plugin"]) for m in facts["models"]]
        model_heads = ("name", "family", "capabilities", "datasets", "datasets under --all", "plugin")
    else:
        models = [(m["name"], m["family"], ", ".join(m["capabilities"]), ", ".join(m["all_datasets"]))
                  for m in facts["models"]]
        model_heads = ("name", "family", "capabilities", "datasets under --all")
    console.print(_list_table("models", model_heads, models, verbose))
    datasets = [(d["name"], d["kind"], "x".join(map(str, d["shape"])), "yes" if d["in_default_suite"] else "no",
                 d["description"]) for d in facts["datasets"]]
    if not verbose:
        datasets = _fold_derived(datasets)
    console.print(_list_table("datasets", ("name", "kind", "shape", "in --all", "description"), datasets, verbose))
    metrics = [(m["name"], m["needs"], ", ".join(m["data_kinds"]), ", ".join(m["columns"])) for m in facts["metrics"]]
    console.print(_list_table("metrics", ("name", "needs", "data", "columns"), metrics, verbose))
    for name, why in facts["broken_plugins"].items():
        console.print(f"[red]plugin {name!r} failed to load:[/red] {why}")
    if not verbose:
        console.print("[dim]genbench list -v: every dataset each model applies to, the plugins, whole cells; "
                      "--json: all of it as JSON[/dim]")


def _fold_derived(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """One row for the task sets derived from a set outside --all (mnist-captions, mnist-domains, ...
    become ``mnist-*``), so the first screen stays short; `genbench list -v` shows each."""
    names = {row[0] for row in rows}
    outside = {row[0] for row in rows if row[3] == "no"}
    derived: dict[str, list[str]] = {}
    for row in rows:
        base, _, task = row[0].partition("-")
        if task and base in names and base in outside and row[3] == "no":
            derived.setdefault(base, []).append(task)
    out = []
    for row in rows:
        base, _, task = row[0].partition("-")
        if base in derived and task in derived[base]:
            if task == derived[base][0]:
                tasks = ", ".join(derived[base])
                out.append((f"{base}-*", row[1], row[2], row[3], f"the task sets on {base}: {tasks}"))
            continue
        out.append(row)
    return out


def _list_table(title: str, heads: tuple[str, ...], rows: list[tuple[str, ...]], verbose: bool):
    """A table of `genbench list`: boxed with wrapped cells when ``verbose``; otherwise one line per
    row, every column whole but the last, which is cut to the terminal's width."""
    from rich import box
    from rich.table import Table

    if verbose:
        table = Table(title=title, header_style="bold")
        for head in heads:
            table.add_column(head, overflow="fold")
    else:
        table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, head in enumerate(heads):
            whole = max([len(head), *(len(row[i]) for row in rows)])
            table.add_column(head, no_wrap=True, overflow="ellipsis", min_width=None if i == len(heads) - 1 else whole)
    for row in rows:
        table.add_row(*row)
    return table


def cmd_run(args, manager: PluginManager, console: Console) -> int:
    from genbench.budget import Budget
    from genbench.repro import REPRO_SUITE
    from genbench.suite import load_suite_file, plan_trials, run_suite, summary

    check_run_args(args)
    from genbench.metrics import select_metrics

    metrics = select_metrics(manager.metrics, args.metrics, args.skip_metrics)
    if args.suite == REPRO_SUITE and not (args.model or args.dataset or args.all or args.suite_file):
        if args.sets:
            raise GenbenchError("the reproduction suite runs each entry with its paper's config; drop --set, or "
                                "name models with --model for a suite of your own")
        if not metrics.everything:
            raise GenbenchError("the reproduction suite scores each claim by the metrics its paper reports; drop "
                                "--metrics/--skip-metrics, or name models with --model for a suite of your own")
        return cmd_repro(args, manager, console)
    from genbench.imagesets import dataset_names

    models, datasets, budget_text = args.model, dataset_names(args.dataset, manager), args.budget
    seeds, profile, config = (1 if args.seeds is None else args.seeds), args.profile, {}
    suite_name = args.suite
    if args.suite_file:
        spec = load_suite_file(args.suite_file)
        models = models or spec.get("models")
        datasets = datasets or spec.get("datasets")
        budget_text = budget_text or spec.get("budget")
        seeds = spec.get("seeds", seeds)
        profile = spec.get("profile", profile)
        config = spec.get("config", {})
        suite_name = suite_name or spec.get("name")
    config = with_sets(config, args.sets, manager, models or (list(manager.models) if args.all else []))

    options = executor_options(args)
    prof = get_profile(profile)
    if args.budgets and args.budget:
        raise GenbenchError("give --budget or --budgets (a comma-separated list), not both")
    texts = args.budgets.split(",") if args.budgets else [prof.budget if budget_text is None else budget_text]
    # one trial per distinct budget: "60s" and "1m" are the same budget
    budgets = list({(b.kind, b.amount): b for b in map(Budget.parse, filter(str.strip, texts))}.values())
    if not budgets:
        raise GenbenchError(f"--budgets {args.budgets!r} names no budget; give e.g. --budgets 10s,30s,90s")
    budget = ", ".join(b.text for b in budgets)
    if seeds < 1:
        raise GenbenchError(f"--seeds must be at least 1, got {seeds}")
    trials = [t for b in budgets
              for t in plan_trials(manager, models, datasets, b, seeds, profile, run_all=args.all, config=config,
                                   metrics=metrics)]
    from genbench.suite import check_suite_name

    suite = check_suite_name(suite_name or profile)
    observe_tensorboard(args, manager, suite)
    console.print(f"[bold]genbench[/bold]: {len(trials)} trials, budget {budget} each, profile {profile}, "
                  f"results in {Path(args.runs_dir) / suite}")
    if profile == "standard" and args.device in ("auto", "cpu"):
        from genbench.runner import resolve_device

        if resolve_device(args.device).type == "cpu":
            console.print("[dim]note: the standard profile is meant for a GPU (AIS in every dimension, q* fits of "
                          "10,000 steps, 50,000 Inception samples): on a CPU its evaluation can take hours per "
                          "trial[/dim]")
    records = run_suite(manager, trials, Path(args.runs_dir), suite, device=args.device, rerun=args.rerun,
                        console=console, options=options)
    from genbench.ranking import metric_directions
    from genbench.results import load_records

    show_leaderboard(console, load_records(Path(args.runs_dir), suite), sorted({t.dataset for t in trials}),
                     metric_directions(manager))
    console.print(summary(records))
    console.print(f"leaderboard CSVs: {Path(args.runs_dir) / suite}/leaderboard-*.csv")
    return 0


def observe_tensorboard(args, manager: PluginManager, suite: str) -> None:
    """With ``--tensorboard DIR``, each trial of this run is also written to DIR as it finishes."""
    if args.tensorboard:
        from genbench.tensorboard import TensorBoardLog

        manager.pm.register(TensorBoardLog(args.tensorboard, Path(args.runs_dir) / suite), name="genbench.tensorboard")


def with_sets(config: dict, sets: list[str], manager: PluginManager, models: list[str]) -> dict:
    """``config`` ({model: {field: value}}, e.g. a suite file's) with the ``--set`` flags applied
    over it: on the same field the flag wins."""
    from genbench.overrides import parse_sets

    merged = {model: dict(fields) for model, fields in config.items()}
    for model, fields in parse_sets(sets, manager, models).items():
        merged.setdefault(model, {}).update(fields)
    return merged


MAX_SEEDS = 1000  # more is a typo (a suite of that many trials per model would run for weeks)


def check_run_args(args) -> None:
    """The flags of `genbench run` that no later step checks: device, runs folder, seed count, and
    repeated --model/--dataset names (kept once: the same trial twice would share its files)."""
    from genbench.runner import resolve_device

    resolve_device(args.device)
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        raise GenbenchError(f"--runs-dir {args.runs_dir!r} is a file, not a folder; give a folder "
                            "(it is created if missing)")
    if args.seeds is not None and args.seeds > MAX_SEEDS:
        raise GenbenchError(f"--seeds {args.seeds} is more than {MAX_SEEDS}; give the number of seeds to run "
                            "(each seed is one trial per model and dataset), e.g. --seeds 3")
    if args.budget is not None and not args.budget.strip():
        raise GenbenchError("--budget is empty; give e.g. --budget 30s, or leave the flag out for the profile's")
    for name in ("model", "dataset"):
        values = getattr(args, name)
        if values:
            setattr(args, name, list(dict.fromkeys(values)))


def executor_options(args):
    from genbench.executors import ExecutorOptions

    return ExecutorOptions(kind=args.executor, workers=args.workers, address=args.address, device=args.device,
                           trial_timeout=args.trial_timeout, eval_timeout=args.eval_timeout,
                           memory_limit_gb=args.memory_limit, checkpoint_every=args.checkpoint_every,
                           plugin_files=tuple(args.plugin), threads=args.threads,
                           keep_weights=args.keep_weights).validate()


def cmd_repro(args, manager: PluginManager, console: Console) -> int:
    """`genbench run --suite repro`: every entry of the shipped reproduction file at its own budget and
    seeds (``--seeds N`` overrides the seeds, e.g. 1 for a first look), then the paper-vs-genbench table."""
    import dataclasses

    from rich.table import Table

    from genbench.publish import record_rows
    from genbench.ranking import metric_directions
    from genbench.repro import REPRO_FILE, REPRO_SUITE, claims_table, load_claims, plan_repro_trials
    from genbench.results import load_records
    from genbench.suite import run_suite, summary

    if args.budget or args.budgets:
        raise GenbenchError("the reproduction suite runs each entry at its own budget (see genbench/repro.toml); "
                            "drop --budget/--budgets, or name models with --model for a suite of your own")
    claims = load_claims()
    if args.seeds is not None:
        if args.seeds < 1:
            raise GenbenchError(f"--seeds must be at least 1, got {args.seeds}")
        claims = [dataclasses.replace(c, seeds=args.seeds) for c in claims]
    options = executor_options(args)
    trials = plan_repro_trials(manager, claims, args.profile)
    runs = Path(args.runs_dir)
    observe_tensorboard(args, manager, REPRO_SUITE)
    console.print(f"[bold]genbench[/bold]: reproduction suite ({REPRO_FILE.name}): {len(claims)} claims, "
                  f"{len(trials)} trials, profile {args.profile}, results in {runs / REPRO_SUITE}")
    records = run_suite(manager, trials, runs, REPRO_SUITE, device=args.device, rerun=args.rerun,
                        console=console, options=options)
    everything = [dict(r, suite=REPRO_SUITE) for r in load_records(runs, REPRO_SUITE)]
    show_leaderboard(console, everything, sorted({t.dataset for t in trials}), metric_directions(manager))
    families = {n: manager.models.get(n).family for n in manager.models}
    table = Table(title="paper vs genbench", show_lines=False)
    for col in ("family", "model", "dataset", "figure", "paper", "genbench", "verdict"):
        table.add_column(col)
    for r in claims_table(claims, record_rows(everything), families):
        ours = "" if r["genbench"] is None else f"{r['genbench']:.4g}" + (
            f" ± {r['genbench_ci95']:.2g}" if r["genbench_ci95"] is not None else "")
        table.add_row(r["family"], r["model"], r["dataset"], r["figure"],
                      "qualitative" if r["paper"] is None else f"{r['paper']:g}", ours, r["verdict"])
    console.print(table)
    console.print(summary(records))
    return 0


def cmd_evaluate(args, manager: PluginManager, console: Console) -> int:
    """`genbench evaluate`: re-score finished trials from their kept weights (genbench.evaluate).
    Exit code 0 when every matching trial was scored, 1 when one or more could not be (each says
    why in one line: no kept weights, an unreadable file, a failed metric run)."""
    from genbench.evaluate import reevaluate
    from genbench.imagesets import dataset_names
    from genbench.metrics import select_metrics
    from genbench.ranking import metric_directions
    from genbench.results import load_records
    from genbench.suite import check_suite_name

    suite = check_suite_name(args.suite)
    selection = select_metrics(manager.metrics, args.metrics, args.skip_metrics)
    updated, problems = reevaluate(manager, Path(args.runs_dir), suite, selection, models=args.model,
                                   datasets=dataset_names(args.dataset, manager), profiles=args.profile,
                                   device=args.device, console=console)
    for line in problems:
        console.print(line, style="yellow", markup=False, highlight=False)
    if updated:
        show_leaderboard(console, load_records(Path(args.runs_dir), suite), sorted({r["dataset"] for r in updated}),
                         metric_directions(manager))
    console.print(f"{len(updated)} trial(s) re-evaluated, {len(problems)} not")
    return 0 if not problems else 1


def cmd_leaderboard(args, console: Console, manager: PluginManager | None = None) -> int:
    from genbench.ranking import metric_directions
    from genbench.results import load_records

    records = load_records(Path(args.runs_dir), args.suite)
    if not records:
        raise GenbenchError(f"no results for suite {args.suite!r} under {args.runs_dir!r}; run `genbench run` first "
                            f"(or pass --suite/--runs-dir)")
    if args.json:
        print(json.dumps(leaderboard_json(records, args.dataset, args.timings, metric_directions(manager)),
                         indent=2))
        return 0
    if args.timings:
        show_timings(console, records, args.dataset)
        return 0
    show_leaderboard(console, records, args.dataset, metric_directions(manager))
    return 0


def leaderboard_json(records: list[dict], datasets: list[str] | None, timings: bool,
                     directions: dict[str, str]) -> dict[str, list[dict]]:
    """Dataset -> its leaderboard rows, each an object with the columns of the dataset's CSV
    (``timings``: the rows of the timings table instead); a missing value is null."""
    from genbench.results import leaderboard, timings_table

    out = {}
    for ds in sorted({r["dataset"] for r in records}):
        if datasets and ds not in datasets:
            continue
        df = timings_table(records, ds) if timings else leaderboard(records, ds, directions)
        # 15 decimals, pandas' most (its default of 10 turns 4.6884e-4 into 4.68839e-4)
        out[ds] = json.loads(df.to_json(orient="records", double_precision=15))
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from rich.console import Console

    from genbench.manager import PluginManager

    # rich reads the width from the terminal or from COLUMNS; a pipe or CI log without COLUMNS gets
    # PIPE_WIDTH instead of rich's 80 (the leaderboard's further columns go into tables below)
    console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=PIPE_WIDTH)
    if getattr(args, "json", False):  # stdout carries the JSON alone: messages and errors go to stderr
        console = Console(stderr=True)
    try:
        if args.command == "new-plugin":  # writes files only: no plugin needs to load
            from genbench.scaffold import module_name, new_plugin

            root = new_plugin(args.name, args.dir)
            console.print(f"wrote {root}/ (the family is {root}/{module_name(args.name)}/__init__.py); next: "
                          f"pip install -e {root} && genbench check {args.name} && pytest {root}", soft_wrap=True)
            return 0
        manager = PluginManager(plugin_files=args.plugin)
        if args.command == "data":
            from genbench.imagesets import data_table

            rows = data_table(manager)
            if args.json:
                print(json.dumps(rows, indent=2))
                return 0
            from rich.table import Table

            table = Table(title=f"genbench data (root {os.environ.get('GENBENCH_DATA') or '~/.cache/genbench/data'})")
            for head in ("dataset", "shape", "files", "where"):
                table.add_column(head, overflow="fold")
            for r in rows:
                colour = {"present": "green", "missing": "red"}.get(r["files"], "")
                table.add_row(r["dataset"], r["shape"], f"[{colour}]{r['files']}[/{colour}]" if colour else r["files"],
                              r["where"])
            console.print(table)
            return 0
        if args.command == "list":
            if args.json:
                print(json.dumps(list_facts(manager), indent=2))
            else:
                cmd_list(manager, console, verbose=args.verbose)
            return 0
        if args.command == "run":
            return cmd_run(args, manager, console)
        if args.command == "leaderboard":
            return cmd_leaderboard(args, console, manager)
        if args.command == "evaluate":
            return cmd_evaluate(args, manager, console)
        if args.command == "publish":
            from genbench.publish import cmd_publish

            return cmd_publish(args, manager, console)
        if args.command == "check":
            from genbench.check import cmd_check

            return cmd_check(args, manager, console)
    except GenbenchError as exc:
        from rich.markup import escape

        # one line at any terminal width, and a message naming e.g. "[config.vae]" is printed as written
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/yellow] every finished trial is saved; run the same command again "
                      "to go on (trials continue from their last checkpoint)", soft_wrap=True)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
