"""Kept weights: a finished trial's trained state, so a new metric does not mean training again.

``genbench run --keep-weights`` writes, for every trial that finishes, one file
``<runs>/<suite>/weights/<trial_id>.pt`` holding the state the trial was evaluated at (its
best-on-validation state, :mod:`genbench.selection`) and what is needed to rebuild the model:

    {"format": "genbench-weights", "version": 1, "trial_id", "config_hash", "model", "dataset",
     "seed", "profile", "config" (the family's config as a plain dict), "state_dict"}

The record names the file and its size (``record["weights"] = {"path", "bytes"}``, the path
relative to the suite folder).  Files are written atomically (temp file + rename) and hold only
tensors, dicts, lists, numbers and strings; they are always read with
``torch.load(..., weights_only=True)``, so a weights file is never a way to run code.

``genbench evaluate`` (:mod:`genbench.evaluate`) reads these files back to score trials again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from genbench.checkpoint import atomic_torch_save
from genbench.errors import GenbenchError

WEIGHTS_DIR = "weights"
WEIGHTS_FORMAT = "genbench-weights"
WEIGHTS_VERSION = 1


def weights_path(suite_dir: str | os.PathLike, trial_id: str) -> Path:
    return Path(suite_dir) / WEIGHTS_DIR / f"{trial_id}.pt"


def weights_state(model) -> dict:
    """A CPU copy of the model's ``state_dict``: the evaluated state, taken before any metric runs."""
    return {k: (v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else v)
            for k, v in model.state_dict().items()}


def save_weights(state: dict, record: dict, out_dir: Path) -> None:
    """Write the trial's weights file and name it in ``record["weights"]``; a failed write costs
    the file (``record["weights_error"]``), never the trial."""
    from genbench.results import write_error

    path = weights_path(out_dir, record["trial_id"])
    blob = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "trial_id": record["trial_id"],
            "config_hash": record["config_hash"], "model": record["model"], "dataset": record["dataset"],
            "seed": int(record["seed"]), "profile": record["profile"], "config": dict(record["config"]),
            "state_dict": state}
    try:
        atomic_torch_save(blob, path)
        record["weights"] = {"path": str(path.relative_to(out_dir)), "bytes": path.stat().st_size}
    except OSError as exc:
        record["weights"], record["weights_error"] = None, write_error(exc, path)
    except RuntimeError as exc:  # torch reports a full disk as a RuntimeError
        record["weights"], record["weights_error"] = None, f"weights not written ({type(exc).__name__}: {exc})"


def load_weights(path: str | os.PathLike) -> dict:
    """The contents of a weights file, read with ``weights_only=True`` (nothing in it is run);
    GenbenchError with one line for a file that is missing, unreadable or not genbench weights."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GenbenchError(f"weights file {path} is missing") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise GenbenchError(f"refusing weights file {path}: it does not load as plain tensors and values "
                            f"(weights_only=True): {type(exc).__name__}: {first[:200]}") from None
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT or blob.get("version") != WEIGHTS_VERSION:
        raise GenbenchError(f"refusing weights file {path}: not a genbench weights file of version {WEIGHTS_VERSION}")
    return blob
