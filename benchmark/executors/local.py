"""The inline executor (trials in this process) and the local pool of worker processes, with the
crash-log reading that turns a dead worker into a failed trial's reason.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait as wait_for
from pathlib import Path

import torch

from genbench.executors.jobs import (
    LOG_CAP_BYTES,
    LOG_TAIL_BYTES,
    WALL_BACKSTOP,
    EventHandler,
    ExecutorOptions,
    Fault,
    Result,
    TrialJob,
    _no_events,
    process_cpu_seconds,
    trial_threads,
)
from genbench.executors.worker import (
    WorkerRuntime,
    worker_cores,
    worker_main,
)

# --- executors ------------------------------------------------------------------------------


class InlineExecutor:
    """Trials in this process, one after the other (no isolation: for debugging)."""

    def __init__(self, options: ExecutorOptions, manager, datasets=None):
        self.runtime = WorkerRuntime(options.plugin_files, options.device, manager=manager)
        self.threads = trial_threads(options)
        if datasets is not None:
            self.runtime.datasets = datasets

    def run(self, jobs: list[TrialJob], on_event: EventHandler = _no_events) -> Iterator[Result]:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        self.runtime.threads = self.threads or before
        try:
            for job in jobs:
                on_event(job, "start", None)
                yield job, self.runtime.run(job, job.suite_dir, on_event)
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        return None


def signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def log_tail(log_path: Path, offset: int, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """The lines a trial wrote to its worker's log from ``offset`` (where the log stood when the
    trial started; from the start of a log rotated since), at most its last ``limit`` bytes."""
    try:
        with open(log_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            start = offset if size >= offset else 0
            fh.seek(max(start, size - limit))
            return fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def exit_cause(lines: list[str]) -> str:
    """What a worker's last lines say ended it: the ``os._exit`` call :func:`_log_exits` logged, else
    the last line the trial wrote (quoted); empty when it wrote nothing."""
    for line in reversed(lines):
        if line.startswith("--- os._exit("):
            return line[4:]
    said = [line.strip() for line in lines if line.strip() and not line.startswith("--- ")]
    return f"its last output: {said[-1][:200]!r}" if said else ""


def crash_site(log_path: Path, offset: int) -> str:
    """The innermost Python frame of the crashing thread that faulthandler wrote to the worker's
    log, e.g. "train_step (my_plugin.py:12)"; empty when there is none."""
    lines = log_tail(log_path, offset)
    starts = [i for i, line in enumerate(lines) if line.startswith("Current thread ")]
    if not starts:
        return ""
    for frame in lines[starts[-1] + 1:]:
        frame = frame.strip()
        if not frame.startswith("File "):
            break
        # File "/path/x.py", line 12 in train_step
        try:
            path, rest = frame[6:].split('", line ', 1)
            lineno, func = rest.split(" in ", 1)
        except ValueError:
            return frame
        return f"{func} ({Path(path).name}:{lineno})"
    return ""


class _Worker:
    def __init__(self, ctx, slot: int, options: ExecutorOptions, log_path: Path, threads: int | None):
        self.slot = slot
        self.log_path = log_path
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(
            target=worker_main, name=f"genbench-worker-{slot}", daemon=True,
            args=(child_conn, tuple(options.plugin_files), options.device, options.memory_limit_gb,
                  str(log_path), os.getpid(), threads, (LOG_CAP_BYTES, LOG_TAIL_BYTES),
                  worker_cores(slot, options, threads)))
        self.proc.start()
        child_conn.close()
        self.conn = parent_conn
        self.ready = False
        self.job: TrialJob | None = None
        self.phase = "starting"
        self.phase_started = time.monotonic()
        self.log_offset = 0

    def assign(self, job: TrialJob) -> None:
        self.job = job
        self.phase = "setup" if self.ready else "starting"
        self.phase_started = time.monotonic()
        try:
            self.log_offset = self.log_path.stat().st_size
        except OSError:
            self.log_offset = 0
        self.conn.send(job)

    def deadline(self) -> float:
        """When to look again: the wall-clock limit, or in a second where the limit counts CPU time."""
        limit, _ = self.job.limits.for_phase(self.phase)
        if self.phase == "train" and self.job.limits.train_cpu:
            return time.monotonic() + 1.0
        return self.phase_started + limit

    def set_phase(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.monotonic()
        self.phase_cpu = process_cpu_seconds(self.proc.pid) if phase == "train" else None

    def overdue(self) -> str | None:
        """Why the current phase is past its limit ("N s" of wall time or "N s of CPU time"), or None."""
        limits = self.job.limits
        limit, _ = limits.for_phase(self.phase)
        wall = time.monotonic() - self.phase_started
        if self.phase == "train" and limits.train_cpu and getattr(self, "phase_cpu", None) is not None:
            cpu = process_cpu_seconds(self.proc.pid)
            if cpu is not None:
                if cpu - self.phase_cpu > limit:
                    return f"{limit:g} s of CPU time"
                return f"{WALL_BACKSTOP * limit:g} s (wall time, without using its CPU time)" \
                    if wall > WALL_BACKSTOP * limit else None
        return f"{limit:g} s" if wall > limit else None

    def kill(self) -> None:
        """End the worker and every process still in its process group (what its trial started)."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        if self.proc.pid is not None and hasattr(os, "killpg"):
            try:  # the worker made itself the leader of a group numbered by its pid (_own_descendants)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError, OSError):
                pass
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(2)
        self.kill()


def _next_free(pending: collections.deque, held: Callable[[TrialJob], bool] | None) -> TrialJob | None:
    """Take the first job of ``pending`` that is not held (None when every one is)."""
    for i, job in enumerate(pending):
        if held is None or not held(job):
            del pending[i]
            return job
    return None


class LocalExecutor:
    """Trials in a pool of long-lived worker processes that the runner replaces when they die or hang."""

    def __init__(self, options: ExecutorOptions, log_dir: Path):
        self.options = options
        self.ctx = mp.get_context("spawn")
        self.log_dir = Path(log_dir)
        self.threads = trial_threads(options)
        # Threads given with --threads sleep while they wait instead of spinning: a spinning thread
        # is charged CPU time (the seconds budget) for no work.  Read by each worker's OpenMP runtime
        # when it starts, so it is set before the workers are spawned.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.workers: list[_Worker | None] = [None] * options.workers
        self.failed_starts = 0

    def _spawn(self, slot: int) -> _Worker:
        return _Worker(self.ctx, slot, self.options, self.log_dir / f"worker-{slot}.log", self.threads)

    def run(self, jobs: list[TrialJob], on_event: EventHandler = _no_events,
            held: Callable[[TrialJob], bool] | None = None) -> Iterator[Result]:
        """Run ``jobs`` in order on the pool.  A job for which ``held(job)`` is true is passed over
        for the next one that is not, and waits (workers are started meanwhile) until it is not:
        e.g. trials that need a feature extractor while it is built beside the first trials."""
        pending = collections.deque(jobs)
        try:
            while True:
                for slot, w in enumerate(self.workers):
                    if w is not None and w.job is None and not w.proc.is_alive():
                        w.kill()
                        self.workers[slot] = w = None
                    if pending and (w is None or w.job is None):
                        job = _next_free(pending, held)
                        if w is None:
                            self.workers[slot] = w = self._spawn(slot)
                        if job is None:
                            continue  # everything left is held: the worker waits, started
                        on_event(job, "start", None)
                        try:
                            w.assign(job)
                        except (OSError, ValueError):
                            pass  # the worker died already: noticed below like any other death
                busy = [w for w in self.workers if w is not None and w.job is not None]
                if not busy:
                    if not pending:
                        return
                    time.sleep(0.1)  # every job left is held and no trial is running
                    continue
                waiting = held is not None and any(held(j) for j in pending)
                timeout = max(0.0, min(min(w.deadline() for w in busy) - time.monotonic(), 0.2 if waiting else 1.0))
                wait_for([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout)
                for w in busy:
                    yield from self._service(w, on_event, pending)
        finally:
            self.close()

    def _service(self, w: _Worker, on_event: EventHandler, pending) -> Iterator[Result]:
        eof = False
        while w.job is not None:
            try:
                if not w.conn.poll():
                    break
                kind, value = w.conn.recv()
            except (EOFError, OSError):
                eof = True
                break
            job = w.job
            if kind == "ready":
                w.ready = True
                self.failed_starts = 0
                w.set_phase("setup")
            elif kind == "fatal":
                self.failed_starts += 1
                self._retire(w)
                yield job, Fault("worker", f"the worker process could not start: {value}")
                if self.failed_starts >= 2:  # every trial would fail the same way: say so once per trial
                    while pending:
                        yield pending.popleft(), Fault("worker", f"the worker process could not start: {value}")
                return
            elif kind == "phase":
                w.set_phase(value)
                on_event(job, "phase", value)
            elif kind in ("progress", "metric"):
                on_event(job, kind, value)
            elif kind == "done":
                record, retire = value
                w.job = None
                if retire:
                    self._retire(w)
                yield job, record
                if retire:
                    return
        if w.job is not None and (eof or not w.proc.is_alive()):
            w.proc.join(5)
            job, fault = w.job, self._death(w)
            self._retire(w)
            yield job, fault
            if not w.ready:
                self.failed_starts += 1
                if self.failed_starts >= 2:  # the environment, not a trial, is broken: no endless respawns
                    while pending:
                        yield pending.popleft(), fault
        elif w.job is not None and (late := w.overdue()) is not None:
            _, flag = w.job.limits.for_phase(w.phase)
            job, phase = w.job, w.phase
            self._retire(w)
            where = {"starting": "while the worker started", "setup": "in setup (data, model, checkpoint)",
                     "train": "in training", "eval": "in evaluation"}.get(phase, f"in {phase}")
            yield job, Fault("timeout", f"timed out after {late} {where} (limit: {flag})")

    def _retire(self, w: _Worker) -> None:
        w.job = None
        w.kill()
        if self.workers[w.slot] is w:
            self.workers[w.slot] = None

    def _death(self, w: _Worker) -> Fault:
        code = w.proc.exitcode
        if not w.ready:
            return Fault("worker", f"the worker process exited with code {code} before it was ready (see the "
                                   f"messages above and its log {w.log_path}; a script that runs suites must start "
                                   "them under `if __name__ == '__main__':`, as worker processes import it)")
        site = crash_site(w.log_path, w.log_offset)
        where = f" in {site}" if site else ""
        log = f"; worker log: {w.log_path}"
        phase = {"setup": "in setup", "train": "in training", "eval": "in evaluation"}.get(w.phase, f"in {w.phase}")
        if code is not None and code < 0:
            sig = signal_name(-code)
            hint = " (the system may have killed it for memory)" if -code == signal.SIGKILL else ""
            return Fault("crashed", f"crashed: signal {sig}{where}{hint}{log}")
        cause = exit_cause(log_tail(w.log_path, w.log_offset))
        cause = f" ({cause})" if cause else " (the trial ended the process without an exception: os._exit?)"
        return Fault("crashed", f"crashed: the worker process exited with code {code} {phase}{where}{cause}{log}")

    def close(self) -> None:
        for slot, w in enumerate(self.workers):
            if w is not None:
                if w.job is None:
                    w.stop()
                else:
                    w.kill()
                self.workers[slot] = None


