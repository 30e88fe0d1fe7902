"""Image sets too large to hold as float tensors: decoded once into a uint8 file, memory-mapped, and
streamed to training through a ``torch.utils.data.DataLoader``.

genbench keeps a dataset's splits as tensors on the device (small sets fit, and indexing a tensor
is far cheaper than a DataLoader).  A set of real images can be much larger: CelebA's 162,770
training faces at 64x64 are 8 GB as float32, per process.  For such a set the loader decodes every
image once into ``<cache>/images/<name>.npy`` (uint8, N x C x H x W, written to a temporary file and
renamed when complete), and then:

* each split keeps at most :data:`IN_MEMORY_IMAGES` images (``$GENBENCH_IN_MEMORY_IMAGES``) as
  float tensors in ``Dataset.splits``
  -- what the metrics read (their reference statistics use at most 50,000 images, the standard
  profile's count; the domain classifier trains on these too);
* a training split with more images than that is also a stream in ``Dataset.streams``: training
  batches are drawn from *every* image of it, shuffled epoch by epoch with the trial's generator
  exactly as the in-memory batches are (so checkpoints resume the same stream), and read from the
  memory-mapped file by a DataLoader -- with worker processes where the trial's process may have
  children; genbench's own worker processes are daemonic, and there the batch is read in the
  trial's process (a gather from the mapped file, converted to bin centres).

The page cache holds the mapped file once for every process on the machine.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

IN_MEMORY_IMAGES = 50_000  # images of one split held as float tensors; a larger training split streams
IN_MEMORY_ENV = "GENBENCH_IN_MEMORY_IMAGES"  # overrides IN_MEMORY_IMAGES (a smaller machine, a test)
LOADER_WORKERS = 2  # DataLoader worker processes, where the process may start them
DECODE_CHUNK = 1024  # images decoded between writes to the file


def in_memory_images() -> int:
    """Images of one split held as tensors: ``$GENBENCH_IN_MEMORY_IMAGES``, else :data:`IN_MEMORY_IMAGES`."""
    text = os.environ.get(IN_MEMORY_ENV)
    if text is None:
        return IN_MEMORY_IMAGES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        from genbench.errors import GenbenchError

        raise GenbenchError(f"{IN_MEMORY_ENV}={text!r} is not a positive number of images; unset it or give e.g. 20000")
    return value


def _bins(x: torch.Tensor, levels: int) -> torch.Tensor:
    return (x.float() + 0.5) / levels


def decoded_images(path: Path, producer: dict, items: Sequence, read: Callable[[object], torch.Tensor],
                   shape: tuple[int, int, int]) -> np.ndarray:
    """The images ``read(item)`` of every item, as a read-only memory map of ``path`` (uint8,
    (N, *shape)).  Decoded once: the file is reused while its side file names the same
    ``producer`` and it has the expected shape; otherwise (or when it is unreadable) it is decoded
    again, into a temporary file that replaces it only when complete."""
    meta = path.with_suffix(".json")
    expected = (len(items), *shape)
    try:
        if json.loads(meta.read_text()) == producer:
            mapped = np.load(path, mmap_mode="r")
            if mapped.shape == expected and mapped.dtype == np.uint8:
                return mapped
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=expected)
    for start in range(0, len(items), DECODE_CHUNK):
        chunk = items[start : start + DECODE_CHUNK]
        out[start : start + len(chunk)] = torch.stack([read(item) for item in chunk]).numpy()
    out.flush()
    del out
    os.replace(tmp, path)
    meta.write_text(json.dumps(producer))
    return np.load(path, mmap_mode="r")


class MappedImages(torch.utils.data.Dataset):
    """Images of a memory-mapped uint8 array and their labels; item ``idx`` (a tensor of indices)
    is that batch, as bin centres."""

    def __init__(self, images: np.ndarray, labels: torch.Tensor, levels: int):
        self.images, self.labels, self.levels = images, labels, levels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        x = torch.from_numpy(np.array(self.images[idx.numpy()]))
        return {"x": _bins(x, self.levels), "y": self.labels[idx]}


def split_of(images: np.ndarray, labels: torch.Tensor, levels: int, stream: bool):
    """(the split's in-memory tensors, its stream or None): at most :func:`in_memory_images` images
    as bin centres, and with ``stream`` (a training split) all of them as a :class:`MappedImages`
    when there are more than that."""
    keep = in_memory_images()
    kept = {"x": _bins(torch.from_numpy(np.array(images[:keep])), levels), "y": labels[:keep]}
    if stream and len(images) > keep:
        return kept, MappedImages(images, labels, levels)
    return kept, None


def stream_batches(stream: MappedImages, batch_size: int, generator: torch.Generator,
                   device: torch.device | str) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled mini-batches of every image of ``stream``: one permutation per epoch drawn
    from ``generator`` (as :meth:`genbench.datasets.Dataset.batches` draws it), read by a DataLoader
    whose every item is one batch."""
    n = len(stream)
    batch_size = min(batch_size, n)
    workers = 0 if multiprocessing.current_process().daemon else LOADER_WORKERS
    while True:
        order = torch.randperm(n, generator=generator)
        chunks = [order[s : s + batch_size] for s in range(0, n - batch_size + 1, batch_size)]
        loader = torch.utils.data.DataLoader(stream, sampler=chunks, batch_size=None, num_workers=workers)
        for batch in loader:
            yield {k: v.to(device) for k, v in batch.items()}
