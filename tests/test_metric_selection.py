"""`genbench run --metrics / --skip-metrics`: only the selected metrics are evaluated, the selection
is recorded with the trial and is part of its key, and the leaderboard says why the other cells
are empty."""

import json

import pandas as pd
import pytest

from genbench.budget import Budget
from genbench.cli import main
from genbench.errors import UnknownNameError
from genbench.metrics import MetricSelection, select_metrics
from genbench.runner import Trial

RING = ["run", "--model", "vae", "--dataset", "ring8", "--budget", "20steps", "--profile", "test",
        "--executor", "inline"]


def records(runs, suite="test"):
    return [json.loads(p.read_text()) for p in sorted((runs / suite / "trials").glob("*.json"))]


def test_names_resolve_to_metrics(manager):
    assert select_metrics(manager.metrics) == MetricSelection()
    # a column stands for the metric that computes it; names are kept once, sorted
    chosen = select_metrics(manager.metrics, "fid, sample_quality,parzen")
    assert chosen == MetricSelection(("parzen", "sample_quality"))
    assert select_metrics(manager.metrics, None, ["ais"]) == MetricSelection((), ("ais",))
    with pytest.raises(UnknownNameError) as err:
        select_metrics(manager.metrics, "fdi")
    line = str(err.value)
    assert "\n" not in line and "unknown metric 'fdi'" in line
    assert "known metrics:" in line and "sample_quality" in line and "posterior_gaps" in line


def test_selection_is_part_of_the_key_and_every_metric_keeps_the_old_key(manager):
    vae = manager.models.get("vae")
    plain = Trial("vae", "ring8", 0, Budget.parse("20steps"), "test")
    everything = Trial("vae", "ring8", 0, Budget.parse("20steps"), "test", metric_selection=select_metrics(
        manager.metrics))
    fid_only = Trial("vae", "ring8", 0, Budget.parse("20steps"), "test",
                     metric_selection=select_metrics(manager.metrics, "fid"))
    no_ais = Trial("vae", "ring8", 0, Budget.parse("20steps"), "test",
                   metric_selection=select_metrics(manager.metrics, None, "ais"))
    assert plain.key(vae) == everything.key(vae)
    assert len({plain.key(vae), fid_only.key(vae), no_ais.key(vae)}) == 3


def test_metrics_fid_evaluates_and_records_only_sample_quality(tmp_path):
    assert main(["run", "--model", "vae", "--dataset", "digits", "--budget", "20steps", "--profile", "test",
                 "--executor", "inline", "--runs-dir", str(tmp_path), "--metrics", "fid"]) == 0
    (rec,) = [r for r in records(tmp_path) if r["model"] == "vae"]
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["metric_selection"] == {"metrics": ["sample_quality"], "skip_metrics": []}
    assert set(rec["timings"]["metrics"]) == {"sample_quality"}  # nothing else was evaluated
    assert {"fid", "kid", "precision", "recall"} <= set(rec["metrics"])
    assert not {"elbo", "iwae", "ais", "parzen", "agg_mmd", "ct"} & set(rec["metrics"])
    assert rec["not_applicable"]["ais"] == "not selected by --metrics"
    assert rec["not_applicable"]["posterior_gaps"] == "not selected by --metrics"
    assert rec["not_applicable"]["exact_likelihood"] == "needs log_likelihood"  # its own reason comes first
    row = pd.read_csv(tmp_path / "test" / "leaderboard-digits.csv").set_index("model").loc["vae"]
    assert pd.notna(row["fid"])
    assert "elbo" not in row.index or pd.isna(row["elbo"])
    assert "ais: not selected by --metrics" in row["empty_cells"]
    assert "posterior_gaps: not selected by --metrics" in row["empty_cells"]


def test_skip_metrics_leaves_the_metric_out_and_records_it(tmp_path):
    assert main([*RING, "--runs-dir", str(tmp_path), "--skip-metrics", "ais"]) == 0
    (rec,) = records(tmp_path)
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["metric_selection"] == {"metrics": None, "skip_metrics": ["ais"]}
    assert "ais" not in rec["metrics"] and "ais" not in rec["timings"]["metrics"]
    assert {"elbo", "iwae", "parzen", "mode_kl"} <= set(rec["metrics"])  # the others are evaluated
    assert rec["not_applicable"]["ais"] == "skipped by --skip-metrics"
    row = pd.read_csv(tmp_path / "test" / "leaderboard-ring8.csv").set_index("model").loc["vae"]
    assert "ais: skipped by --skip-metrics" in row["empty_cells"]


def test_unknown_metric_fails_before_any_trial(tmp_path, capsys):
    assert main([*RING, "--runs-dir", str(tmp_path), "--metrics", "fid,nope"]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the terminal wraps a long line
    assert out.startswith("error: --metrics: unknown metric 'nope'; known metrics: ")
    assert not (tmp_path / "test").exists()


def test_another_selection_is_not_reused_as_complete(tmp_path, capsys):
    runs = str(tmp_path)
    assert main([*RING, "--runs-dir", runs, "--metrics", "parzen"]) == 0
    (first,) = records(tmp_path)
    assert set(first["timings"]["metrics"]) == {"parzen"}
    capsys.readouterr()
    # the same selection again: the finished trial is reused
    assert main([*RING, "--runs-dir", runs, "--metrics", "parzen"]) == 0
    assert "1 trial(s) already finished" in capsys.readouterr().out
    assert records(tmp_path) == [first]
    # every metric: the parzen-only trial does not count as done, the trial runs and is scored by all
    assert main([*RING, "--runs-dir", runs]) == 0
    assert "already finished" not in capsys.readouterr().out
    full = [r for r in records(tmp_path) if r["trial_id"] != first["trial_id"]]
    assert len(full) == 1 and full[0]["config_hash"] != first["config_hash"]
    assert {"parzen", "elbo", "ais", "mode_kl"} <= set(full[0]["timings"]["metrics"]) | set(full[0]["metrics"])
    assert full[0]["metric_selection"] == {"metrics": None, "skip_metrics": []}
    # the leaderboard row is the newest selection's, never both pooled as two seeds
    row = pd.read_csv(tmp_path / "test" / "leaderboard-ring8.csv").set_index("model").loc["vae"]
    assert row["seeds"] == "1/1" and pd.notna(row["elbo"])
    assert "older trial(s) with another config, profile or metric selection left out" in row["notes"]
    # and a full trial is not reused for a run that skips a metric either: that is a trial of its own
    assert main([*RING, "--runs-dir", runs, "--skip-metrics", "ais"]) == 0
    assert "already finished" not in capsys.readouterr().out
    assert len(records(tmp_path)) == 3


def test_reproduction_suite_refuses_a_selection(tmp_path, capsys):
    assert main(["run", "--suite", "repro", "--metrics", "fid", "--runs-dir", str(tmp_path)]) == 2
    assert "reproduction suite" in capsys.readouterr().out


def test_published_rows_tell_selections_apart_and_reproduce_them():
    from genbench.publish.rows import reproduce_command
    from genbench.results import setup_hash

    every = setup_hash("vae", "ring8", "steps", 20, "test", {})
    assert setup_hash("vae", "ring8", "steps", 20, "test", {}, None) == every
    assert setup_hash("vae", "ring8", "steps", 20, "test", {}, {"metrics": ["parzen"], "skip_metrics": []}) != every
    command = reproduce_command("test", "vae", "ring8", "20steps", 1, "test", None,
                                {"metrics": ["modes", "parzen"], "skip_metrics": []})
    assert command.endswith("--profile test --metrics modes,parzen")
    command = reproduce_command("test", "vae", "ring8", "20steps", 1, "test", None,
                                {"metrics": None, "skip_metrics": ["ais"]})
    assert command.endswith("--skip-metrics ais")
