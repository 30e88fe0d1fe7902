"""Suites: the list of trials behind `genbench run`, run with resume and rich progress."""

from __future__ import annotations

import json
from pathlib import Path

from genbench.budget import Budget
from genbench.datasets import Dataset
from genbench.errors import GenbenchError
from genbench.manager import PluginManager
from genbench.profiles import get_profile
from genbench.results import load_records, trial_dir, write_leaderboards
from genbench.runner import Trial, reference_record, resolve_device, run_trial
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn


def default_datasets(manager: PluginManager) -> list[str]:
    """What `--all` runs on: every registered dataset marked for the default suite."""
    return [name for name in manager.datasets if manager.datasets.get(name).in_default_suite]


def runs_by_default(model_cls, spec) -> bool:
    """Under `--all`, a task dataset (one with extra batch keys: captions, domains, patches) is for
    the families that need those keys; plain samplers run on the base datasets only."""
    if not model_cls.applies_to(spec)[0]:
        return False
    return not spec.extras or bool(model_cls.requires & set(spec.extras))


def plan_trials(manager: PluginManager, models: list[str] | None, datasets: list[str] | None, budget: Budget,
                seeds: int, profile: str, run_all: bool = False, config: dict | None = None) -> list[Trial]:
    """Every (model, dataset, seed) asked for.  ``--all`` = every registered model on every default
    dataset it applies to (see ``runs_by_default``); otherwise the named models on the named
    datasets (a named pair that does not apply is an error that says why)."""
    get_profile(profile)
    model_names = list(manager.models) if (run_all and not models) else list(models or [])
    if not model_names:
        raise GenbenchError("nothing to run: name models with --model NAME (see `genbench list`) or use --all")
    for m in model_names:
        manager.models.get(m)  # unknown names list the known ones
    ds_names = list(datasets) if datasets else default_datasets(manager)
    for d in ds_names:
        manager.datasets.get(d)
    trials = []
    for m in model_names:
        cls = manager.models.get(m)
        if datasets and not run_all:
            for d in ds_names:
                ok, why = cls.applies_to(manager.datasets.get(d).spec)
                if not ok:
                    raise GenbenchError(f"model {m!r} does not apply to dataset {d!r}: {why}")
            chosen = ds_names
        else:
            chosen = [d for d in ds_names if runs_by_default(cls, manager.datasets.get(d).spec)]
        for d in chosen:
            for s in range(seeds):
                trials.append(Trial(m, d, s, budget, profile, dict(config or {})))
    if not trials:
        raise GenbenchError(f"no model among {model_names} applies to datasets {ds_names}")
    return trials


class DatasetCache:
    """Build each dataset once per suite and keep it on the device."""

    def __init__(self, manager: PluginManager, device):
        self.manager, self.device, self.built = manager, device, {}

    def get(self, name: str) -> Dataset:
        if name not in self.built:
            self.built[name] = self.manager.datasets.get(name).build().to(self.device)
        return self.built[name]


def done_keys(runs_dir: Path, suite: str) -> dict[str, dict]:
    out = {}
    for rec in load_records(runs_dir, suite):
        if rec.get("config_hash") and rec.get("status") == "ok":
            out[rec["config_hash"]] = rec
    return out


def run_suite(manager: PluginManager, trials: list[Trial], runs_dir: Path, suite: str, device: str = "auto",
              rerun: bool = False, console: Console | None = None) -> list[dict]:
    console = console or Console()
    device = resolve_device(device)
    out_dir = Path(runs_dir) / suite
    trial_dir(runs_dir, suite).mkdir(parents=True, exist_ok=True)
    data = DatasetCache(manager, device)
    finished = {} if rerun else done_keys(runs_dir, suite)
    records = []
    columns = (TextColumn("{task.description:<44}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("suite", total=len(trials), info="")
        for trial in trials:
            cls = manager.models.get(trial.model)
            key = trial.key(cls)
            label = f"{trial.model} / {trial.dataset} / seed {trial.seed}"
            if key in finished:
                records.append(finished[key])
                progress.advance(overall)
                continue
            task = progress.add_task(label, total=1.0, info="loading data")
            try:
                dataset = data.get(trial.dataset)
            except Exception as exc:  # a dataset that cannot load fails its trials, not the suite
                from genbench.results import write_record
                from genbench.runner import base_record

                rec = base_record(trial, cls, manager, suite, device)
                rec["reason"] = f"{type(exc).__name__}: {exc}"
                write_record(trial_dir(runs_dir, suite) / f"{rec['trial_id']}.json", rec)
                records.append(rec)
                progress.update(task, info=f"[red]failed: {exc}")
                progress.advance(overall)
                continue

            def on_train(frac, losses, _task=task):
                progress.update(_task, completed=frac * 0.8,
                                info="train " + " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:3]))

            def on_metric(name, _task=task):
                progress.update(_task, completed=0.85, info=f"eval {name}")

            rec = run_trial(trial, manager, dataset, device, out_dir, suite, on_train, on_metric)
            status = "[green]ok" if rec["status"] == "ok" else f"[red]failed: {rec['reason'][:60]}"
            progress.update(task, completed=1.0, info=f"{status} ({rec['used']['steps']} steps)")
            records.append(rec)
            progress.advance(overall)
        # the floor rows: held-out real data against the training reference, once per image dataset
        profile_names = sorted({t.profile for t in trials})
        for ds_name in sorted({t.dataset for t in trials}):
            entry = manager.datasets.get(ds_name)
            if entry.kind != "image":
                continue
            for prof in profile_names:
                try:
                    records.append(reference_record(data.get(ds_name), get_profile(prof), suite, device, out_dir))
                except Exception as exc:
                    console.print(f"[yellow]reference row for {ds_name} not computed: {exc}")
    manager.hook.suite_finished(records=records)
    all_records = load_records(runs_dir, suite)
    write_leaderboards(all_records, out_dir)
    return records


def summary(records: list[dict]) -> str:
    ok = sum(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["status"] == "failed"]
    lines = [f"{ok} trials ok, {len(failed)} failed"]
    for r in failed:
        lines.append(f"  {r['trial_id']}: {r['reason']}")
    return "\n".join(lines)


def load_suite_file(path: str) -> dict:
    """A TOML suite file: keys models, datasets, budget, seeds, profile, config (per model)."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise GenbenchError(f"suite file {path!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenbenchError(f"suite file {path!r} is not valid TOML: {exc}") from None
    allowed = {"models", "datasets", "budget", "seeds", "profile", "config", "name"}
    unknown = set(data) - allowed
    if unknown:
        raise GenbenchError(f"suite file {path!r}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return json.loads(json.dumps(data))
