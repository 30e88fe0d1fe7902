"""Image sets larger than memory: decoded once into a memory-mapped uint8 file, a training split of
more than $GENBENCH_IN_MEMORY_IMAGES images streams (every image trained on, in the same shuffled
order as an in-memory split, resumable), and a trial on such a set runs in worker processes."""

import json

import numpy as np
import pytest
import torch
from test_imagesets import write_celeba

import genbench.streaming as streaming
from genbench.checkpoint import ResumableBatches
from genbench.cli import main
from genbench.errors import GenbenchError
from genbench.imagesets import load_celeba


@pytest.fixture()
def small_memory(monkeypatch):
    monkeypatch.setenv(streaming.IN_MEMORY_ENV, "8")


def test_a_large_training_split_streams_every_image_in_the_in_memory_order(tmp_path, small_memory):
    write_celeba(tmp_path, n_train=20, n_val=4, n_test=4)
    data = load_celeba("celeba32", tmp_path, download=False)
    assert len(data.split("train")["x"]) == 8 and set(data.streams) == {"train"}
    stream = data.streams["train"]
    assert len(stream) == 20 and isinstance(stream.images, np.memmap)
    everything = (torch.from_numpy(np.array(stream.images)).float() + 0.5) / 256
    assert torch.equal(everything[:8], data.split("train")["x"])  # the in-memory images are the first ones
    g = torch.Generator().manual_seed(5)
    batches = data.batches("train", 4, g)
    epoch = [next(batches) for _ in range(5)]
    order = torch.randperm(20, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.cat([b["x"] for b in epoch]), everything[order])  # all 20, as Dataset.batches orders
    # checkpoints resume the stream where it was
    straight = ResumableBatches(data, 4, seed=1)
    taken = [next(straight) for _ in range(7)]
    resumed = ResumableBatches(data, 4, seed=1, state=ResumableBatches(data, 4, seed=1).state())
    assert torch.equal(next(resumed)["x"], taken[0]["x"])
    half = ResumableBatches(data, 4, seed=1)
    for _ in range(6):
        next(half)
    again = ResumableBatches(data, 4, seed=1, state=half.state())
    assert torch.equal(next(again)["x"], taken[6]["x"])


def test_the_dataloader_workers_read_the_same_batches(tmp_path, small_memory, monkeypatch):
    write_celeba(tmp_path, n_train=20, n_val=4, n_test=4)
    data = load_celeba("celeba32", tmp_path, download=False)
    stream = data.streams["train"]
    monkeypatch.setattr(streaming, "LOADER_WORKERS", 0)
    direct = streaming.stream_batches(stream, 6, torch.Generator().manual_seed(2), "cpu")
    expected = [next(direct) for _ in range(4)]
    monkeypatch.setattr(streaming, "LOADER_WORKERS", 2)
    loaded = streaming.stream_batches(stream, 6, torch.Generator().manual_seed(2), "cpu")
    for want in expected:
        got = next(loaded)
        assert torch.equal(got["x"], want["x"]) and torch.equal(got["y"], want["y"])


def test_the_decoded_file_is_reused_and_redone_when_its_files_change(tmp_path):
    calls = []

    def read(item):
        calls.append(item)
        return torch.full((1, 2, 2), item, dtype=torch.uint8)

    path = tmp_path / "cache" / "set.npy"
    first = streaming.decoded_images(path, {"files": "a"}, [1, 2, 3], read, (1, 2, 2))
    assert first.shape == (3, 1, 2, 2) and first[2, 0, 0, 0] == 3 and calls == [1, 2, 3]
    assert streaming.decoded_images(path, {"files": "a"}, [1, 2, 3], read, (1, 2, 2))[1, 0, 1, 1] == 2
    assert calls == [1, 2, 3]  # reused
    again = streaming.decoded_images(path, {"files": "b"}, [7, 8, 9], read, (1, 2, 2))
    assert again[0, 0, 0, 0] == 7 and json.loads(path.with_suffix(".json").read_text()) == {"files": "b"}
    assert not list(path.parent.glob("*.tmp.npy"))


def test_a_bad_in_memory_count_is_one_line(monkeypatch):
    monkeypatch.setenv(streaming.IN_MEMORY_ENV, "lots")
    with pytest.raises(GenbenchError, match="GENBENCH_IN_MEMORY_IMAGES='lots' is not a positive number"):
        streaming.in_memory_images()


def test_a_trial_on_a_streamed_set_runs_in_worker_processes(tmp_path, small_memory, monkeypatch, capsys):
    write_celeba(tmp_path, n_train=40, n_val=10, n_test=10)
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    runs = tmp_path / "runs"
    code = main(["run", "--model", "vae", "--dataset", "celeba32", "--profile", "test", "--budget", "12steps",
                 "--runs-dir", str(runs), "--workers", "1", "--metrics", "fid"])
    out = capsys.readouterr()
    assert code == 0, out.err
    record = json.loads(next((runs / "test" / "trials").glob("vae--celeba32--*.json")).read_text())
    assert record["status"] == "ok" and record["used"]["steps"] == 12
    assert record["metrics"]["fid"] > 0
