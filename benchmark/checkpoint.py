"""Trial checkpoints: an interrupted trial continues where it stopped instead of starting again.

While a trial trains, its full training state is written at fixed fractions of the budget (by
default every 25%) to ``<runs>/<suite>/checkpoints/<trial_id>.pt``:

* the model's ``state_dict`` (a family with state outside its parameters and buffers -- an image
  pool, a running schedule -- keeps it through ``nn.Module.get_extra_state``/``set_extra_state``);
* the ``state_dict`` of every optimiser in ``model.optimizers``;
* the random number generators: torch's CPU generator, every CUDA device's, Python's ``random``
  and NumPy's global state;
* the data order: the state of the CPU generator that shuffles the training split as it was at
  the start of the current epoch, and how many batches have been drawn since (see
  :class:`ResumableBatches`);
* the budget meter's usage (seconds, steps, FLOPs), so a time budget continues from the time
  already spent;
* model selection's state (:mod:`genbench.selection`): the validation criterion's history so far
  and the best-on-validation weights, so a resumed trial chooses the state an uninterrupted one
  would have chosen.

With all of that restored, a resumed trial takes exactly the steps an uninterrupted one would
have taken, and ends with the same parameters and metrics (on the same device and thread count).

Files are written atomically (temp file + rename) and hold only tensors, dicts, lists, numbers
and strings, so they load with ``torch.load(..., weights_only=True)``: a checkpoint file is never
a way to run code.  A checkpoint is deleted once the trial's record is written.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from genbench.budget import BudgetMeter, BudgetUsage

CHECKPOINT_VERSION = 2  # 2: adds model selection's state
CHECKPOINT_DIR = "checkpoints"


def checkpoint_path(suite_dir: str | os.PathLike, trial_id: str) -> Path:
    return Path(suite_dir) / CHECKPOINT_DIR / f"{trial_id}.pt"


def remove_checkpoint(path: str | os.PathLike) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` through a temp file in the same folder and a rename: a reader (or a resumed
    run after a kill) sees the previous complete file or the new complete file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- random number generators ---------------------------------------------------------------


def capture_rng() -> dict:
    """Every global generator a training step may draw from, as weights_only-loadable values."""
    import numpy as np

    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype("int64")),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype("uint32"), npst["pos"], npst["has_gauss"],
                         npst["cached"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# --- data order -----------------------------------------------------------------------------


class ResumableBatches(Iterator):
    """Training batches from ``dataset.batches`` whose position can be saved and restored.

    A dataset's batch iterator draws from its CPU generator only when it shuffles (once per
    epoch), so the position in the stream is fully described by the generator's state before the
    last draw plus the number of batches taken since.  Restoring sets that state and replays at
    most one epoch's worth of batch indexing, which costs far less than a training step per batch.
    """

    def __init__(self, dataset, batch_size: int, seed: int, state: dict | None = None):
        self.dataset, self.batch_size = dataset, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        replay = 0
        if state is not None:
            self.generator.set_state(state["generator"])
            replay = int(state["drawn"])
        self.anchor = self.generator.get_state()
        self.drawn = 0
        self.iterator = dataset.batches("train", batch_size, self.generator)
        for _ in range(replay):
            next(self)

    def __next__(self) -> dict[str, torch.Tensor]:
        before = self.generator.get_state()
        batch = next(self.iterator)
        if not torch.equal(before, self.generator.get_state()):
            self.anchor, self.drawn = before, 0
        self.drawn += 1
        return batch

    def state(self) -> dict:
        return {"generator": self.anchor.clone(), "drawn": self.drawn}


# --- the checkpointer -----------------------------------------------------------------------


class Checkpointer:
    """Saves a trial's training state at every ``every`` fraction of its budget and restores it.

    ``key`` is the trial's config hash: a file left by a different configuration is ignored.
    ``every`` <= 0 or >= 1 disables saving (restoring still works).
    """

    def __init__(self, path: str | os.PathLike, key: str, every: float = 0.25):
        self.path = Path(path)
        self.key = key
        self.every = every
        self.next_fraction = every if 0 < every < 1 else math.inf
        self.resumed_from: dict | None = None  # usage at the restored checkpoint, for the record
        self.saved = 0
        self.error: str | None = None  # why checkpoints stopped being written, if they did
        self.discarded: str | None = None  # why a checkpoint found on disk was not resumed from

    def load(self) -> dict | None:
        """The stored state for this trial, or None (missing, unreadable or foreign: warned)."""
        if not self.path.exists():
            return None
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("version") != CHECKPOINT_VERSION:
                raise ValueError("not a genbench checkpoint of this version")
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            self.discarded = (f"ignoring checkpoint {self.path.name}: {type(exc).__name__}: {first}; the trial "
                              "started from the beginning")
            warnings.warn(self.discarded, stacklevel=2)
            return None
        if blob.get("key") != self.key:
            self.discarded = (f"ignoring checkpoint {self.path.name}: it belongs to another configuration "
                              f"(hash {blob.get('key')!r}, this trial {self.key!r}); the trial started from the "
                              "beginning")
            warnings.warn(self.discarded, stacklevel=2)
            return None
        return blob

    def restore(self, model, meter: BudgetMeter, dataset, batch_size: int, seed: int,
                selector=None, curve=None) -> ResumableBatches:
        """Load the checkpoint (if any) into ``model``, its optimisers, the RNGs, ``meter``, the
        ``selector`` (a :class:`genbench.selection.Selector`) and the loss ``curve`` (a
        :class:`genbench.runner.LossCurve`), and return the training batches positioned where the
        checkpoint left them."""
        blob = self.load()
        if blob is None:
            return ResumableBatches(dataset, batch_size, seed)
        model.load_state_dict(blob["model"])
        missing = set(blob["optimizers"]) ^ set(model.optimizers)
        if missing:
            raise ValueError(f"checkpoint {self.path} has optimisers {sorted(blob['optimizers'])} but the model "
                             f"has {sorted(model.optimizers)}; delete the checkpoint to start again")
        for name, opt in model.optimizers.items():
            opt.load_state_dict(blob["optimizers"][name])
        meter.usage = BudgetUsage(**blob["usage"])
        meter._last_step_flops = float(blob["last_step_flops"])
        if selector is not None and blob.get("selection") is not None:
            selector.load_state(blob["selection"])
        if curve is not None and blob.get("curve") is not None:
            curve.load_state(blob["curve"])
        batches = ResumableBatches(dataset, batch_size, seed, state=blob["data"])
        restore_rng(blob["rng"])
        self.resumed_from = dict(blob["usage"])
        self._advance(meter.progress())
        return batches

    def _advance(self, progress: float) -> None:
        while self.next_fraction <= progress:
            self.next_fraction += self.every
        if self.next_fraction >= 1.0:
            self.next_fraction = math.inf

    def due(self, progress: float) -> bool:
        return progress >= self.next_fraction

    def save(self, model, meter: BudgetMeter, batches: ResumableBatches, selector=None, curve=None) -> None:
        state = {
            "version": CHECKPOINT_VERSION,
            "key": self.key,
            "model": model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in model.optimizers.items()},
            "rng": capture_rng(),
            "data": batches.state(),
            "usage": meter.usage.as_dict(),
            "last_step_flops": float(meter._last_step_flops),
            "selection": None if selector is None else selector.state(),
            "curve": None if curve is None else curve.state(),
        }
        try:
            atomic_torch_save(state, self.path)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as a RuntimeError
            # a checkpoint only makes a resume cheaper: a trial that cannot write one trains on without
            self.error = f"checkpoints not written ({type(exc).__name__}: {str(exc).strip() or 'write failed'}); " \
                         "the trial trained on, but an interruption would restart it"
            self.next_fraction = math.inf
            import warnings

            warnings.warn(self.error, stacklevel=2)
            return
        self.saved += 1
        self._advance(meter.progress())

    def maybe_save(self, model, meter: BudgetMeter, batches: ResumableBatches, selector=None,
                   curve=None) -> bool:
        if self.due(meter.progress()) and not meter.exhausted():
            self.save(model, meter, batches, selector, curve)
            return True
        return False
