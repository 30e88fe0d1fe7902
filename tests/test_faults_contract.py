"""Faults of the evaluation's inputs and of the processes trials run in: cache files are verified and
rebuilt, samples and log-likelihoods that break the model contract fail their trial with one line,
and every trial on a worker starts from a clean state (threads, child processes, its log)."""

import json
import os
import textwrap
import time

import pytest
import torch

from genbench import features
from genbench.cli import main
from genbench.features import accuracy, content_digest, domain_extractor
from genbench.metrics.fidelity import reference_features

pytestmark = pytest.mark.usefixtures("one_thread_per_test")


@pytest.fixture()
def quick_cache(tmp_path, monkeypatch):
    """An empty cache folder of its own and a domain classifier trained for one epoch (seconds, not
    a minute): ``calls`` counts how often one is trained."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENBENCH_CACHE", str(cache))
    monkeypatch.setattr(features, "_MEMO", {})
    real_train = features.train_domain_classifier
    calls = []

    def one_epoch(dataset, seed=0, epochs=None, device="cpu"):
        calls.append(dataset.name)
        return real_train(dataset, seed=seed, epochs=1, device=device)

    monkeypatch.setattr(features, "train_domain_classifier", one_epoch)
    return cache, calls


def _one_file(folder):
    files = [p for p in folder.glob("*.pt")]
    assert len(files) == 1, files
    return files[0]


def _rebuild_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "rebuilding it" in line]


@pytest.mark.parametrize("forge_hash", [False, True], ids=["stale-hash", "forged-hash"])
def test_tampered_extractor_is_detected_and_rebuilt(digits, quick_cache, capfd, forge_hash):
    cache, calls = quick_cache
    first = domain_extractor(digits)
    assert len(calls) == 1
    path = _one_file(cache / "extractors")
    test = digits.split("test")
    measured = accuracy(first.model, test["x"], test["y"])
    assert first.heldout_accuracy == pytest.approx(measured)
    assert abs(measured - 0.99) > 0.01  # one epoch: far from the forged figure below

    blob = torch.load(path, weights_only=True)
    blob["tensors"] = {k: v * 0.1 if v.is_floating_point() else v for k, v in blob["tensors"].items()}
    blob["producer"]["heldout_accuracy"] = 0.99
    if forge_hash:  # a consistent forgery: only the accuracy measured on load can catch it
        blob["tensors"] = {k: v / 0.1 if v.is_floating_point() else v for k, v in blob["tensors"].items()}
        blob["sha256"] = content_digest(blob["tensors"], blob["producer"])
    torch.save(blob, path)
    capfd.readouterr()

    features._MEMO.clear()
    second = domain_extractor(digits)
    err = capfd.readouterr().err
    assert len(calls) == 2, "the tampered file was trusted instead of rebuilt"
    lines = _rebuild_lines(err)
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "Traceback" not in err
    assert "accuracy" in lines[0] if forge_hash else "content hash" in lines[0]
    assert second.heldout_accuracy == pytest.approx(accuracy(second.model, test["x"], test["y"]))
    assert second.heldout_accuracy != 0.99
    assert second.fingerprint() == first.fingerprint()  # the same recipe, the same weights

    features._MEMO.clear()
    third = domain_extractor(digits)  # the rebuilt file verifies: loaded, not trained again
    assert len(calls) == 2 and third.fingerprint() == first.fingerprint()
    assert _rebuild_lines(capfd.readouterr().err) == []


def test_shifted_reference_features_are_detected_and_rebuilt(digits, quick_cache, capfd):
    cache, _ = quick_cache
    ext = domain_extractor(digits)
    honest = reference_features(digits, ext, "test", 200)
    path = _one_file(cache / "reference")
    blob = torch.load(path, weights_only=True)
    blob["tensors"]["features"] = blob["tensors"]["features"] + 0.5
    torch.save(blob, path)
    capfd.readouterr()

    again = reference_features(digits, ext, "test", 200)
    err = capfd.readouterr().err
    assert torch.equal(again.features, honest.features) and torch.equal(again.logits, honest.logits)
    lines = _rebuild_lines(err)
    assert len(lines) == 1 and str(path) in lines[0] and "content hash" in lines[0], err
    assert "Traceback" not in err
    assert torch.equal(reference_features(digits, ext, "test", 200).features, honest.features)
    assert _rebuild_lines(capfd.readouterr().err) == []  # rebuilt once, then trusted


def test_truncated_caches_are_rebuilt(digits, quick_cache, capfd):
    cache, calls = quick_cache
    ext = domain_extractor(digits)
    honest = reference_features(digits, ext, "train", 200)
    for folder in ("extractors", "reference"):
        path = _one_file(cache / folder)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capfd.readouterr()

    features._MEMO.clear()
    ext2 = domain_extractor(digits)
    again = reference_features(digits, ext2, "train", 200)
    err = capfd.readouterr().err
    assert len(calls) == 2
    assert torch.equal(again.features, honest.features)
    lines = _rebuild_lines(err)
    assert len(lines) == 2 and all("cannot be read" in line for line in lines), err
    assert "Traceback" not in err


CONTRACT_PLUGIN = textwrap.dedent('''
    """Tiny models whose samples or log-likelihoods break the model contract."""
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.model import Capability, GenerativeModel


    @dataclass
    class TinyConfig:
        lr: float = 1e-2
        batch_size: int = 32


    class Tiny(GenerativeModel):
        family = "contract-faults"
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
            x = self.loc.detach() + 0.1 * torch.randn(n, self.spec.dim, generator=generator)
            return x.view(n, *self.spec.shape)


    class WideRange(Tiny):
        name = "wide-range"
        data_kinds = frozenset({"image"})

        def sample(self, n, generator=None, condition=None):
            return torch.rand(n, *self.spec.shape, generator=generator) * 1000 - 500


    class Integers(Tiny):
        name = "integers"

        def sample(self, n, generator=None, condition=None):
            return torch.randint(-2, 3, (n, *self.spec.shape), generator=generator)


    class NaNs(Tiny):
        name = "nans"

        def sample(self, n, generator=None, condition=None):
            return torch.full((n, *self.spec.shape), float("nan"))


    class WrongShape(Tiny):
        name = "wrong-shape"

        def sample(self, n, generator=None, condition=None):
            return torch.randn(n, self.spec.dim + 1, generator=generator)


    class InfiniteDensity(Tiny):
        name = "infinite-density"
        capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})

        def log_likelihood(self, x):
            return torch.full((len(x),), float("inf"))


    class Healthy(Tiny):
        name = "healthy"


    @genbench.hookimpl
    def register_models(register):
        for cls in (WideRange, Integers, NaNs, WrongShape, InfiniteDensity, Healthy):
            register(cls)
''')


def read_records(suite_dir):
    return {r["model"]: r for r in (json.loads(p.read_text()) for p in (suite_dir / "trials").glob("*.json"))}


def test_contract_violations_fail_their_trial_with_one_line(tmp_path, quick_cache, capsys):
    plugin = tmp_path / "contract_models.py"
    plugin.write_text(CONTRACT_PLUGIN)
    runs = tmp_path / "runs"
    models = ["integers", "nans", "wrong-shape", "infinite-density", "healthy"]  # points; wide-range: images
    for dataset, names in (("ring8", models), ("digits", ["wide-range"])):
        assert main(["--plugin", str(plugin), "run", *[a for m in names for a in ("--model", m)],
                     "--dataset", dataset, "--budget", "3steps", "--profile", "test",
                     "--runs-dir", str(runs), "--executor", "inline"]) == 0
    out = capsys.readouterr().out
    models.append("wide-range")
    recs = read_records(runs / "test")
    assert set(recs) >= set(models)
    assert recs["healthy"]["status"] == "ok", recs["healthy"]["reason"]

    expected = {
        "wide-range": ("image samples range over", "[0, 1]"),
        "integers": ("sample dtype is torch.int64", "floating-point"),
        "nans": ("samples contain NaN or infinity", "overflow"),
        "wrong-shape": ("has shape (", "(n, *spec.shape)"),
        "infinite-density": ("log_likelihood is +inf", "log-sum-exp"),
    }
    for model, (what, fix) in expected.items():
        r = recs[model]
        reason = r["reason"] or ""
        assert r["status"] == "failed", (model, r["metrics"], r.get("metric_errors"))
        assert f"model {model!r} breaks the model contract" in reason, reason
        assert what in reason and "fix: " in reason and fix in reason, reason
        assert "\n" not in reason and "Traceback" not in reason and "ContractViolation" not in reason
        assert "traceback" not in r
    assert "Traceback" not in out


def test_zero_density_is_legal_and_marked(tmp_path, quick_cache):
    """log p = -inf (a test point the model calls impossible) is not a violation: the NLL is
    infinite, and its cells say why instead of being blank."""
    plugin = tmp_path / "zero_density.py"
    plugin.write_text(CONTRACT_PLUGIN.replace('float("inf")', '-float("inf")'))
    runs = tmp_path / "runs"
    assert main(["--plugin", str(plugin), "run", "--model", "infinite-density", "--dataset", "ring8",
                 "--budget", "3steps", "--profile", "test", "--runs-dir", str(runs), "--executor", "inline"]) == 0
    r = read_records(runs / "test")["infinite-density"]
    assert r["status"] == "ok", r["reason"]
    assert "zero density" in r["marks"]["nll"] and r["metrics"]["nll"] is None


WORKER_PLUGIN = textwrap.dedent('''
    """Tiny models that change their process: threads, child processes, the log, how they end."""
    import os
    import subprocess
    import sys
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.model import GenerativeModel

    PID_FILE = {pid_file!r}


    @dataclass
    class TinyConfig:
        lr: float = 1e-2
        batch_size: int = 32


    class Greedy(GenerativeModel):
        """Takes 64 threads in every step; reports the threads it found when it was built."""
        family = "worker-faults"
        data_kinds = frozenset({{"points"}})
        Config = TinyConfig

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.found = torch.get_num_threads()
            self.loc = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {{"opt": torch.optim.SGD(self.parameters(), lr=config.lr)}}

        def train_step(self, batch, progress):
            torch.set_num_threads(64)
            loss = ((batch["x"].flatten(1) - self.loc) ** 2).mean()
            self.optimizers["opt"].zero_grad()
            loss.backward()
            self.optimizers["opt"].step()
            return {{"loss": loss.item(), "threads_found": float(self.found)}}

        def sample(self, n, generator=None, condition=None):
            return self.loc.detach() + 0.1 * torch.randn(n, self.spec.dim, generator=generator)


    class GreedyA(Greedy):
        name = "greedy-a"


    class GreedyB(Greedy):
        name = "greedy-b"


    class Spawner(Greedy):
        name = "spawner"

        def train_step(self, batch, progress):
            if not hasattr(self, "child"):
                self.child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
                with open(PID_FILE, "w") as fh:
                    fh.write(str(self.child.pid))
            return super().train_step(batch, progress)


    class Chatty(Greedy):
        name = "chatty"

        def train_step(self, batch, progress):
            print("x" * 200_000, flush=True)
            return super().train_step(batch, progress)


    class Asserts(Greedy):
        name = "asserts"

        def train_step(self, batch, progress):
            assert batch["x"].shape[1] == 3
            return super().train_step(batch, progress)


    class Exits(Greedy):
        name = "exits"

        def train_step(self, batch, progress):
            os._exit(0)


    class Quits(Greedy):
        name = "quits"

        def train_step(self, batch, progress):
            sys.exit(3)


    @genbench.hookimpl
    def register_models(register):
        for cls in (GreedyA, GreedyB, Spawner, Chatty, Asserts, Exits, Quits):
            register(cls)
''')


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_each_trial_on_a_worker_starts_clean(tmp_path, monkeypatch):
    """Two trials that take 64 threads on one worker: neither finds them taken; a child process a
    trial leaves behind is ended with it; a log past its cap is rotated; failures name their cause."""
    from genbench.executors import local as executors  # the pool hands its workers the log limits

    monkeypatch.setattr(executors, "LOG_CAP_BYTES", 300_000)
    monkeypatch.setattr(executors, "LOG_TAIL_BYTES", 50_000)
    pid_file = tmp_path / "child.pid"
    plugin = tmp_path / "worker_models.py"
    plugin.write_text(WORKER_PLUGIN.format(pid_file=str(pid_file)))
    runs = tmp_path / "runs"
    models = ["greedy-a", "greedy-b", "spawner", "chatty", "asserts", "exits", "quits"]
    assert main(["--plugin", str(plugin), "run", *[a for m in models for a in ("--model", m)],
                 "--dataset", "ring8", "--budget", "3steps", "--profile", "test", "--runs-dir", str(runs),
                 "--workers", "1"]) == 0
    recs = read_records(runs / "test")
    for model in ("greedy-a", "greedy-b", "spawner", "chatty"):
        r = recs[model]
        assert r["status"] == "ok", (model, r["reason"])
        assert r["final_losses"]["threads_found"] == 1.0, (model, r["final_losses"])
        assert r["device"].endswith("x1 threads"), (model, r["device"])

    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the trial's child process outlived its trial"

    logs = runs / "test" / "logs"
    assert (logs / "worker-0.log.1").exists()
    assert max(p.stat().st_size for p in logs.glob("worker-*.log")) < 3 * 300_000

    asserts = recs["asserts"]
    assert asserts["status"] == "failed"
    assert asserts["reason"].startswith("AssertionError (no message) in train_step (worker_models.py:"), asserts
    assert "assert batch[\"x\"].shape[1] == 3" in asserts["reason"]
    exits = recs["exits"]
    assert exits["status"] == "failed" and "os._exit(0) called in train_step (worker_models.py:" in exits["reason"]
    quits = recs["quits"]
    assert quits["status"] == "failed" and quits["fault"] == "exception"
    assert quits["reason"].startswith("SystemExit(3) in train_step (worker_models.py:"), quits["reason"]
