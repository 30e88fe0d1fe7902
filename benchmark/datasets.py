"""Datasets: embedded ones (digits, 2-D toy mixtures) and torchvision image sets from a local root.

Every dataset is a :class:`Dataset`: three splits of tensors held on the device (small sets fit,
and indexing a tensor is far cheaper than a DataLoader; a training split too large for that also
streams, see :mod:`genbench.streaming`), a :class:`~genbench.model.DataSpec`, and
for the toy mixtures the exact log-density and mode centres used by the mode metrics.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genbench.errors import DatasetError
from genbench.model import DataSpec

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    spec: DataSpec
    splits: dict[str, dict[str, torch.Tensor]]  # split -> {"x": ..., "y": ..., extras}
    log_density: Callable[[torch.Tensor], torch.Tensor] | None = None  # exact log p(x), toys only
    modes: torch.Tensor | None = None  # mode centres of a toy mixture
    mode_std: float | None = None
    description: str = ""
    info: dict = field(default_factory=dict)
    # split -> all of its images, for a split too large to hold as tensors (genbench.streaming): the
    # tensors in ``splits`` are then its first images, for the metrics, and training batches stream
    streams: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    def split(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self.splits:
            raise DatasetError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[name]

    def to(self, device: torch.device | str) -> Dataset:
        self.splits = {s: {k: v.to(device) for k, v in d.items()} for s, d in self.splits.items()}
        if self.modes is not None:
            self.modes = self.modes.to(device)
        return self

    def batches(self, split: str, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
        """Endless shuffled mini-batches (epoch by epoch, without replacement within an epoch).
        ``generator`` lives on the CPU so the order is the same on every device.  A streamed split
        (``streams``) draws its batches from every image of the stream, in the same way."""
        data = self.split(split)
        if split in self.streams:
            from genbench.streaming import stream_batches

            yield from stream_batches(self.streams[split], batch_size, generator, data["x"].device)
            return
        n = len(data["x"])
        batch_size = min(batch_size, n)
        while True:
            order = torch.randperm(n, generator=generator).to(data["x"].device)
            for start in range(0, n - batch_size + 1, batch_size):
                idx = order[start : start + batch_size]
                yield {k: v[idx] for k, v in data.items()}


@dataclass
class DatasetEntry:
    """What a plugin registers: a name, a static spec and a builder (called lazily)."""

    name: str
    kind: str
    spec: DataSpec
    build: Callable[..., Dataset]
    description: str = ""
    in_default_suite: bool = True  # part of `genbench run --all` without extra flags
    # Raises DatasetError (one line: the file, where it goes, how to allow a download) when the
    # set's files are not there; cheap, so `genbench run` checks every set before any trial starts.
    check: Callable[[], None] | None = None


def derived_dataset(base: Dataset, spec: DataSpec,
                    build_split: Callable[[str, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
                    description: str, **info) -> Dataset:
    """A task set derived from ``base`` image by image (domains, captions, key patches ...).

    ``build_split(split, x, y)`` gets each split's images and labels on the CPU, split after split in
    :data:`SPLITS` order (so one seeded generator drawn from inside it makes the set deterministic),
    and returns that split's tensors: ``"x"``, ``"y"`` and the task's own keys.  ``info`` is kept
    with the base dataset under ``"base"``."""
    splits = {}
    for split in SPLITS:
        data = base.split(split)
        splits[split] = build_split(split, data["x"].cpu(), data["y"].cpu())
    return Dataset(spec=spec, splits=splits, description=description, info={"base": base, **info})


def check_dataset_names(entry, check_name) -> str:
    """The registered name of ``entry`` after checking it and its spec's name with ``check_name``
    (:func:`genbench.manager.check_name`): both name files (records, reference rows, samples)."""
    owner = f"dataset entry {entry.name!r}" if isinstance(entry.name, str) else "a dataset entry"
    check_name("dataset", entry.name, owner)
    spec_name = getattr(getattr(entry, "spec", None), "name", None)
    if spec_name is not None and spec_name != entry.name:
        check_name("dataset", spec_name, f"the spec of {owner}")
    return entry.name


# --- digits -----------------------------------------------------------------------------------

DIGITS_LEVELS = 17  # pixel values are integers 0..16


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, from the UCI optical recognition set);
    split train = first 1000, validation = next 350, test = last 447."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    k = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    x = (k + 0.5) / DIGITS_LEVELS  # bin centres in (0, 1)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    bounds = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
    splits = {s: {"x": x[a:b].clone(), "y": y[a:b].clone()} for s, (a, b) in bounds.items()}
    return Dataset(spec=DIGITS_SPEC, splits=splits, description="8x8 handwritten digits (scikit-learn)")


DIGITS_SPEC = DataSpec(name="digits", kind="image", shape=(1, 8, 8), levels=DIGITS_LEVELS, num_classes=10)


# --- 2-D toy mixtures -------------------------------------------------------------------------


def ring_centres(n: int = 8, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def grid_centres(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def mixture_log_density(centres: torch.Tensor, std: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Exact log-density of an equal-weight isotropic Gaussian mixture."""

    def log_density(x: torch.Tensor) -> torch.Tensor:
        c = centres.to(x.device, x.dtype)
        d = x.shape[-1]
        sq = ((x.unsqueeze(-2) - c) ** 2).sum(-1)  # (..., K)
        log_comp = -0.5 * sq / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
        return torch.logsumexp(log_comp, dim=-1) - math.log(len(c))

    return log_density


def make_mixture(name: str, centres: torch.Tensor, std: float, sizes=(10_000, 2_000, 2_000), seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    splits = {}
    for split, n in zip(SPLITS, sizes):
        comp = torch.randint(len(centres), (n,), generator=g)
        x = centres[comp] + std * torch.randn(n, 2, generator=g)
        splits[split] = {"x": x, "y": comp}
    spec = DataSpec(name=name, kind="points", shape=(2,), levels=None, num_classes=len(centres))
    return Dataset(
        spec=spec,
        splits=splits,
        log_density=mixture_log_density(centres, std),
        modes=centres.clone(),
        mode_std=std,
        description=f"{len(centres)} Gaussians (std {std}), fixed seed {seed}",
    )


# PacGAN (Lin et al. 2018) settings: ring of 8 with radius 1 and std 0.01; 5x5 grid, spacing 2, std 0.05.
RING_STD, GRID_STD = 0.01, 0.05


def load_ring8() -> Dataset:
    return make_mixture("ring8", ring_centres(8, 1.0), RING_STD)


def load_grid25() -> Dataset:
    return make_mixture("grid25", grid_centres(5, 2.0), GRID_STD)


# --- torchvision image sets from a local root ------------------------------------------------


def data_root() -> Path:
    return Path(os.environ.get("GENBENCH_DATA", Path.home() / ".cache" / "genbench" / "data"))


def allow_download() -> bool:
    return os.environ.get("GENBENCH_DOWNLOAD", "0").lower() in ("1", "true", "yes")


def unless_download(check: Callable[[], None]) -> Callable[[], None]:
    """A ``DatasetEntry.check`` that passes while downloads are allowed (the loader then fetches)."""
    return lambda: None if allow_download() else check()


def check_mnist(root: str | os.PathLike | None = None) -> None:
    """DatasetError (one line) unless MNIST's test files are under ``root``."""
    load_mnist(root, download=False, limit=0, check_only=True)


def load_mnist(root: str | os.PathLike | None = None, download: bool | None = None,
               limit: int | None = None, check_only: bool = False) -> Dataset | None:
    """MNIST through torchvision from ``root`` (``$GENBENCH_DATA``, default ~/.cache/genbench/data),
    with torchvision's layout ``<root>/MNIST/raw/``.  Never downloads unless allowed
    (``GENBENCH_DOWNLOAD=1``).  With only the test files present (t10k-*), the 10,000 test images
    are split 6000 / 2000 / 2000 so a machine with just that file can still run."""
    from torchvision.datasets import MNIST

    root = Path(root) if root is not None else data_root()
    download = allow_download() if download is None else download
    # torchvision's layout is <root>/MNIST/raw; also accept <root>/raw or the raw folder itself.
    candidates = [root / "MNIST" / "raw", root / "mnist" / "raw", root / "raw", root]
    raw = next((c for c in candidates if any(c.glob("t10k-images-idx3-ubyte*"))), candidates[0])
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }

    def present(split):
        return all((raw / f).exists() or (raw / (f + ".gz")).exists() for f in names[split])

    if not present("test") and not download:
        raise DatasetError(
            f"MNIST files not found under {raw}. Put torchvision's raw files there "
            "(t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], and train-* for the training set), "
            f"point GENBENCH_DATA at the folder that holds MNIST/raw/, or allow a download with GENBENCH_DOWNLOAD=1."
        )

    if check_only:
        return None

    def read(train: bool):
        # torchvision checks for the processed files and would try the network otherwise; with
        # download=False it raises, so we read the raw idx files through its own reader.
        from torchvision.datasets.mnist import read_image_file, read_label_file

        prefix = "train" if train else "t10k"
        imgs = read_image_file(str(_unzipped(raw / f"{prefix}-images-idx3-ubyte")))
        labels = read_label_file(str(_unzipped(raw / f"{prefix}-labels-idx1-ubyte")))
        return imgs, labels

    if download:
        MNIST(str(root), train=False, download=True)
        MNIST(str(root), train=True, download=True)
    test_x, test_y = read(False)
    if present("train"):
        train_x, train_y = read(True)
        val_x, val_y = train_x[-10_000:], train_y[-10_000:]
        train_x, train_y = train_x[:-10_000], train_y[:-10_000]
    else:
        train_x, train_y = test_x[:6000], test_y[:6000]
        val_x, val_y = test_x[6000:8000], test_y[6000:8000]
        test_x, test_y = test_x[8000:], test_y[8000:]

    def prep(x, y):
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return {"x": (x.float().unsqueeze(1) + 0.5) / 256.0, "y": y.long()}

    splits = {"train": prep(train_x, train_y), "val": prep(val_x, val_y), "test": prep(test_x, test_y)}
    return Dataset(spec=MNIST_SPEC, splits=splits, description=f"MNIST from {raw}")


MNIST_SPEC = DataSpec(name="mnist", kind="image", shape=(1, 28, 28), levels=256, num_classes=10)


def _unzipped(path: Path) -> Path:
    """torchvision's readers take uncompressed idx files; decompress ``.gz`` next to a temp copy
    when only the compressed file is there (the raw folder may be read-only)."""
    if path.exists():
        return path
    gz = path.with_name(path.name + ".gz")
    import gzip
    import hashlib
    import tempfile

    key = hashlib.sha256(str(gz.resolve()).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / "genbench-idx" / f"{key}-{path.name}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        os.replace(tmp, out)
    return out


BUILTIN_DATASETS = [
    DatasetEntry("digits", "image", DIGITS_SPEC, load_digits, "8x8 handwritten digits, embedded (1000/350/447)"),
    DatasetEntry("ring8", "points", DataSpec("ring8", "points", (2,), None, 8), load_ring8,
                 "8 Gaussians on a ring (radius 1, std 0.01), exact density"),
    DatasetEntry("grid25", "points", DataSpec("grid25", "points", (2,), None, 25), load_grid25,
                 "25 Gaussians on a 5x5 grid (spacing 2, std 0.05), exact density"),
    DatasetEntry("mnist", "image", MNIST_SPEC, load_mnist,
                 "MNIST from $GENBENCH_DATA (50000/10000/10000; test files only: 6000/2000/2000)",
                 in_default_suite=False, check=unless_download(check_mnist)),
]
