"""The plugin contract: hooks, entry points, local files, registration errors."""

import sys
import textwrap

import pytest

from genbench.errors import RegistrationError, UnknownNameError
from genbench.manager import PluginManager

TINY_PLUGIN = '''
from dataclasses import dataclass
import torch
import genbench
from genbench.nn import mlp, randn


@dataclass
class TinyConfig:
    hidden: int = 16
    lr: float = 1e-2


class Tiny(genbench.GenerativeModel):
    """A least-squares moment matcher: enough to exercise the contract."""
    name = "{name}"
    family = "Tiny"
    Config = TinyConfig
    capabilities = frozenset({{genbench.Capability.SAMPLE}})

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = mlp([4, config.hidden, spec.dim])
        self.optimizers = {{"main": torch.optim.Adam(self.parameters(), lr=config.lr)}}

    def train_step(self, batch, progress):
        fake = self.net(torch.randn(len(batch["x"]), 4, device=batch["x"].device))
        loss = ((fake.mean(0) - batch["x"].flatten(1).mean(0)) ** 2).sum()
        self.optimizers["main"].zero_grad()
        loss.backward()
        self.optimizers["main"].step()
        return {{"loss": loss.item()}}

    def sample(self, n, generator=None, condition=None):
        out = self.net(randn((n, 4), generator, self.device)).reshape(n, *self.spec.shape)
        return out.sigmoid() if self.spec.kind == "image" else out


@genbench.hookimpl
def register_models(register):
    register(Tiny)
'''


def write_plugin(tmp_path, name="tiny", filename="tiny_plugin.py"):
    path = tmp_path / filename
    path.write_text(TINY_PLUGIN.format(name=name))
    return path


def test_builtin_families_load_through_entry_points(manager):
    assert {"vae", "gan", "planar-flow"} <= set(manager.models)
    # loaded through the `genbench` entry-point group, under the entry point's name
    assert manager.plugin_of("model", "vae") == "vae"
    assert manager.plugin_of("model", "planar-flow") == "planar_flow"
    assert {"digits", "ring8", "grid25", "mnist"} <= set(manager.datasets)
    assert {"sample_quality", "exact_likelihood", "posterior_gaps", "modes"} <= set(manager.metrics)


def test_local_plugin_file_registers_and_runs(tmp_path):
    from genbench.cli import main

    path = write_plugin(tmp_path)
    manager = PluginManager(plugin_files=[path])
    assert "tiny" in manager.models
    assert manager.plugin_of("model", "tiny") == str(path)
    runs = tmp_path / "runs"
    code = main(["--plugin", str(path), "run", "--model", "tiny", "--dataset", "ring8", "--budget", "5steps",
                 "--profile", "test", "--runs-dir", str(runs)])
    assert code == 0
    import pandas as pd

    df = pd.read_csv(runs / "test" / "leaderboard-ring8.csv")
    assert df.loc[0, "model"] == "tiny" and df.loc[0, "status"] == "ok"
    assert {"modes", "hq_pct"} <= set(df.columns)


def test_installed_package_plugin_appears_in_list(tmp_path, monkeypatch, capsys):
    """A third-party package with an entry point in the `genbench` group (a real dist-info on
    sys.path, exactly what pip writes) shows up in `genbench list`."""
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "thirdparty_tiny.py").write_text(TINY_PLUGIN.format(name="thirdparty-tiny"))
    dist = pkg / "thirdparty_tiny-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-tiny\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genbench]\nthirdparty = thirdparty_tiny\n")
    monkeypatch.syspath_prepend(str(pkg))
    from genbench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "thirdparty-tiny" in out and "thirdparty" in out
    sys.modules.pop("thirdparty_tiny", None)


def test_duplicate_name_names_both_plugins(tmp_path):
    path = write_plugin(tmp_path, name="vae")
    with pytest.raises(RegistrationError) as err:
        PluginManager(plugin_files=[path])
    msg = str(err.value)
    assert "'vae'" in msg and "registered twice" in msg and str(path) in msg and "Rename" in msg


def test_unknown_names_list_known_ones(manager):
    with pytest.raises(UnknownNameError) as err:
        manager.models.get("vea")
    assert "unknown model 'vea'" in str(err.value) and "vae" in str(err.value)
    with pytest.raises(UnknownNameError, match="known datasets: .*digits"):
        manager.datasets.get("digit")


def test_misspelt_hook_fails_loudly(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(textwrap.dedent("""
        import genbench

        @genbench.hookimpl
        def register_model(register):
            pass
    """))
    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="register_model"):
        PluginManager(plugin_files=[path])


def test_registering_a_non_model_is_rejected(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(textwrap.dedent("""
        import genbench

        @genbench.hookimpl
        def register_models(register):
            register(object())
    """))
    with pytest.raises(RegistrationError, match="not a subclass of genbench.GenerativeModel"):
        PluginManager(plugin_files=[path])


def test_plugin_file_errors_are_clear(tmp_path):
    with pytest.raises(RegistrationError, match="not a Python file"):
        PluginManager(plugin_files=[tmp_path / "missing.py"])
    broken = tmp_path / "broken.py"
    broken.write_text("import genbench\nraise RuntimeError('boom')\n")
    with pytest.raises(RegistrationError, match="(?s)failed to import.*boom"):
        PluginManager(plugin_files=[broken])


def test_a_plugin_whose_hook_crashes_is_set_aside(tmp_path):
    path = tmp_path / "crashing.py"
    path.write_text(textwrap.dedent("""
        import genbench

        @genbench.hookimpl
        def register_models(register):
            raise ValueError("oops")
    """))
    manager = PluginManager(plugin_files=[path])
    assert "vae" in manager.models  # the others still load
    assert "raised ValueError: oops" in manager.broken[str(path)]
