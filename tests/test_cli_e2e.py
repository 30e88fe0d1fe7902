"""End to end: `genbench run` with a tiny budget writes records, leaderboards, sample grids."""

import json

import pandas as pd
import pytest

from genbench.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    code = main(["run", "--model", "vae", "--model", "gan", "--model", "planar-flow", "--dataset", "digits",
                 "--dataset", "ring8", "--budget", "10steps", "--seeds", "2", "--profile", "test",
                 "--runs-dir", str(runs)])
    assert code == 0
    return runs / "test"


def test_records_for_every_trial(run_dir):
    records = [json.loads(p.read_text()) for p in (run_dir / "trials").glob("*.json")]
    trials = [r for r in records if r["status"] != "reference"]
    assert len(trials) == 3 * 2 * 2
    for r in trials:
        assert r["status"] == "ok", r.get("reason")
        assert r["used"]["steps"] == 10 and r["used"]["flops"] > 0 and r["used"]["seconds"] > 0
        assert r["budget"] == {"kind": "steps", "amount": 10.0, "text": "10steps"}
        assert r["config"] and r["config_hash"] and r["versions"]["torch"]
        assert (run_dir / r["samples"]).exists()
    assert any(r["status"] == "reference" and r["dataset"] == "digits" for r in records)


def test_leaderboard_csv_columns(run_dir):
    df = pd.read_csv(run_dir / "leaderboard-digits.csv")
    for col in ("model", "family", "budget_kind", "budget_amount", "used_seconds", "used_steps", "used_flops",
                "device", "seeds", "status", "fid", "fid_ci95", "is", "kid", "precision", "recall", "estimators",
                "extractor", "genbench_version", "torch_version", "empty_cells", "notes", "marks", "warnings"):
        assert col in df.columns, col
    rows = df.set_index("model")
    assert set(rows.index) == {"vae", "gan", "planar-flow", "real-heldout"}
    assert rows.loc["vae", "seeds"] == "2/2"
    assert pd.notna(rows.loc["vae", "elbo"]) and pd.notna(rows.loc["vae", "iwae"])
    assert pd.notna(rows.loc["planar-flow", "nll"]) and pd.notna(rows.loc["planar-flow", "bpd"])
    assert pd.isna(rows.loc["gan", "nll"])
    assert "exact_likelihood: needs log_likelihood" in rows.loc["gan", "empty_cells"]
    # the floor: held-out real data scores a far lower FID than two-seed, 10-step models
    assert rows.loc["real-heldout", "fid"] < rows.loc["vae", "fid"]
    ring = pd.read_csv(run_dir / "leaderboard-ring8.csv").set_index("model")
    assert {"modes", "hq_pct", "mode_kl"} <= set(ring.columns)
    trials = pd.read_csv(run_dir / "trials.csv")
    assert len(trials[trials["model"] == "gan"]) == 4  # every seed kept


def test_rerun_skips_finished_trials_and_leaderboard_command(run_dir, capsys):
    before = sorted(p.stat().st_mtime_ns for p in (run_dir / "trials").glob("*.json"))
    code = main(["run", "--model", "vae", "--dataset", "digits", "--budget", "10steps", "--seeds", "2",
                 "--profile", "test", "--runs-dir", str(run_dir.parent)])
    assert code == 0
    after = sorted(p.stat().st_mtime_ns for p in (run_dir / "trials").glob("*.json"))
    assert before == after
    capsys.readouterr()
    assert main(["leaderboard", "--suite", "test", "--runs-dir", str(run_dir.parent)]) == 0
    out = capsys.readouterr().out
    assert "genbench leaderboard: digits" in out and "planar-flow" in out and "real-heldout" in out
    # the caption says how bold is decided and what the marks mean; steps are whole numbers
    assert "Welch's t-test" in out and "†" in out and "notes" in out
    assert "10.0 " not in out


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["run", "--model", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().out
    assert main(["run", "--model", "vae", "--budget", "lots", "--runs-dir", str(tmp_path)]) == 2
    assert "accepted forms" in capsys.readouterr().out
    assert main(["leaderboard", "--suite", "none", "--runs-dir", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().out
