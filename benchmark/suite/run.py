"""Running a suite: resume (finished trials skipped, failed ones retried), the reference rows, the
longest trials first, rich progress, records saved where they can be, and the leaderboards.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from genbench.checkpoint import checkpoint_path, remove_checkpoint
from genbench.datasets import Dataset
from genbench.errors import GenbenchError
from genbench.executors import ExecutorOptions, Fault, TrialJob, make_executor, trial_limits
from genbench.manager import PluginManager
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
from genbench.suite.files import check_suite_name
from genbench.suite.lock import clean_leftovers, lock_suite, read_only_lock, unwritable


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

