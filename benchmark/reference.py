"""The `real-heldout` reference row: held-out real data scored like a model.

The validation images stand in for a model's samples and are scored against the test split (and
the training split for the ``*_train`` columns) at the models' generated count, with the
memorisation columns too: the level real data reaches, which a model may beat by chance or by
copying -- a level, not a floor.  It is never flagged as copying (tests check this).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genbench.datasets import Dataset
from genbench.profiles import Profile
from genbench.results import RECORD_SCHEMA, REFERENCE_MODEL, trial_dir, write_record
from genbench.runner import device_label, versions


def reference_record(dataset: Dataset, profile: Profile, suite: str, device: torch.device, out_dir: Path) -> dict:
    """The reference row: validation images scored like a model's samples (see the module docstring)."""
    from genbench.features import domain_extractor
    from genbench.metrics.fidelity import (
        FID_TRAIN,
        SAMPLES_SPLIT,
        SampleQuality,
        estimator_text,
        n_generated,
        real_heldout_metrics,
    )
    from genbench.metrics.memorisation import (
        CT,
        Memorisation,
        copy_finding,
        memorisation_metrics,
        real_features,
        settings_for,
    )

    path = trial_dir(out_dir.parent, suite) / f"{REFERENCE_MODEL}--{dataset.name}--{profile.name}.json"
    extractor = domain_extractor(dataset, device).fingerprint()  # verified (rebuilt if its cache is not)
    if path.exists():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}
        # else written under the earlier protocol, or with an extractor that is no longer the one in use
        if (isinstance(cached, dict) and {FID_TRAIN, CT} <= set(cached.get("metrics", {}))
                and cached.get("extractor") == extractor):
            return cached
    metrics = real_heldout_metrics(dataset, profile, device)
    ext, train, test = real_features(dataset, profile, device)
    val = ext.features(dataset.split(SAMPLES_SPLIT)["x"][: n_generated(dataset, profile)])[0]
    metrics.update(memorisation_metrics(val, test, train, settings_for(profile),
                                        cache_key=(dataset.name, len(train), ext.fingerprint())))
    finding = copy_finding(metrics)
    samples_text = f"; generated = {SAMPLES_SPLIT}[:{n_generated(dataset, profile)}] (real, held out)"
    record = {
        "schema": RECORD_SCHEMA, "suite": suite, "trial_id": path.stem, "model": REFERENCE_MODEL,
        "family": "reference", "plugin": "genbench", "dataset": dataset.name, "seed": 0, "profile": profile.name,
        "budget": {"kind": "none", "amount": 0, "text": "-"},
        "used": {"seconds": 0.0, "steps": 0, "flops": 0.0}, "status": "reference", "reason": None,
        "metrics": metrics, "warnings": [finding] if finding else [],
        "estimators": {SampleQuality.name: estimator_text(profile, dataset) + samples_text,
                       Memorisation.name: Memorisation().estimator(profile) + samples_text},
        "not_applicable": {}, "extractor": extractor,
        "device": device_label(device), "versions": versions(), "config_hash": "", "config": {},
    }
    write_record(path, record)
    return record
