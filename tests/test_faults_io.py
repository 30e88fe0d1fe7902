"""Faults of the file system and of names lose no result: a full disk, a folder in the way of a
record or a read-only runs folder is one line that says what happened and where the result is; a
name that is not a plain name is refused where it is registered and where a path is built; and
`genbench publish` merging never loses a newer or finished trial nor keeps a row no record backs.

Every run is a real `genbench run` (the `test` profile, ring8, a few steps, in this process) into
``tmp_path``; the system temp folder, where kept records go, is redirected into ``tmp_path`` too."""

import errno
import json
import os
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from genbench.budget import Budget
from genbench.cli import main
from genbench.errors import GenbenchError, RegistrationError
from genbench.manager import NAME_PATTERN, PluginManager
from genbench.publish import publish
from genbench.results import load_records, record_path, unsaved_dir
from genbench.runner import Trial
from genbench.suite import check_suite_name, run_suite

SUITE = "test"
BAD_NAMES = ["org/model", "../../evil", "/abs/model", "modèle", "Upper", "a\\b", "..", "x\n"]


pytestmark = pytest.mark.usefixtures("one_thread_per_test")


@pytest.fixture()
def system_tmp(tmp_path, monkeypatch):
    """The system temp folder, inside tmp_path: kept records land where the test can see them."""
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def run_argv(runs, *models, seeds=1, steps=3):
    argv = ["run", "--dataset", "ring8", "--budget", f"{steps}steps", "--profile", "test", "--seeds", str(seeds),
            "--runs-dir", str(runs), "--executor", "inline"]
    for m in models:
        argv += ["--model", m]
    return argv


def flat(text: str) -> str:
    """Console text without line breaks or spaces: a long path may be folded at any character."""
    return "".join(text.split())


def said(out: str, *fragments: str) -> bool:
    return all(flat(f) in flat(out) for f in fragments)


def trial_id(manager, model, steps=3, seed=0):
    return Trial(model, "ring8", seed, Budget.parse(f"{steps}steps"), "test").trial_id(manager.models.get(model))


def records_by_model(runs):
    return {r["model"]: r for r in load_records(runs, SUITE)}


def leftovers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp*"))


def failing_fsync(monkeypatch, *fragments):
    """``os.fsync`` that fails with ENOSPC for files whose path holds one of ``fragments`` (the
    moment a full disk shows itself on a buffered write)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see which file is written")
    real = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if any(f in path for f in fragments):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


# ----------------------------------------------------------------------------- failed writes


def test_no_space_for_a_record_keeps_it_and_the_next_run_puts_it_in_place(tmp_path, system_tmp, manager,
                                                                          monkeypatch, capsys):
    runs = tmp_path / "runs"
    vae_id = trial_id(manager, "vae")
    failing_fsync(monkeypatch, f"/trials/.{vae_id}.json", "/.leaderboard-")
    assert main(run_argv(runs, "vae", "gan")) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    kept = unsaved_dir(runs.resolve(), SUITE) / f"{vae_id}.json"
    assert kept.is_file() and str(kept).startswith(str(system_tmp))
    assert said(out, f"no space left in {runs.resolve() / SUITE / 'trials'}: the result of {vae_id} is kept in {kept}; "
                     "free space and run the same command again")
    assert said(out, "the leaderboard CSVs were not rewritten")
    assert said(out, "2 trials ok, 0 failed")  # the summary counts the kept trial
    recs = records_by_model(runs)
    assert recs["gan"]["status"] == "ok" and "vae" not in recs  # the other trial went on and was saved
    finished = json.loads(kept.read_text())
    assert finished["status"] == "ok" and finished["metrics"]
    assert leftovers(tmp_path) == []
    assert not list((runs / SUITE).glob("leaderboard-*.csv"))

    monkeypatch.undo()  # the disk has room again
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    assert main(run_argv(runs, "vae", "gan")) == 0
    out = capsys.readouterr().out
    assert said(out, "1 result(s) kept in", "back in the suite folder", "2 trial(s) already finished")
    assert records_by_model(runs)["vae"] == finished  # the very result of the first run, not a new one
    assert not kept.exists()
    board = pd.read_csv(runs / SUITE / "leaderboard-ring8.csv")
    assert set(board["model"]) == {"vae", "gan"}
    assert leftovers(tmp_path) == []


def test_a_folder_in_the_way_of_a_record_is_reported_and_the_result_kept(tmp_path, system_tmp, manager, capsys):
    runs = tmp_path / "runs"
    vae_id = trial_id(manager, "vae")
    blocker = runs / SUITE / "trials" / f"{vae_id}.json"
    (blocker / "inside").mkdir(parents=True)
    assert main(run_argv(runs, "vae", "gan")) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    kept = unsaved_dir(runs.resolve(), SUITE) / f"{vae_id}.json"
    assert said(out, f"a folder is in the way of {runs.resolve() / SUITE / 'trials' / (vae_id + '.json')}: "
                     f"the result of {vae_id} is kept in {kept}; move what is in the way and run the same command "
                     "again")
    finished = json.loads(kept.read_text())
    assert finished["status"] == "ok"
    assert records_by_model(runs)["gan"]["status"] == "ok"
    assert leftovers(tmp_path) == []

    # the folder is still there: the next run says so again and keeps the kept record
    assert main(run_argv(runs, "vae", "gan")) == 0
    out = capsys.readouterr().out
    assert said(out, f"the result of {vae_id} stays kept in {kept}") and kept.is_file()
    assert "Traceback" not in out

    (blocker / "inside").rmdir()
    blocker.rmdir()
    assert main(run_argv(runs, "vae", "gan")) == 0
    out = capsys.readouterr().out
    assert said(out, "2 trial(s) already finished")  # the kept result counts: vae is not trained again
    assert records_by_model(runs)["vae"]["metrics"] == finished["metrics"]


def test_no_space_anywhere_is_one_line_and_the_other_trials_are_saved(tmp_path, system_tmp, manager, monkeypatch,
                                                                      capsys):
    runs = tmp_path / "runs"
    vae_id = trial_id(manager, "vae")
    failing_fsync(monkeypatch, f"/trials/.{vae_id}.json", "/genbench-unsaved/")
    assert main(run_argv(runs, "vae", "gan")) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    assert said(out, f"no space left in {runs.resolve() / SUITE / 'trials'}: the result of {vae_id} could not be kept "
                     "anywhere (no space left in", "free space and run the same command again to run it again")
    assert records_by_model(runs)["gan"]["status"] == "ok"
    assert leftovers(tmp_path) == []
    board = pd.read_csv(runs / SUITE / "leaderboard-ring8.csv")
    assert list(board["model"]) == ["gan"]


def test_a_failed_sample_grid_write_does_not_fail_the_trial(tmp_path, system_tmp, monkeypatch, capsys):
    runs = tmp_path / "runs"
    failing_fsync(monkeypatch, "/samples/")
    assert main(run_argv(runs, "vae")) == 0
    out = capsys.readouterr().out
    rec = records_by_model(runs)["vae"]
    assert rec["status"] == "ok" and rec["metrics"] and rec["samples"] is None
    assert rec["samples_error"].startswith("no space left in")
    assert "Traceback" not in out and leftovers(tmp_path) == []


def test_a_checkpoint_that_cannot_be_written_does_not_fail_the_trial(tmp_path, system_tmp, monkeypatch, capsys):
    import genbench.checkpoint as checkpoint_mod

    def full_disk(obj, path):  # what torch.save raises when the disk fills mid-file
        raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint_mod, "atomic_torch_save", full_disk)
    runs = tmp_path / "runs"
    assert main([*run_argv(runs, "vae", steps=8), "--checkpoint-every", "0.25"]) == 0
    out = capsys.readouterr().out
    rec = records_by_model(runs)["vae"]
    assert rec["status"] == "ok" and rec["used"]["steps"] == 8 and rec["metrics"]
    assert rec["checkpoint_error"].startswith("checkpoints not written (RuntimeError")
    assert "Traceback" not in out and leftovers(tmp_path) == []


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _read_only_checks(runs: Path, capsys) -> None:
    before = snapshot(runs)
    assert main(run_argv(runs, "gan")) == 0  # every trial finished: nothing to write
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out and said(out, "nothing was written", "1 trial(s) already finished")
    assert said(out, "genbench leaderboard: ring8")
    assert main(["leaderboard", "--suite", SUITE, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "gan" in out and "Traceback" not in out
    assert main(run_argv(runs, "gan", seeds=2)) == 2  # a trial to run whose result could not be saved
    out = capsys.readouterr().out
    assert said(out, "1 trial(s) of suite 'test' are not finished and their results could not be saved")
    assert "Traceback" not in out
    assert snapshot(runs) == before


def chmod_bites() -> bool:
    """Whether a folder without write permission refuses this process (not so for root, unless it
    runs without the capability to override permissions)."""
    if getattr(os, "geteuid", lambda: 0)() != 0:
        return True
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o555)
        try:
            Path(folder, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(folder, 0o755)
    return False


@pytest.mark.skipif(not chmod_bites(), reason="root writes into read-only folders: chmod does not bite")
def test_a_read_only_runs_folder_works_for_what_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(run_argv(runs, "gan")) == 0
    capsys.readouterr()
    folders = [runs, runs / SUITE, *[p for p in (runs / SUITE).rglob("*") if p.is_dir()]]
    for f in folders:
        f.chmod(0o555)
    try:
        _read_only_checks(runs, capsys)
        out_dir = tmp_path / "ro-new"
        out_dir.mkdir(mode=0o555)
        assert main(run_argv(out_dir, "gan")) == 2
        out = capsys.readouterr().out
        assert said(out, "cannot create the suite folder") and "Traceback" not in out
    finally:
        for f in folders:
            f.chmod(0o755)


def test_a_suite_folder_that_refuses_writes_works_for_what_writes_nothing(tmp_path, monkeypatch, capsys):
    """The same checks as above wherever the tests run (as root too): every folder under the runs
    folder refuses new files the way a read-only mount does."""
    runs = tmp_path / "runs"
    assert main(run_argv(runs, "gan")) == 0
    capsys.readouterr()
    root = str(runs.resolve())
    real_access, real_open = os.access, open

    def access(path, mode, *args, **kwargs):
        if str(Path(path).resolve()).startswith(root) and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    def guarded_open(path, mode="r", *args, **kwargs):
        if str(Path(path).resolve()).startswith(root) and set(mode) & set("wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr("builtins.open", guarded_open)
    _read_only_checks(runs, capsys)


# ----------------------------------------------------------------------------- names


BAD_PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    import torch

    import genbench
    from genbench.datasets import DatasetEntry
    from genbench.model import GenerativeModel


    @dataclass
    class Cfg:
        batch_size: int = 8


    class Bad(GenerativeModel):
        name = {model!r}
        family = "bad names"
        data_kinds = frozenset({{"points"}})
        Config = Cfg

        def train_step(self, batch, progress):
            return {{"loss": 0.0}}

        def sample(self, n, generator=None, condition=None):
            return torch.zeros(n, self.spec.dim)


    class Metric:
        name = {metric!r}
        columns = ("bad_metric",)

        def compute(self, ctx):
            return {{}}


    @genbench.hookimpl
    def register_models(register):
        if {model!r}:
            register(Bad)


    @genbench.hookimpl
    def register_metrics(register):
        if {metric!r}:
            register(Metric())


    @genbench.hookimpl
    def register_datasets(register):
        if {dataset!r}:
            from genbench.datasets import load_ring8
            from genbench.model import DataSpec
            spec = DataSpec(name={dataset!r}, kind="points", shape=(2,), levels=None, num_classes=8)
            register(DatasetEntry({dataset!r}, "points", spec, load_ring8))
''')


def write_bad_plugin(tmp_path, model="", metric="", dataset=""):
    path = tmp_path / "bad_names.py"
    path.write_text(BAD_PLUGIN.format(model=model, metric=metric, dataset=dataset))
    return path


@pytest.mark.parametrize("kind", ["model", "dataset", "metric"])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_a_plain_name_is_refused_at_registration(kind, name, tmp_path, capsys):
    path = write_bad_plugin(tmp_path, **{kind: name})
    before = set(tmp_path.rglob("*"))
    assert main(["--plugin", str(path), "list"]) == 2
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert f"plugin {str(path)!r} registered an invalid {kind}" in out
    assert "is not a plain name" in out and "rename it, e.g. name =" in out
    assert "Traceback" not in out
    assert set(tmp_path.rglob("*")) == before
    with pytest.raises(RegistrationError, match="rename it"):
        PluginManager(plugin_files=[path])


def test_every_built_in_name_is_a_plain_name(manager):
    assert not manager.broken
    for registry in (manager.models, manager.datasets, manager.metrics):
        names = list(registry)
        assert names and all(NAME_PATTERN.fullmatch(n) for n in names), names
    for name in manager.datasets:
        assert NAME_PATTERN.fullmatch(manager.datasets.get(name).spec.name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_trial_paths_are_built_only_from_plain_names(name, manager, tmp_path):
    vae = manager.models.get("vae")
    with pytest.raises(GenbenchError, match="cannot name a trial file"):
        Trial(name, "ring8", 0, Budget.parse("3steps"), "test").trial_id(vae)
    with pytest.raises(GenbenchError, match="cannot name a trial file"):
        Trial("vae", name, 0, Budget.parse("3steps"), "test").trial_id(vae)
    if "/" in name or "\\" in name or name in ("..",):
        with pytest.raises(GenbenchError):
            record_path(tmp_path, SUITE, name)
        with pytest.raises(GenbenchError):
            record_path(tmp_path, name, "vae--ring8")
    if name != "Upper":  # suite names may hold capitals
        with pytest.raises(GenbenchError, match="suite name"):
            check_suite_name(name)
        with pytest.raises(GenbenchError, match="suite name"):
            run_suite(manager, [], tmp_path / "runs", name)
    assert not (tmp_path / "runs").exists()
    assert record_path(tmp_path, SUITE, "vae--ring8--3steps--seed0--abcd1234").parent == tmp_path / SUITE / "trials"


# ----------------------------------------------------------------------------- publish merges


@pytest.fixture()
def old_runs(tmp_path):
    runs = tmp_path / "runs-old"
    assert main(run_argv(runs, "vae", seeds=2)) == 0
    return runs


def derive(runs, runs_dir, rec, trial_id, **changes):
    new = json.loads(json.dumps(rec))
    new.update(changes, trial_id=trial_id, samples=None)
    folder = Path(runs_dir) / SUITE / "trials"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{trial_id}.json").write_text(json.dumps(new))
    return new


def trials_csv(out):
    return pd.read_csv(out / SUITE / "ring8-trials.csv", keep_default_na=False)


def test_publish_keeps_the_newest_trials_and_never_lets_a_failure_replace_a_result(old_runs, tmp_path, manager,
                                                                                   capsys):
    out = tmp_path / "lb"
    publish(old_runs, out, manager=manager)
    old = {r["seed"]: r for r in load_records(old_runs, SUITE)}
    assert set(old) == {0, 1}

    # a newer runs folder with another config
    newer = tmp_path / "runs-new"
    config = dict(old[0]["config"], hidden=old[0]["config"]["hidden"] + 1)
    for seed in (0, 1):
        derive(old_runs, newer, old[seed], f"vae--ring8--3steps--seed{seed}--newer", config=config,
               config_hash=f"{seed:016x}", metrics=dict(old[seed]["metrics"], hq_pct=0.75),
               finished="2100-01-01T00:00:00+00:00")
    result = publish(newer, out, manager=manager)
    assert not result.warnings
    rows = trials_csv(out)
    assert sorted(rows["trial_id"]) == ["vae--ring8--3steps--seed0--newer", "vae--ring8--3steps--seed1--newer"]

    # the older runs folder again: the newer rows stay, and publish says why
    result = publish(old_runs, out, manager=manager)
    assert sorted(trials_csv(out)["trial_id"]) == sorted(rows["trial_id"])
    assert set(trials_csv(out)["hq_pct"]) == {0.75}
    assert any("are newer than the records" in w and "kept" in w for w in result.warnings), result.warnings

    # a failed trial of the newer setup, finished later still, replaces neither seed's result
    failing = tmp_path / "runs-failed"
    new0 = json.loads((newer / SUITE / "trials" / "vae--ring8--3steps--seed0--newer.json").read_text())
    derive(newer, failing, new0, "vae--ring8--3steps--seed0--failed", status="failed", reason="disk on fire",
           metrics={}, finished="2200-01-01T00:00:00+00:00")
    result = publish(failing, out, manager=manager)
    after = trials_csv(out)
    assert list(after.sort_values("seed")["status"]) == ["ok", "ok"]
    assert "disk on fire" not in set(after["reason"])
    assert any("does not replace the published finished one" in w for w in result.warnings), result.warnings

    # the same goes through the command line: each is one warning line, no traceback
    assert main(["publish", "--runs-dir", str(old_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert said(printed, "warning: vae 3steps: the published trials") and "Traceback" not in printed


def test_publish_drops_rows_no_record_backs_and_reports_non_numeric_metrics(old_runs, tmp_path, manager):
    out = tmp_path / "lb"
    publish(old_runs, out, manager=manager)
    path = out / SUITE / "ring8-trials.csv"
    table = pd.read_csv(path, keep_default_na=False, dtype=str)
    fake = table.iloc[[0]].copy()
    fake["seed"], fake["trial_key"], fake["finished"], fake["hq_pct"] = "7", "", "", "1.0"
    pd.concat([table, fake]).to_csv(path, index=False)

    other = tmp_path / "runs-other"
    rec = next(r for r in load_records(old_runs, SUITE) if r["seed"] == 0)
    derive(old_runs, other, rec, "vae--ring8--3steps--seed0--text", metrics=dict(rec["metrics"], hq_pct="high"),
           finished="2100-01-01T00:00:00+00:00")
    result = publish(other, out, manager=manager)
    rows = trials_csv(out)
    assert sorted(rows["seed"]) == [0, 1]  # the fake seed 7 is gone, the real seed 1 (no record here) stays
    assert any("line 4: row vae 3steps seed 7 dropped: it has no trial_key" in w for w in result.warnings)
    assert any("metric 'hq_pct' has the non-numeric value 'high' (str)" in w for w in result.warnings)
    seed0 = rows[rows["seed"] == 0].iloc[0]
    assert seed0["trial_id"] == "vae--ring8--3steps--seed0--text" and seed0["hq_pct"] == ""
    board = pd.read_csv(out / SUITE / "ring8.csv")
    assert board.loc[0, "seeds"] == 2


@pytest.mark.parametrize("damage, words", [
    (lambda r: r.pop("dataset"), "has no 'dataset'"),
    (lambda r: r.update(seed="0"), "'seed' is str '0': input should be a valid integer"),
    (lambda r: r.update(budget={"kind": "steps"}), "has no 'budget.amount'"),
    (lambda r: r.update(status="done"), "'status' is str 'done': input should be 'ok', 'failed' or 'reference'"),
    (lambda r: r.update(schema=1), "written by another genbench \\(record schema 1, this one reads 2\\)"),
])
def test_a_record_with_missing_keys_or_wrong_types_is_skipped_with_one_line(tmp_path, damage, words, capsys,
                                                                           monkeypatch):
    runs = tmp_path / "runs"
    assert main(run_argv(runs, "vae", "gan")) == 0
    path = next((runs / "test" / "trials").glob("gan--*.json"))
    rec = json.loads(path.read_text())
    damage(rec)
    path.write_text(json.dumps(rec))
    capsys.readouterr()
    with pytest.warns(UserWarning, match=words):
        assert main(["leaderboard", "--suite", "test", "--runs-dir", str(runs)]) == 0
    import genbench.results as results_mod

    monkeypatch.setattr(results_mod, "_WARNED", set())  # a file version is reported once per process
    with pytest.warns(UserWarning, match=words):
        published = publish(runs, tmp_path / "out")
    assert {r["model"] for table in published.trials.values() for r in table.rows} == {"vae"}
    out = capsys.readouterr().out
    assert "Traceback" not in out and "vae" in out


def test_a_string_metric_is_left_out_with_one_line_and_the_record_kept(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(run_argv(runs, "vae")) == 0
    path = next((runs / "test" / "trials").glob("vae--*.json"))
    rec = json.loads(path.read_text())
    rec["metrics"]["nll"] = "oops"
    path.write_text(json.dumps(rec))
    capsys.readouterr()
    with pytest.warns(UserWarning, match="metric 'nll' is str 'oops', not a number: left out"):
        assert main(["leaderboard", "--suite", "test", "--runs-dir", str(runs)]) == 0
    assert "vae" in capsys.readouterr().out
    (loaded,) = load_records(runs, "test")
    assert "nll" not in loaded["metrics"] and loaded["invalid_metrics"] == {"nll": "oops"}


def test_publishing_into_a_file_or_an_unwritable_folder_is_one_line(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    assert main(run_argv(runs, "vae")) == 0
    afile = tmp_path / "afile"
    afile.write_text("x")
    capsys.readouterr()
    assert main(["publish", "--runs-dir", str(runs), "--out", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().out
    import genbench.publish as publish_mod

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(publish_mod, "write_if_changed", read_only)
    assert main(["publish", "--runs-dir", str(runs), "--out", str(tmp_path / "out")]) == 2
    out = flat(capsys.readouterr().out)
    assert "read-onlyfilesystem" in out and "run`genbenchpublish`again" in out and "Traceback" not in out
    assert records_by_model(runs)["vae"]["status"] == "ok"
