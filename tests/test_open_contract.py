"""A plugin extends the contract without touching genbench: a capability of its own, needed by a
metric of its own, works in `run`, `leaderboard` and `check`; a capability nothing needs is refused."""

import textwrap

import pandas as pd
import pytest

from genbench.cli import main
from genbench.errors import RegistrationError
from genbench.manager import PluginManager

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    import torch
    import genbench
    from genbench.metrics import Metric, draw_samples
    from genbench.nn import mlp, randn

    SPREAD = "{capability}"  # a capability genbench has never heard of


    @dataclass
    class Config:
        hidden: int = 16
        lr: float = 1e-2


    class Spreader(genbench.GenerativeModel):
        name, family, Config = "spreader", "Spreader", Config
        capabilities = frozenset({{genbench.Capability.SAMPLE, SPREAD}})
        data_kinds = frozenset({{"points"}})

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.net = mlp([2, config.hidden, spec.dim])
            self.optimizers = {{"main": torch.optim.Adam(self.parameters(), lr=config.lr)}}

        def train_step(self, batch, progress):
            fake = self.net(torch.randn(len(batch["x"]), 2))
            loss = ((fake.mean(0) - batch["x"].mean(0)) ** 2).sum()
            self.optimizers["main"].zero_grad()
            loss.backward()
            self.optimizers["main"].step()
            return {{"loss": loss.detach()}}

        def sample(self, n, generator=None, condition=None):
            return self.net(randn((n, 2), generator, self.device))

        def spread(self):  # what the capability promises
            return 3.0


    class SpreadMetric(Metric):
        name = "spread_metric"
        columns = {{"spread_score": "higher"}}
        needs = frozenset({{"spread"}})

        def compute(self, ctx):
            x = draw_samples(ctx.model, 64, ctx.generator(offset=5))
            return {{"spread_score": ctx.model.spread() + 0.0 * float(x.std())}}


    @genbench.hookimpl
    def register_models(register):
        register(Spreader)


    @genbench.hookimpl
    def register_metrics(register):
        register(SpreadMetric())
''')


def write(tmp_path, capability):
    path = tmp_path / f"spread_{capability}.py"
    path.write_text(PLUGIN.format(capability=capability))
    return path


def test_a_plugins_own_capability_and_metric_work_in_run_leaderboard_and_check(tmp_path, capsys):
    path = write(tmp_path, "spread")
    manager = PluginManager(plugin_files=[path])
    assert "spread" in manager.known_capabilities() and "spreader" in manager.models
    runs = tmp_path / "runs"
    assert main(["--plugin", str(path), "run", "--model", "spreader", "--dataset", "ring8", "--budget", "5steps",
                 "--profile", "test", "--runs-dir", str(runs)]) == 0
    board = pd.read_csv(runs / "test" / "leaderboard-ring8.csv")
    row = board[board["model"] == "spreader"].iloc[0]
    assert row["status"] == "ok" and row["spread_score"] == pytest.approx(3.0)
    capsys.readouterr()
    assert main(["--plugin", str(path), "leaderboard", "--runs-dir", str(runs), "--suite", "test"]) == 0
    assert "spreader" in capsys.readouterr().out
    assert main(["--plugin", str(path), "check", "spreader"]) == 0


def test_a_capability_that_no_metric_needs_is_refused_with_the_known_ones(tmp_path):
    path = write(tmp_path, "sprad")  # the model's capability is misspelt; the metric still needs "spread"
    with pytest.raises(RegistrationError, match=r"\['sprad'\] that no registered metric needs; known: .*'spread'"):
        PluginManager(plugin_files=[path])
