"""`genbench check`: every registered model honours the contract, and a model that does not is
told what is wrong and how to fix it."""

import textwrap

import pytest
import torch

from genbench.check import check_models
from genbench.cli import main
from genbench.manager import PluginManager

REGISTERED = list(PluginManager().models)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared machine run far faster (and steadier) on one thread than on two
    threads that wait on each other; the checks' outcomes do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("model", REGISTERED)
def test_registered_model_honours_the_contract(model, manager):
    results = check_models(manager, [model], steps=3)
    checks = {r.check for r in results}
    assert {"config", "build", "train_step", "sample", "capabilities", "determinism", "checkpoint"} <= checks
    failures = [f"{r.dataset}/{r.check}: {r.detail} (fix: {r.fix})" for r in results if not r.ok]
    assert not failures, "\n".join(failures)


BROKEN_PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.model import Capability, GenerativeModel


    @dataclass
    class Cfg:
        lr: float = 0.1
        batch_size: int = 16


    class Broken(GenerativeModel):
        """Wrong sample shape and range, tensor losses, noise from the global RNG, a declared
        log-likelihood it lacks, and a counter the state_dict does not hold."""
        name = "broken"
        family = "test"
        capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
        data_kinds = frozenset({"image"})
        Config = Cfg

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.w = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {"sgd": torch.optim.SGD(self.parameters(), lr=config.lr)}

        def train_step(self, batch, progress):
            loss = ((batch["x"].flatten(1) - self.w) ** 2).mean()
            self.optimizers["sgd"].zero_grad()
            loss.backward()
            self.optimizers["sgd"].step()
            return {"loss": loss}

        def sample(self, n, generator=None, condition=None):
            return (3 * torch.randn(n, self.spec.dim) + self.w).reshape(n, *self.spec.shape)


    class NoDefaults(GenerativeModel):
        name = "no-defaults"
        family = "test"

        @dataclass
        class Config:
            width: int

        def __init__(self, config, spec):
            super().__init__(config, spec)


    @genbench.hookimpl
    def register_models(register):
        register(Broken)
        register(NoDefaults)
''')


@pytest.fixture()
def broken_plugin(tmp_path):
    path = tmp_path / "broken_models.py"
    path.write_text(BROKEN_PLUGIN)
    return path


def test_check_names_each_violation_with_its_fix(broken_plugin, capsys):
    code = main(["--plugin", str(broken_plugin), "check", "broken", "no-defaults", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken on digits: train_step" in out and "loss 'loss' is a Tensor, not a Python float" in out
    assert "return loss.item()" in out
    assert "no-defaults on digits: config" in out and "fields without a default: ['width']" in out
    assert "give every config field a default" in out
    assert "2 of 2 model(s) fail the contract" in out

    manager = PluginManager(plugin_files=[broken_plugin])
    # past the tensor losses (fixed by hand below), every other violation is reported with a fix
    cls = manager.models.get("broken")
    original = cls.train_step
    cls.train_step = lambda self, batch, progress: {k: v.item() for k, v in original(self, batch, progress).items()}
    by_check = {r.check: r for r in check_models(manager, ["broken"], steps=2)}
    assert by_check["train_step"].ok
    assert not by_check["sample"].ok
    assert "image samples range over" in by_check["sample"].detail and "[0, 1]" in by_check["sample"].fix
    assert not by_check["capabilities"].ok
    assert "declares log_likelihood but does not implement it" in by_check["capabilities"].detail
    assert not by_check["determinism"].ok and "seeded generators" in by_check["determinism"].fix

    cls.sample = lambda self, n, generator=None, condition=None: torch.zeros(n, self.spec.dim)
    by_check = {r.check: r for r in check_models(manager, ["broken"], steps=2)}
    assert "sample(16) has shape (16, 64), expected (16, 1, 8, 8)" in by_check["sample"].detail
    assert "(n, *spec.shape)" in by_check["sample"].fix


def test_check_cli_passes_a_good_model_and_rejects_bad_requests(capsys):
    assert main(["check", "gan", "--steps", "3", "--dataset", "ring8"]) == 0
    out = capsys.readouterr().out
    assert "1 model(s) honour the contract" in out and "checkpoint" in out
    assert main(["check", "nope"]) == 2
    assert "unknown model 'nope'; known models:" in capsys.readouterr().out
    assert main(["check", "cyclegan", "--dataset", "ring8"]) == 2
    assert "does not apply to dataset 'ring8'" in capsys.readouterr().out
    assert main(["check"]) == 2
    assert "--all" in capsys.readouterr().out
    assert main(["check", "vae", "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().out
