"""`genbench publish`: what the CSVs hold (provenance included), that pandas reads them back to the
same numbers, that publishing twice changes no byte, how new runs merge into published ones, that
plugin text cannot run as a spreadsheet formula, the rendered README and the budget curves.

The records come from real `genbench run` calls (tiny step budgets, the `test` profile, ring8 so no
feature extractor has to be trained); merge and escaping cases derive new records from them."""

import csv
import json
import re
import shlex
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import torch

import genbench
from genbench.cli import _parser, main
from genbench.errors import GenbenchError
from genbench.publish import publish
from genbench.publish.render import best_values, bold_rows, seed_values
from genbench.publish.rows import merge_trials, split_extractor
from genbench.publish.table import BOOL, FLOAT, FORMULA_START, INT, TEXT, format_cell, parse_cell, unescape_text
from genbench.ranking import metric_directions
from genbench.results import git_commit, load_records

SUITE = "test"  # the suite name `genbench run --profile test` uses


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    common = ["--dataset", "ring8", "--profile", "test", "--runs-dir", str(runs), "--executor", "inline"]
    assert main(["run", "--model", "vae", "--budgets", "2steps,4steps", *common]) == 0
    assert main(["run", "--model", "gan", "--budget", "4steps", *common]) == 0
    # a second seed for one row, so it has a 95% interval (seed 0 is finished and skipped)
    assert main(["run", "--model", "vae", "--budget", "4steps", "--seeds", "2", *common]) == 0
    return runs


@pytest.fixture(scope="module")
def published(runs, manager, tmp_path_factory):
    out = tmp_path_factory.mktemp("leaderboards")
    return publish(runs, out, manager=manager), out


def records(runs):
    return [r for r in load_records(runs, SUITE) if r["status"] != "reference"]


def find(recs, model, steps, seed=0):
    return next(r for r in recs if r["model"] == model and r["budget"]["amount"] == steps and r["seed"] == seed)


def derive(rec, runs, runs_dir, trial_id, **changes):
    """A copy of a real record (from the folder ``runs``) with ``changes``, written with its sample
    grid into ``runs_dir`` the way `genbench run` writes them."""
    new = json.loads(json.dumps(rec))
    new.update(changes, trial_id=trial_id)
    suite_dir = Path(runs_dir) / SUITE
    (suite_dir / "trials").mkdir(parents=True, exist_ok=True)
    if new.get("samples"):
        new["samples"] = f"samples/{trial_id}.png"
        (suite_dir / "samples").mkdir(exist_ok=True)
        shutil.copyfile(Path(runs) / SUITE / rec["samples"], suite_dir / new["samples"])
    (suite_dir / "trials" / f"{trial_id}.json").write_text(json.dumps(new))
    return new


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def csv_lines(path: Path) -> dict[tuple, str]:
    """Data lines of a leaderboard CSV by (model, budget)."""
    text = path.read_text().splitlines()
    header = next(csv.reader([text[0]]))
    out = {}
    for line in text[1:]:
        cells = dict(zip(header, next(csv.reader([line]))))
        out[(unescape_text(cells["model"]), cells["budget"])] = line
    return out


# ----------------------------------------------------------------------------- run --budgets


def test_run_with_budgets_runs_every_trial_at_each_budget(runs):
    recs = records(runs)
    got = sorted((r["model"], r["budget"]["text"], r["seed"]) for r in recs)
    assert got == [("gan", "4steps", 0), ("vae", "2steps", 0), ("vae", "4steps", 0), ("vae", "4steps", 1)]
    assert all(r["status"] == "ok" and r["used"]["steps"] == r["budget"]["amount"] for r in recs)
    assert all(r["versions"]["git_commit"] == git_commit() for r in recs)


def test_budget_and_budgets_together_is_an_error(tmp_path):
    code = main(["run", "--model", "vae", "--dataset", "ring8", "--budget", "2steps", "--budgets", "2steps,4steps",
                 "--profile", "test", "--runs-dir", str(tmp_path)])
    assert code == 2 and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- contents


BOARD_COLUMNS = ("suite", "dataset", "model", "family", "budget", "budget_kind", "budget_amount", "status", "seeds",
                 "seeds_ok", "used_seconds", "used_steps", "used_flops", "modes", "modes_ci95", "hq_pct",
                 "hq_pct_ci95", "mode_kl", "mode_kl_ci95", "iwae", "iwae_ci95", "notes", "marks", "warnings", "reason",
                 "empty_cells", "profile",
                 "estimators", "extractor", "extractor_weights", "config_hash", "config", "device",
                 "genbench_version", "torch_version", "torch_fidelity_version", "python_version", "git_commit",
                 "date", "command", "samples")


def test_leaderboard_csv_has_every_column_and_the_provenance_of_each_row(published, runs):
    _, out = published
    df = pd.read_csv(out / SUITE / "ring8.csv", keep_default_na=False, na_values=[""])
    for col in BOARD_COLUMNS:
        assert col in df.columns, col
    assert sorted(zip(df["model"], df["budget"])) == [("gan", "4steps"), ("vae", "2steps"), ("vae", "4steps")]
    recs = records(runs)
    row = df[(df["model"] == "vae") & (df["budget"] == "4steps")].iloc[0]
    seeds = [find(recs, "vae", 4.0, 0), find(recs, "vae", 4.0, 1)]
    assert (row["status"], row["seeds"], row["seeds_ok"]) == ("ok", 2, 2)
    assert (row["budget_kind"], row["budget_amount"], row["used_steps"]) == ("steps", 4.0, 4.0)
    hq = [r["metrics"]["hq_pct"] for r in seeds]
    assert row["hq_pct"] == pytest.approx(np.mean(hq), rel=1e-12)
    # the half-width of a two-seed Student-t interval: t(0.975, 1) * sd / sqrt(2) = 12.706 * |a - b| / 2
    assert row["hq_pct_ci95"] == pytest.approx(12.7062047 * abs(hq[0] - hq[1]) / 2, rel=1e-6)
    assert row["used_seconds"] == pytest.approx(np.mean([r["used"]["seconds"] for r in seeds]), rel=1e-12)
    assert row["git_commit"] == git_commit()
    assert (row["genbench_version"], row["torch_version"]) == (genbench.__version__, torch.__version__)
    assert row["device"] == seeds[0]["device"] and row["profile"] == "test"
    assert json.loads(row["estimators"]) == seeds[0]["estimators"]  # settings and sample counts, per metric
    assert json.loads(row["config"]) == seeds[0]["config"]
    assert row["date"] == max(r["finished"] for r in seeds)
    # a step count is a whole number in the file, not a mean such as 782.667
    lines = (out / SUITE / "ring8.csv").read_text().splitlines()
    assert all(re.fullmatch(r"\d*", line.split(",")[11]) for line in lines[1:])
    single = df[(df["model"] == "gan") & (df["budget"] == "4steps")].iloc[0]
    assert single["seeds"] == 1 and np.isnan(single["hq_pct_ci95"])  # no interval from one seed


def test_command_of_each_row_reproduces_it(published):
    result, _ = published
    for row in result.boards[(SUITE, "ring8")].rows:
        args = _parser().parse_args(shlex.split(row["command"].split("  #")[0])[1:])
        assert args.command == "run" and args.model == [row["model"]] and args.dataset == ["ring8"]
        assert args.budget == row["budget"] and args.seeds == row["seeds"] and args.profile == row["profile"]
        assert args.suite is None  # the suite is the profile's: no --suite needed


def test_trials_csv_keeps_every_seed_with_its_exact_values(published, runs):
    _, out = published
    df = pd.read_csv(out / SUITE / "ring8-trials.csv")
    recs = records(runs)
    assert len(df) == len(recs) and df["trial_id"].is_unique
    for rec in recs:
        row = df[df["trial_id"] == rec["trial_id"]].iloc[0]
        assert (row["model"], row["seed"], row["used_steps"]) == (rec["model"], rec["seed"], rec["used"]["steps"])
        assert row["trial_key"] == rec["config_hash"]
        for name, value in rec["metrics"].items():
            # exact: floats are written in a form that reads back exactly; a non-finite value is an empty cell
            assert row[name] == value or (value is None and pd.isna(row[name])), name
    # every seed of a row shares its config hash; rows differ
    hashes = df.groupby(["model", "budget"])["config_hash"].nunique()
    assert (hashes == 1).all() and df.groupby(["model", "budget"])["config_hash"].first().is_unique


# ----------------------------------------------------------------------------- reading back


def test_pandas_reads_every_csv_back_to_the_same_numbers(published):
    result, out = published
    tables = [(out / SUITE / "ring8.csv", result.boards[(SUITE, "ring8")]),
              (out / SUITE / "ring8-trials.csv", result.trials[(SUITE, "ring8")])]
    for path, table in tables:
        text_cols = [c for c in table.columns if table.types[c] == TEXT]
        df = pd.read_csv(path, dtype={c: str for c in text_cols}, keep_default_na=False, na_values={
            c: [""] for c in table.columns if c not in text_cols})
        mem = table.frame()
        assert list(df.columns) == table.columns
        for col in table.columns:
            kind = table.types[col]
            if kind in (FLOAT, INT):
                np.testing.assert_allclose(df[col].astype(float), mem[col].astype(float), rtol=1e-15,
                                           equal_nan=True, err_msg=col)
            elif kind == BOOL:
                assert list(df[col]) == list(mem[col]), col
            else:
                assert [unescape_text(v) for v in df[col]] == [v or "" for v in mem[col]], col


def test_cells_round_trip_and_numbers_are_never_text():
    for value in (0.1 + 0.2, -1.5, 1e-300, 12345678.123456789, -0.0, 7.0):
        cell = format_cell(value, FLOAT)
        assert not cell.startswith("'") and parse_cell(cell, FLOAT, "here") == value
    assert format_cell(float("nan"), FLOAT) == "" and parse_cell("", FLOAT, "here") is None
    assert format_cell(-3, INT) == "-3" and format_cell(False, BOOL) == "false"
    for text in ("=1+2", "+1", "-1.5", "@SUM(A1)", "\tx", "\rx", "'quoted", "plain", ""):
        cell = format_cell(text, TEXT)
        assert cell.startswith("'") == (text[:1] in FORMULA_START and text != "")
        assert parse_cell(cell, TEXT, "here") == text
    with pytest.raises(GenbenchError, match="not a float"):
        parse_cell("abc", FLOAT, "file.csv, line 2, column fid")


# ----------------------------------------------------------------------------- determinism and merging


def test_publishing_twice_changes_no_byte(runs, manager, tmp_path):
    publish(runs, tmp_path / "a", manager=manager)
    first = snapshot(tmp_path / "a")
    publish(runs, tmp_path / "a", manager=manager)
    assert snapshot(tmp_path / "a") == first
    publish(runs, tmp_path / "b", manager=manager)  # and a fresh folder gets the same bytes
    assert snapshot(tmp_path / "b") == first
    assert any(name.endswith(".png") and "/plots/" in name for name in first)


def test_new_config_replaces_its_row_a_new_budget_adds_one_and_the_rest_is_kept(runs, manager, tmp_path):
    out = tmp_path / "out"
    publish(runs, out, manager=manager)
    before = csv_lines(out / SUITE / "ring8.csv")

    # a second runs folder: the old vae@4steps records (as a re-run would leave them) and newer ones
    # with a changed config, plus vae at a budget not published yet
    runs2 = tmp_path / "runs2"
    recs = records(runs)
    changed = []
    for seed, hq in ((0, 0.125), (1, 0.375)):
        old = find(recs, "vae", 4.0, seed)
        derive(old, runs, runs2, old["trial_id"])
        config = dict(old["config"], hidden=old["config"]["hidden"] + 1)
        changed.append(derive(old, runs, runs2, f"vae--ring8--4steps--seed{seed}--new", config=config,
                              metrics=dict(old["metrics"], hq_pct=hq), finished="2100-01-01T00:00:00+00:00"))
    vae = find(recs, "vae", 4.0)
    derive(vae, runs, runs2, "vae--ring8--8steps--seed0--new", used=dict(vae["used"], steps=8),
           budget={"kind": "steps", "amount": 8.0, "text": "8steps"})
    result = publish(runs2, out, manager=manager)

    after = csv_lines(out / SUITE / "ring8.csv")
    assert sorted(after) == sorted([*before, ("vae", "8steps")])  # one row per (model, budget): none twice
    for key in (("gan", "4steps"), ("vae", "2steps")):
        assert after[key] == before[key]  # untouched rows are kept byte for byte
    board = {(r["model"], r["budget"]): r for r in result.boards[(SUITE, "ring8")].rows}
    new_row = board[("vae", "4steps")]
    assert new_row["hq_pct"] == 0.25 and new_row["seeds"] == 2
    assert json.loads(new_row["config"]) == changed[0]["config"]
    trials = pd.read_csv(out / SUITE / "ring8-trials.csv")
    replaced = trials[(trials["model"] == "vae") & (trials["budget"] == "4steps")]
    assert sorted(replaced["trial_id"]) == [c["trial_id"] for c in changed]  # the old config's trials are gone
    assert board[("vae", "8steps")]["used_steps"] == 8


def test_more_seeds_of_the_same_config_join_the_published_row(runs, manager, tmp_path):
    out = tmp_path / "out"
    publish(runs, out, manager=manager)
    gan = find(records(runs), "gan", 4.0)
    runs2 = tmp_path / "runs2"
    derive(gan, runs, runs2, "gan--ring8--4steps--seed1--more", seed=1, metrics=dict(gan["metrics"], hq_pct=0.5))
    result = publish(runs2, out, manager=manager)
    row = next(r for r in result.boards[(SUITE, "ring8")].rows if (r["model"], r["budget"]) == ("gan", "4steps"))
    assert (row["seeds"], row["seeds_ok"]) == (2, 2)
    assert row["hq_pct"] == pytest.approx((gan["metrics"]["hq_pct"] + 0.5) / 2)
    assert "--seeds 2" in row["command"]
    merged = snapshot(out)
    publish(runs2, out, manager=manager)  # a row joined from two sources is just as stable
    assert snapshot(out) == merged


def test_a_crashed_trial_of_unknown_config_replaces_only_its_own_seed():
    def row(seed, status, config_hash, config):
        return {"model": "vae", "budget_kind": "steps", "budget_amount": 4.0, "seed": seed, "status": status,
                "config_hash": config_hash, "config": config}

    published = [row(0, "ok", "aaa", '{"hidden": 4}'), row(1, "ok", "aaa", '{"hidden": 4}')]
    crashed = row(1, "failed", "zzz", "")  # a worker that died records no config
    merged = merge_trials(published, [crashed])
    assert sorted((r["seed"], r["status"], r["config_hash"]) for r in merged) == [(0, "ok", "aaa"),
                                                                                 (1, "ok", "aaa")]
    assert [r["status"] for r in merge_trials([row(1, "failed", "aaa", '{"hidden": 4}')], [crashed])] == ["failed"]
    changed = row(0, "ok", "bbb", '{"hidden": 8}')
    assert [r["seed"] for r in merge_trials(published, [changed])] == [0]  # a new config drops the old seeds


def test_a_damaged_published_csv_is_a_clear_error(runs, manager, tmp_path):
    out = tmp_path / "out"
    publish(runs, out, manager=manager)
    path = out / SUITE / "ring8-trials.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace(",", ",oops,", 1)]) + "\n")
    with pytest.raises(GenbenchError, match="ring8-trials.csv, line 2"):
        publish(runs, out, manager=manager)


# ----------------------------------------------------------------------------- escaping


EVIL = '=HYPERLINK("http://example.com","click")'


def test_plugin_text_is_escaped_so_spreadsheets_do_not_run_it(runs, manager, tmp_path):
    vae = find(records(runs), "vae", 2.0)
    runs2 = tmp_path / "runs2"
    metrics = dict(vae["metrics"], iwae=-12.5)
    derive(vae, runs, runs2, "evil--ring8--2steps--seed0", model=EVIL, family="+family", plugin="@plugin",
           metrics=metrics, extractor="domain-classifier-ring8-v2@0123456789ab")
    derive(vae, runs, runs2, "evil--ring8--2steps--seed1", model=EVIL, family="+family", plugin="@plugin", seed=1,
           status="failed", reason="-1+2 went wrong", metrics={}, samples=None)
    out = tmp_path / "out"
    publish(runs2, out, manager=manager)

    for path in (out / SUITE / "ring8.csv", out / SUITE / "ring8-trials.csv"):
        with open(path, newline="") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    if cell.startswith(FORMULA_START) and not cell.startswith("'"):
                        float(cell)  # only numbers may start with + or -
        df = pd.read_csv(path)
        assert set(df["model"]) == {"'" + EVIL} and set(df["family"]) == {"'+family"}
        assert unescape_text(df["model"].iloc[0]) == EVIL
        assert df["iwae"].dtype == float and -12.5 in set(df["iwae"])  # a negative number stays a number
    trials = pd.read_csv(out / SUITE / "ring8-trials.csv", keep_default_na=False)
    assert "'-1+2 went wrong" in set(trials["reason"])
    board = pd.read_csv(out / SUITE / "ring8.csv").iloc[0]
    assert board["status"] == "partial" and board["reason"] == "seed 1: -1+2 went wrong"
    assert (board["extractor"], board["extractor_weights"]) == ("domain-classifier-ring8-v2", "0123456789ab")
    readme = (out / "README.md").read_text()
    assert "=HYPERLINK(&quot;http" in readme  # shown as text: its quotes cannot close an HTML attribute
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in (out / SUITE / "samples").iterdir())


def test_split_extractor_names_and_weights():
    assert split_extractor("domain-classifier-digits-v2@72393df6ae3a; inception-v3-compat@0123") == (
        "domain-classifier-digits-v2; inception-v3-compat", "72393df6ae3a; 0123")
    assert split_extractor(None) == ("", "")


# ----------------------------------------------------------------------------- README and plots


def test_readme_has_tables_best_values_in_bold_and_links_that_exist(published, manager):
    result, out = published
    readme = (out / "README.md").read_text()
    assert "| model | family | status | seeds | steps |" in readme
    assert "### budget 2steps" in readme and "### budget 4steps" in readme
    targets = re.findall(r"\]\(([^)]+)\)", readme) + re.findall(r'src="([^"]+)"', readme)
    assert any(t.endswith("ring8.csv") for t in targets) and any("/samples/" in t for t in targets)
    assert any("/plots/" in t for t in targets)
    for target in targets:
        if not target.startswith("#"):
            assert (out / unquote(target)).is_file(), target

    # the bold cells of the 4steps table follow the ranking rules on the per-seed values: vae has two
    # seeds and gan one, so gan (untestable) is never bold and vae is bold wherever a column has a direction
    directions = metric_directions(manager)
    section = readme.split("### budget 4steps")[1].split("\n\n")[1]
    lines = section.splitlines()
    heads = [h.strip().split(" ")[0].replace("\\", "") for h in lines[0].strip("|").split("|")]
    rows = [r for r in result.boards[(SUITE, "ring8")].rows if r["budget"] == "4steps"]
    bold = bold_rows(rows, heads, directions, seed_values(result.trials[(SUITE, "ring8")].rows))
    assert any(bold.values()), "two models compete on at least one metric"
    seen = 0
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        model = cells[0].replace("\\", "").removeprefix("⚠ ")
        i = next(k for k, r in enumerate(rows) if r["model"] == model)
        for head, cell in zip(heads, cells):
            if head in bold:
                assert cell.startswith("**") == (i in bold[head]), (model, head, cell)
                seen += cell.startswith("**")
                if model == "gan":
                    assert not cell.startswith("**"), (head, cell)
    assert seen
    assert best_values(rows, ["hq_pct", "mode_kl_chance"], {"hq_pct": "higher", "mode_kl_chance": "higher"}).keys() \
        <= {"hq_pct"}  # a chance level is never "the best"


def test_budget_curves_are_drawn_where_there_are_two_budgets(published, runs, manager, tmp_path):
    result, out = published
    names = sorted(p.name for p in result.plots)
    assert "ring8-hq_pct-vs-steps.png" in names and "ring8-iwae_bpd-vs-steps.png" in names
    for path in result.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000

    one_budget = tmp_path / "runs"
    for rec in records(runs):
        if rec["budget"]["amount"] == 4.0:
            derive(rec, runs, one_budget, rec["trial_id"])
    single = publish(one_budget, tmp_path / "out", manager=manager)
    assert single.plots == [] and not list((tmp_path / "out").rglob("plots/*.png"))


def test_training_curves_are_published_per_row_and_drawn_on_the_page(published, runs):
    result, out = published
    suite_dir = out / SUITE
    # one curves file per row: vae at 2 and 4 steps, gan at 4 steps
    names = sorted(p.name for p in (suite_dir / "curves").glob("*.csv"))
    assert names == ["ring8--gan--4steps.csv", "ring8--vae--2steps.csv", "ring8--vae--4steps.csv"]
    # the file is the lowest seed's own curve, every step of a 4-step trial, every loss the model returned
    vae0 = find(records(runs), "vae", 4)
    import pandas as pd

    published_curve = pd.read_csv(suite_dir / "curves" / "ring8--vae--4steps.csv")
    assert published_curve.equals(pd.read_csv(runs / SUITE / vae0["curves"]))
    assert list(published_curve["step"]) == [1, 2, 3, 4] and {"loss", "rec", "kl"} <= set(published_curve.columns)
    plots = {p.name: p for p in result.plots}
    for budget in ("2steps", "4steps"):
        png = plots[f"ring8-training-vs-step-{budget}.png"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(test/plots/{png.name})" in result.readme.read_text()


def test_publish_from_the_command_line(runs, tmp_path):
    assert main(["publish", "--runs-dir", str(runs), "--out", str(tmp_path / "lb")]) == 0
    assert (tmp_path / "lb" / "README.md").is_file() and (tmp_path / "lb" / SUITE / "ring8.csv").is_file()
    assert main(["publish", "--runs-dir", str(runs), "--suite", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["publish", "--runs-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_terminal_leaderboard_and_the_published_csv_agree_cell_for_cell(tmp_path, capsys):
    """`genbench leaderboard` and `genbench publish` build each row's metric cells, marks and
    findings with the same code (results.summarise_seeds): every cell they both have is equal."""
    import csv
    import math

    from genbench.cli import main

    runs, out = tmp_path / "runs", tmp_path / "boards"
    assert main(["run", "--model", "vae", "--model", "gan", "--dataset", "ring8", "--budget", "20steps",
                 "--seeds", "2", "--profile", "test", "--executor", "inline", "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "--runs-dir", str(runs), "--suite", "test", "--json"]) == 0
    terminal = {r["model"]: r for r in json.loads(capsys.readouterr().out)["ring8"]}
    assert main(["publish", "--runs-dir", str(runs), "--out", str(out)]) == 0
    with open(out / "test" / "ring8.csv", newline="") as f:
        published = {r["model"]: r for r in csv.DictReader(f)}
    assert set(terminal) == set(published) == {"vae", "gan"}  # ring8 has no image reference row
    compared = 0
    for model, row in published.items():
        mine = terminal[model]
        assert mine["seeds"] == f"{row['seeds_ok']}/{row['seeds']}" and mine["status"] == row["status"]
        for column in set(row) & set(mine):
            if column in ("seeds", "notes", "estimators", "date", "command", "samples", "empty_cells"):
                continue  # the CSV's own formats and provenance (notes: the terminal adds seed coverage)
            theirs, ours = row[column], mine[column]
            if isinstance(ours, float) or isinstance(ours, int) and not isinstance(ours, bool):
                if theirs == "" or ours is None:
                    assert theirs == "" and (ours is None or math.isnan(ours)), (model, column, theirs, ours)
                else:
                    assert float(theirs) == pytest.approx(ours, rel=1e-9), (model, column)
            else:
                assert (theirs or None) == (ours or None), (model, column, theirs, ours)
            compared += 1
    assert compared > 60  # metric means, their intervals, steps, marks and findings of every row
