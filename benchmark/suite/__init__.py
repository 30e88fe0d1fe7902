"""Suites: the list of trials behind `genbench run`, run with resume and rich progress.

A suite folder ``<runs>/<suite>/`` holds one record per trial (``trials/*.json``), the sample grids,
the checkpoints of trials in progress, the worker logs, the leaderboard CSVs and, with
``--keep-weights``, each finished trial's weights (:mod:`genbench.weights`).  Running the same
command again skips every trial whose record says "ok" for the same config hash and runs the rest
again, failed ones included (a failure may have been the machine's, not the model's; ``--rerun``
runs everything).  Every file is written through a temp file and a rename, and one runner at a time
holds the folder's lock, so a run interrupted at any moment -- Ctrl-C or SIGKILL -- loses no
finished trial and leaves no half-written file.

A write that fails (a full disk, a folder in the way, no permission) loses no result either: the
record goes to a fallback file in the system temp folder (:func:`genbench.results.unsaved_dir`),
the run says so in one line and goes on with the other trials, and the next run of the suite moves
the record into place.  A suite folder that cannot be written at all still shows what it holds:
`genbench run` with every trial finished writes nothing.

The package: :mod:`~genbench.suite.plan` (which trials), :mod:`~genbench.suite.files` (suite files
and names), :mod:`~genbench.suite.lock` (one run per suite folder) and
:mod:`~genbench.suite.run` (running them).
"""

from __future__ import annotations

from genbench.suite.files import SUITE_KEYS, check_suite_name, load_suite_file
from genbench.suite.lock import lock_suite
from genbench.suite.plan import check_overrides, default_datasets, plan_trials, runs_by_default
from genbench.suite.run import DatasetCache, dispatch_order, run_suite, summary

__all__ = ["DatasetCache", "SUITE_KEYS", "check_overrides", "check_suite_name", "default_datasets", "dispatch_order",
           "load_suite_file", "lock_suite", "plan_trials", "run_suite", "runs_by_default", "summary"]
