"""Bad input gets a clear error naming the problem (and the fix), never a traceback: CLI flags,
suite files, plugin registrations, dataset roots, and corrupt or foreign files in the runs folder."""

import json
import textwrap
import warnings

import pytest
import torch

from genbench.cli import main
from genbench.datasets import load_mnist
from genbench.errors import DatasetError, GenbenchError, RegistrationError
from genbench.manager import PluginManager
from genbench.results import load_records
from genbench.suite import load_suite_file, lock_suite


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: tiny models on a shared 2-core machine run far faster (and steadier) than on
    two threads that wait on each other, and every process of a test then computes the same bits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_error(capsys, *argv) -> str:
    """Run `genbench ...`, expect the error exit code, return what it printed."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    return capsys.readouterr().out


# --- CLI flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--budget", "lots"], "cannot read budget 'lots'; accepted forms"),
    (["--budget", "0s"], "budget '0s' must be positive"),
    (["--budget", "2.5steps"], "steps must be a whole number"),
    (["--seeds", "0"], "--seeds must be at least 1, got 0"),
    (["--workers", "0"], "--workers must be a whole number of at least 1, got 0"),
    (["--threads", "0"], "--threads must be a whole number of at least 1, got 0"),
    (["--trial-timeout", "-3"], "--trial-timeout must be a positive number of seconds, got -3"),
    (["--eval-timeout", "0"], "--eval-timeout must be a positive number of seconds"),
    (["--memory-limit", "-1"], "--memory-limit must be a number of GiB >= 0"),
    (["--checkpoint-every", "1.5"], "--checkpoint-every must be a fraction of the budget in [0, 1)"),
    (["--address", "10.0.0.1:6379"], "--address '10.0.0.1:6379' needs --executor ray"),
    (["--executor", "inline", "--workers", "2"], "--workers 2 applies to the local executor only"),
    (["--suite", "../elsewhere"], "suite name '../elsewhere' must be a folder name"),
])
def test_bad_run_flags_are_named(flags, message, tmp_path, capsys):
    out = run_error(capsys, "run", "--model", "vae", "--dataset", "ring8", "--profile", "test",
                    "--runs-dir", str(tmp_path), *flags)
    assert message in out
    assert not (tmp_path / "test" / "trials").exists() or not list((tmp_path / "test" / "trials").iterdir())


def test_unknown_names_list_the_known_ones(tmp_path, capsys):
    out = run_error(capsys, "run", "--model", "vea", "--runs-dir", str(tmp_path))
    assert "unknown model 'vea'; known models:" in out and "vae" in out and "gan" in out
    out = run_error(capsys, "run", "--model", "vae", "--dataset", "digit", "--runs-dir", str(tmp_path))
    assert "unknown dataset 'digit'; known datasets:" in out and "digits" in out and "ring8" in out
    out = run_error(capsys, "run", "--model", "vae", "--profile", "test", "--dataset", "ring8", "--runs-dir",
                    str(tmp_path), "--suite-file", str(tmp_path / "none.toml"))
    assert "not found" in out


def test_a_model_dataset_pair_that_does_not_apply_says_why(tmp_path, capsys):
    out = run_error(capsys, "run", "--model", "cyclegan", "--dataset", "ring8", "--runs-dir", str(tmp_path))
    assert "model 'cyclegan' does not apply to dataset 'ring8'" in out and "image" in out


def test_argparse_rejects_non_numbers_with_the_flag_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "vae", "--workers", "many"])
    assert exc.value.code == 2
    assert "argument --workers: invalid int value: 'many'" in capsys.readouterr().err


def test_a_suite_folder_in_use_is_refused(tmp_path, capsys):
    lock = lock_suite(tmp_path / "test")
    try:
        out = run_error(capsys, "run", "--model", "vae", "--dataset", "ring8", "--profile", "test",
                        "--budget", "2steps", "--runs-dir", str(tmp_path), "--executor", "inline")
    finally:
        lock.close()
    assert "is in use by another genbench run" in out and "choose another --suite" in out


# --- suite files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("models = [\"vae\"\n", "is not valid TOML"),
    ("modles = [\"vae\"]\n", "unknown keys ['modles']; allowed:"),
    ("models = 3\n", "models must be a list of model names, got int 3"),
    ("models = [\"vae\", 2]\n", "models must be a list of model names"),
    ("datasets = [\"ring8\"]\nseeds = \"two\"\n", "seeds must be a number of seeds (whole number >= 1), got str"),
    ("seeds = 0\n", "seeds must be a number of seeds"),
    ("budget = 30\n", "budget must be a budget string such as \"30s\""),
    ("budget = \"30 parsecs\"\n", "cannot read budget '30 parsecs'"),
    ("profile = \"fast\"\n", "profile must be one of quick, standard, test, got 'fast'"),
    ("name = \"a/b\"\n", "suite name 'a/b' must be a folder name"),
    ("config = { hidden = 3 }\n", "config must be a a table per model of config overrides"),
])
def test_bad_suite_files_are_named(text, message, tmp_path):
    path = tmp_path / "suite.toml"
    path.write_text(text)
    with pytest.raises(GenbenchError) as exc:
        load_suite_file(str(path))
    assert message in str(exc.value) and str(path) in str(exc.value)


def test_suite_file_errors_reach_the_cli_and_config_is_checked_per_model(tmp_path, capsys):
    path = tmp_path / "suite.toml"
    path.write_text('models = ["vae"]\ndatasets = ["ring8"]\nbudget = "2steps"\n[config.vae]\nhiden = 200\n')
    out = run_error(capsys, "run", "--suite-file", str(path), "--runs-dir", str(tmp_path))
    assert "vae: unknown config field(s) ['hiden']" in out and "hidden" in out
    path.write_text('models = ["vae"]\ndatasets = ["ring8"]\n[config.vae]\nhidden = "big"\n')
    out = run_error(capsys, "run", "--suite-file", str(path), "--runs-dir", str(tmp_path))
    assert "vae.hidden expects int (default 400), got str 'big'" in out
    path.write_text('models = ["vae"]\ndatasets = ["ring8"]\n[config.gan]\nhidden = 64\n')
    out = run_error(capsys, "run", "--suite-file", str(path), "--runs-dir", str(tmp_path))
    assert "config given for model 'gan', which is not in this suite" in out


def test_a_valid_suite_file_runs_with_its_name_and_per_model_config(tmp_path, capsys):
    path = tmp_path / "suite.toml"
    path.write_text(textwrap.dedent('''
        name = "small-vae"
        models = ["vae"]
        datasets = ["ring8"]
        budget = "2steps"
        profile = "test"
        [config.vae]
        hidden = 32
    '''))
    assert main(["run", "--suite-file", str(path), "--runs-dir", str(tmp_path), "--executor", "inline"]) == 0
    (rec,) = load_records(tmp_path, "small-vae")
    assert rec["status"] == "ok" and rec["config"]["hidden"] == 32


# --- plugin registrations -------------------------------------------------------------------

MODEL_PLUGIN = '''
from dataclasses import dataclass

import genbench
from genbench.model import GenerativeModel


@dataclass
class Cfg:
    lr: float = 0.1


class Dup(GenerativeModel):
    name = "dup"
    family = "test"
    Config = Cfg


@genbench.hookimpl
def register_models(register):
    register(Dup)
'''


def test_a_name_registered_twice_names_both_plugins(tmp_path):
    a, b = tmp_path / "first_plugin.py", tmp_path / "second_plugin.py"
    a.write_text(MODEL_PLUGIN)
    b.write_text(MODEL_PLUGIN)
    with pytest.raises(RegistrationError) as exc:
        PluginManager(plugin_files=[a, b])
    msg = str(exc.value)
    assert "model 'dup' is registered twice" in msg and str(a) in msg and str(b) in msg and "Rename one" in msg


@pytest.mark.parametrize(("registered", "message"), [
    ("'dup'", "'dup' is not a subclass of genbench.GenerativeModel; register the class itself"),
    ("len", "is not a subclass of genbench.GenerativeModel"),
    ("type('Nameless', (GenerativeModel,), {'family': 'x', 'Config': Cfg})", "has no 'name' class attribute"),
])
def test_registering_something_that_is_not_a_model_class_is_named(registered, message, tmp_path):
    plugin = tmp_path / "odd_plugin.py"
    plugin.write_text(MODEL_PLUGIN.replace("register(Dup)", f"register({registered})"))
    with pytest.raises(RegistrationError) as exc:
        PluginManager(plugin_files=[plugin])
    assert message in str(exc.value) and str(plugin) in str(exc.value)


def test_plugin_paths_must_be_python_files(tmp_path, capsys):
    out = run_error(capsys, "--plugin", str(tmp_path / "missing.py"), "list")
    assert "missing.py" in out and "not a Python file" in out
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    out = run_error(capsys, "--plugin", str(text), "list")
    assert "notes.txt" in out and "Give the path of a .py file" in out
    bad = tmp_path / "syntax_error.py"
    bad.write_text("def broken(:\n")
    out = run_error(capsys, "--plugin", str(bad), "list")
    assert "failed to import" in out and "Fix the error above in syntax_error.py" in out


# --- dataset roots --------------------------------------------------------------------------


def test_mnist_root_without_files_says_where_to_put_them(tmp_path, monkeypatch, capsys):
    with pytest.raises(DatasetError) as exc:
        load_mnist(root=tmp_path, download=False)
    msg = str(exc.value)
    assert f"MNIST files not found under {tmp_path / 'MNIST' / 'raw'}" in msg
    assert "t10k-images-idx3-ubyte" in msg and "GENBENCH_DATA" in msg

    # through `genbench run`: one line before any trial starts, nothing written
    monkeypatch.setenv("GENBENCH_DATA", str(tmp_path))
    monkeypatch.delenv("GENBENCH_DOWNLOAD", raising=False)
    capsys.readouterr()
    assert main(["run", "--model", "vae", "--dataset", "mnist", "--budget", "2steps", "--profile", "test",
                 "--runs-dir", str(tmp_path / "runs"), "--executor", "inline"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error: MNIST files not found under") and len(out.splitlines()) == 1
    assert load_records(tmp_path / "runs", "test") == []


# --- the runs folder ------------------------------------------------------------------------


def test_corrupt_or_foreign_files_in_the_runs_folder_are_skipped_with_a_warning(tmp_path, capsys):
    assert main(["run", "--model", "gan", "--dataset", "ring8", "--budget", "2steps", "--profile", "test",
                 "--runs-dir", str(tmp_path), "--executor", "inline"]) == 0
    trials = tmp_path / "test" / "trials"
    good = next(trials.glob("*.json"))
    (trials / "truncated.json").write_text(good.read_text()[:100])
    (trials / "other-tool.json").write_text(json.dumps({"name": "something else", "value": 3}))
    (trials / "list.json").write_text("[1, 2, 3]")

    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["leaderboard", "--suite", "test", "--runs-dir", str(tmp_path)]) == 0
        # resuming reads the folder too (several times): still not fatal, and each file is named once
        assert main(["run", "--model", "gan", "--dataset", "ring8", "--budget", "2steps", "--profile", "test",
                     "--runs-dir", str(tmp_path), "--executor", "inline"]) == 0
    out = capsys.readouterr().out
    assert "gan" in out and "1 trial(s) already finished" in out
    messages = [str(w.message) for w in caught if "skipping" in str(w.message)]
    for name in ("truncated.json", "other-tool.json", "list.json"):
        assert sum(name in m for m in messages) == 1, messages
    assert all("Delete or move the file" in m for m in messages)
    assert any("not a genbench trial record" in m for m in messages)
    assert [r["model"] for r in load_records(tmp_path, "test")] == ["gan"]
