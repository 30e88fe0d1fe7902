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

The package: :mod:`~genbench.executors.jobs` (a trial job, its options and phase limits),
:mod:`~genbench.executors.worker` (what runs in a worker process), :mod:`~genbench.executors.local`
(the inline executor and the local pool) and :mod:`~genbench.executors.ray_tasks` (Ray); here
:func:`make_executor` picks one.
"""

from __future__ import annotations

from pathlib import Path

from genbench.executors.jobs import (
    EXECUTORS,
    SETUP_ALLOWANCE_S,
    STARTUP_ALLOWANCE_S,
    STEP_BUDGET_TRAIN_LIMIT_S,
    WALL_BACKSTOP,
    ExecutorOptions,
    Fault,
    Limits,
    TrialJob,
    default_workers,
    eval_allowance,
    process_cpu_seconds,
    trial_limits,
    trial_threads,
)
from genbench.executors.local import InlineExecutor, LocalExecutor
from genbench.executors.ray_tasks import RayExecutor

__all__ = ["EXECUTORS", "SETUP_ALLOWANCE_S", "STARTUP_ALLOWANCE_S", "STEP_BUDGET_TRAIN_LIMIT_S", "WALL_BACKSTOP",
           "ExecutorOptions", "Fault", "InlineExecutor", "Limits", "LocalExecutor", "RayExecutor", "TrialJob",
           "default_workers", "eval_allowance", "make_executor", "process_cpu_seconds", "trial_limits",
           "trial_threads"]


def make_executor(options: ExecutorOptions, manager, log_dir: Path, datasets=None):
    """The executor ``options.kind`` names, validated: inline, the local pool (default) or Ray."""
    options.validate()
    if options.kind == "inline":
        return InlineExecutor(options, manager, datasets)
    if options.kind == "ray":
        return RayExecutor(options)
    return LocalExecutor(options, log_dir)
