"""TensorBoard output for ``genbench run --tensorboard DIR``, through torch's own ``SummaryWriter``.

A run observer (the ``trial_finished`` hook, :mod:`genbench.hookspecs`): as each trial of the run
gets its result, its training curve (``<suite>/curves/<trial_id>.csv``, every loss the model's
``train_step`` returned, thinned as described in :mod:`genbench.runner`) is written to
``DIR/<trial_id>/`` as scalars ``loss/<name>`` by step, and each numeric metric of its record as
``metric/<name>`` at the trial's last step.  Trials finished by an earlier run (skipped, not
re-run) are not written again.  The package ``tensorboard`` is optional
(``pip install "genbench[tensorboard]"``): without it ``--tensorboard`` is refused before any trial
starts.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd

from genbench.errors import GenbenchError
from genbench.hookspecs import hookimpl


def summary_writer_class():
    """torch's SummaryWriter, or one line saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GenbenchError('--tensorboard needs the tensorboard package: pip install "genbench[tensorboard]" '
                            "(or leave the flag out: the curves are in <suite>/curves/ as CSV)") from None
    return SummaryWriter


class TensorBoardLog:
    """Writes each finished trial of a run under ``log_dir``; register it on the plugin manager."""

    def __init__(self, log_dir: str | Path, suite_dir: str | Path):
        self.writer_class = summary_writer_class()
        self.log_dir, self.suite_dir = Path(log_dir), Path(suite_dir)
        if self.log_dir.exists() and not self.log_dir.is_dir():
            raise GenbenchError(f"--tensorboard {str(self.log_dir)!r} is a file, not a folder; give a folder")

    @hookimpl
    def trial_finished(self, trial, record):
        try:
            self.write(record)
        except Exception as exc:  # a log that cannot be written costs the log, never the run's results
            warnings.warn(f"TensorBoard log of {record.get('trial_id')} not written ({type(exc).__name__}: {exc}); "
                          f"the trial's record and curves CSV are unaffected", stacklevel=1)

    def write(self, record: dict) -> None:
        writer = self.writer_class(log_dir=str(self.log_dir / record["trial_id"]))
        try:
            last = int((record.get("used") or {}).get("steps") or 0)
            if record.get("curves"):
                curve = pd.read_csv(self.suite_dir / record["curves"])
                for name in curve.columns.drop(["step", "progress"], errors="ignore"):
                    for step, value in zip(curve["step"], curve[name]):
                        if pd.notna(value):
                            writer.add_scalar(f"loss/{name}", float(value), int(step))
                last = max(last, int(curve["step"].max()))
            for name, value in sorted((record.get("metrics") or {}).items()):
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    writer.add_scalar(f"metric/{name}", float(value), last)
            writer.add_text("trial", f"{record['model']} on {record['dataset']}, seed {record['seed']}: "
                                     f"{record['status']}", last)
        finally:
            writer.close()
