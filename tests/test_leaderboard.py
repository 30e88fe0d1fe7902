"""Leaderboard aggregation over seeds: intervals, gaps and mixed protocols are made visible."""

import math

import pytest

from genbench.results import ci95, leaderboard


def record(seed, nll, status="ok", config=None, finished="2026-01-01T00:00:00", errors=None):
    return {"model": "m", "family": "F", "dataset": "d", "seed": seed, "status": status,
            "reason": None if status == "ok" else "boom", "budget": {"kind": "steps", "amount": 10, "text": "10steps"},
            "used": {"seconds": 1.0, "steps": 10, "flops": 5.0}, "metrics": {} if nll is None else {"nll": nll},
            "metric_errors": errors or {}, "config": config if config is not None else {"a": 1},
            "profile": "quick", "finished": finished, "versions": {"genbench": "x", "torch": "y"}}


def test_mean_and_student_t_interval():
    mean, half = ci95([10.0, 12.0, 14.0])
    assert mean == 12.0
    assert half == pytest.approx(4.302653 * 2.0 / math.sqrt(3), rel=1e-6)
    assert math.isnan(ci95([3.0])[1])


def test_missing_values_and_failed_seeds_are_reported():
    recs = [record(0, 10.0), record(1, 12.0), record(2, None, errors={"exact_likelihood": "ValueError: x"}),
            record(3, None, status="failed", config={})]
    row = leaderboard(recs, "d").iloc[0]
    assert row["seeds"] == "3/4" and row["status"] == "partial"
    assert row["nll"] == 11.0
    assert "nll: 2/3 seeds" in row["notes"] and "exact_likelihood failed (seed 2)" in row["notes"]
    assert "seed 3: boom" in row["reason"]


def test_old_configs_are_not_pooled_with_new_ones():
    recs = [record(0, 10.0, config={"a": 1}, finished="2026-01-01"),
            record(0, 99.0, config={"a": 2}, finished="2026-02-01"),
            record(1, 97.0, config={"a": 2}, finished="2026-02-01")]
    row = leaderboard(recs, "d").iloc[0]
    assert row["nll"] == 98.0 and row["seeds"] == "2/2"
    assert "1 older trial(s)" in row["notes"]
