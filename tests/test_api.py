"""The Python API (`genbench.api`), used as a notebook user would."""

import json
import math

import pandas as pd
import pytest

from genbench import api
from genbench.errors import GenbenchError, UnknownNameError


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("api-runs")


@pytest.fixture(scope="module")
def frame(runs):
    return api.run(models=["vae"], datasets=["ring8"], budget="20steps", profile="test", runs_dir=runs,
                   executor="inline", quiet=True)


def test_run_returns_one_row_per_trial_with_its_metrics(frame, runs):
    assert isinstance(frame, pd.DataFrame) and len(frame) == 1
    assert list(frame.columns[:6]) == ["model", "dataset", "seed", "budget", "status", "reason"]
    row = frame.iloc[0]
    assert (row["model"], row["dataset"], row["seed"], row["budget"], row["status"]) == \
        ("vae", "ring8", 0, "20steps", "ok")
    for column in ("elbo", "iwae", "ais", "parzen", "mode_kl", "agg_mmd"):
        assert math.isfinite(row[column]), column
        assert frame[column].dtype == float
    # the row is the stored record, flattened
    (path,) = (runs / "test" / "trials").glob("*.json")
    stored = json.loads(path.read_text())
    assert row["trial_id"] == stored["trial_id"] and row["elbo"] == stored["metrics"]["elbo"]


def test_a_second_call_reuses_the_finished_trial_and_returns_records(frame, runs):
    before = [p.stat().st_mtime_ns for p in (runs / "test" / "trials").glob("*.json")]
    records = api.run(models="vae", datasets="ring8", budget="20steps", profile="test", runs_dir=runs,
                      executor="inline", as_frame=False, quiet=True)
    assert [p.stat().st_mtime_ns for p in (runs / "test" / "trials").glob("*.json")] == before
    assert isinstance(records, list) and len(records) == 1
    assert records[0]["trial_id"] == frame.iloc[0]["trial_id"]
    assert records[0]["metrics"]["elbo"] == frame.iloc[0]["elbo"]


def test_leaderboard_has_the_vae_row(frame, runs):
    boards = api.leaderboard(runs_dir=runs, suite="test")
    assert set(boards) == {"ring8"}
    board = api.leaderboard(runs_dir=runs, suite="test", dataset="ring8")
    assert list(board["model"]) == ["vae"]
    vae = board.set_index("model").loc["vae"]
    assert vae["seeds"] == "1/1" and vae["status"] == "ok"
    assert vae["elbo"] == pytest.approx(frame.iloc[0]["elbo"])
    pd.testing.assert_frame_equal(boards["ring8"], board)


def test_config_and_metric_selection(tmp_path):
    df = api.run(models=["vae"], datasets=["ring8"], budget="20steps", profile="test", runs_dir=tmp_path,
                 executor="inline", config={"vae": {"latent_dim": 3}}, metrics=["parzen"], quiet=True)
    (record,) = api.run(models=["vae"], datasets=["ring8"], budget="20steps", profile="test", runs_dir=tmp_path,
                        executor="inline", config={"vae": {"latent_dim": 3}}, metrics="parzen", as_frame=False,
                        quiet=True)
    assert record["config"]["latent_dim"] == 3
    assert record["metric_selection"] == {"metrics": ["parzen"], "skip_metrics": []}
    assert record["not_applicable"]["posterior_gaps"] == "not selected by --metrics"
    assert math.isfinite(df.iloc[0]["parzen"]) and "elbo" not in df.columns


@pytest.mark.parametrize("kwargs, words", [
    ({"models": []}, "name at least one model"),
    ({"models": ["nope"]}, "unknown model 'nope'"),
    ({"models": ["vae"], "datasets": ["nope"]}, "unknown dataset 'nope'"),
    ({"models": ["vae"], "budget": "lots"}, "accepted forms"),
    ({"models": ["vae"], "seeds": 0}, "seeds must be a whole number"),
    ({"models": ["vae"], "profile": "fast"}, "unknown profile 'fast'"),
    ({"models": ["vae"], "config": {"vae": {"no_such_field": 1}}}, "no_such_field"),
    ({"models": ["vae"], "config": ["latent_dim", 3]}, "config must be a dict"),
    ({"models": ["vae"], "metrics": ["fdi"]}, "unknown metric 'fdi'"),
    ({"models": ["vae"], "executor": "threads"}, "unknown executor 'threads'"),
    ({"models": [3]}, "models must be a name or a list of names"),
])
def test_bad_arguments_raise_one_clear_line(tmp_path, kwargs, words):
    with pytest.raises(GenbenchError) as err:
        api.run(**{"datasets": ["ring8"], "executor": "inline", **kwargs}, runs_dir=tmp_path, quiet=True)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "quick").exists() and not (tmp_path / "test").exists()  # nothing ran


def test_leaderboard_errors(frame, runs, tmp_path):
    with pytest.raises(GenbenchError, match="no results for suite 'quick'"):
        api.leaderboard(runs_dir=tmp_path)
    with pytest.raises(UnknownNameError, match="datasets with results: ring8"):
        api.leaderboard(runs_dir=runs, suite="test", dataset="digits")


def test_the_api_is_genbench_run_and_genbench_leaderboard():
    import genbench

    assert genbench.run is api.run and genbench.leaderboard is api.leaderboard
    assert {"run", "leaderboard"} <= set(genbench.__all__)
