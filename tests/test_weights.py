"""Kept weights (`genbench run --keep-weights`) and `genbench evaluate`: a finished trial is scored
again from its evaluated state, without training, and its record is updated in place."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from genbench.cli import main
from genbench.errors import GenbenchError
from genbench.weights import load_weights, weights_path

RING = ["run", "--dataset", "ring8", "--budget", "20steps", "--profile", "test", "--executor", "inline"]


def record_of(runs: Path, model: str, suite: str = "test") -> dict:
    (rec,) = [json.loads(p.read_text()) for p in (runs / suite / "trials").glob(f"{model}--*.json")]
    return rec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vae on ring8 with its weights kept, scored by `modes` only, and a gan without kept weights."""
    runs = tmp_path_factory.mktemp("runs")
    assert main([*RING, "--model", "vae", "--keep-weights", "--metrics", "modes", "--runs-dir", str(runs)]) == 0
    assert main([*RING, "--model", "gan", "--metrics", "modes", "--runs-dir", str(runs)]) == 0
    return runs


@pytest.fixture()
def runs(trained, tmp_path):
    """A copy of the trained runs folder per test: evaluate changes records in place."""
    copy = tmp_path / "runs"
    shutil.copytree(trained, copy)
    return copy


def test_kept_weights_file_is_named_in_the_record_and_loads_weights_only(trained, manager):
    rec = record_of(trained, "vae")
    assert rec["status"] == "ok", rec.get("reason")
    path = trained / "test" / rec["weights"]["path"]
    assert path == weights_path(trained / "test", rec["trial_id"])
    assert rec["weights"]["bytes"] == path.stat().st_size > 0
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert (blob["model"], blob["dataset"], blob["seed"], blob["config_hash"]) == \
        ("vae", "ring8", 0, rec["config_hash"])
    assert blob["config"] == rec["config"]
    fresh = manager.models.get("vae")(manager.models.get("vae").make_config(blob["config"]),
                                      manager.datasets.get("ring8").build().spec)
    assert set(blob["state_dict"]) == set(fresh.state_dict())
    assert "weights" not in record_of(trained, "gan")  # not asked for: nothing kept
    assert not (trained / "test" / "weights" / f"{record_of(trained, 'gan')['trial_id']}.pt").exists()


def test_evaluate_adds_a_metric_and_keeps_the_training_figures(runs):
    before = record_of(runs, "vae")
    assert "parzen" not in before["metrics"]
    assert main(["evaluate", "--suite", "test", "--runs-dir", str(runs), "--model", "vae", "--metrics", "parzen"]) == 0
    after = record_of(runs, "vae")
    assert math.isfinite(after["metrics"]["parzen"])
    for column in ("modes", "hq_pct", "mode_kl"):  # not recomputed: kept as they were
        assert after["metrics"][column] == before["metrics"][column]
    for key in ("used", "final_losses", "selection", "curves", "config_hash", "trial_id", "finished", "samples"):
        assert after[key] == before[key], key
    assert after["timings"]["train_s"] == before["timings"]["train_s"]
    assert set(after["timings"]["metrics"]) == {"modes", "parzen"}
    assert "parzen" not in after["not_applicable"] and "parzen" in after["estimators"]
    assert after["not_applicable"]["posterior_gaps"] == "not selected by --metrics"  # still not scored
    assert after["metric_selection"] == {"metrics": ["modes", "parzen"], "skip_metrics": []}
    assert after["re_evaluated"] is True and after["evaluated_at"]
    assert [e["metrics"] for e in after["evaluations"]] == [["parzen"]]

    from genbench import api

    board = api.leaderboard(runs_dir=runs, suite="test", dataset="ring8")
    row = board[board["model"] == "vae"].iloc[0]
    assert math.isfinite(row["parzen"]) and row["parzen"] == pytest.approx(after["metrics"]["parzen"])
    assert row["mode_kl"] == pytest.approx(before["metrics"]["mode_kl"])


def test_evaluating_the_same_metric_again_gives_the_trained_figures(runs):
    """The kept state is the one the trial was evaluated at (its best-on-validation state): scored
    again by the same metric, it gives the same figures."""
    before = record_of(runs, "vae")
    assert main(["evaluate", "--suite", "test", "--runs-dir", str(runs), "--model", "vae", "--metrics", "modes"]) == 0
    after = record_of(runs, "vae")
    for column in ("modes", "hq_pct", "mode_kl"):
        assert after["metrics"][column] == pytest.approx(before["metrics"][column], rel=1e-6)
    assert after["metric_selection"] == before["metric_selection"]


def test_a_trial_without_weights_says_so_and_the_others_go_on(runs, capsys):
    gan = record_of(runs, "gan")
    code = main(["evaluate", "--suite", "test", "--runs-dir", str(runs), "--metrics", "parzen"])
    out = capsys.readouterr().out
    assert code == 1
    line = f"trial {gan['trial_id']} has no kept weights: rerun it with --keep-weights"
    assert line in out.replace("\n", " ")
    assert "1 trial(s) re-evaluated, 1 not" in out
    assert math.isfinite(record_of(runs, "vae")["metrics"]["parzen"])  # the other trial was scored
    assert record_of(runs, "gan") == gan  # and this one left as it was


def test_a_weights_file_with_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "bad.pt"
    torch.save({"format": "genbench-weights", "version": 1, "payload": RunsCode()}, bad)
    with pytest.raises(GenbenchError) as err:
        load_weights(bad)
    assert "\n" not in str(err.value) and "weights_only=True" in str(err.value)
    assert not marker.exists()  # nothing in the file was run


def test_a_trial_whose_weights_file_is_gone_is_one_line(runs, capsys):
    rec = record_of(runs, "vae")
    (runs / "test" / rec["weights"]["path"]).unlink()
    assert main(["evaluate", "--suite", "test", "--runs-dir", str(runs), "--model", "vae", "--metrics", "parzen"]) == 1
    assert f"trial {rec['trial_id']}: weights file" in capsys.readouterr().out
    assert record_of(runs, "vae") == rec


def test_no_matching_trial_is_an_error(runs):
    assert main(["evaluate", "--suite", "test", "--runs-dir", str(runs), "--model", "realnvp"]) == 2


def test_api_run_keeps_weights_from_a_worker_process(tmp_path):
    """keep_weights= of genbench.api.run, through the default executor (worker processes)."""
    from genbench import api

    (rec,) = api.run(models=["gan"], datasets=["ring8"], budget="20steps", profile="test", metrics=["modes"],
                     runs_dir=tmp_path, workers=1, keep_weights=True, quiet=True, as_frame=False)
    assert rec["status"] == "ok", rec.get("reason")
    path = tmp_path / "test" / rec["weights"]["path"]
    assert path.stat().st_size == rec["weights"]["bytes"]
    assert load_weights(path)["model"] == "gan"
