"""The training time limit of a seconds budget counts the worker's CPU time on a CPU, so a machine
busy with other work stretches a trial without failing it; a wall-clock backstop still ends a trial
that hangs without computing."""

import os
import time
from types import SimpleNamespace

from genbench.budget import Budget
from genbench.executors import WALL_BACKSTOP, ExecutorOptions, _Worker, process_cpu_seconds, trial_limits
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
