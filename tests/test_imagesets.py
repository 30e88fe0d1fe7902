"""Real image sets without downloads: each loader reads tiny files the tests write in its layout
(idx files, CIFAR batches, SVHN .mat, CelebA's JPEGs and partition file, an ImageFolder tree, a
flat folder); a missing set is one
line before any trial; a folder of RGB PNGs trains and scores; every image family honours the
contract at 3 x 32 x 32."""

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

from genbench.check import ModelChecker
from genbench.cli import main
from genbench.datasets import Dataset
from genbench.errors import DatasetError
from genbench.features import domain_extractor
from genbench.imagesets import (
    FOLDERS_ENV,
    folder_entry,
    load_celeba,
    load_cifar10,
    load_fashion_mnist,
    load_svhn,
    read_cifar_batch,
)
from genbench.model import DataSpec


@pytest.fixture(autouse=True)
def no_inherited_folders(monkeypatch):
    monkeypatch.delenv(FOLDERS_ENV, raising=False)  # restored after each test


def write_idx(path, array: np.ndarray):
    """An idx file as the MNIST family ships them (magic 0x08 = uint8, then the dimensions)."""
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_torchvisions_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 12)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    with pytest.raises(DatasetError, match="FashionMNIST/raw"):
        load_fashion_mnist(tmp_path / "elsewhere", download=False)
    data = load_fashion_mnist(tmp_path, download=False)
    assert data.spec.shape == (1, 28, 28) and len(data.split("test")["x"]) == 12
    assert [len(data.split(s)["x"]) for s in ("train", "val")] == [27, 3]  # a tenth of a small train split
    x = data.split("test")["x"]
    assert x.min() >= 0.5 / 256 and x.max() <= 255.5 / 256  # bin centres in [0, 1]
    assert data.split("test")["y"].tolist() == [i % 10 for i in range(12)]


def cifar_batch(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "labels": list(range(n))},
                        protocol=2)


def test_cifar10_reads_the_python_batches_and_runs_no_code_from_them(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(cifar_batch(1200, i))
    (folder / "test_batch").write_bytes(cifar_batch(100, 9))
    data = load_cifar10(tmp_path, download=False)
    assert data.spec.shape == (3, 32, 32)
    # the last 5,000 training images validate in the real set; a tenth here (6,000 images)
    assert [len(data.split(s)["x"]) for s in ("train", "val", "test")] == [5400, 600, 100]
    x, _ = read_cifar_batch(folder / "test_batch")
    raw = pickle.loads((folder / "test_batch").read_bytes())["data"][0]
    assert x[0, 0].flatten().tolist() == raw[:1024].tolist()  # the first 1024 bytes are the red plane

    class Evil:
        def __reduce__(self):
            return (print, ("code ran from a data file",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DatasetError, match="refusing builtins.print: a CIFAR batch holds only arrays"):
        load_cifar10(tmp_path, download=False)


def test_svhn_reads_the_mat_files_with_label_ten_as_zero(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", 60), ("test", 20)):
        labels = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN stores the digit 0 as 10
        scipy.io.savemat(folder / f"{name}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n)).astype(np.uint8),
                                                        "y": labels})
    data = load_svhn(tmp_path, download=False)
    assert data.spec.shape == (3, 32, 32) and len(data.split("val")["x"]) == 6
    assert data.split("test")["y"][:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def write_celeba(root, n_train=12, n_val=4, n_test=4):
    """CelebA's layout: 178x218 aligned JPEGs and the official partition file.  Each face is a
    flat colour with a white square at the centre, so the 140 px centre crop is checkable."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    lines = []
    for k, part in enumerate([0] * n_train + [1] * n_val + [2] * n_test):
        img = np.full((218, 178, 3), (20 * (k % 10), 100, 200), dtype=np.uint8)
        img[109 - 35 : 109 + 35, 89 - 35 : 89 + 35] = 255  # the middle 70 px: half the 140 px crop
        Image.fromarray(img).save(folder / "img_align_celeba" / f"{k + 1:06d}.jpg", quality=95)
        lines.append(f"{k + 1:06d}.jpg {part}")
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_celeba_reads_the_aligned_jpegs_with_the_official_split_at_64_and_32(tmp_path, monkeypatch):
    folder = write_celeba(tmp_path)
    data = load_celeba("celeba", tmp_path, download=False)
    assert data.spec.shape == (3, 64, 64) and data.spec.num_classes is None
    assert [len(data.split(s)["x"]) for s in ("train", "val", "test")] == [12, 4, 4]
    x = data.split("train")["x"]
    assert 0 < x.min() and x.max() < 1  # bin centres
    # the 140 px crop: the white square covers the middle half of the resized image
    assert x[0, :, 24:40, 24:40].min() > 0.95 and x[0, 2, :8, :8].max() < 0.85
    small = load_celeba("celeba32", tmp_path, download=False)
    assert small.spec.shape == (3, 32, 32) and len(small.split("val")["x"]) == 4
    # decoded once: a second load reads the cache, not the JPEGs
    import genbench.imagesets as imagesets

    monkeypatch.setattr(imagesets, "_read_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    assert torch.equal(load_celeba("celeba", tmp_path, download=False).split("train")["x"], x)
    (folder / "img_align_celeba" / "000014.jpg").unlink()
    with pytest.raises(DatasetError, match="000014.jpg not found: put the images in"):
        load_celeba("celeba", tmp_path, download=False)
    (folder / "list_eval_partition.txt").write_text("000001.jpg train\n")
    with pytest.raises(DatasetError, match="list_eval_partition.txt:1 is not"):
        load_celeba("celeba", tmp_path, download=False)


def write_pngs(folder, n: int, classes=("red", "green", "blue"), size=32, flat=False):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    colours = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230)}
    for i in range(n):
        c = classes[i % len(classes)]
        target = folder if flat else folder / c
        target.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (size, size), (255, 255, 255))
        x, y, r = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 3))
        ImageDraw.Draw(img).ellipse([x - r // 3, y - r // 3, x + r // 3, y + r // 3], fill=colours[c])
        img.save(target / f"{c}-{i:04d}.png")


def test_a_folder_is_an_imagefolder_tree_or_flat_with_its_spec_inferred_and_a_fixed_split(tmp_path):
    write_pngs(tmp_path / "tree", 60)
    entry = folder_entry(f"folder:{tmp_path / 'tree'}")
    assert entry.name.startswith("folder-tree-") and entry.spec.shape == (3, 32, 32) and entry.spec.num_classes == 3
    a, b = entry.build(), entry.build()
    assert [len(a.split(s)["x"]) for s in ("train", "val", "test")] == [48, 6, 6]
    assert torch.equal(a.split("test")["x"], b.split("test")["x"])  # the same files give the same tensors
    assert set(a.split("train")["y"].tolist()) == {0, 1, 2}
    small = folder_entry(f"folder:{tmp_path / 'tree'}:16:1")
    assert small.spec.shape == (1, 16, 16) and small.build().split("val")["x"].shape[1:] == (1, 16, 16)
    write_pngs(tmp_path / "flat", 40, flat=True)
    flat = folder_entry(f"folder:{tmp_path / 'flat'}").build()
    assert flat.spec.num_classes is None and set(flat.split("train")["y"].tolist()) == {0}
    # no classes: the feature extractor learns which quarter turn an image was given
    extractor = domain_extractor(flat)
    assert extractor.model.head.out_features == 4
    with pytest.raises(DatasetError, match="is not a folder"):
        folder_entry(f"folder:{tmp_path / 'nowhere'}")


def test_a_folder_of_rgb_pngs_trains_and_scores_in_worker_processes(tmp_path, capsys):
    write_pngs(tmp_path / "pngs", 240)
    runs = tmp_path / "runs"
    assert main(["run", "--model", "dcgan", "--dataset", f"folder:{tmp_path / 'pngs'}", "--budget", "20steps",
                 "--profile", "test", "--workers", "1", "--runs-dir", str(runs)]) == 0
    (path,) = (runs / "test" / "trials").glob("dcgan--folder-pngs-*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok", record.get("reason")
    assert record["metrics"]["fid"] > 0 and 0 <= record["metrics"]["recall"] <= 1
    assert "dcgan" in capsys.readouterr().out


def test_a_missing_image_set_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    monkeypatch.delenv("GENBENCH_DOWNLOAD", raising=False)
    assert main(["run", "--all", "--dataset", "cifar10", "--runs-dir", str(tmp_path / "runs")]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: CIFAR-10 files not found")
    assert str(tmp_path / "cifar-10-batches-py") in out and "GENBENCH_DOWNLOAD=1" in out
    assert not (tmp_path / "runs").exists()
    assert main(["data", "--json"]) == 0
    rows = {r["dataset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cifar10"]["files"] == "missing" and rows["digits"]["files"] == "embedded or derived"
    assert rows["svhn"]["where"].startswith(str(tmp_path / "svhn"))


def test_every_image_family_honours_the_contract_at_3x32x32():
    spec = DataSpec("rgb32", "image", (3, 32, 32), levels=256, num_classes=10)
    g = torch.Generator().manual_seed(0)

    def split(n):
        return {"x": (torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() + 0.5) / 256,
                "y": torch.randint(0, 10, (n,), generator=g)}

    from genbench.manager import PluginManager

    data = Dataset(spec=spec, splits={"train": split(128), "val": split(32), "test": split(32)})
    manager, checked = PluginManager(), []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check_every_family(manager, data, spec, checked)
    finally:
        torch.set_num_threads(threads)
    assert {"dcgan", "vae", "realnvp", "progan", "infogan", "wae-mmd"} <= set(checked)


def test_every_task_family_honours_the_contract_on_task_sets_derived_from_rgb_images():
    """Domains, pairs, key patches and captions derived from a 3 x 32 x 32 set (the builders are
    the ones behind digits-domains, digits-pair, digits-patches and digits-captions)."""
    from genbench.manager import PluginManager
    from genbench_plugins.domains import FOUR_DOMAINS, PAIR_DOMAINS, domain_spec, make_domain_dataset
    from genbench_plugins.puzzle_gan.dataset import make_patch_dataset, patch_spec
    from genbench_plugins.text2image.dataset import caption_spec, make_caption_dataset

    spec = DataSpec("rgb32", "image", (3, 32, 32), levels=256, num_classes=10)
    g = torch.Generator().manual_seed(0)

    def split(n):
        return {"x": (torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() + 0.5) / 256,
                "y": torch.arange(n) % 10}

    base = Dataset(spec=spec, splits={"train": split(128), "val": split(32), "test": split(32)})
    derived = {"stargan": make_domain_dataset(base, domain_spec(spec, "rgb32-domains", FOUR_DOMAINS)),
               "cyclegan": make_domain_dataset(base, domain_spec(spec, "rgb32-pair", PAIR_DOMAINS)),
               "puzzle-gan": make_patch_dataset(base, patch_spec(spec, "rgb32-patches")),
               "text2image-gan": make_caption_dataset(base, caption_spec(spec, "rgb32-captions"))}
    manager = PluginManager()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, data in derived.items():
            cls = manager.models.get(name)
            assert cls.applies_to(data.spec)[0], name
            failed = [f"{r.check}: {r.detail}" for r in ModelChecker(cls, data, 2, torch.device("cpu"), None).run()
                      if not r.ok]
            assert not failed, (name, failed)
    finally:
        torch.set_num_threads(threads)


def check_every_family(manager, data, spec, checked):
    for name in manager.models:
        cls = manager.models.get(name)
        if not cls.applies_to(spec)[0]:
            assert cls.requires, name  # only the task families (domains, captions, patches) need more than images
            continue
        failed = [f"{r.check}: {r.detail}" for r in ModelChecker(cls, data, 2, torch.device("cpu"), None).run()
                  if not r.ok]
        assert not failed, (name, failed)
        checked.append(name)


def test_a_folder_with_its_own_split_reads_only_train_val_and_test_with_top_level_classes(tmp_path):
    root = tmp_path / "own"
    write_pngs(root / "train", 30, classes=("red", "blue"))
    write_pngs(root / "test", 10, classes=("red", "blue"))
    write_pngs(root / "val", 6, classes=("red", "blue"))
    write_pngs(root / "train" / "red" / "nested", 4, classes=("red",), flat=True)  # class red, as ImageFolder
    write_pngs(root, 3, classes=("green",), flat=True)  # outside the splits: not read
    entry = folder_entry(f"folder:{root}")
    assert entry.spec.num_classes == 2
    data = entry.build()
    assert [len(data.split(s)["x"]) for s in ("train", "val", "test")] == [34, 6, 10]
    assert set(data.split("val")["y"].tolist()) == {0, 1}  # shuffled before any slice: both classes


def test_a_folder_read_at_another_shape_or_with_other_files_is_another_dataset(tmp_path):
    write_pngs(tmp_path / "f", 20)
    default = folder_entry(f"folder:{tmp_path / 'f'}").name
    assert folder_entry(f"folder:{tmp_path / 'f'}:16:1").name != default
    write_pngs(tmp_path / "f", 21)  # one more image
    assert folder_entry(f"folder:{tmp_path / 'f'}").name != default
    for text, says in (("folder:", "is not a folder"), (f"folder:{tmp_path / 'f'}:4", "SIZE 4 is outside 8..256")):
        with pytest.raises(DatasetError, match=says):
            folder_entry(text)


def test_inception_score_is_left_out_for_a_set_without_classes(tmp_path):
    from genbench.metrics.fidelity import without_meaningless_is

    write_pngs(tmp_path / "flat", 20, flat=True)
    flat = folder_entry(f"folder:{tmp_path / 'flat'}").build()
    assert without_meaningless_is(flat, {"fid": 1.0, "is": 1.0, "is_train": 1.0}) == {"fid": 1.0}
    write_pngs(tmp_path / "tree", 20)
    tree = folder_entry(f"folder:{tmp_path / 'tree'}").build()
    assert without_meaningless_is(tree, {"fid": 1.0, "is": 2.0}) == {"fid": 1.0, "is": 2.0}
