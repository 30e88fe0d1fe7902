"""The `genbench` command line: list, run, leaderboard."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from genbench.budget import Budget
from genbench.errors import GenbenchError
from genbench.manager import PluginManager
from genbench.profiles import PROFILES, get_profile
from rich.console import Console
from rich.table import Table

DEFAULT_RUNS = "runs"
# columns shown in the terminal table (the CSVs have all of them), in this order when present
SHOWN = ["fid", "is", "kid", "precision", "recall", "nll", "bpd", "nll_excess", "elbo", "iwae",
         "inference_gap_iwae", "iwae_bpd", "modes", "hq_pct", "mode_kl"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genbench", description="Fixed-budget benchmark of deep generative models.")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a local plugin file (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="registered models, datasets and metrics")

    r = sub.add_parser("run", help="train and evaluate models under one budget")
    r.add_argument("--all", action="store_true", help="every registered model on every dataset of the profile")
    r.add_argument("--model", action="append", help="model name (repeatable)")
    r.add_argument("--dataset", action="append", help="dataset name (repeatable)")
    r.add_argument("--budget", default=None, help="30s | 10m | 1h | 2000steps | 1e12flop (default: the profile's)")
    r.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
    r.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="evaluation protocol")
    r.add_argument("--suite", default=None, help="suite name (folder under the runs dir; default: the profile)")
    r.add_argument("--suite-file", default=None, help="TOML file with models, datasets, budget, seeds, profile")
    r.add_argument("--runs-dir", default=DEFAULT_RUNS)
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--rerun", action="store_true", help="run trials again even if a result exists")

    lb = sub.add_parser("leaderboard", help="show the leaderboard of a suite")
    lb.add_argument("--suite", default="quick")
    lb.add_argument("--runs-dir", default=DEFAULT_RUNS)
    lb.add_argument("--dataset", action="append")
    return p


def _fmt(value, half=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.4g}"
    if half is not None and not (isinstance(half, float) and math.isnan(half)):
        text += f" ± {half:.2g}"
    return text


def show_leaderboard(console: Console, records: list[dict], datasets: list[str] | None = None) -> None:
    from genbench.results import leaderboard

    for ds in sorted({r["dataset"] for r in records}):
        if datasets and ds not in datasets:
            continue
        df = leaderboard(records, ds)
        cols = [c for c in SHOWN if c in df.columns and df[c].notna().any()]
        table = Table(title=f"genbench leaderboard: {ds}", header_style="bold")
        for head in ["model", "status", "seeds", "steps", *cols]:
            table.add_column(head, justify="left" if head in ("model", "status") else "right")
        for _, row in df.iterrows():
            status = row["status"] if row["status"] != "failed" else f"[red]failed[/red] {row['reason'][:50]}"
            table.add_row(row["model"], status, row["seeds"], _fmt(row["used_steps"]),
                          *[_fmt(row[c], row.get(f"{c}_ci95")) for c in cols])
        console.print(table)
        extractor = next((e for e in df["extractor"] if e), "")
        if extractor:
            console.print(f"[dim]features: {extractor}; ± is a 95% interval over seeds; "
                          f"empty cells: see the CSV's empty_cells column[/dim]")


def cmd_list(manager: PluginManager, console: Console) -> None:
    table = Table(title="models", header_style="bold")
    for head in ("name", "family", "capabilities", "datasets", "plugin"):
        table.add_column(head)
    for name in manager.models:
        cls = manager.models.get(name)
        table.add_row(name, cls.family, ", ".join(sorted(cls.capabilities)),
                      ", ".join(manager.datasets_for(cls)), manager.plugin_of("model", name))
    console.print(table)
    dt = Table(title="datasets", header_style="bold")
    for head in ("name", "kind", "shape", "in --all", "description"):
        dt.add_column(head)
    for name in manager.datasets:
        e = manager.datasets.get(name)
        dt.add_row(name, e.kind, "x".join(map(str, e.spec.shape)), "yes" if e.in_default_suite else "no",
                   e.description)
    console.print(dt)
    mt = Table(title="metrics", header_style="bold")
    for head in ("name", "columns", "needs", "data"):
        mt.add_column(head)
    for name in manager.metrics:
        m = manager.metrics.get(name)
        mt.add_row(name, ", ".join(m.columns), ", ".join(sorted(m.needs)), ", ".join(sorted(m.data_kinds)))
    console.print(mt)
    for name, why in manager.broken.items():
        console.print(f"[red]plugin {name!r} failed to load:[/red] {why}")


def cmd_run(args, manager: PluginManager, console: Console) -> int:
    from genbench.suite import load_suite_file, plan_trials, run_suite, summary

    models, datasets, budget_text = args.model, args.dataset, args.budget
    seeds, profile, config = args.seeds, args.profile, {}
    if args.suite_file:
        spec = load_suite_file(args.suite_file)
        models = models or spec.get("models")
        datasets = datasets or spec.get("datasets")
        budget_text = budget_text or spec.get("budget")
        seeds = spec.get("seeds", seeds)
        profile = spec.get("profile", profile)
        config = spec.get("config", {})
    prof = get_profile(profile)
    budget = Budget.parse(budget_text or prof.budget)
    if seeds < 1:
        raise GenbenchError(f"--seeds must be at least 1, got {seeds}")
    trials = plan_trials(manager, models, datasets, budget, seeds, profile, run_all=args.all, config=config)
    suite = args.suite or profile
    console.print(f"[bold]genbench[/bold]: {len(trials)} trials, budget {budget} each, profile {profile}, "
                  f"results in {Path(args.runs_dir) / suite}")
    records = run_suite(manager, trials, Path(args.runs_dir), suite, device=args.device, rerun=args.rerun,
                        console=console)
    from genbench.results import load_records

    show_leaderboard(console, load_records(Path(args.runs_dir), suite), sorted({t.dataset for t in trials}))
    console.print(summary(records))
    console.print(f"leaderboard CSVs: {Path(args.runs_dir) / suite}/leaderboard-*.csv")
    return 0


def cmd_leaderboard(args, console: Console) -> int:
    from genbench.results import load_records

    records = load_records(Path(args.runs_dir), args.suite)
    if not records:
        raise GenbenchError(f"no results for suite {args.suite!r} under {args.runs_dir!r}; run `genbench run` first "
                            f"(or pass --suite/--runs-dir)")
    show_leaderboard(console, records, args.dataset)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # a pipe or CI log is not a terminal: give the wide leaderboard room instead of 80 columns
    console = Console() if sys.stdout.isatty() else Console(width=200)
    try:
        manager = PluginManager(plugin_files=args.plugin)
        if args.command == "list":
            cmd_list(manager, console)
            return 0
        if args.command == "run":
            return cmd_run(args, manager, console)
        if args.command == "leaderboard":
            return cmd_leaderboard(args, console)
    except GenbenchError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
