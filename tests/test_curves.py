"""Per-trial training curves: every loss of train_step, thinned, in <suite>/curves/<trial_id>.csv."""

import json
import math

import pandas as pd
import pytest
import torch

from genbench.cli import main
from genbench.runner import LossCurve


def test_a_trial_writes_its_training_curves(tmp_path):
    assert main(["run", "--model", "vae", "--dataset", "ring8", "--budget", "50steps", "--profile", "test",
                 "--executor", "inline", "--metrics", "parzen", "--runs-dir", str(tmp_path)]) == 0
    (path,) = (tmp_path / "test" / "trials").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok", record.get("reason")
    assert record["curves"] == f"curves/{record['trial_id']}.csv"
    df = pd.read_csv(tmp_path / "test" / record["curves"])
    assert list(df.columns) == ["step", "progress", "loss", "rec", "kl"]  # the VAE's train_step losses
    assert list(df["step"]) == list(range(1, 51))
    assert df["progress"].is_monotonic_increasing and df["progress"].iloc[-1] == 1.0
    assert df[["loss", "rec", "kl"]].map(math.isfinite).all().all()
    # the last row is the last step's losses, as the record keeps them
    assert df["loss"].iloc[-1] == record["final_losses"]["loss"]


def test_the_curve_is_thinned_evenly_to_its_limit():
    curve = LossCurve(limit=100)
    for step in range(1, 1001):
        curve.add(step, step / 1000, {"loss": torch.tensor(float(step)), "d": 0.5})
    df = curve.frame()
    assert 50 <= len(df) <= 100
    gaps = df["step"].diff().dropna().unique()
    assert len(gaps) == 1 and gaps[0] == curve.every == 16  # every 16th step, to the end of the run
    assert df["step"].iloc[-1] > 1000 - curve.every
    assert (df["loss"] == df["step"]).all() and (df["d"] == 0.5).all()


def test_the_curve_survives_a_checkpoint():
    curve = LossCurve(limit=10)
    for step in range(1, 30):
        curve.add(step, step / 40, {"loss": torch.tensor(1.0 / step)})
    again = LossCurve(limit=10)
    again.load_state(curve.state())
    for step in range(30, 41):
        for c in (curve, again):
            c.add(step, step / 40, {"loss": torch.tensor(1.0 / step)})
    pd.testing.assert_frame_equal(curve.frame(), again.frame())


def test_tensorboard_gets_every_curve_point_and_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")  # part of the dev install; optional for users
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    assert main(["run", "--model", "vae", "--dataset", "ring8", "--budget", "30steps", "--profile", "test",
                 "--executor", "inline", "--metrics", "parzen", "--runs-dir", str(tmp_path / "runs"),
                 "--tensorboard", str(logs)]) == 0
    (path,) = (tmp_path / "runs" / "test" / "trials").glob("*.json")
    record = json.loads(path.read_text())
    events = EventAccumulator(str(logs / record["trial_id"]))
    events.Reload()
    curve = pd.read_csv(tmp_path / "runs" / "test" / record["curves"])
    for name in ("loss", "rec", "kl"):
        points = events.Scalars(f"loss/{name}")
        assert [p.step for p in points] == list(curve["step"])
        assert [p.value for p in points] == pytest.approx(list(curve[name]), rel=1e-6)
    (parzen,) = events.Scalars("metric/parzen")
    assert parzen.step == 30 and parzen.value == pytest.approx(record["metrics"]["parzen"], rel=1e-6)


def test_tensorboard_without_the_package_is_one_line_before_any_trial(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert main(["run", "--model", "vae", "--dataset", "ring8", "--budget", "3steps", "--profile", "test",
                 "--executor", "inline", "--runs-dir", str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 2
    out = capsys.readouterr().out
    assert 'needs the tensorboard package: pip install "genbench[tensorboard]"' in out
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "test" / "trials").exists()
