"""The `real-heldout` reference row: held-out real data scored like a model."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genbench.datasets import Dataset
from genbench.profiles import Profile
from genbench.results import RECORD_SCHEMA, REFERENCE_MODEL, trial_dir, write_record
from genbench.runner import device_label, versions


def reference_record(dataset: Dataset, profile: Profile, suite: str, device: torch.device, out_dir: Path) -> dict:
    """The floor row: held-out real images scored against the training reference."""
    from genbench.features import domain_extractor
    from genbench.metrics.fidelity import SampleQuality, real_data_floor

    path = trial_dir(out_dir.parent, suite) / f"{REFERENCE_MODEL}--{dataset.name}--{profile.name}.json"
    if path.exists():
        return json.loads(path.read_text())
    metrics = real_data_floor(dataset, profile, device)
    record = {
        "schema": RECORD_SCHEMA, "suite": suite, "trial_id": path.stem, "model": REFERENCE_MODEL,
        "family": "reference", "plugin": "genbench", "dataset": dataset.name, "seed": 0, "profile": profile.name,
        "budget": {"kind": "none", "amount": 0, "text": "-"},
        "used": {"seconds": 0.0, "steps": 0, "flops": 0.0}, "status": "reference", "reason": None,
        "metrics": metrics, "estimators": {"sample_quality": SampleQuality().estimator(profile) +
                                           "; generated = held-out real (val+test)"},
        "not_applicable": {}, "extractor": domain_extractor(dataset, device).fingerprint(),
        "device": device_label(device), "versions": versions(), "config_hash": "", "config": {},
    }
    write_record(path, record)
    return record
