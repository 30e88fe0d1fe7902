"""The reproduction suite: the shipped claims file is complete and valid, figures and verdicts follow
the entry's rule (relative to another model paired by seed, minus another column), the stability table
calls a one-good-seed-in-three row unstable, and the published table and CLI say so."""

import math
import textwrap
from pathlib import Path

import pytest

from genbench.cli import main
from genbench.errors import GenbenchError
from genbench.repro import (
    CLAIMS_CSV,
    STABILITY_CSV,
    Claim,
    claim_row,
    load_claims,
    plan_repro_trials,
    render_suite,
    stability,
)

BASE = dict(model="a", dataset="d", budget="10steps", seeds=3, metric="m", direction="higher", match=1.0,
            close=0.0, claim="c", source="s", protocol="p")


def row(model, seed, status="ok", **metrics):
    return {"model": model, "dataset": "d", "budget_kind": "steps", "budget_amount": 10.0, "seed": seed,
            "status": status, "config": {}, "reason": "boom" if status == "failed" else "", **metrics}


def test_every_family_has_a_valid_claim_on_a_dataset_it_applies_to(manager):
    claims = load_claims()
    families = {manager.models.get(n).family for n in manager.models}
    covered = {manager.models.get(c.model).family for c in claims}
    assert families <= covered, f"families without a reproduction entry: {sorted(families - covered)}"
    trials = plan_repro_trials(manager, claims)  # every model applies to its dataset, configs are valid
    keys = [(t.model, t.dataset, t.seed, t.budget.text) for t in trials]
    assert len(keys) == len(set(keys)), "a shared baseline (e.g. the VAE) must be trained once per seed"
    for c in claims:
        assert c.claim and c.source and c.protocol
        if c.paper is not None:
            assert math.isfinite(c.paper)
        if c.relative_to:
            assert any(k[0] == c.relative_to and k[1] == c.dataset for k in keys)


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "unknown keys"),
    ({"direction": "up"}, "direction"),
    ({"seeds": 0}, "seeds"),
    ({"match": "high"}, "match"),
    ({"budget": "fast"}, "budget"),
    ({"close": 2.0}, "easier to reach"),
])
def test_bad_entries_name_the_entry_and_the_key(tmp_path, change, message):
    entry = {**BASE, **change}
    lines = ["[[entry]]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in entry.items()]
    path = tmp_path / "r.toml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(GenbenchError, match=message) as info:
        load_claims(path)
    assert "entry 1" in str(info.value)


def test_missing_keys_and_a_second_config_of_one_row_are_refused(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[entry]]\nmodel = "vae"\n')
    with pytest.raises(GenbenchError, match="missing"):
        load_claims(path)
    one = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in BASE.items())
    path.write_text(f"[[entry]]\n{one}\nconfig = {{ lr = 0.1 }}\n[[entry]]\n{one}\nconfig = {{ lr = 0.2 }}\n")
    with pytest.raises(GenbenchError, match="another config"):
        load_claims(path)


def test_verdicts_follow_the_thresholds_in_the_entry_direction():
    up = Claim(**BASE)
    assert [up.verdict(v) for v in (1.5, 1.0, 0.5, -0.1)] == ["matches", "matches", "close", "does not"]
    down = Claim(**{**BASE, "direction": "lower", "match": -1.0, "close": 0.0})
    assert [down.verdict(v) for v in (-2.0, -0.5, 0.3)] == ["matches", "close", "does not"]


def test_relative_figure_is_paired_by_seed_and_minus_subtracts_a_column():
    rows = [row("a", 0, m=5.0), row("a", 1, m=6.0), row("a", 2, m=9.0),
            row("b", 0, m=4.0), row("b", 1, m=4.0), row("b", 2, m=4.0)]
    rel = claim_row(Claim(**BASE, relative_to="b"), rows)
    assert rel["genbench"] == pytest.approx((1 + 2 + 5) / 3)
    assert rel["seeds"] == "3/3" and rel["seeds_matching"] == 3 and rel["verdict"] == "matches"
    rows = [row("a", s, m=1.0, n=3.0) for s in range(3)]
    minus = claim_row(Claim(**BASE, minus="n"), rows)
    assert minus["genbench"] == pytest.approx(-2.0) and minus["verdict"] == "does not"
    assert "matches needs >= 1" in minus["reason"]


def test_failed_and_missing_seeds_are_named_and_nothing_run_is_not_a_verdict():
    rows = [row("a", 0, m=2.0), row("a", 1, status="failed")]
    out = claim_row(Claim(**BASE), rows)
    assert out["seeds"] == "1/3" and out["verdict"] == "matches"
    assert "seed 1: boom" in out["reason"] and "seed 2: not run" in out["reason"]
    assert math.isnan(out["genbench_ci95"] or math.nan)
    none = claim_row(Claim(**BASE), [])
    assert none["verdict"] == "not run" and none["genbench"] is None
    # a row of another config is not this entry's
    other = [dict(row("a", s, m=2.0), config={"lr": 0.5}) for s in range(3)]
    assert claim_row(Claim(**BASE, config={"lr": 0.1}), other)["verdict"] == "not run"


def test_stability_calls_one_good_seed_in_three_unstable():
    rows = [row("good", s, fid=v) for s, v in enumerate((30.0, 34.0, 40.0))]
    rows += [row("flaky", s, fid=v) for s, v in enumerate((35.0, 300.0, 500.0))]
    rows += [row("broken", 0, fid=50.0), row("broken", 1, status="failed"), row("broken", 2, fid=55.0)]
    rows += [row("precise", s, fid=v) for s, v in enumerate((0.5, 1.5, 1.0))]  # 3x apart, but by 1 FID
    table = {t["model"]: t for t in stability(rows)}
    assert table["precise"]["verdict"] == "stable"
    assert table["good"]["verdict"] == "stable" and table["good"]["median"] == 34.0
    assert table["flaky"]["verdict"] == "unstable" and table["flaky"]["worst_over_best"] == pytest.approx(500 / 35)
    assert table["broken"]["verdict"] == "unstable" and table["broken"]["failed_seeds"] == 1
    assert table["broken"]["per_seed"] == "50 / failed / 55"


def test_render_writes_the_claims_and_stability_tables(tmp_path):
    suite_dir = tmp_path / "repro"
    suite_dir.mkdir()
    written = {}

    def write(path: Path, text: str) -> None:
        written[path.name] = text
        path.write_text(text)

    rows = [dict(row("a", s, m=v, fid=v * 10), family="Fam A", budget="10steps") for s, v in enumerate((2, 3, 4))]
    claims = [Claim(**BASE), Claim(**{**BASE, "model": "zzz", "match": 0.5})]
    lines, files = render_suite(tmp_path, suite_dir, rows, write, claims=claims)
    text = "\n".join(lines)
    assert CLAIMS_CSV in written and STABILITY_CSV in written
    assert "**matches**" in text and "**not run**" in text and "Verdicts: 1 matches, 1 not run" in text
    assert (suite_dir / "plots" / "stability.png").stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(suite_dir / CLAIMS_CSV)
    assert list(table["verdict"]) == ["matches", "not run"] and table.loc[0, "genbench"] == pytest.approx(3.0)


def test_cli_refuses_a_budget_for_the_reproduction_suite(tmp_path, capsys):
    code = main(["run", "--suite", "repro", "--budget", "10s", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr()
    assert code != 0 and "own budget" in (err.out + err.err)
    assert "Traceback" not in err.out + err.err


def test_a_minimal_entry_parses(tmp_path):
    text = textwrap.dedent("""
        [[entry]]
        model = "gan"
        dataset = "ring8"
        budget = "90s"
        seeds = 3
        metric = "hq_pct"
        direction = "higher"
        paper = 98.2
        match = 80.0
        close = 30.0
        claim = "c"
        source = "s"
        protocol = "p"
    """)
    path = tmp_path / "r.toml"
    path.write_text(text)
    (claim,) = load_claims(path)
    assert claim.paper == 98.2 and claim.figure_text == "hq_pct" and claim.seeds == 3
