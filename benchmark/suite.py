"""Suites: the list of trials behind `genbench run`, run with resume and rich progress.

A suite folder ``<runs>/<suite>/`` holds one record per trial (``trials/*.json``), the sample grids,
the checkpoints of trials in progress, the worker logs, the leaderboard CSVs and, with
``--keep-weights``, each finished trial's weights (:mod:`genbench.weights`).  Running the same
command again skips every trial whose record says "ok" for the same config hash and runs the rest
again, failed ones included (a failure may have been the machine's, not the model's; ``--rerun``
runs everything).  Every file is written through a temp file and a rename, and one runner at a time
holds the folder's lock, so a run interrupted at any moment -- Ctrl-C or SIGKILL -- loses no
finished trial and leaves no half-written file.

A write that fails (a full disk, a folder in the way, no permission) loses no result either: the
record goes to a fallback file in the system temp folder (:func:`genbench.results.unsaved_dir`),
the run says so in one line and goes on with the other trials, and the next run of the suite moves
the record into place.  A suite folder that cannot be written at all still shows what it holds:
`genbench run` with every trial finished writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from genbench.budget import Budget
from genbench.checkpoint import checkpoint_path, remove_checkpoint
from genbench.datasets import Dataset
from genbench.errors import GenbenchError
from genbench.executors import ExecutorOptions, Fault, TrialJob, make_executor, trial_limits
from genbench.manager import PluginManager
from genbench.metrics import EVERY_METRIC, MetricSelection
from genbench.profiles import get_profile
from genbench.reference import reference_record
from genbench.results import (
    load_records,
    recover_unsaved,
    trial_dir,
    unsaved_dir,
    write_advice,
    write_error,
    write_leaderboards,
)
from genbench.runner import Trial, base_record, resolve_device, store_record


def default_datasets(manager: PluginManager) -> list[str]:
    """What `--all` runs on: every registered dataset marked for the default suite."""
    return [name for name in manager.datasets if manager.datasets.get(name).in_default_suite]


def runs_by_default(model_cls, spec) -> bool:
    """Under `--all`, a task dataset (one with extra batch keys: captions, domains, patches) is for
    the families that need those keys; plain samplers run on the base datasets only."""
    if not model_cls.applies_to(spec)[0]:
        return False
    return not spec.extras or bool(model_cls.requires & set(spec.extras))


def check_overrides(model_cls, overrides: dict, where: str) -> None:
    """Config overrides name fields of the family's config and are values of each field's annotated
    type, checked by pydantic in strict mode: ``scale: float = 1`` takes 0.5 and 1, ``lr: float``
    refuses "3e-4" (a string) and ``hidden: int`` refuses 2.5 and true; ``width: int | None = None``
    takes 8 or none but not "8".  A suite file has no tuples: a list stands for a tuple field."""
    import dataclasses
    import typing

    from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

    from genbench.overrides import field_types

    if not isinstance(overrides, dict):
        raise GenbenchError(f"{where}: the config of {model_cls.name!r} must be a table of field = value, "
                            f"got {type(overrides).__name__}")
    model_cls.make_config(overrides)  # unknown fields list the known ones
    annotations = field_types(model_cls.Config)
    defaults = model_cls.make_config({})
    for name, value in overrides.items():
        annotation = annotations[name]
        if isinstance(value, list) and tuple in {typing.get_origin(annotation), annotation}:
            value = tuple(value)
        try:
            TypeAdapter(annotation).validate_python(value, strict=True)
        except (PydanticSchemaGenerationError, TypeError, NameError):
            continue  # an annotation pydantic cannot check (a module, a forward reference): the family checks it
        except ValidationError as exc:
            field = next(f for f in dataclasses.fields(model_cls.Config) if f.name == name)
            why = exc.errors()[0]["msg"].lower()
            raise GenbenchError(f"{where}: {model_cls.name}.{name} expects {field.type} (default "
                                f"{getattr(defaults, name)!r}), got {type(value).__name__} {value!r}: {why}") from None


def plan_trials(manager: PluginManager, models: list[str] | None, datasets: list[str] | None, budget: Budget,
                seeds: int, profile: str, run_all: bool = False, config: dict | None = None,
                metrics: MetricSelection | None = None) -> list[Trial]:
    """Every (model, dataset, seed) asked for.  ``--all`` = every registered model on every default
    dataset it applies to (see ``runs_by_default``); otherwise the named models on the named
    datasets (a named pair that does not apply is an error that says why).  ``config`` maps a model
    name to overrides of its family's config; ``metrics`` is the metric selection of every trial
    (:func:`genbench.metrics.select_metrics`; default: every metric)."""
    get_profile(profile)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GenbenchError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    model_names = list(manager.models) if (run_all and not models) else list(models or [])
    if not model_names:
        raise GenbenchError("nothing to run: name models with --model NAME (see `genbench list`) or use --all")
    for m in model_names:
        manager.models.get(m)  # unknown names list the known ones
    config = dict(config or {})
    for m, overrides in config.items():
        if m not in model_names:
            raise GenbenchError(f"config given for model {m!r}, which is not in this suite "
                                f"(models: {', '.join(model_names)}); config is a table per model: [config.vae]")
        check_overrides(manager.models.get(m), overrides, "config")
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
                trials.append(Trial(m, d, s, budget, profile, dict(config.get(m, {})),
                                    metrics or EVERY_METRIC))
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
    """Records that count as finished: status "ok", by config hash.  Failed trials are not in it,
    so running the same command again retries them."""
    out = {}
    for rec in load_records(runs_dir, suite):
        if rec.get("config_hash") and rec.get("status") == "ok":
            out[rec["config_hash"]] = rec
    return out


def failed_keys(runs_dir: Path, suite: str) -> set[str]:
    return {rec["config_hash"] for rec in load_records(runs_dir, suite)
            if rec.get("config_hash") and rec.get("status") == "failed"}


def fault_record(job: TrialJob, fault: Fault, manager: PluginManager, device) -> dict:
    """The record of a trial whose process died or hung before it could write its own."""
    cls = manager.models.get(job.trial.model)
    rec = base_record(job.trial, cls, manager, job.suite, device)
    rec.update(status="failed", reason=fault.reason, fault=fault.kind, command=job.command,
               finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
    return rec


def _loss_text(losses: dict) -> str:
    return " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:3])


def run_suite(manager: PluginManager, trials: list[Trial], runs_dir: Path, suite: str, device: str = "auto",
              rerun: bool = False, console: Console | None = None,
              options: ExecutorOptions | None = None) -> list[dict]:
    """Run every trial that has no finished record yet (all of them with ``rerun``) on the executor
    that ``options`` names, write each record as it arrives, then the leaderboards.

    A trial whose record says "ok" (same config hash) is skipped; a failed one is run again.  An
    interrupted run (Ctrl-C, SIGKILL) keeps every record written so far, and a trial that was
    training continues from its last checkpoint the next time."""
    console = console or Console()
    options = dataclasses.replace(options or ExecutorOptions(), device=device).validate()
    check_suite_name(suite, "suite")
    runs_dir = Path(runs_dir).resolve()
    out_dir = runs_dir / suite
    try:
        trial_dir(runs_dir, suite).mkdir(parents=True, exist_ok=True)
        blocked = unwritable(out_dir, trial_dir(runs_dir, suite))
        lock = lock_suite(out_dir) if blocked is None else read_only_lock(out_dir, blocked)
    except OSError as exc:  # a read-only runs folder: show what it holds, write nothing
        reason = write_error(exc, Path(exc.filename) if exc.filename else out_dir / ".genbench.lock")
        lock = read_only_lock(out_dir, reason if out_dir.is_dir() else f"cannot create the suite folder {out_dir}")
    try:
        return _run_locked(manager, trials, runs_dir, suite, device, rerun, console, options,
                           getattr(lock, "read_only", None))
    finally:
        lock.close()


def _say(console: Console, line: str, style: str = "yellow") -> None:
    from rich.text import Text

    console.print(Text(line, style=style))  # paths may hold [brackets]: never read as markup


def _save_leaderboards(runs_dir: Path, suite: str, out_dir: Path, console: Console, said: set[str]) -> None:
    try:
        write_leaderboards(load_records(runs_dir, suite), out_dir)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else out_dir / "leaderboard.csv"
        line = (f"{write_error(exc, where)}: the leaderboard CSVs were not rewritten (every trial record is kept); "
                f"{write_advice(exc)} and run `genbench run` with the same arguments again to write them")
        if line not in said:  # a run writes them twice: say it once
            said.add(line)
            _say(console, line)


def _run_locked(manager, trials, runs_dir: Path, suite: str, device: str, rerun: bool, console: Console,
                options: ExecutorOptions, read_only: str | None = None) -> list[dict]:
    out_dir = runs_dir / suite
    if read_only is None:
        clean_leftovers(out_dir)
        restored, problems = recover_unsaved(runs_dir, suite)
        if restored:
            _say(console, f"{len(restored)} result(s) kept in {unsaved_dir(runs_dir, suite)} by an earlier run are "
                          "back in the suite folder", "dim")
        for line in problems:
            _say(console, line)
    torch_device = resolve_device(device)
    data = DatasetCache(manager, torch_device)
    finished = {} if rerun else done_keys(runs_dir, suite)
    failed_before = set() if rerun else failed_keys(runs_dir, suite)
    command = " ".join(["genbench", *sys.argv[1:]]) if sys.argv else ""
    records: list[dict] = []
    jobs: list[TrialJob] = []
    for trial in trials:
        cls = manager.models.get(trial.model)
        key = trial.key(cls)
        if key in finished:
            records.append(finished[key])
            # a kill between writing a record and deleting the checkpoint leaves one behind
            if read_only is None:
                try:
                    remove_checkpoint(checkpoint_path(out_dir, trial.trial_id(cls)))
                except OSError:
                    pass  # a stale checkpoint is only space: the next run removes it
            continue
        jobs.append(TrialJob(index=len(jobs), trial=trial, trial_id=trial.trial_id(cls), suite=suite,
                             runs_dir=str(runs_dir), device=device, checkpoint_every=options.checkpoint_every,
                             limits=trial_limits(trial, options, manager.metrics.values()), command=command,
                             threads=options.threads, keep_weights=options.keep_weights))
    retried = sum(job.trial.key(manager.models.get(job.trial.model)) in failed_before for job in jobs)
    if records or retried:
        console.print(f"[dim]{len(records)} trial(s) already finished (same config hash) are skipped"
                      + (f"; {retried} failed one(s) run again" if retried else "")
                      + "; --rerun runs everything again[/dim]")

    if read_only is not None:
        if jobs:
            raise GenbenchError(f"{read_only}: {len(jobs)} trial(s) of suite {suite!r} are not finished and their "
                                "results could not be saved; make the runs folder writable or choose another "
                                "--runs-dir (`genbench leaderboard` shows the finished ones)")
        wanted = {(t.dataset, t.profile) for t in trials}
        records += [r for r in load_records(runs_dir, suite)
                    if r.get("status") == "reference" and (r.get("dataset"), r.get("profile")) in wanted]
        manager.hook.suite_finished(records=records)
        _say(console, f"{read_only}: nothing was written (every trial is finished; the leaderboard CSVs are as the "
                      "last run wrote them)", "dim")
        return records

    jobs = dispatch_order(jobs, manager, load_records(runs_dir, suite) if jobs else [])
    # The reference rows train and cache each image dataset's feature extractor once, before any
    # trial on that dataset starts (workers in parallel would each train it).  With the local pool
    # they are built beside the trials that need no extractor (the 2-D sets), so no core waits.
    image_sets = {t.dataset for t in trials if manager.datasets.get(t.dataset).kind == "image"}
    overlap = options.kind == "local" and any(j.trial.dataset not in image_sets for j in jobs) and bool(image_sets)
    references_built = threading.Event()

    def build_references() -> None:
        try:
            reference_rows(manager, trials, data, suite, torch_device, out_dir, console, records)
        finally:
            references_built.set()

    builder = threading.Thread(target=build_references, name="genbench-references", daemon=True)
    if overlap:
        builder.start()
    else:
        build_references()

    said: set[str] = set()
    if jobs:
        unsaved: list[tuple[dict, str]] = []
        failure = None
        try:
            executor = make_executor(options, manager, out_dir / "logs", datasets=data.built)
            try:
                held = (lambda job: job.trial.dataset in image_sets and not references_built.is_set()) if overlap \
                    else None
                t0 = time.perf_counter()
                busy = _run_jobs(executor, jobs, manager, torch_device, console, records, unsaved, held=held)
                wall = time.perf_counter() - t0
                slots = 1 if options.kind == "inline" else getattr(executor, "slots", None) or options.workers or 1
                if wall > 0:
                    _say(console, f"workers busy {100 * busy / (wall * slots):.0f}% of the run "
                                  f"({busy:.0f} trial-seconds in {wall:.0f} s on {slots} worker(s))", "dim")
            finally:
                executor.close()
                if overlap:
                    builder.join()
        except OSError as exc:  # the executor itself could not write (a worker log, a sample grid)
            where = Path(exc.filename) if exc.filename else out_dir
            failure = GenbenchError(f"{write_error(exc, where)}: the run stopped; every result finished before is "
                                    f"saved or kept; {write_advice(exc)} and run the same command again")
        finally:
            _report_unsaved(runs_dir, suite, unsaved, console)
            # whatever happened (even Ctrl-C), the leaderboards show every record written so far
            _save_leaderboards(runs_dir, suite, out_dir, console, said)
        if failure is not None:
            raise failure
    manager.hook.suite_finished(records=records)
    _save_leaderboards(runs_dir, suite, out_dir, console, said)
    return records


def _report_unsaved(runs_dir: Path, suite: str, unsaved: list[tuple[dict, str]], console: Console) -> None:
    """At the end of a run, retry the records whose write failed during it; say in one line per
    trial where each result is that still is not in the suite folder."""
    if not unsaved:
        return
    recover_unsaved(runs_dir, suite)  # the kept files first: a freed disk takes them now
    for rec, line in unsaved:
        path = trial_dir(runs_dir, suite) / f"{rec['trial_id']}.json"
        try:
            if json.loads(path.read_text()).get("finished") == rec.get("finished"):
                continue  # in place now
        except (OSError, ValueError, AttributeError):
            pass
        if not (unsaved_dir(runs_dir, suite) / f"{rec['trial_id']}.json").is_file():
            line = store_record(runs_dir, suite, rec) or ""  # held in memory only: one more try
        if line:
            _say(console, line)


class _ReadOnlyLock:
    """The lock of a suite folder that cannot be written: held in shared mode on the lock file if
    there is one (a run writing the folder holds it exclusively), nothing otherwise."""

    def __init__(self, reason: str, fh=None):
        self.read_only, self.fh = reason, fh

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def unwritable(*folders: Path) -> str | None:
    """Why one of ``folders`` cannot take new files (None: all can)."""
    import errno

    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            read_only_fs = getattr(os, "statvfs", None) and os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1)
            code = errno.EROFS if read_only_fs else errno.EACCES
            return write_error(OSError(code, os.strerror(code)), folder / "-")
    return None


def read_only_lock(out_dir: Path, reason: str) -> _ReadOnlyLock:
    try:
        fh = open(out_dir / ".genbench.lock")
    except OSError:
        return _ReadOnlyLock(reason)
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        holder = fh.read().strip() or "another process"
        fh.close()
        raise GenbenchError(f"suite folder {out_dir} is in use by another genbench run ({holder}); wait for it to "
                            "finish or choose another --suite or --runs-dir") from None
    return _ReadOnlyLock(reason, fh)


def lock_suite(out_dir: Path):
    """Hold an exclusive lock on the suite folder for this run: two runners writing the same suite
    would run trials twice and race on checkpoints.  The system drops the lock when the process
    ends, however it ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / ".genbench.lock", "a+")
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise GenbenchError(f"suite folder {out_dir} is in use by another genbench run ({holder}); wait for it to "
                            "finish or choose another --suite or --runs-dir") from None
    fh.truncate(0)
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def clean_leftovers(out_dir: Path) -> None:
    """Delete temp files that a killed run left half-written (their writer's process is gone)."""
    for folder in ("trials", "checkpoints", "samples", "."):
        for tmp in (out_dir / folder).glob(".*.tmp*"):
            pid = tmp.name.rsplit(".tmp", 1)[-1]
            if pid.isdigit() and _alive(int(pid)):
                continue
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # a leftover that cannot be removed is only space: it is never read


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reference_rows(manager, trials, data, suite, device, out_dir, console, records) -> None:
    profile_names = sorted({t.profile for t in trials})
    for ds_name in sorted({t.dataset for t in trials}):
        entry = manager.datasets.get(ds_name)
        if entry.kind != "image":
            continue
        for prof in profile_names:
            try:
                records.append(reference_record(data.get(ds_name), get_profile(prof), suite, device, out_dir))
            except OSError as exc:
                where = Path(exc.filename) if exc.filename else trial_dir(out_dir.parent, suite)
                _say(console, f"reference row for {ds_name} not saved: {write_error(exc, where)}; it is computed again "
                              "by the next run")
            except Exception as exc:
                console.print(f"[yellow]reference row for {ds_name} not computed: {type(exc).__name__}: {exc}")


def dispatch_order(jobs: list[TrialJob], manager: PluginManager, history: list[dict]) -> list[TrialJob]:
    """The longest trials first, so that the short ones fill the end of the run and no worker sits
    idle while the last long trial finishes.  A trial's length is its budget (for a seconds budget)
    plus its evaluation time: the mean ``eval_s`` of earlier records of the same model, dataset and
    profile in the suite, else a guess from what it is scored by (images cost more than 2-D points;
    a decoder or a latent code adds the likelihood estimators)."""
    seen: dict[tuple, list[float]] = {}
    for r in history:
        timings = r.get("timings") if isinstance(r, dict) else None
        eval_s = timings.get("eval_s") if isinstance(timings, dict) else None
        if isinstance(eval_s, (int, float)):
            seen.setdefault((r.get("model"), r.get("dataset"), r.get("profile")), []).append(float(eval_s))

    def length(job: TrialJob) -> float:
        t = job.trial
        budget = t.budget.amount if t.budget.kind == "seconds" else 0.0
        past = seen.get((t.model, t.dataset, t.profile))
        if past:
            return budget + sum(past) / len(past)
        caps = set(manager.models.get(t.model).capabilities)
        image = manager.datasets.get(t.dataset).kind == "image"
        return budget + (4.0 if image else 1.0) * (1 + len(caps & {"decoder", "latent", "log_likelihood"}))

    return sorted(jobs, key=lambda j: (-length(j), j.index))


def _run_jobs(executor, jobs: list[TrialJob], manager: PluginManager, device, console: Console,
              records: list[dict], unsaved: list[tuple[dict, str]] | None = None, held=None) -> float:
    """Run ``jobs`` with a progress display; returns the trial-seconds the workers were busy (from
    each trial's start to its result)."""
    columns = (TextColumn("{task.description:<44}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("suite", total=len(jobs), info="")
        tasks: dict[int, int] = {}

        started: dict[int, float] = {}
        busy = 0.0

        def on_event(job: TrialJob, kind: str, value) -> None:
            if kind == "start":
                started[job.index] = time.perf_counter()
                manager.hook.trial_started(trial=job.trial)
                label = f"{job.trial.model} / {job.trial.dataset} / seed {job.trial.seed}"
                tasks[job.index] = progress.add_task(label, total=1.0, info="starting")
            elif kind == "phase":
                info = {"setup": "loading data", "train": "training", "eval": "evaluating"}.get(value, value)
                progress.update(tasks[job.index], info=info, completed=0.8 if value == "eval" else None)
            elif kind == "progress":
                frac, losses = value
                progress.update(tasks[job.index], completed=frac * 0.8, info="train " + _loss_text(losses))
            elif kind == "metric":
                progress.update(tasks[job.index], completed=0.85, info=f"eval {value}")

        results = executor.run(jobs, on_event) if held is None else executor.run(jobs, on_event, held=held)
        for job, outcome in results:
            busy += time.perf_counter() - started.pop(job.index, time.perf_counter())
            rec = fault_record(job, outcome, manager, device) if isinstance(outcome, Fault) else outcome
            problem = store_record(Path(job.runs_dir), job.suite, rec)
            if problem is None:
                try:
                    remove_checkpoint(checkpoint_path(job.suite_dir, rec["trial_id"]))
                except OSError:
                    pass  # a stale checkpoint is only space: the next run removes it
            elif unsaved is not None:
                unsaved.append((rec, problem))
            manager.hook.trial_finished(trial=job.trial, record=rec)
            records.append(rec)
            status = "[green]ok" if rec["status"] == "ok" else f"[red]failed: {rec['reason'][:70]}"
            if problem is not None:
                status += " [yellow](record not in the suite folder: see the end of the run)"
            if job.index in tasks:
                progress.update(tasks[job.index], completed=1.0, info=f"{status} ({rec['used']['steps']} steps)")
            progress.advance(overall)
    return busy


def summary(records: list[dict]) -> str:
    ok = sum(r["status"] == "ok" for r in records)
    failed = [r for r in records if r["status"] == "failed"]
    lines = [f"{ok} trials ok, {len(failed)} failed"]
    for r in failed:
        lines.append(f"  {r['trial_id']}: {r['reason']}")
    return "\n".join(lines)


SUITE_KEYS = {
    "name": "suite name: the folder under the runs dir (default: the profile)",
    "models": "list of model names",
    "datasets": "list of dataset names",
    "budget": 'budget string such as "30s", "2000steps" or "1e12flop"',
    "seeds": "number of seeds (whole number >= 1)",
    "profile": "evaluation profile name",
    "config": "a table per model of config overrides, e.g. [config.vae] hidden = 200",
}
SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_suite_name(name, where: str = "--suite") -> str:
    if not isinstance(name, str) or not SUITE_NAME.fullmatch(name):
        raise GenbenchError(f"{where}: suite name {name!r} must be a folder name of letters, digits, '.', '_' "
                            "and '-' (no path separators), e.g. quick-2024")
    return name


def load_suite_file(path: str) -> dict:
    """A TOML suite file: keys name, models, datasets, budget, seeds, profile, config (per model).
    Every key and type is checked; an error names the file, the key and what it should be."""
    import tomllib

    from genbench.profiles import PROFILES

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise GenbenchError(f"suite file {path!r} not found; give the path of a TOML file "
                            "(keys: " + ", ".join(SUITE_KEYS) + ")") from None
    except IsADirectoryError:
        raise GenbenchError(f"suite file {path!r} is a folder; give the path of a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenbenchError(f"suite file {path!r} is not valid TOML: {exc}") from None
    unknown = set(data) - set(SUITE_KEYS)
    if unknown:
        raise GenbenchError(f"suite file {path!r}: unknown keys {sorted(unknown)}; allowed: {sorted(SUITE_KEYS)}")

    def bad(key, value):
        return GenbenchError(f"suite file {path!r}: {key} must be a {SUITE_KEYS[key]}, "
                             f"got {type(value).__name__} {value!r}")

    for key in ("models", "datasets"):
        if key in data:
            value = data[key]
            if isinstance(value, str):
                data[key] = [value]
            elif not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                raise bad(key, value)
    if "budget" in data:
        if not isinstance(data["budget"], str):
            raise bad("budget", data["budget"])
        try:
            Budget.parse(data["budget"])
        except GenbenchError as exc:
            raise GenbenchError(f"suite file {path!r}: {exc}") from None
    if "seeds" in data and (isinstance(data["seeds"], bool) or not isinstance(data["seeds"], int)
                            or data["seeds"] < 1):
        raise bad("seeds", data["seeds"])
    if "profile" in data and (not isinstance(data["profile"], str) or data["profile"] not in PROFILES):
        raise GenbenchError(f"suite file {path!r}: profile must be one of {', '.join(PROFILES)}, "
                            f"got {data['profile']!r}")
    if "name" in data:
        check_suite_name(data["name"], f"suite file {path!r}: name")
    if "config" in data:
        cfg = data["config"]
        if not isinstance(cfg, dict) or not all(isinstance(v, dict) for v in cfg.values()):
            raise bad("config", cfg)
    return json.loads(json.dumps(data))
