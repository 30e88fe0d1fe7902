"""Resume: checkpoints restore the full training state, a killed run loses no finished trial, and
the same seed gives the same numbers (the ground every resume stands on)."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import build

from genbench.budget import Budget, BudgetMeter
from genbench.checkpoint import Checkpointer, ResumableBatches
from genbench.cli import main
from genbench.results import ci95
from genbench.runner import train
from genbench.selection import Selector

GENBENCH = Path(sys.executable).with_name("genbench")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models on a shared 2-core machine run far faster (and steadier) than on
    two threads that wait on each other, and every process of a test then computes the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Interrupted(Exception):
    pass


def test_resumable_batches_continue_the_same_stream_across_epochs(digits):
    batches = ResumableBatches(digits, 300, seed=3)  # 3 batches per epoch of 1000
    for _ in range(7):
        next(batches)
    state = batches.state()
    expected = [next(batches)["x"] for _ in range(5)]
    resumed = ResumableBatches(digits, 300, seed=3, state=state)
    for want in expected:
        assert torch.equal(next(resumed)["x"], want)


@pytest.mark.parametrize("model_name", ["vae", "gan"])
def test_interrupted_training_continues_to_the_same_parameters(model_name, manager, ring8, tmp_path):
    cls = manager.models.get(model_name)
    budget = Budget.parse("40steps")
    reference = build(cls, ring8, seed=0)
    usage_ref, losses_ref = train(reference, ring8, budget, seed=0, device="cpu")

    path = tmp_path / "ckpt.pt"
    first = build(cls, ring8, seed=0)

    def stop_after_half(progress, losses):
        if progress >= 0.6:  # after the 50% checkpoint, before the 75% one
            raise Interrupted

    with pytest.raises(Interrupted):
        train(first, ring8, budget, seed=0, device="cpu", on_step=stop_after_half,
              checkpoint=Checkpointer(path, "key", every=0.25))
    blob = torch.load(path, weights_only=True)  # only plain data: loads without unpickling code
    assert blob["usage"]["steps"] == 20 and set(blob["optimizers"]) == set(first.optimizers)

    torch.manual_seed(12345)  # scramble the global RNG: the checkpoint must restore it
    resumed = build(cls, ring8, seed=99)  # different initial weights: the checkpoint must restore them
    ckpt = Checkpointer(path, "key", every=0.25)
    usage, losses = train(resumed, ring8, budget, seed=0, device="cpu", checkpoint=ckpt)
    assert ckpt.resumed_from["steps"] == 20
    assert usage.steps == usage_ref.steps == 40 and usage.flops == usage_ref.flops
    assert losses == losses_ref
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    for name, opt in reference.optimizers.items():
        ref_state = opt.state_dict()["state"]
        new_state = resumed.optimizers[name].state_dict()["state"]
        for k in ref_state:
            for field, value in ref_state[k].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(new_state[k][field])), (name, k, field)


@pytest.mark.parametrize("model_name", ["vae", "gan"])
def test_interrupted_training_keeps_its_selection_history_and_best_state(model_name, manager, ring8, tmp_path):
    """Selection's history and best-on-validation weights travel in the checkpoint: the resumed
    trial scores the same values and ends in the same chosen state as an uninterrupted one."""
    cls = manager.models.get(model_name)
    budget = Budget.parse("40steps")
    reference = build(cls, ring8, seed=0)
    ref_selector = Selector.for_trial(reference, ring8, "test")
    _, losses_ref = train(reference, ring8, budget, seed=0, device="cpu", selector=ref_selector)

    path = tmp_path / "ckpt.pt"
    first = build(cls, ring8, seed=0)

    def stop_after_half(progress, losses):
        if progress >= 0.6:  # after the 50% checkpoint, before the 75% one
            raise Interrupted

    with pytest.raises(Interrupted):
        train(first, ring8, budget, seed=0, device="cpu", on_step=stop_after_half,
              checkpoint=Checkpointer(path, "key", every=0.25), selector=Selector.for_trial(first, ring8, "test"))
    saved = torch.load(path, weights_only=True)["selection"]
    assert [h["step"] for h in saved["history"]] == [4, 8, 12, 16, 20] and saved["best_state"] is not None

    torch.manual_seed(12345)
    resumed = build(cls, ring8, seed=99)
    selector = Selector.for_trial(resumed, ring8, "test")
    ckpt = Checkpointer(path, "key", every=0.25)
    _, losses = train(resumed, ring8, budget, seed=0, device="cpu", checkpoint=ckpt, selector=selector)
    assert ckpt.resumed_from["steps"] == 20 and losses == losses_ref
    assert selector.history == ref_selector.history  # the same values at the same steps, bit for bit
    assert (selector.best_step, selector.best_value) == (ref_selector.best_step, ref_selector.best_value)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name  # both in the chosen state


def test_time_budget_continues_from_the_recorded_usage(manager, ring8, tmp_path):
    cls = manager.models.get("gan")
    budget = Budget.parse("0.4s")
    path = tmp_path / "ckpt.pt"

    def stop(progress, losses):
        if path.exists():
            raise Interrupted

    with pytest.raises(Interrupted):
        train(build(cls, ring8), ring8, budget, 0, "cpu", on_step=stop, checkpoint=Checkpointer(path, "k", 0.25))
    saved = torch.load(path, weights_only=True)["usage"]
    assert saved["seconds"] >= 0.1  # the 25% mark of 0.4 s

    model = build(cls, ring8)
    meter = BudgetMeter(budget, "cpu")
    ckpt = Checkpointer(path, "k", 0.25)
    ckpt.restore(model, meter, ring8, 64, 0)
    assert meter.usage.seconds == saved["seconds"] and meter.usage.steps == saved["steps"]
    assert meter.progress() == pytest.approx(saved["seconds"] / 0.4)
    assert ckpt.next_fraction > meter.progress()  # the next save is at the next 25% mark, not again now

    usage, _ = train(build(cls, ring8), ring8, budget, 0, "cpu", checkpoint=Checkpointer(path, "k", 0.25))
    assert usage.seconds >= 0.4 and usage.steps > saved["steps"]


def test_unreadable_or_foreign_checkpoints_are_ignored_with_a_warning(manager, ring8, tmp_path):
    cls = manager.models.get("vae")
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"\x80\x04 truncated")
    ckpt = Checkpointer(path, "mine", 0.5)
    with pytest.warns(UserWarning, match="ignoring checkpoint .*started from the beginning"):
        usage, _ = train(build(cls, ring8), ring8, Budget.parse("4steps"), 0, "cpu", checkpoint=ckpt)
    assert ckpt.resumed_from is None and usage.steps == 4
    assert ckpt.discarded.startswith("ignoring checkpoint ckpt.pt")  # the runner copies it into the record

    # a checkpoint written for another configuration (the file now holds the 50% state of "mine")
    assert torch.load(path, weights_only=True)["key"] == "mine"
    other = Checkpointer(path, "theirs", 0.5)
    with pytest.warns(UserWarning, match="belongs to another configuration"):
        train(build(cls, ring8), ring8, Budget.parse("4steps"), 0, "cpu", checkpoint=other)
    assert other.resumed_from is None and "another configuration" in other.discarded


def metrics_by_trial(suite_dir):
    out = {}
    for p in (suite_dir / "trials").glob("*.json"):
        r = json.loads(p.read_text())
        out[(r["model"], r["dataset"], r["seed"])] = (r["status"], r["metrics"], r["used"]["steps"])
    return out


SLOW_PLUGIN = textwrap.dedent('''
    """A Gaussian fitted by Adam on noisy data, slowed by a sleep per step: long enough in wall time
    to be killed mid-training, light on the CPU."""
    import time
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.model import Capability, GenerativeModel


    @dataclass
    class SlowConfig:
        lr: float = 0.05
        batch_size: int = 64
        step_sleep: float = 0.1  # long enough to outlast the vae trial beside it on a busy machine


    class SlowGaussian(GenerativeModel):
        name = "slow-gaussian"
        family = "test"
        capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
        data_kinds = frozenset({"points"})
        Config = SlowConfig

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.loc = torch.nn.Parameter(torch.randn(spec.dim))
            self.log_scale = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {"adam": torch.optim.Adam(self.parameters(), lr=config.lr)}

        def dist(self):
            return torch.distributions.Independent(torch.distributions.Normal(self.loc, self.log_scale.exp()), 1)

        def log_likelihood(self, x):
            return self.dist().log_prob(x)

        def train_step(self, batch, progress):
            time.sleep(self.config.step_sleep)
            x = batch["x"] + 0.05 * torch.randn_like(batch["x"])  # global RNG: a resume must restore it
            loss = -self.log_likelihood(x).mean()
            self.optimizers["adam"].zero_grad()
            loss.backward()
            self.optimizers["adam"].step()
            return {"nll": loss.item()}

        def sample(self, n, generator=None, condition=None):
            eps = torch.randn(n, self.spec.dim, generator=generator)
            return (self.loc + self.log_scale.exp() * eps).detach()


    @genbench.hookimpl
    def register_models(register):
        register(SlowGaussian)
''')


def test_sigkill_mid_suite_then_the_same_command_ends_with_the_same_leaderboard(tmp_path, capsys):
    plugin = tmp_path / "slow_gaussian.py"
    plugin.write_text(SLOW_PLUGIN)
    budget = ["--budget", "60steps", "--checkpoint-every", "0.2"]  # 60 x 100 ms; checkpoints every 12 steps
    common = ["--model", "vae", "--model", "slow-gaussian", "--dataset", "ring8", *budget, "--profile", "test",
              "--threads", "1"]  # one thread: fast and steady on a busy machine, the same in every process
    # the uninterrupted reference, in this process
    assert main(["--plugin", str(plugin), "run", *common, "--runs-dir", str(tmp_path / "ref"),
                 "--executor", "inline"]) == 0

    runs = tmp_path / "killed"
    cmd = [str(GENBENCH), "--plugin", str(plugin), "run", *common, "--runs-dir", str(runs)]
    trials, ckpts = runs / "test" / "trials", runs / "test" / "checkpoints"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(trials.glob("vae--*.json")) and any(ckpts.glob("slow-gaussian--*.pt")):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the suite finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert [p.name.split("--")[0] for p in trials.glob("*.json")] == ["vae"]  # the other was mid-training
    vae_file = next(trials.glob("vae--*.json"))
    stamp = vae_file.stat().st_mtime_ns

    capsys.readouterr()
    assert main(cmd[1:]) == 0  # the same command again (in this process: one interpreter start-up less)
    assert "1 trial(s) already finished" in capsys.readouterr().out
    assert vae_file.stat().st_mtime_ns == stamp  # the finished trial was kept, not run again
    slow = json.loads(next(trials.glob("slow-gaussian--*.json")).read_text())
    assert slow["status"] == "ok" and 12 <= slow["resumed_from"]["steps"] < 60  # continued, not restarted
    assert not list(ckpts.glob("*.pt"))  # checkpoints go once the records are written
    assert not [p for p in (runs / "test").rglob(".*.tmp*")]  # no half-written file left anywhere

    assert metrics_by_trial(runs / "test") == metrics_by_trial(tmp_path / "ref" / "test")
    killed = pd.read_csv(runs / "test" / "leaderboard-ring8.csv").set_index("model")
    ref = pd.read_csv(tmp_path / "ref" / "test" / "leaderboard-ring8.csv").set_index("model")
    cols = [c for c in ("nll", "elbo", "iwae", "ais", "modes", "hq_pct", "mode_kl", "parzen") if c in ref.columns]
    assert {"nll", "elbo", "mode_kl"} <= set(cols)
    cols += ["status", "seeds", "used_steps"]
    pd.testing.assert_frame_equal(killed[cols], ref[cols])


def test_same_seed_same_metrics_through_workers_and_seed_statistics(tmp_path):
    common = ["run", "--model", "vae", "--dataset", "ring8", "--budget", "5steps", "--seeds", "3",
              "--profile", "test", "--threads", "1"]
    assert main([*common, "--runs-dir", str(tmp_path / "a")]) == 0
    assert main([*common, "--runs-dir", str(tmp_path / "b")]) == 0
    a, b = metrics_by_trial(tmp_path / "a" / "test"), metrics_by_trial(tmp_path / "b" / "test")
    assert len(a) == 3 and a == b  # exactly equal, every metric of every seed
    assert all(status == "ok" for status, _, _ in a.values())
    assert len({json.dumps(m, sort_keys=True) for _, m, _ in a.values()}) == 3  # seeds do differ

    trials = pd.read_csv(tmp_path / "a" / "test" / "trials.csv")
    assert sorted(trials["seed"]) == [0, 1, 2]
    board = pd.read_csv(tmp_path / "a" / "test" / "leaderboard-ring8.csv").set_index("model")
    assert board.loc["vae", "seeds"] == "3/3"
    for col in ("elbo", "mode_kl"):
        values = [m[col] for _, m, _ in a.values()]
        mean, half = ci95(values)
        assert board.loc["vae", col] == pytest.approx(mean, rel=1e-5)
        assert board.loc["vae", f"{col}_ci95"] == pytest.approx(half, rel=1e-5)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        assert half == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)  # t(0.975, df=2)
