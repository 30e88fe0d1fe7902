"""An installed out-of-tree package extends genbench without touching it: a metric with settings
of its own (per profile) and a headline column, and a family with a capability genbench has never
heard of, both working through run, leaderboard, publish and check."""

import csv
import json
import subprocess
import sys
import textwrap

import pytest

from genbench.cli import main

PACKAGE = textwrap.dedent('''
    """Gaussian tails: a family with the capability "tail-samples" and the metric that needs it."""

    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.metrics import Metric
    from genbench.nn import randn


    @dataclass
    class Config:
        lr: float = 0.05
        tail_scale: float = 2.0  # how much wider than the fitted Gaussian the tail samples are


    class GaussTails(genbench.GenerativeModel):
        """A diagonal Gaussian fitted by maximum likelihood, with a wider sampler for its tails."""

        name, family, Config = "gauss-tails", "Gaussian tails", Config
        capabilities = frozenset({genbench.Capability.SAMPLE, "tail-samples"})
        data_kinds = frozenset({"points"})

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.loc = torch.nn.Parameter(torch.zeros(spec.dim))
            self.log_scale = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {"main": torch.optim.Adam(self.parameters(), lr=config.lr)}

        def train_step(self, batch, progress):
            x = batch["x"]
            nll = (self.log_scale + 0.5 * ((x - self.loc) / self.log_scale.exp()) ** 2).sum(1).mean()
            self.optimizers["main"].zero_grad(set_to_none=True)
            nll.backward()
            self.optimizers["main"].step()
            return {"nll": nll.detach()}

        def sample(self, n, generator=None, condition=None):
            return (self.loc + self.log_scale.exp() * randn((n, self.spec.dim), generator, self.device)).detach()

        def tail_samples(self, n, generator=None):
            return self.loc + self.config.tail_scale * (self.sample(n, generator) - self.loc)


    @dataclass(frozen=True)
    class TailSettings:
        n: int = 2000  # tail samples drawn
        quantile: float = 0.99  # of their distances from the origin


    class TailCoverage(Metric):
        """The share of test points within the radius that holds ``quantile`` of the tail samples."""

        name = "tail_coverage"
        columns = {"tail_coverage": "higher"}
        headline = {"tail_coverage": 15}  # right after fid: what a reader of this plugin looks for
        needs = frozenset({"tail-samples"})
        data_kinds = frozenset({"points"})
        Settings = TailSettings
        profile_settings = {"test": {"n": 300}}
        allowance_s = {"test": 30.0}

        def estimator(self, profile):
            s = self.settings(profile)
            return f"{s.quantile} radius of {s.n} tail samples"

        def compute(self, ctx):
            s = ctx.settings_of(self)
            with torch.no_grad():
                far = ctx.model.tail_samples(s.n, ctx.generator(5)).cpu()
            radius = far.norm(dim=1).quantile(s.quantile)
            test = ctx.dataset.split("test")["x"].cpu()
            return {"tail_coverage": float((test.norm(dim=1) <= radius).float().mean())}


    @genbench.hookimpl
    def register_models(register):
        register(GaussTails)


    @genbench.hookimpl
    def register_metrics(register):
        register(TailCoverage())
''')

PYPROJECT = textwrap.dedent('''
    [build-system]
    requires = ["setuptools>=68"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "gauss-tails"
    version = "1.0"

    [project.entry-points.genbench]
    gauss_tails = "gauss_tails"

    [tool.setuptools]
    py-modules = ["gauss_tails"]
''')


@pytest.fixture
def installed(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "gauss_tails.py").write_text(PACKAGE)
    (src / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(src)], check=True, capture_output=True)
    assert (site / "gauss_tails.py").exists() and list(site.glob("gauss_tails-1.0.dist-info"))
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("gauss_tails", None)


def test_an_installed_metric_and_family_work_in_run_leaderboard_publish_and_check(installed, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "boards"
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "gauss-tails" in listed and "tail_coverage" in listed

    assert main(["run", "--model", "gauss-tails", "--dataset", "ring8", "--budget", "40steps", "--profile", "test",
                 "--executor", "inline", "--runs-dir", str(runs)]) == 0
    printed = capsys.readouterr().out
    (path,) = (runs / "test" / "trials").glob("gauss-tails--*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok", record.get("reason")
    coverage = record["metrics"]["tail_coverage"]
    assert 0.9 <= coverage <= 1.0  # twice as wide as the fit: its 99% radius holds nearly every test point
    assert record["estimators"]["tail_coverage"] == "0.99 radius of 300 tail samples"  # its test-profile setting
    assert "tail_coverage" in printed  # a headline column: the terminal table shows it

    assert main(["leaderboard", "--runs-dir", str(runs), "--suite", "test", "--json"]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["ring8"] if r["model"] == "gauss-tails"]
    assert row["tail_coverage"] == pytest.approx(coverage)

    assert main(["publish", "--runs-dir", str(runs), "--out", str(out)]) == 0
    with open(out / "test" / "ring8.csv", newline="") as f:
        header = next(csv.reader(f))
    with open(out / "test" / "ring8.csv", newline="") as f:
        published = list(csv.DictReader(f))
    metrics = header[header.index("used_flops") + 1:]
    assert metrics[0] == "tail_coverage"  # rank 15: before modes (40) and every other ring8 column
    assert float(published[0]["tail_coverage"]) == pytest.approx(coverage)
    page = (out / "README.md").read_text()
    assert "| tail\\_coverage ↑ | modes ↑ |" in page  # first of the page's columns, with its direction

    capsys.readouterr()
    assert main(["check", "gauss-tails"]) == 0
    assert "1 model(s) honour the contract" in capsys.readouterr().out
