"""Leaderboard aggregation over seeds: intervals, gaps and mixed protocols are made visible."""

import math

import pytest

from genbench.manager import PluginManager
from genbench.ranking import metric_directions
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


# ----------------------------------------------------------------------------- the terminal table

# every column the terminal table shows, with a scale per column so that the cells come out in many
# widths ("0.07123 ± 0.0031", "1203 ± 41", "-389.6 ± 12")
WIDE = {"fid": 900.0, "precision": 0.07, "recall": 0.4, "density": 0.6, "coverage": 0.02, "authenticity": 0.95,
        "kid": 1500.0, "is": 3.9, "bpd": 3.58, "iwae_bpd": 3.87, "ais_bpd": 3.9, "nll": -22.36, "elbo": -1.39,
        "iwae": 9.53, "ais": -389.6, "inference_gap": 10.92}


def wide_records():
    from genbench.results import RECORD_SCHEMA

    recs = []
    for m, model in enumerate(["vae", "importance-weighted-autoencoder", "realnvp", "gan"]):
        for seed in range(3):
            metrics = {k: v * (1 + 0.3 * m) * (1 + 0.013 * seed * (m + 1)) for k, v in WIDE.items()}
            recs.append({"schema": RECORD_SCHEMA, "suite": "s", "dataset": "digits", "model": model, "family": "F",
                         "seed": seed, "status": "ok", "reason": None, "profile": "test", "config": {"a": 1},
                         "config_hash": f"{model}-h", "budget": {"kind": "steps", "amount": 10.0, "text": "10steps"},
                         "used": {"seconds": 1.0, "steps": 10, "flops": 5.0}, "metrics": metrics,
                         "metric_errors": {}, "marks": {}, "warnings": [], "trial_id": f"digits-{model}-{seed}",
                         "finished": f"2026-01-0{seed + 1}T00:00:00", "versions": {"genbench": "x", "torch": "y"},
                         "device": "cpu"})
    return recs


def table_cells(text: str) -> set[str]:
    return {cell.strip() for line in text.splitlines() for cell in line.split("│")[1:-1]}


def test_a_100_column_screen_shows_every_column_and_every_number_whole():
    import io

    from rich.cells import cell_len
    from rich.console import Console

    from genbench.cli import _fmt, show_leaderboard, terminal_columns

    recs = wide_records()
    buf = io.StringIO()
    show_leaderboard(Console(width=100, file=buf), recs)
    out = buf.getvalue()
    assert max(cell_len(line) for line in out.splitlines()) <= 100
    assert "…" not in out
    df = leaderboard(recs, "digits")
    shown = terminal_columns(list(WIDE), metric_directions(PluginManager()))
    assert set(shown) == set(WIDE)  # no column is dropped for want of room
    headers = {cell.strip() for line in out.splitlines() if line.startswith("┃") for cell in line.split("┃")[1:-1]}
    assert set(shown) <= headers
    cells = table_cells(out)
    expected = {_fmt(row[c], row[f"{c}_ci95"]) for _, row in df.iterrows() for c in shown}
    assert " ± " in next(iter(expected)) and expected <= cells
    # the columns that do not fit go on in further tables, each with the model names again
    assert "genbench leaderboard: digits (continued, 2/" in out
    assert sum(line.count("importance-weighted-autoencoder") for line in out.splitlines()) >= 2


def test_piped_output_follows_columns_and_is_capped_without_it(tmp_path, monkeypatch, capsys):
    import json

    from rich.cells import cell_len

    from genbench.cli import PIPE_WIDTH, main

    trials = tmp_path / "s" / "trials"
    trials.mkdir(parents=True)
    for rec in wide_records():
        (trials / f"{rec['trial_id']}.json").write_text(json.dumps(rec))
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["leaderboard", "--runs-dir", str(tmp_path), "--suite", "s"]) == 0
    widths = [cell_len(line) for line in capsys.readouterr().out.splitlines()]
    assert max(widths) <= 100 and max(widths) >= 90
    monkeypatch.delenv("COLUMNS")
    assert main(["leaderboard", "--runs-dir", str(tmp_path), "--suite", "s"]) == 0
    widths = [cell_len(line) for line in capsys.readouterr().out.splitlines()]
    assert 100 < max(widths) <= PIPE_WIDTH
