"""Datasets: digits splits, toy mixtures with exact densities, MNIST from a local root."""

import math

import pytest
import torch
from conftest import MNIST_RAW

from genbench.datasets import grid_centres, load_mnist, make_mixture, mixture_log_density, ring_centres
from genbench.errors import DatasetError


def test_digits_splits(digits):
    sizes = {s: len(digits.split(s)["x"]) for s in ("train", "val", "test")}
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    x = digits.split("train")["x"]
    assert x.shape[1:] == (1, 8, 8) and 0 < x.min() and x.max() < 1
    levels = torch.unique((x * 17 - 0.5).round())
    assert levels.min() == 0 and levels.max() == 16  # 17 quantisation levels, stored as bin centres
    from sklearn.datasets import load_digits

    assert torch.equal(digits.split("test")["y"], torch.as_tensor(load_digits().target[-447:]))


def test_dequantisation_stays_in_the_bin(digits):
    x = digits.split("test")["x"]
    y = digits.spec.dequantize(x, torch.Generator().manual_seed(0))
    assert torch.all((y - x).abs() <= 0.5 / 17 + 1e-7) and not torch.equal(x, y)


def test_mixture_log_density_is_normalised():
    for centres, std in ((ring_centres(8, 1.0), 0.1), (grid_centres(3, 2.0), 0.3)):
        logp = mixture_log_density(centres, std)
        lin = torch.linspace(-4, 4, 801, dtype=torch.float64)
        gx, gy = torch.meshgrid(lin, lin, indexing="ij")
        pts = torch.stack([gx.flatten(), gy.flatten()], 1)
        mass = logp(pts).exp().sum() * (lin[1] - lin[0]) ** 2
        assert float(mass) == pytest.approx(1.0, abs=1e-3)


def test_single_gaussian_log_density_matches_closed_form():
    logp = mixture_log_density(torch.zeros(1, 2), 0.5)
    x = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    expected = -0.5 * (0.09 + 0.04) / 0.25 - 2 * math.log(0.5) - math.log(2 * math.pi)
    assert float(logp(x)) == pytest.approx(expected)


def test_toy_mixture_is_deterministic_and_covers_modes(ring8):
    again = make_mixture("ring8", ring_centres(8, 1.0), 0.01)
    assert torch.equal(ring8.split("train")["x"], again.split("train")["x"])
    assert set(ring8.split("train")["y"].tolist()) == set(range(8))


def test_mnist_from_local_raw_files():
    if not (MNIST_RAW / "t10k-images-idx3-ubyte.gz").exists() and not (MNIST_RAW / "t10k-images-idx3-ubyte").exists():
        pytest.fail(f"the MNIST test files are expected in {MNIST_RAW}")
    ds = load_mnist(root=MNIST_RAW.parent, download=False)
    assert ds.spec.shape == (1, 28, 28) and ds.spec.levels == 256
    assert [len(ds.split(s)["x"]) for s in ("train", "val", "test")] == [6000, 2000, 2000]
    x = ds.split("train")["x"]
    assert 0 < x.min() and x.max() < 1 and set(ds.split("test")["y"].unique().tolist()) == set(range(10))


def test_mnist_missing_root_says_where_to_put_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_mnist(root=tmp_path, download=False)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and "GENBENCH_DATA" in msg and "GENBENCH_DOWNLOAD=1" in msg
