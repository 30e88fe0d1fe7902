"""Real image sets from a local root: Fashion-MNIST, CIFAR-10, SVHN, CelebA and any folder of images.

Every set is read from ``$GENBENCH_DATA`` (default ``~/.cache/genbench/data``) in torchvision's
layout and never downloaded unless ``GENBENCH_DOWNLOAD=1`` (then through torchvision's own
downloaders).  A missing file is one line naming it, where it goes and how to allow a download.
Splits follow each set's official train/test split, with a validation slice from the end of train:

==============  ===========  ===============================  ==================================
set             resolution   files under ``$GENBENCH_DATA``    splits (train / val / test)
==============  ===========  ===============================  ==================================
fashion-mnist   1 x 28 x 28  FashionMNIST/raw/*-idx*-ubyte    50,000 / 10,000 / 10,000
cifar10         3 x 32 x 32  cifar-10-batches-py/             45,000 / 5,000 / 10,000
svhn            3 x 32 x 32  svhn/{train,test}_32x32.mat      train less 5,000 / 5,000 / 26,032
celeba          3 x 64 x 64  celeba/img_align_celeba/,        162,770 / 19,867 / 19,962 (official)
celeba32        3 x 32 x 32  celeba/list_eval_partition.txt   the same, 140 px centre crop resized
folder:PATH     inferred     any folder of images             its train/ and test/ subfolders, or
                                                              80% / 10% / 10% of its files
==============  ===========  ===============================  ==================================

Images are stored as bin centres ``(k + 0.5) / 256`` in [0, 1] (256 levels), as MNIST is.  These
sets are held in memory as tensors like the embedded ones; CelebA and image folders are decoded
once into a uint8 file under ``$GENBENCH_CACHE``, and a training split of more than 50,000 images
streams (genbench.streaming: all of it is trained on; the metrics read its first 50,000).  None of
them is in ``genbench run --all`` unless named with ``--dataset``.

``folder:PATH`` reads a torchvision ``ImageFolder`` tree (one subfolder per class: the class is
the label) or a flat folder of images (PNG, JPEG, BMP, WebP; one class).  Its resolution and
channels are inferred (the smallest side of the first image, capped at 64; grey if every image
is, else RGB) or given as ``folder:PATH:SIZE`` / ``folder:PATH:SIZE:CHANNELS``; every image is
centre-cropped to a square and resized with PIL's bicubic filter, so the same files give the
same tensors.  Its dataset name is ``folder-<folder name>-<6 hex of the path>``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
from pathlib import Path

import torch

from genbench.datasets import (
    Dataset,
    DatasetEntry,
    _unzipped,
    allow_download,
    check_mnist,
    data_root,
    unless_download,
)
from genbench.errors import DatasetError
from genbench.model import DataSpec
from genbench.streaming import split_of

LEVELS = 256
DOWNLOAD_HINT = "or allow a download with GENBENCH_DOWNLOAD=1"


def _bins(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) as the bin centres every image set uses."""
    return (x.float() + 0.5) / LEVELS


def _root(root) -> Path:
    return Path(root) if root is not None else data_root()


def _splits(train_x, train_y, test_x, test_y, val: int, limit: int | None) -> dict:
    """Official train/test, with the last ``val`` training images as the validation split (a
    tenth of train where train holds fewer than ten times that)."""
    val = min(val, max(1, len(train_x) // 10))
    parts = {"train": (train_x[:-val], train_y[:-val]), "val": (train_x[-val:], train_y[-val:]),
             "test": (test_x, test_y)}
    out = {}
    for split, (x, y) in parts.items():
        if limit is not None:
            x, y = x[:limit], y[:limit]
        out[split] = {"x": _bins(x), "y": torch.as_tensor(y).long()}
    return out


def _missing(what: str, where: Path, files: str) -> DatasetError:
    return DatasetError(f"{what} files not found: put {files} in {where} (or point GENBENCH_DATA at the folder "
                        f"that holds {where.name}/), {DOWNLOAD_HINT}")


# --- Fashion-MNIST -------------------------------------------------------------------------------

FASHION_SPEC = DataSpec(name="fashion-mnist", kind="image", shape=(1, 28, 28), levels=LEVELS, num_classes=10)
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def check_fashion_mnist(root=None) -> None:
    raw = _root(root) / "FashionMNIST" / "raw"
    missing = [f for f in IDX if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
    if missing:
        raise _missing("Fashion-MNIST", raw, f"torchvision's raw files ({', '.join(m + '[.gz]' for m in missing)})")


def load_fashion_mnist(root=None, download: bool | None = None, limit: int | None = None) -> Dataset:
    """Fashion-MNIST from ``<root>/FashionMNIST/raw/`` (torchvision's layout; ``.gz`` or not)."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root, download = _root(root), allow_download() if download is None else download
    raw = root / "FashionMNIST" / "raw"
    if download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    check_fashion_mnist(root)
    arrays = [(read_image_file if "images" in f else read_label_file)(str(_unzipped(raw / f))) for f in IDX]
    train_x, train_y, test_x, test_y = (a.unsqueeze(1) if a.dim() == 3 else a for a in arrays)
    return Dataset(spec=FASHION_SPEC, splits=_splits(train_x, train_y, test_x, test_y, 10_000, limit),
                   description=f"Fashion-MNIST from {raw}")


# --- CIFAR-10 ------------------------------------------------------------------------------------

CIFAR10_SPEC = DataSpec(name="cifar10", kind="image", shape=(3, 32, 32), levels=LEVELS, num_classes=10)
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
# What a CIFAR batch may contain: a dict of NumPy arrays, lists, strings and numbers, nothing else.
NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                 ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                 ("numpy._core.multiarray", "scalar"),
                 ("_codecs", "encode")}  # how a protocol-2 pickle written by Python 3 stores bytes: no side effect


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's python batches are pickles, and a pickle can name any callable to run while it
    loads.  torchvision reads them with plain ``pickle.load``; genbench runs nothing from a data
    file, so it reads them with this unpickler, which rebuilds NumPy arrays and refuses every
    other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR batch holds only arrays and lists")


def read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) uint8, labels (N,)) of one CIFAR-10 python batch."""
    try:
        entry = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
        data, labels = entry["data"], entry.get("labels", entry.get("fine_labels"))
        x, y = torch.as_tensor(data).reshape(-1, 3, 32, 32), torch.as_tensor(labels)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, RuntimeError, EOFError, AttributeError) as exc:
        raise DatasetError(f"{path} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc}); replace it with "
                           f"the file from cifar-10-python.tar.gz, {DOWNLOAD_HINT}") from None
    return x, y


def check_cifar10(root=None) -> None:
    folder = _root(root) / "cifar-10-batches-py"
    missing = [b for b in CIFAR_BATCHES if not (folder / b).is_file()]
    if missing:
        raise _missing("CIFAR-10", folder, f"the batches of cifar-10-python.tar.gz ({', '.join(missing)})")


def load_cifar10(root=None, download: bool | None = None, limit: int | None = None) -> Dataset:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` (cifar-10-python.tar.gz unpacked)."""
    root, download = _root(root), allow_download() if download is None else download
    folder = root / "cifar-10-batches-py"
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
    check_cifar10(root)
    train = [read_cifar_batch(folder / b) for b in CIFAR_BATCHES[:-1]]
    test_x, test_y = read_cifar_batch(folder / "test_batch")
    train_x, train_y = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    return Dataset(spec=CIFAR10_SPEC, splits=_splits(train_x, train_y, test_x, test_y, 5_000, limit),
                   description=f"CIFAR-10 from {folder}")


# --- SVHN ----------------------------------------------------------------------------------------

SVHN_SPEC = DataSpec(name="svhn", kind="image", shape=(3, 32, 32), levels=LEVELS, num_classes=10)


def read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 3, 32, 32) uint8, labels 0-9) of an SVHN ``*_32x32.mat`` file.  The reading is
    torchvision's (``scipy.io.loadmat``, label 10 for the digit 0); its ``SVHN`` class is not used
    because it also checks each file's MD5 against the official one."""
    import numpy as np
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x = torch.as_tensor(np.transpose(mat["X"], (3, 2, 0, 1)).copy())
        y = torch.as_tensor(mat["y"].astype(np.int64).squeeze(1)) % 10
    except (KeyError, ValueError, OSError, IndexError) as exc:
        raise DatasetError(f"{path} is not an SVHN .mat file ({type(exc).__name__}: {exc}); replace it with the "
                           f"official file, {DOWNLOAD_HINT}") from None
    return x, y


def check_svhn(root=None) -> None:
    folder = _root(root) / "svhn"
    missing = [f for f in ("train_32x32.mat", "test_32x32.mat") if not (folder / f).is_file()]
    if missing:
        raise _missing("SVHN", folder, ", ".join(missing))


def load_svhn(root=None, download: bool | None = None, limit: int | None = None) -> Dataset:
    """SVHN (cropped digits) from ``<root>/svhn/{train,test}_32x32.mat``; the extra set is not used."""
    root, download = _root(root), allow_download() if download is None else download
    folder = root / "svhn"
    if download:
        from torchvision.datasets import SVHN

        SVHN(str(folder), split="train", download=True)
        SVHN(str(folder), split="test", download=True)
    check_svhn(root)
    train_x, train_y = read_svhn_mat(folder / "train_32x32.mat")
    test_x, test_y = read_svhn_mat(folder / "test_32x32.mat")
    return Dataset(spec=SVHN_SPEC, splits=_splits(train_x, train_y, test_x, test_y, 5_000, limit),
                   description=f"SVHN from {folder}")


# --- CelebA --------------------------------------------------------------------------------------

CELEBA_CROP = 140  # centre crop of the 178x218 aligned faces before resizing (the WAE paper's CelebA protocol)
CELEBA_SIDES = {"celeba": 64, "celeba32": 32}
CELEBA_PARTITION = "list_eval_partition.txt"  # image name and 0 / 1 / 2 for train / val / test


def _celeba_spec(name: str) -> DataSpec:
    side = CELEBA_SIDES[name]
    return DataSpec(name=name, kind="image", shape=(3, side, side), levels=LEVELS, num_classes=None)


def check_celeba(root=None) -> None:
    folder = _root(root) / "celeba"
    missing = [f for f, ok in (("img_align_celeba/", (folder / "img_align_celeba").is_dir()),
                               (CELEBA_PARTITION, (folder / CELEBA_PARTITION).is_file())) if not ok]
    if missing:
        raise _missing("CelebA", folder, ", ".join(missing))


def read_celeba_partition(path: Path) -> dict[str, list[str]]:
    """The official split: image names of train / val / test, in the file's order."""
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DatasetError(f"{path}:{number} is not '<image> <0|1|2>'; replace the file with CelebA's "
                               f"official {CELEBA_PARTITION}, {DOWNLOAD_HINT}")
        splits[("train", "val", "test")[int(parts[1])]].append(parts[0])
    return splits


def file_stats(paths: list[Path], what: str, where: Path) -> str:
    """sha256 of every file's name, size and modification time: what a decoded cache is keyed by."""
    stats = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DatasetError(f"{what} image {path} not found: put the images in {where}, {DOWNLOAD_HINT}") from None
        stats.append((path.name, st.st_size, st.st_mtime_ns))
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def decoded_split(stem: str, paths: list[Path], read, shape: tuple[int, int, int], producer: dict):
    """Every image of ``paths`` decoded once into the cache (genbench.streaming.decoded_images)."""
    from genbench.features import cache_dir
    from genbench.streaming import decoded_images

    path = cache_dir() / "images" / f"{stem}-{len(paths)}-{producer['files'][:12]}.npy"
    return decoded_images(path, producer, paths, read, shape)


def load_celeba(name: str = "celeba", root=None, download: bool | None = None, limit: int | None = None) -> Dataset:
    """CelebA's aligned faces from ``<root>/celeba/`` (torchvision's layout), centre-cropped to
    140x140 and resized to 64x64 (``celeba``) or 32x32 (``celeba32``), with the official split.
    No classes: the feature classifier learns quarter turns (see genbench.features)."""
    root, download = _root(root), allow_download() if download is None else download
    folder = root / "celeba"
    if download:
        from torchvision.datasets import CelebA

        CelebA(str(root), split="all", target_type=[], download=True)
    check_celeba(root)
    side, splits, streams = CELEBA_SIDES[name], {}, {}
    for split, names in read_celeba_partition(folder / CELEBA_PARTITION).items():
        names = names[:limit] if limit is not None else names
        if not names:
            raise DatasetError(f"{folder / CELEBA_PARTITION} lists no {split} images; replace it with CelebA's "
                               f"official file, {DOWNLOAD_HINT}")
        paths = [folder / "img_align_celeba" / n for n in names]
        producer = {"kind": "celeba-images", "side": side, "crop": CELEBA_CROP,
                    "files": file_stats(paths, "CelebA", folder / "img_align_celeba")}
        images = decoded_split(f"celeba-{side}", paths, lambda path: _read_image(path, side, 3, crop=CELEBA_CROP),
                               (3, side, side), producer)
        splits[split], stream = split_of(images, torch.zeros(len(names), dtype=torch.long), LEVELS, split == "train")
        if stream is not None:
            streams[split] = stream
    return Dataset(spec=_celeba_spec(name), splits=splits, streams=streams,
                   description=f"CelebA ({side}x{side}) from {folder}")


# --- any folder of images ------------------------------------------------------------------------

FOLDER_PREFIX = "folder:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_FOLDER_SIDE = 64
FOLDER_SPLIT = (0.8, 0.1)  # train and validation shares of a folder without train/ and test/


MIN_FOLDER_SIDE, MAX_GIVEN_SIDE = 8, 256


def parse_folder(text: str) -> tuple[Path, int | None, int | None]:
    """``folder:PATH[:SIZE[:CHANNELS]]`` as (resolved path, size or None, channels or None).  The
    whole text is tried as a folder first, so a folder whose name holds a colon still works."""
    body = text[len(FOLDER_PREFIX):]
    size = channels = None
    if not Path(body).expanduser().is_dir():
        match = re.fullmatch(r"(.+?)(?::(\d+))?(?::([13]))?", body)
        if match:
            body, size, channels = match.group(1), match.group(2), match.group(3)
    path = Path(body).expanduser()
    if not body.strip() or not path.is_dir():
        raise DatasetError(f"--dataset {text}: {body!r} is not a folder; give folder:PATH with a folder of "
                           "images (an ImageFolder tree of class subfolders, or a flat folder)")
    if size is not None and not MIN_FOLDER_SIDE <= int(size) <= MAX_GIVEN_SIDE:
        raise DatasetError(f"--dataset {text}: SIZE {size} is outside {MIN_FOLDER_SIDE}..{MAX_GIVEN_SIDE}; give "
                           "folder:PATH:SIZE with a side in that range, or leave SIZE out to infer it")
    return path.resolve(), int(size) if size else None, int(channels) if channels else None


def folder_name(path: Path, size: int, channels: int, files: list[Path]) -> str:
    """The dataset name of a folder read at ``size`` and ``channels``: a plain name (records and
    files are named by it) whose hash covers the path, the shape and every file's name and size,
    so other images or another shape are another dataset, never a finished trial's."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.name.lower()).strip("-")[:24] or "images"
    what = [str(path), size, channels, *[(f.relative_to(path).as_posix(), f.stat().st_size) for f in files]]
    return f"folder-{stem}-{hashlib.sha256(repr(what).encode()).hexdigest()[:6]}"


def _images(folder: Path) -> list[tuple[Path, str]]:
    """(file, folder below the root) of every image under ``folder``, sorted, so the order does not
    depend on the file system."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, p.parent.relative_to(folder).as_posix() if p.parent != folder else "") for p in files]


def _read_image(path: Path, side: int, channels: int, crop: int | None = None) -> torch.Tensor:
    """One image as uint8 (channels, side, side): centre-cropped to a square (of side ``crop``, else
    the smaller side), then resized with PIL's bicubic filter."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        s = min(w, h, crop) if crop else min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if s != side:
            img = img.resize((side, side), Image.Resampling.BICUBIC)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.reshape(side, side, channels).permute(2, 0, 1)


def _split_and_class(rel: str, own_split: bool) -> tuple[str, str]:
    """(split or "", class) of an image whose folder is ``rel`` below the root.  The class is the
    first folder (as torchvision's ImageFolder has it): ``cat/young`` is the class cat; where the
    root has train/ and test/, ``train/cat`` is the class cat of the train split."""
    parts = rel.split("/") if rel else []
    if own_split:
        return (parts[0] if parts else ""), (parts[1] if len(parts) > 1 else "")
    return "", (parts[0] if parts else "")


def folder_entry(text: str) -> DatasetEntry:
    """The dataset of ``folder:PATH[:SIZE[:CHANNELS]]``, its spec inferred from the files.  Where
    the folder has train/ and test/ (and optionally val/), those are the splits and nothing else in
    it is read; otherwise its files are shuffled once with a fixed seed and split 80 / 10 / 10."""
    from PIL import Image

    path, size, channels = parse_folder(text)
    own_split = (path / "train").is_dir() and (path / "test").is_dir()
    files = [(p, *_split_and_class(rel, own_split)) for p, rel in _images(path)]
    if own_split:
        files = [f for f in files if f[1] in ("train", "val", "test")]
        for split in ("train", "test"):
            if not any(f[1] == split for f in files):
                raise DatasetError(f"--dataset {text}: {path / split} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(files) < 10:
        raise DatasetError(f"--dataset {text}: {len(files)} images under {path} ({', '.join(IMAGE_SUFFIXES)}); "
                           "give a folder with at least 10")
    if size is None or channels is None:
        with Image.open(files[0][0]) as first:
            side = min(first.size)
        modes = set()
        for p, _, _ in files[:50]:
            with Image.open(p) as img:
                modes.add(img.mode)
        size = size or max(MIN_FOLDER_SIDE, min(MAX_FOLDER_SIDE, side) // 8 * 8)
        channels = channels or (1 if modes <= {"L", "1", "I;16"} else 3)
    classes = sorted({c for _, _, c in files})
    label = {c: i for i, c in enumerate(classes)}
    name = folder_name(path, size, channels, [p for p, _, _ in files])
    spec = DataSpec(name=name, kind="image", shape=(channels, size, size), levels=LEVELS,
                    num_classes=len(classes) if len(classes) > 1 else None)

    def shuffled(chosen: list) -> list:
        order = torch.randperm(len(chosen), generator=torch.Generator().manual_seed(0)).tolist()
        return [chosen[i] for i in order]

    def build(limit: int | None = None) -> Dataset:
        if own_split:  # the folder's own split; validation its val/, else a tenth of train
            train = shuffled([f for f in files if f[1] == "train"])
            val = shuffled([f for f in files if f[1] == "val"])
            if not val:
                n_val = max(1, len(train) // 10)
                train, val = train[:-n_val], train[-n_val:]
            parts = {"train": train, "val": val, "test": shuffled([f for f in files if f[1] == "test"])}
        else:
            mixed = shuffled(files)
            a = int(len(files) * FOLDER_SPLIT[0])
            b = a + int(len(files) * FOLDER_SPLIT[1])
            parts = {"train": mixed[:a], "val": mixed[a:b], "test": mixed[b:]}
        splits, streams = {}, {}
        for split, chosen in parts.items():
            chosen = chosen[:limit] if limit is not None else chosen
            if not chosen:
                raise DatasetError(f"--dataset {text}: its {split} split would be empty; add images to {path}")
            paths = [p for p, _, _ in chosen]
            producer = {"kind": "folder-images", "folder": str(path), "size": size, "channels": channels,
                        "files": file_stats(paths, "folder", path)}
            images = decoded_split(f"{name}-{split}", paths, lambda p: _read_image(p, size, channels),
                                   (channels, size, size), producer)
            labels = torch.tensor([label[c] for _, _, c in chosen]).long()
            splits[split], stream = split_of(images, labels, LEVELS, split == "train")
            if stream is not None:
                streams[split] = stream
        return Dataset(spec=spec, splits=splits, streams=streams,
                       description=f"images from {path} ({len(files)} files, {channels}x{size}x{size})")

    return DatasetEntry(name, "image", spec, build, f"images from {path}, {channels}x{size}x{size} "
                        f"({'its train/val/test' if own_split else '80/10/10% of its files'})",
                        in_default_suite=False)


IMAGE_SETS = [
    DatasetEntry("fashion-mnist", "image", FASHION_SPEC, load_fashion_mnist,
                 "Fashion-MNIST via torchvision's files under $GENBENCH_DATA (50000/10000/10000)",
                 in_default_suite=False, check=unless_download(check_fashion_mnist)),
    DatasetEntry("cifar10", "image", CIFAR10_SPEC, load_cifar10,
                 "CIFAR-10 from $GENBENCH_DATA/cifar-10-batches-py (45000/5000/10000)", in_default_suite=False,
                 check=unless_download(check_cifar10)),
    DatasetEntry("svhn", "image", SVHN_SPEC, load_svhn,
                 "SVHN from $GENBENCH_DATA/svhn/*_32x32.mat (train less 5000/5000/26032)", in_default_suite=False,
                 check=unless_download(check_svhn)),
    *(DatasetEntry(name, "image", _celeba_spec(name), functools.partial(load_celeba, name),
                   f"CelebA faces at {side}x{side} from $GENBENCH_DATA/celeba "
                   "(162770/19867/19962)", in_default_suite=False, check=unless_download(check_celeba))
      for name, side in CELEBA_SIDES.items()),
]

def _passes(check) -> callable:
    def present(root: Path) -> bool:
        try:
            check(root)
        except DatasetError:
            return False
        return True
    return present


# where each set's files go, for `genbench data`: (folder under the data root, files, present?)
WHERE = {
    "mnist": ("MNIST/raw", "t10k-*-idx*-ubyte[.gz] (and train-* for the training set)", _passes(check_mnist)),
    "fashion-mnist": ("FashionMNIST/raw", "train-* and t10k-* idx files [.gz]", _passes(check_fashion_mnist)),
    "cifar10": ("cifar-10-batches-py", "data_batch_1..5, test_batch", _passes(check_cifar10)),
    "svhn": ("svhn", "train_32x32.mat, test_32x32.mat", _passes(check_svhn)),
    **{name: ("celeba", f"img_align_celeba/, {CELEBA_PARTITION}", _passes(check_celeba)) for name in CELEBA_SIDES},
}


def data_table(manager, root: Path | None = None) -> list[dict]:
    """One row per registered dataset for `genbench data`: its shape, whether its files are there
    and where they go (embedded and derived sets need none)."""
    root = _root(root)
    rows = []
    for name in manager.datasets:
        entry = manager.datasets.get(name)
        base = name if name in WHERE else ("mnist" if name.startswith("mnist-") else None)  # mnist-* from MNIST's
        folder, files, present = WHERE.get(base, (None, None, None))
        if name.startswith("folder-"):
            folder, files, present = None, None, None
        rows.append({"dataset": name, "kind": entry.kind, "shape": "x".join(map(str, entry.spec.shape)),
                     "files": ("given folder" if name.startswith("folder-") else "embedded or derived")
                     if present is None else ("present" if present(root) else "missing"),
                     "where": "" if folder is None else f"{root / folder}: {files}",
                     "in --all": entry.in_default_suite})
    return rows


FOLDERS_ENV = "GENBENCH_FOLDERS"  # newline-separated folder:PATH texts (a path may hold ':')


def env_folders() -> list[str]:
    """The folder datasets named in ``GENBENCH_FOLDERS``: how worker processes learn the folders
    their parent was given (``genbench run --dataset folder:PATH`` sets it)."""
    return [t for t in os.environ.get(FOLDERS_ENV, "").split("\n") if t.strip()]


def use_folder(text: str, manager) -> str:
    """Register the dataset of ``folder:PATH`` on ``manager`` and in ``GENBENCH_FOLDERS`` (for the
    worker processes this one starts); its dataset name."""
    entry = folder_entry(text)
    if entry.name not in manager.datasets:
        manager.datasets.add(entry, "folder")
    channels, size, _ = entry.spec.shape
    canonical = f"{FOLDER_PREFIX}{parse_folder(text)[0]}:{size}:{channels}"  # the same in any working folder
    known = env_folders()
    if canonical not in known:
        os.environ[FOLDERS_ENV] = "\n".join([*known, canonical])
    return entry.name


def dataset_names(names: list[str] | None, manager) -> list[str] | None:
    """``--dataset`` values as dataset names: ``folder:PATH`` registers that folder of images
    (:mod:`genbench.imagesets`) and stands for its name."""
    if not names:
        return names
    return [use_folder(n, manager) if n.startswith(FOLDER_PREFIX) else n for n in names]
