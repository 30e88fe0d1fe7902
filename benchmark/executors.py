"""Executors: where trials run, and how a trial that kills or hangs its process becomes a result.

Three executors run the same :func:`genbench.runner.perform_trial`:

``local`` (the default)
    A small pool of long-lived worker processes (``--workers N``, default 1), started with the
    "spawn" method (forking a process whose torch threads already exist is unsafe).  Each worker
    imports torch and loads the plugins once (about 3 s) and then runs many trials, so isolation
    costs milliseconds per trial, not seconds.  The runner watches every worker: a worker that
    dies mid-trial (segfault, ``os.abort()``, SIGKILL) or stays in one phase of a trial past its
    time limit is killed and replaced, and its trial is recorded as failed with the reason
    ("crashed: signal SIGABRT", "timed out after 30 s in training").  Each worker caps its
    address space (``--memory-limit``) so a trial that allocates without bound fails with
    "out of memory" instead of taking the machine down; a worker that ran out of memory is
    replaced by a fresh one.  Workers die with the runner (Linux parent-death signal, and a
    watchdog elsewhere), so a killed runner leaves no stray trial running.

``inline``
    Every trial in the runner's own process: no isolation (a crash or a hang stops the suite),
    for debugging with a debugger or profiler.

``ray``
    Each trial is a Ray task (``num_gpus=1`` where the cluster has GPUs, else ``num_cpus=1``) on
    a local Ray instance or an existing cluster (``--address host:6379``).  Plugins given with
    ``--plugin`` are shipped with the task, and the sample grid comes back with the record.  Every
    node needs the same environment (genbench, torch, installed plugins); checkpoints resume across
    runs where the runs folder is on a filesystem the nodes share.  Ray workers are shared
    processes, so no address-space cap is set there: Ray's own memory monitor stops a task that
    exhausts the node, and the trial is recorded as "out of memory".

Every trial starts clean, whichever executor runs it (:func:`clean_trial`): torch's thread count
and the random number generators (torch, Python, NumPy) are reset, and environment variables and
the working directory a trial changed are restored; child processes a trial leaves running are
ended when it ends (a local worker is its own process group and a subreaper, so the runner also
ends what a killed worker left behind).  A worker's log (its stdout and stderr) is capped
(``LOG_CAP_BYTES``): past the cap its last ``LOG_TAIL_BYTES`` are kept in ``worker-N.log.1`` and the
log starts again, so a model that prints without end cannot fill the disk.  A failure reason names
its cause: the exception and the innermost frame of the model's code (the failing statement when
the exception has no message), what ended a worker process (a signal, ``os._exit``, the last line
it wrote), and a model that calls ``sys.exit`` fails its trial instead of ending the worker.

Time limits are per phase of a trial: *setup* (loading data, building the model, reading a
checkpoint) and *evaluation* get the evaluation allowance (``--eval-timeout``, by default the sum
of the trial's metrics' own allowances, :func:`eval_allowance`); *training* gets
``--trial-timeout``, by default derived from the budget: for a seconds budget on a CPU, 3 x the
budget + 2 minutes of the worker's own CPU time (the budget counts CPU time, so a machine busy with
other work stretches a trial's wall time without making it hang; a wall-clock backstop of
``WALL_BACKSTOP`` times that catches a trial that hangs without computing), elsewhere that many
wall seconds; a generous 12 hours for step and FLOP budgets, whose duration is not known in
advance. An explicit ``--trial-timeout`` is wall time. The Ray executor cannot see phases and
applies their sum to the whole task.
"""

from __future__ import annotations

import collections
import datetime as _dt
import faulthandler
import gc
import hashlib
import math
import multiprocessing as mp
import os
import random
import re
import signal
import sys
import sysconfig
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for
from pathlib import Path

import torch

from genbench.errors import GenbenchError
from genbench.runner import Trial, perform_trial, resolve_device

EXECUTORS = ("local", "inline", "ray")
STARTUP_ALLOWANCE_S = 300.0  # importing torch and the plugins in a fresh worker
STEP_BUDGET_TRAIN_LIMIT_S = 12 * 3600.0
SETUP_ALLOWANCE_S = 600.0  # the evaluation allowance of a trial no metric scores (setup still runs)
DEFAULT_MEMORY_LIMIT_GB = 8.0
PROGRESS_INTERVAL_S = 0.25  # how often a worker reports training progress
LOG_CAP_BYTES = 64 * 2**20  # a worker log past this size is rotated (its tail kept in worker-N.log.1)
LOG_TAIL_BYTES = 1 * 2**20  # what a rotation keeps, and what a failure reason reads back
LOG_CHECK_S = 0.1  # how often a worker looks at the size of its log


def trial_threads(options: ExecutorOptions) -> int | None:
    """Torch CPU threads per trial: ``--threads``, else one on a CPU.  A seconds budget counts the
    trial's CPU time, and threads that wait on each other on a shared machine burn CPU time without
    progress (measured: two threads beside other work bought a VAE 10 steps where one thread bought
    399 in the same 3 CPU seconds), so one thread per trial keeps a CPU second a second of work.
    None on a GPU: torch's default."""
    if options.threads:
        return options.threads
    return None if resolve_device(options.device).type == "cuda" else 1


def default_workers(kind: str, device: str) -> int:
    """Small models train fastest on one thread, so on a CPU the local executor runs one trial per
    core (each with one torch thread and so one core's worth of time budget); on a GPU, one."""
    if kind != "local" or resolve_device(device).type == "cuda":
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass
class ExecutorOptions:
    """How and where a suite's trials run (the ``genbench run`` flags of the same names)."""

    kind: str = "local"
    workers: int | None = None  # None = one per CPU core (at most 8) on a CPU, one on a GPU
    address: str | None = None
    device: str = "auto"
    trial_timeout: float | None = None  # training-phase limit in seconds; None = from the budget
    eval_timeout: float | None = None  # setup and evaluation limit; None = by profile
    memory_limit_gb: float = DEFAULT_MEMORY_LIMIT_GB  # added address space a trial may use; 0 = no cap
    checkpoint_every: float = 0.25  # fraction of the budget between checkpoints; 0 = none
    plugin_files: tuple[str, ...] = ()
    threads: int | None = None  # torch CPU threads per trial; None = the cores shared among the workers
    keep_weights: bool = False  # write each finished trial's evaluated state (genbench.weights)

    def validate(self) -> ExecutorOptions:
        if self.workers is None:
            self.workers = default_workers(self.kind, self.device)
        if self.kind not in EXECUTORS:
            raise GenbenchError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise GenbenchError(f"--workers must be a whole number of at least 1, got {self.workers!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise GenbenchError(f"--threads must be a whole number of at least 1, got {self.threads!r}")
        if self.workers > 1 and self.kind != "local":
            raise GenbenchError(f"--workers {self.workers} applies to the local executor only; the {self.kind} "
                                "executor " + ("runs one trial at a time" if self.kind == "inline" else
                                               "runs as many trials as the cluster has GPUs (or CPUs)"))
        if self.address and self.kind != "ray":
            raise GenbenchError(f"--address {self.address!r} needs --executor ray (it names a Ray cluster's head)")
        for flag, value in (("--trial-timeout", self.trial_timeout), ("--eval-timeout", self.eval_timeout)):
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise GenbenchError(f"{flag} must be a positive number of seconds, got {value!r}")
        if not (math.isfinite(self.memory_limit_gb) and self.memory_limit_gb >= 0):
            raise GenbenchError("--memory-limit must be a number of GiB >= 0 (0 = no cap), "
                                f"got {self.memory_limit_gb!r}")
        if not (0 <= self.checkpoint_every < 1):
            raise GenbenchError(f"--checkpoint-every must be a fraction of the budget in [0, 1) (0 = no checkpoints), "
                                f"got {self.checkpoint_every!r}")
        return self


@dataclass(frozen=True)
class Limits:
    """Seconds each phase of one trial may take before the trial counts as hung."""

    setup_s: float
    train_s: float
    eval_s: float
    train_flag: str = "--trial-timeout"
    eval_flag: str = "--eval-timeout"
    train_cpu: bool = False  # the training limit counts the worker's CPU seconds (module docstring)

    def for_phase(self, phase: str) -> tuple[float, str]:
        if phase == "starting":
            return STARTUP_ALLOWANCE_S, "the worker start-up allowance"
        if phase == "train":
            return self.train_s, self.train_flag
        return (self.setup_s if phase == "setup" else self.eval_s), self.eval_flag

    def total(self) -> float:
        return STARTUP_ALLOWANCE_S + self.setup_s + self.train_s + self.eval_s


def eval_allowance(trial: Trial, metrics=()) -> float:
    """Seconds a trial's setup and its evaluation may each take by default: the sum of the
    allowances (``Metric.allowance``) of the ``metrics`` its selection evaluates, and at least
    :data:`SETUP_ALLOWANCE_S`.  Each metric says what it needs, so a plugin's slow metric brings
    its own time and no profile table has to know it."""
    chosen = [m for m in metrics if trial.metric_selection.why_left_out(m.name) is None]
    return max(SETUP_ALLOWANCE_S, sum(m.allowance(trial.profile) for m in chosen))


def trial_limits(trial: Trial, options: ExecutorOptions, metrics=()) -> Limits:
    """The limits of each phase of ``trial``; ``metrics``: the registered metrics (their
    allowances make the evaluation limit, :func:`eval_allowance`)."""
    train_cpu = False
    if options.trial_timeout is not None:
        train = float(options.trial_timeout)
    elif trial.budget.kind == "seconds":
        # the budget counts the trial's own compute, so on a busy machine its wall time is longer:
        # on a CPU the limit counts the worker's CPU time too
        train = 3.0 * trial.budget.amount + 120.0
        train_cpu = resolve_device(options.device).type == "cpu"
    else:
        train = STEP_BUDGET_TRAIN_LIMIT_S
    allowance = options.eval_timeout or eval_allowance(trial, metrics)
    return Limits(setup_s=float(allowance), train_s=train, eval_s=float(allowance), train_cpu=train_cpu)


WALL_BACKSTOP = 10.0  # a CPU-time training limit also ends a trial past this many times it in wall time


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "pid (comm)": state, ppid, ... (None where unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) from /proc, or None where unreadable."""
    fields = proc_stat(pid)
    try:
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (TypeError, ValueError, IndexError):
        return None


@dataclass
class TrialJob:
    """Everything a worker needs to run one trial (picklable, small)."""

    index: int
    trial: Trial
    trial_id: str
    suite: str
    runs_dir: str  # absolute
    device: str
    checkpoint_every: float
    limits: Limits
    command: str = ""
    threads: int | None = None
    keep_weights: bool = False

    @property
    def suite_dir(self) -> Path:
        return Path(self.runs_dir) / self.suite


@dataclass
class Fault:
    """A trial that ended without a record of its own: its process died or hung."""

    kind: str  # "crashed" | "timeout" | "oom" | "worker"
    reason: str


Result = tuple[TrialJob, "dict | Fault"]
EventHandler = Callable[[TrialJob, str, object], None]  # (job, "start"|"phase"|"progress"|"metric", value)


def _no_events(job, kind, value) -> None:
    return None


# --- a clean start for every trial, and failure reasons that name the cause --------------------


def descendants(pid: int | None = None) -> list[int]:
    """The process ids below ``pid`` (default: this process), read from /proc; empty elsewhere."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = collections.defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        fields = proc_stat(name)
        try:
            ppid = int(fields[1])
        except (TypeError, ValueError, IndexError):
            continue
        children[ppid].append(int(name))
    out, todo = [], list(children.get(root, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def end_processes(pids: list[int], wait_s: float = 2.0) -> None:
    """SIGKILL ``pids`` and reap those that are (or become, through the subreaper) this process's children."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    left, deadline = set(pids), time.monotonic() + wait_s
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (its own parent reaps it) or already reaped
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.02)


def reset_trial_state(seed: int, threads: int) -> None:
    """What one trial may change and the next must not inherit: torch's thread count, the global
    random number generators (torch, Python, NumPy), autograd mode and torch's default dtype."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)  # also every CUDA device's generator
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)


@contextmanager
def clean_trial(seed: int, threads: int) -> Iterator[None]:
    """Run one trial from a clean state (:func:`reset_trial_state`) and leave none of it behind:
    processes it started and left running are ended, and the environment variables, working
    directory and thread count it changed are restored."""
    env, cwd = dict(os.environ), os.getcwd()
    before = set(descendants())
    reset_trial_state(seed, threads)
    try:
        yield
    finally:
        left = [pid for pid in descendants() if pid not in before]
        if left:
            print(f"--- ending {len(left)} process(es) the trial left running: {left}", flush=True)
            end_processes(left)
        torch.set_num_threads(threads)
        if dict(os.environ) != env:
            os.environ.clear()
            os.environ.update(env)
        try:
            os.chdir(cwd)
        except OSError:
            pass


_FRAME = re.compile(r'^\s*File "(?P<path>.+)", line (?P<line>\d+), in (?P<func>.+)$')
_LIBRARY_DIRS = tuple(str(Path(d).resolve()) for d in (
    Path(torch.__file__).parent, Path(__file__).parent, sysconfig.get_paths()["stdlib"]))


def _is_library(path: str) -> bool:
    try:
        resolved = str(Path(path).resolve())
    except (OSError, RuntimeError):
        return False
    return resolved.startswith(_LIBRARY_DIRS)


def failing_frame(tb_text: str) -> tuple[str, str] | None:
    """("func (file.py:line)", source line) of the innermost frame of the final exception in a
    formatted traceback that is the model's own (not torch's, genbench's or the standard
    library's); None when there is none."""
    lines = (tb_text or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    for i in range(len(lines) - 1, -1, -1):
        m = _FRAME.match(lines[i])
        if m and not _is_library(m["path"]):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            src = nxt.strip() if nxt.startswith("    ") and not _FRAME.match(nxt) else ""
            return f"{m['func']} ({Path(m['path']).name}:{m['line']})", src
    return None


def name_the_cause(record: dict) -> dict:
    """Make a failed record's reason name its cause.  A contract violation is its own one line
    (no class name, no traceback); another exception gets the innermost frame of the model's code,
    and an exception without a message (a bare ``assert``) the failing statement too."""
    from genbench.metrics import ContractViolation

    reason = record.get("reason")
    if record.get("status") != "failed" or record.get("fault") != "exception" or not isinstance(reason, str):
        return record
    prefix = f"{ContractViolation.__name__}: "
    if reason.startswith(prefix):
        record["reason"] = reason[len(prefix):]
        record.pop("traceback", None)
        return record
    frame = failing_frame(record.get("traceback", ""))
    if frame is None:
        return record
    where, src = frame
    kind, _, message = reason.partition(":")
    if not message.strip():  # e.g. "AssertionError: ": say which statement raised it
        record["reason"] = f"{kind} (no message) in {where}" + (f": {src}" if src else "")
    elif where not in reason:
        record["reason"] = f"{reason} (in {where})"[:2000]
    return record


def exit_record(job: TrialJob, manager, device, exc: SystemExit) -> dict:
    """The failed record of a trial whose model called ``sys.exit`` (which would end the worker)."""
    from genbench.runner import base_record

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not _is_library(f.filename)] or frames
    where = f" in {own[-1].name} ({Path(own[-1].filename).name}:{own[-1].lineno})" if own else ""
    record = base_record(job.trial, manager.models.get(job.trial.model), manager, job.suite, device)
    record.update(fault="exception",
                  reason=f"SystemExit({exc.code!r}){where}: the model tried to end the process; "
                         "raise an exception instead",
                  traceback="".join(traceback.format_exception(exc, limit=-6)),
                  finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
    return record


# --- what runs in a worker ------------------------------------------------------------------


class WorkerRuntime:
    """A process's plugin manager and datasets, kept across the trials it runs."""

    def __init__(self, plugin_files: tuple[str, ...], device: str, manager=None, threads: int | None = None):
        from genbench.manager import PluginManager

        self.manager = manager if manager is not None else PluginManager(plugin_files=plugin_files)
        self.device = resolve_device(device)
        self.datasets: dict = {}
        self.threads = threads or torch.get_num_threads()  # every trial starts with these

    def dataset(self, name: str):
        if name not in self.datasets:
            self.datasets[name] = self.manager.datasets.get(name).build().to(self.device)
        return self.datasets[name]

    def run(self, job: TrialJob, out_dir: Path, emit: EventHandler = _no_events) -> dict:
        last = [0.0]

        def on_train(frac, losses):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or frac >= 1.0:
                last[0] = now
                emit(job, "progress", (frac, {k: float(v) for k, v in list(losses.items())[:3]}))

        with clean_trial(job.trial.seed, job.threads or self.threads):
            try:
                record = perform_trial(
                    job.trial, self.manager, self.dataset, self.device, out_dir, job.suite,
                    checkpoint_dir=job.suite_dir, checkpoint_every=job.checkpoint_every,
                    on_phase=lambda phase: emit(job, "phase", phase), on_train=on_train,
                    on_metric=lambda name: emit(job, "metric", name), keep_weights=job.keep_weights)
            except SystemExit as exc:  # sys.exit in a model ends its trial, not the process
                record = exit_record(job, self.manager, self.device, exc)
        name_the_cause(record)
        record["command"] = job.command
        return record


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the runner ends, even by SIGKILL: a stray worker would go on
    training (and writing its checkpoint) beside the runner that resumes the suite."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent_pid:  # the runner died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="genbench-parent-watch", daemon=True).start()


def _own_descendants() -> None:
    """Make this worker its own process group (so the runner can end it with everything it started,
    :meth:`_Worker.kill`) and, on Linux, a subreaper (orphaned grandchildren become its children, so
    :func:`clean_trial` finds and ends them)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_child_subreaper = 36
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1)
        except (OSError, AttributeError):
            pass


def _log_exits() -> None:
    """Write a line naming the caller before ``os._exit`` ends this worker: the runner reads it back
    as the cause of the worker's death (an exit code alone says nothing)."""
    real_exit = os._exit

    def _exit(code):
        try:
            f = sys._getframe(1)
            print(f"--- os._exit({code}) called in {f.f_code.co_name} ({Path(f.f_code.co_filename).name}:{f.f_lineno})",
                  flush=True)
        except Exception:
            pass
        real_exit(code)

    os._exit = _exit


class _LogCap(threading.Thread):
    """Keeps a worker's log (the file behind its stdout and stderr) under ``cap`` bytes: past it,
    the last ``tail`` bytes go to ``<log>.1`` and the log is truncated (writes append, so they go on
    at its new end), with a line saying so."""

    def __init__(self, fd: int, path: Path, cap: int, tail: int):
        super().__init__(name="genbench-log-cap", daemon=True)
        self.fd, self.path, self.cap, self.tail = fd, path, cap, tail

    def run(self) -> None:
        while True:
            time.sleep(LOG_CHECK_S)
            try:
                size = os.fstat(self.fd).st_size
                if size > self.cap:
                    self.rotate(size)
            except OSError:
                pass

    def rotate(self, size: int) -> None:
        kept = self.path.with_name(self.path.name + ".1")
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - self.tail))
            data = fh.read(self.tail)
        tmp = kept.with_name(kept.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, kept)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, (f"--- log rotated at {size} bytes (cap {self.cap}); its last {len(data)} bytes "
                           f"are in {kept.name}\n").encode())


def _vm_size() -> int:
    """This process's address space in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def worker_cores(slot: int, options: ExecutorOptions, threads: int | None) -> tuple[int, ...] | None:
    """The CPU cores worker ``slot`` is pinned to, or None (no pinning).

    On a CPU, when the workers' threads fit in the cores this process may use, each worker gets
    cores of its own.  Left to the scheduler, a machine busy with other work moves trials from core
    to core, and each move costs a trial a cold cache that its CPU time (the seconds budget) pays
    for: beside two CPU-heavy processes, an unpinned MLP trial bought 0.76-0.85x the steps of a
    quiet run in the same CPU time, while one sharing a fixed core with the same load bought 0.95x."""
    if not hasattr(os, "sched_getaffinity") or resolve_device(options.device).type == "cuda":
        return None
    allowed = sorted(os.sched_getaffinity(0))
    per = threads or 1
    if options.workers * per > len(allowed):
        return None
    return tuple(allowed[slot * per:(slot + 1) * per])


# sched_setattr(2) by number: neither the os module nor a kept library wraps it
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
TIME_SLICE_MS = 30


def long_time_slices(ms: int = TIME_SLICE_MS) -> str:
    """Ask the scheduler for time slices of ``ms`` milliseconds for this worker (Linux 6.12 and newer;
    unprivileged; inherited by threads created afterwards).

    The share of the CPU stays the fair one; only the length of an uninterrupted run changes.  On a
    busy machine a trial is otherwise switched out every ~1.4 ms, and each switch costs it a refill
    of caches and branch predictors that its CPU time (the seconds budget) pays for: beside two
    CPU-heavy processes, trials got 0.75-0.92x the steps of a quiet run in the same CPU time."""
    import ctypes
    import platform
    import struct

    number = _SCHED_SETATTR.get(platform.machine())
    if sys.platform != "linux" or number is None:
        return "time slices: the system's (no sched_setattr here)"
    libc = ctypes.CDLL(None, use_errno=True)
    # struct sched_attr (SCHED_ATTR_SIZE_VER1): size, policy SCHED_OTHER, flags, nice, priority,
    # runtime (for SCHED_OTHER: the requested slice in ns), deadline, period, util_min, util_max
    attr = struct.pack("IIQiIQQQII", 56, 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0, ms * 1_000_000, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    if libc.syscall(number, 0, buf, 0) != 0:
        return f"time slices: the system's (sched_setattr: {os.strerror(ctypes.get_errno())})"
    return f"time slices: {ms} ms"


def cap_memory(extra_gb: float, device: torch.device) -> str:
    """Limit this process's address space to what it uses now plus ``extra_gb``.  Not applied on
    CUDA, whose driver reserves far more address space than it uses."""
    if extra_gb <= 0:
        return "no memory cap (--memory-limit 0)"
    if device.type == "cuda":
        return "no address-space cap on CUDA devices"
    try:
        import resource
    except ImportError:
        return "no memory cap on this platform"
    cap = _vm_size() + int(extra_gb * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return f"address space capped at {cap / 2**30:.1f} GiB"


def worker_main(conn, plugin_files: tuple[str, ...], device: str, memory_limit_gb: float, log_path: str,
                parent_pid: int, threads: int | None,
                log_cap: tuple[int, int] = (LOG_CAP_BYTES, LOG_TAIL_BYTES),
                cores: tuple[int, ...] | None = None) -> None:
    """A worker process: load the plugins once, then run the trials the runner sends, each from a
    clean state (:func:`clean_trial`), on ``cores`` when given (:func:`worker_cores`)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides what Ctrl-C stops
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(file=log)  # a crash leaves the Python stack of the crashing trial in the log
    _own_descendants()
    _log_exits()
    if log_cap[0] > 0:
        _LogCap(log.fileno(), Path(log_path), *log_cap).start()
    placed = "cores: any"
    if cores:
        try:
            os.sched_setaffinity(0, cores)
            placed = f"cores: {','.join(map(str, cores))}"
        except OSError as exc:
            placed = f"cores: any ({exc.strerror})"
    print(f"--- genbench worker {os.getpid()} started; {placed}; {long_time_slices()}", flush=True)
    if threads:
        torch.set_num_threads(threads)

    def emit(job, kind, value):
        conn.send((kind, value))

    try:
        runtime = WorkerRuntime(tuple(plugin_files), device, threads=threads)
        print(f"--- {cap_memory(memory_limit_gb, runtime.device)}", flush=True)
    except BaseException as exc:  # the runner reports it; nothing here can recover
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        print(f"--- trial {job.trial_id}", flush=True)
        record = runtime.run(job, job.suite_dir, emit)
        # after running out of memory the heap may be fragmented or held by leaked references:
        # the next trial gets a fresh process
        retire = record.get("fault") == "oom"
        conn.send(("done", (record, retire)))
        if retire:
            return
        if record["status"] != "ok":
            del record
            gc.collect()  # a traceback holds frames in cycles; a full collection costs ~0.3 s, so only then


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


# --- Ray ------------------------------------------------------------------------------------

_RAY_RUNTIMES: dict = {}


def _materialise_plugins(plugins: list[tuple[str, str]]) -> tuple[str, ...]:
    """Plugin file paths usable on this node: the runner's own path where the file is there (same
    machine or shared filesystem), else a copy of the shipped source."""
    paths = []
    for path, source in plugins:
        if Path(path).is_file():
            paths.append(path)
            continue
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "genbench-ray-plugins" / digest
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(path).name
        if not copy.exists():
            copy.write_text(source)
        paths.append(str(copy))
    return tuple(paths)


def ray_trial(job: TrialJob, plugins: list[tuple[str, str]]) -> dict:
    """One trial as a Ray task: returns the record and the files it made (the sample grid), which
    the runner writes (the task may run on a node without the runs folder)."""
    paths = _materialise_plugins(plugins)
    key = (paths, job.device)
    if key not in _RAY_RUNTIMES:  # each trial starts with --threads, else the Ray worker's own thread count
        long_time_slices()
        _RAY_RUNTIMES[key] = WorkerRuntime(paths, job.device)
    runtime = _RAY_RUNTIMES[key]
    with tempfile.TemporaryDirectory(prefix="genbench-ray-") as tmp:
        record = runtime.run(job, Path(tmp))
        files = {}
        for kept in (record.get("samples"), (record.get("weights") or {}).get("path")):
            if kept:
                files[kept] = (Path(tmp) / kept).read_bytes()
    return {"record": record, "files": files}


@dataclass
class _InFlight:
    job: TrialJob
    ref: object
    deadline: float
    started: float = field(default_factory=time.monotonic)


class RayExecutor:
    """Each trial a Ray task, on a local Ray instance or an existing cluster (``--address``)."""

    def __init__(self, options: ExecutorOptions):
        try:
            import ray
        except ImportError:
            raise GenbenchError('--executor ray needs Ray: pip install -e ".[ray]" '
                                '(or pip install "ray[default]>=2.9")') from None
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            # a Ray instance started here serves this run only: no dashboard to start and expose
            extra = {} if options.address else {"include_dashboard": False}
            try:
                ray.init(address=options.address, log_to_driver=False, **extra)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"the Ray cluster at {options.address!r}" if options.address else "a local Ray instance"
                raise GenbenchError(f"could not connect to {where}: {exc}. Start the head with `ray start --head` "
                                    "and pass --address <head-ip>:6379.") from None
            self.started_here = True
        resources = ray.cluster_resources()
        use_gpu = resources.get("GPU", 0) >= 1 and options.device != "cpu"
        self.task_resources = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        self.slots = max(1, int(resources.get("GPU" if use_gpu else "CPU", 1)))
        self.remote = ray.remote(max_retries=0)(ray_trial).options(**self.task_resources)
        self.plugins = [(str(Path(p).resolve()), Path(p).read_text()) for p in options.plugin_files]

    def _outcome(self, flight: _InFlight) -> dict | Fault:
        ray = self.ray
        try:
            out = ray.get(flight.ref)
        except ray.exceptions.OutOfMemoryError as exc:
            return Fault("oom", f"out of memory: Ray's memory monitor stopped the task ({str(exc).splitlines()[0]})")
        except ray.exceptions.WorkerCrashedError:
            return Fault("crashed", "crashed: the Ray worker process died (segfault, abort or kill)")
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Fault("crashed", f"crashed: {type(exc).__name__}: {first}"[:500])
        from genbench.results import atomic_write_bytes

        for rel, data in out["files"].items():
            atomic_write_bytes(flight.job.suite_dir / rel, data)
        return out["record"]

    def run(self, jobs: list[TrialJob], on_event: EventHandler = _no_events) -> Iterator[Result]:
        ray = self.ray
        pending = collections.deque(jobs)
        inflight: dict = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < self.slots:
                    job = pending.popleft()
                    on_event(job, "start", None)
                    ref = self.remote.remote(job, self.plugins)
                    inflight[ref] = _InFlight(job, ref, time.monotonic() + job.limits.total())
                timeout = max(0.0, min(min(f.deadline for f in inflight.values()) - time.monotonic(), 1.0))
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
                for ref in done:
                    flight = inflight.pop(ref)
                    yield flight.job, self._outcome(flight)
                now = time.monotonic()
                for ref, flight in list(inflight.items()):
                    if now > flight.deadline:
                        ray.cancel(ref, force=True)
                        del inflight[ref]
                        limit = flight.deadline - flight.started
                        yield flight.job, Fault("timeout", f"timed out after {limit:g} s (whole task: start-up, "
                                                           "setup, training and evaluation limits together)")
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def make_executor(options: ExecutorOptions, manager, log_dir: Path, datasets=None):
    options.validate()
    if options.kind == "inline":
        return InlineExecutor(options, manager, datasets)
    if options.kind == "ray":
        return RayExecutor(options)
    return LocalExecutor(options, log_dir)
