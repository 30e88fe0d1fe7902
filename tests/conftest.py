"""Shared test set-up: an isolated cache (extractors, reference statistics) per test session, and
small helpers to build and train models with tiny budgets."""

import os
import tempfile
from pathlib import Path

import pytest

# Set before genbench is imported anywhere so every cache write goes to a throwaway folder.
os.environ.setdefault("GENBENCH_CACHE", tempfile.mkdtemp(prefix="genbench-test-cache-"))
os.environ.pop("GENBENCH_PLUGINS", None)
# Tiny test models run fastest on one thread, and two threads thrash when the cores are shared;
# worker processes the tests start inherit this.
os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]



def _find_mnist_raw() -> Path:
    """The real MNIST test files (torchvision's raw names) that the loading tests read: beside the
    checkout in ../shared/data/mnist/raw, or where GENBENCH_TEST_MNIST_RAW points."""
    candidates = [os.environ.get("GENBENCH_TEST_MNIST_RAW"), REPO.parent / "shared" / "data" / "mnist" / "raw",
                  Path("/work/shared/data/mnist/raw")]
    for c in candidates:
        if c and any(Path(c).glob("t10k-images-idx3-ubyte*")):
            return Path(c)
    return REPO.parent / "shared" / "data" / "mnist" / "raw"


MNIST_RAW = _find_mnist_raw()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture()
def one_thread_per_test():
    """One torch thread in this test, and the count restored afterwards (for tests whose trials run
    in this process and may change it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def manager():
    from genbench.manager import PluginManager

    return PluginManager()


@pytest.fixture(scope="session")
def digits():
    from genbench.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def four():
    """digits dealt to four unpaired domains (the StarGAN task set)."""
    from genbench_plugins.domains import load_digits_domains

    return load_digits_domains()


@pytest.fixture(scope="session")
def ring8():
    from genbench.datasets import load_ring8

    return load_ring8()


def build(model_cls, dataset, seed=0, **overrides):
    """A model of ``model_cls`` with its default config (plus overrides) for ``dataset``."""
    import torch

    torch.manual_seed(seed)
    return model_cls(model_cls.make_config(overrides), dataset.spec)


def train_steps(model, dataset, steps, seed=0):
    """Run ``steps`` training steps through the real training loop; returns (usage, last losses)."""
    from genbench.budget import Budget
    from genbench.runner import train

    return train(model, dataset, Budget.parse(f"{steps}steps"), seed, "cpu")


def trained_vae_and_points(manager, digits, n_points: int):
    """A VAE trained for 50 steps on digits, in eval mode, and ``n_points`` dequantised test images
    (a fixed draw): the model and points the evaluation benchmarks time their estimators on."""
    import torch

    model = build(manager.models.get("vae"), digits)
    train_steps(model, digits, 50)
    model.eval()
    x = digits.spec.dequantize(digits.split("test")["x"][:n_points], generator=torch.Generator().manual_seed(0))
    return model, x
