"""What the executors run: a trial job, its options and the limits of each of its phases, and how
much CPU a worker process has used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genbench.errors import GenbenchError
from genbench.runner import Trial, resolve_device

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

