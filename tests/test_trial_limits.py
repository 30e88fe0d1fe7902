"""The training time limit of a seconds budget counts the worker's CPU time on a CPU, so a machine
busy with other work stretches a trial without failing it; a wall-clock backstop still ends a trial
that hangs without computing.  Workers are pinned to cores of their own where they fit, so that a
busy machine does not move a trial between cores (each move a cold cache charged to its budget)."""

import multiprocessing
import os
import time
from types import SimpleNamespace

import pytest

from genbench.budget import Budget
from genbench.executors import WALL_BACKSTOP, ExecutorOptions, process_cpu_seconds, trial_limits
from genbench.executors.local import _Worker
from genbench.runner import Trial


def test_a_seconds_budget_on_a_cpu_gets_a_cpu_time_limit_and_an_explicit_one_is_wall_time():
    trial = Trial("vae", "digits", 0, Budget.parse("45s"))
    limits = trial_limits(trial, ExecutorOptions(device="cpu").validate())
    assert limits.train_cpu and limits.train_s == 3 * 45 + 120
    explicit = trial_limits(trial, ExecutorOptions(device="cpu", trial_timeout=50).validate())
    assert not explicit.train_cpu and explicit.train_s == 50
    steps = trial_limits(Trial("vae", "digits", 0, Budget.parse("100steps")), ExecutorOptions(device="cpu").validate())
    assert not steps.train_cpu


def test_process_cpu_seconds_grows_with_work_not_with_sleep():
    before = process_cpu_seconds(os.getpid())
    time.sleep(0.3)
    slept = process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    worked = process_cpu_seconds(os.getpid())
    assert slept - before < 0.2 and worked - slept > 0.15


def fake_worker(limit: float, cpu_used: float, wall: float):
    limits = SimpleNamespace(train_cpu=True, for_phase=lambda phase: (limit, "--trial-timeout"))
    now_cpu = process_cpu_seconds(os.getpid())
    return SimpleNamespace(job=SimpleNamespace(limits=limits), phase="train", proc=SimpleNamespace(pid=os.getpid()),
                           phase_started=time.monotonic() - wall, phase_cpu=now_cpu - cpu_used)


def test_overdue_by_cpu_time_not_by_a_stretched_wall_clock():
    assert _Worker.overdue(fake_worker(10.0, cpu_used=1.0, wall=50.0)) is None  # busy machine: slow, not hung
    assert "CPU time" in _Worker.overdue(fake_worker(10.0, cpu_used=11.0, wall=12.0))
    hung = _Worker.overdue(fake_worker(10.0, cpu_used=0.0, wall=WALL_BACKSTOP * 10.0 + 1))
    assert hung is not None and "wall time" in hung


def test_workers_get_cores_of_their_own_only_where_their_threads_fit(monkeypatch):
    from genbench.executors.worker import worker_cores

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    two = ExecutorOptions(workers=2, device="cpu").validate()
    assert [worker_cores(s, two, 1) for s in range(2)] == [(0,), (1,)]
    assert [worker_cores(s, two, 2) for s in range(2)] == [(0, 1), (2, 3)]
    assert worker_cores(0, two, 3) is None  # 2 workers x 3 threads do not fit in 4 cores: the scheduler places them
    five = ExecutorOptions(workers=5, device="cpu").validate()
    assert worker_cores(4, five, 1) is None


def test_a_worker_runs_on_the_core_it_was_given(tmp_path):
    """The pinning and the longer time slices are applied inside the worker and said in its log."""
    from genbench.executors.worker import worker_cores

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this system")
    options = ExecutorOptions(workers=1, device="cpu").validate()
    cores = worker_cores(0, options, 1)
    worker = _Worker(multiprocessing.get_context("spawn"), 0, options, tmp_path / "w.log", 1)
    try:
        log, deadline = tmp_path / "w.log", time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and "started" in log.read_text(errors="replace")):
            time.sleep(0.1)
        line = next(ln for ln in log.read_text().splitlines() if "started" in ln)
        assert f"cores: {','.join(map(str, cores))}" in line
        assert os.sched_getaffinity(worker.proc.pid) == set(cores)
    finally:
        worker.proc.kill()
        worker.proc.join(10)
