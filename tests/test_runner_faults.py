"""Faults are results: a plugin that raises, returns NaN, hangs, exhausts memory or kills its process
fails its own trial, with the reason, and every other trial of the suite finishes intact."""

import json
import textwrap

import pandas as pd
import pytest
import torch

from genbench.budget import Budget
from genbench.cli import main
from genbench.executors import (
    SETUP_ALLOWANCE_S,
    STEP_BUDGET_TRAIN_LIMIT_S,
    ExecutorOptions,
    trial_limits,
    trial_threads,
)
from genbench.metrics import select_metrics
from genbench.runner import Trial


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models on a shared 2-core machine run far faster (and steadier) than on
    two threads that wait on each other, and every process of a test then computes the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

FAULTY_PLUGIN = textwrap.dedent('''
    """Tiny point models that fail in every way a plugin can."""
    import os
    import time
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.model import GenerativeModel


    @dataclass
    class TinyConfig:
        lr: float = 1e-2
        batch_size: int = 32


    class Tiny(GenerativeModel):
        family = "fault-injection"
        data_kinds = frozenset({"points"})
        Config = TinyConfig

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.loc = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {"opt": torch.optim.SGD(self.parameters(), lr=config.lr)}

        def train_step(self, batch, progress):
            loss = ((batch["x"].flatten(1) - self.loc) ** 2).mean()
            self.optimizers["opt"].zero_grad()
            loss.backward()
            self.optimizers["opt"].step()
            return {"loss": loss.item()}

        def sample(self, n, generator=None, condition=None):
            return self.loc.detach() + 0.1 * torch.randn(n, self.spec.dim, generator=generator)


    class Raises(Tiny):
        name = "raises"

        def train_step(self, batch, progress):
            raise ValueError("broken on purpose")


    class ReturnsNaN(Tiny):
        name = "returns-nan"

        def train_step(self, batch, progress):
            super().train_step(batch, progress)
            return {"loss": float("nan")}


    class Hangs(Tiny):
        name = "hangs"

        def train_step(self, batch, progress):
            while True:
                time.sleep(0.5)


    class Hog(Tiny):
        name = "hog"

        def train_step(self, batch, progress):
            self.hoard = []
            while True:  # 256 MiB at a time, without bound (left untouched: the cap stops it, not the machine)
                self.hoard.append(torch.empty(2**28, dtype=torch.uint8))


    class Aborts(Tiny):
        name = "aborts"

        def train_step(self, batch, progress):
            os.abort()


    class Healthy(Tiny):
        name = "healthy"


    @genbench.hookimpl
    def register_models(register):
        for cls in (Raises, ReturnsNaN, Hangs, Hog, Aborts, Healthy):
            register(cls)
''')


@pytest.fixture()
def faulty_plugin(tmp_path):
    path = tmp_path / "faulty_models.py"
    path.write_text(FAULTY_PLUGIN)
    return path


def read_records(suite_dir):
    return {r["model"]: r for r in (json.loads(p.read_text()) for p in (suite_dir / "trials").glob("*.json"))}


def test_every_fault_is_a_result_and_healthy_trials_are_intact(tmp_path, faulty_plugin, capsys):
    runs = tmp_path / "runs"
    code = main(["--plugin", str(faulty_plugin), "run",
                 "--model", "vae", "--model", "healthy", "--model", "raises", "--model", "returns-nan",
                 "--model", "hangs", "--model", "hog", "--model", "aborts",
                 "--dataset", "ring8", "--budget", "5steps", "--profile", "test", "--runs-dir", str(runs),
                 "--workers", "2", "--trial-timeout", "3", "--memory-limit", "1"])
    assert code == 0
    recs = read_records(runs / "test")
    assert set(recs) == {"vae", "healthy", "raises", "returns-nan", "hangs", "hog", "aborts"}

    for healthy in ("vae", "healthy"):
        r = recs[healthy]
        assert r["status"] == "ok", r.get("reason")
        assert r["used"]["steps"] == 5
        assert r["metrics"] and all(v is None or isinstance(v, float) for v in r["metrics"].values())
        assert (runs / "test" / r["samples"]).stat().st_size > 0
    assert {"modes", "hq_pct"} <= set(recs["vae"]["metrics"])

    def failed(model, fault, *fragments):
        r = recs[model]
        assert r["status"] == "failed" and r["fault"] == fault, (model, r.get("fault"), r["reason"])
        for fragment in fragments:
            assert fragment in r["reason"], (model, r["reason"])

    failed("raises", "exception", "ValueError: broken on purpose")
    failed("returns-nan", "non_finite", "non-finite loss at step 1", "nan")
    failed("hangs", "timeout", "timed out after 3 s in training", "--trial-timeout")
    failed("hog", "oom", "out of memory")
    failed("aborts", "crashed", "crashed: signal SIGABRT", "train_step (faulty_models.py:")

    # the leaderboard lists the failed ones with their reasons, next to the healthy rows
    board = pd.read_csv(runs / "test" / "leaderboard-ring8.csv").set_index("model")
    assert board.loc["vae", "status"] == "ok" and board.loc["healthy", "status"] == "ok"
    assert board.loc["aborts", "status"] == "failed" and "SIGABRT" in board.loc["aborts", "reason"]
    assert "timed out" in board.loc["hangs", "reason"]
    out = capsys.readouterr().out
    assert "2 trials ok, 5 failed" in out


def test_inline_executor_records_exceptions_and_failed_trials_are_retried(tmp_path, capsys):
    """The in-process executor still turns exceptions into records; running the same command again
    skips the finished trial and retries the failed one (which now succeeds)."""
    flag = tmp_path / "broken.flag"
    flag.write_text("1")
    plugin = tmp_path / "flaky.py"
    plugin.write_text(FAULTY_PLUGIN + textwrap.dedent(f'''

        class Flaky(Tiny):
            name = "flaky"

            def train_step(self, batch, progress):
                if os.path.exists({str(flag)!r}):
                    raise RuntimeError("flag file present")
                return super().train_step(batch, progress)


        @genbench.hookimpl
        def register_models(register):  # replaces the hook above: only these two
            register(Healthy)
            register(Flaky)
    '''))
    runs = tmp_path / "runs"
    argv = ["--plugin", str(plugin), "run", "--model", "healthy", "--model", "flaky", "--dataset", "ring8",
            "--budget", "3steps", "--profile", "test", "--runs-dir", str(runs), "--executor", "inline"]
    assert main(argv) == 0
    first = read_records(runs / "test")
    assert first["healthy"]["status"] == "ok"
    assert first["flaky"]["status"] == "failed" and "flag file present" in first["flaky"]["reason"]
    healthy_file = next((runs / "test" / "trials").glob("healthy--*.json"))
    stamp = healthy_file.stat().st_mtime_ns

    flag.unlink()
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) already finished" in out and "1 failed one(s) run again" in out
    second = read_records(runs / "test")
    assert second["flaky"]["status"] == "ok"
    assert healthy_file.stat().st_mtime_ns == stamp  # the finished trial was not run again


def test_time_limits_follow_the_budget_and_the_flags(manager):
    t_seconds = Trial("vae", "ring8", 0, Budget.parse("60s"), "quick")
    t_steps = Trial("vae", "ring8", 0, Budget.parse("100steps"), "test")
    limits = trial_limits(t_seconds, ExecutorOptions(), manager.metrics.values())
    assert limits.train_s == pytest.approx(3.0 * 60 + 120)
    # the evaluation allowance is the sum of the metrics' own: 300 s each in the quick profile
    allowances = [m.allowance("quick") for m in manager.metrics.values()]
    assert limits.eval_s == limits.setup_s == sum(allowances) and set(allowances) == {300.0}
    skipping = Trial("vae", "ring8", 0, Budget.parse("60s"), "quick", metric_selection=select_metrics(
        manager.metrics, "parzen,modes"))
    assert trial_limits(skipping, ExecutorOptions(), manager.metrics.values()).eval_s == SETUP_ALLOWANCE_S  # 600 s
    assert trial_limits(t_seconds, ExecutorOptions()).eval_s == SETUP_ALLOWANCE_S  # no metric known
    assert trial_limits(t_steps, ExecutorOptions()).train_s == STEP_BUDGET_TRAIN_LIMIT_S
    custom = trial_limits(t_steps, ExecutorOptions(trial_timeout=7, eval_timeout=11))
    assert (custom.train_s, custom.eval_s, custom.setup_s) == (7, 11, 11)
    assert custom.for_phase("train") == (7, "--trial-timeout")
    assert custom.for_phase("eval") == (11, "--eval-timeout")


def test_a_trial_on_the_cpu_gets_one_thread_unless_told():
    """A seconds budget is CPU time: threads waiting on each other would be charged for it."""
    assert trial_threads(ExecutorOptions(device="cpu")) == 1
    assert trial_threads(ExecutorOptions(device="cpu", workers=1)) == 1
    assert trial_threads(ExecutorOptions(device="cpu", threads=3)) == 3
