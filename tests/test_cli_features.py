"""The command line's user features: `--set MODEL.FIELD=VALUE` config overrides, `--json` output,
the short `genbench list`, and a `genbench --help` that does not import torch."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from genbench.cli import _parser, main
from genbench.errors import GenbenchError
from genbench.manager import PluginManager
from genbench.overrides import field_types, parse_sets, parse_value
from genbench.publish.rows import reproduce_command


@pytest.fixture(scope="module")
def manager():
    return PluginManager()


# ----------------------------------------------------------------------------- --set: typing


@dataclass
class Typed:
    """Every annotation --set types; the string annotations (from __future__) need get_type_hints."""

    steps: int = 3
    lr: float = 1e-3
    warm: bool = False
    name: str = "a"
    sigma: float | None = None  # typed by its annotation, not by type(None)
    widths: tuple[int, ...] = (8, 16)
    scales: list[float] = None


def test_set_values_are_typed_by_the_annotation():
    types = field_types(Typed)
    assert parse_value("200", types["steps"], "steps") == 200
    assert isinstance(parse_value("2", types["lr"], "lr"), float)
    assert parse_value("3e-4", types["lr"], "lr") == 3e-4
    assert [parse_value(t, types["warm"], "warm") for t in ("true", "0", "yes", "No")] == [True, False, True, False]
    assert parse_value("x y", types["name"], "name") == "x y"
    assert parse_value("0.5", types["sigma"], "sigma") == 0.5
    assert parse_value("none", types["sigma"], "sigma") is None
    assert parse_value("4, 8,16", types["widths"], "widths") == (4, 8, 16)
    assert parse_value("1,2.5", types["scales"], "scales") == [1.0, 2.5]


@pytest.mark.parametrize("field, text, says", [
    ("steps", "1.5", "steps must be an int, got '1.5'"),
    ("lr", "abc", "lr must be a float, got 'abc'"),
    ("warm", "maybe", "warm must be true or false"),
    ("sigma", "big", "sigma must be a float"),
    ("widths", "8,x", "widths must be an int, got 'x'"),
])
def test_set_value_of_the_wrong_type_says_what_the_field_takes(field, text, says):
    with pytest.raises(GenbenchError, match=says):
        parse_value(text, field_types(Typed)[field], field)


def test_parse_sets_merges_flags_per_model(manager):
    got = parse_sets(["vae.hidden=200", "vae.lr=3e-4", "gan.lr=1e-4", "vae.hidden=100"], manager, ["vae", "gan"])
    assert got == {"vae": {"hidden": 100, "lr": 3e-4}, "gan": {"lr": 1e-4}}


@pytest.mark.parametrize("flag, says", [
    ("vae.lrr=1e-3", "--set vae.lrr=1e-3: vae's config has no field 'lrr' (fields: latent_dim, hidden, lr,"),
    ("vae.lr=abc", "--set vae.lr=abc: lr must be a float, got 'abc'"),
    ("gan.lr=1e-3", "--set gan.lr=1e-3: model 'gan' is not in this run (models: vae); add --model gan"),
    ("vea.lr=1e-3", "--set vea.lr=1e-3: unknown model 'vea'"),
    ("vae.lr", "--set vae.lr: expected MODEL.FIELD=VALUE"),
    ("lr=1e-3", "--set lr=1e-3: expected MODEL.FIELD=VALUE"),
])
def test_bad_set_is_one_line_naming_the_problem(flag, says, manager, tmp_path, capsys):
    with pytest.raises(GenbenchError) as caught:
        parse_sets([flag], manager, ["vae"])
    assert says in str(caught.value) and "\n" not in str(caught.value)
    code = main(["run", "--model", "vae", "--dataset", "ring8", "--budget", "2steps", "--profile", "test",
                 "--runs-dir", str(tmp_path), "--set", flag])
    out = capsys.readouterr().out
    assert code == 2
    assert out.startswith("error: ") and " ".join(out.split()) == f"error: {caught.value}"
    assert not (tmp_path / "test").exists()  # refused before anything ran


def test_help_of_run_says_set_wins_over_the_suite_file():
    text = " ".join(_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    assert "--set MODEL.FIELD=VALUE" in text and "wins over the suite file" in text


def test_set_value_typed_by_annotation_passes_the_suite_check_when_the_default_has_another_type():
    from genbench.model import GenerativeModel
    from genbench.suite import check_overrides

    @dataclass
    class Cfg:
        scale: float = 1  # an int default under a float annotation
        sigma: float | None = None

    class Scaled(GenerativeModel):
        name = "scaled"
        Config = Cfg

    overrides = {"scale": parse_value("0.5", field_types(Cfg)["scale"], "scale"),
                 "sigma": parse_value("2", field_types(Cfg)["sigma"], "sigma")}
    assert overrides == {"scale": 0.5, "sigma": 2.0}
    check_overrides(Scaled, overrides, "--set")  # no error: the value has its field's annotated type
    with pytest.raises(GenbenchError, match="scaled.scale expects float"):
        check_overrides(Scaled, {"scale": "big"}, "suite file")


@pytest.mark.parametrize("field, value, ok", [
    ("hidden", 2.5, False), ("hidden", True, False), ("hidden", "200", False), ("hidden", 200, True),
    ("lr", "3e-4", False), ("lr", 3, True),
    ("width", "8", False), ("width", None, True), ("width", 8, True),  # a None default no longer takes anything
    ("widths", [8, 16], True), ("widths", [8, "x"], False),  # a TOML list for a tuple field
])
def test_suite_file_values_are_checked_against_the_annotation_by_pydantic(field, value, ok):
    from genbench.model import GenerativeModel
    from genbench.suite import check_overrides

    @dataclass
    class Cfg:
        hidden: int = 400
        lr: float = 1e-3
        width: int | None = None
        widths: tuple[int, ...] = (8,)

    class Typed(GenerativeModel):
        name = "typed"
        Config = Cfg

    if ok:
        check_overrides(Typed, {field: value}, "suite file")
    else:
        with pytest.raises(GenbenchError, match=f"suite file: typed.{field} expects .* got "):
            check_overrides(Typed, {field: value}, "suite file")


# ----------------------------------------------------------------------------- --set: into the trial


def _records(runs) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((runs / "test" / "trials").glob("*.json"))]


RUN = ["run", "--model", "vae", "--dataset", "ring8", "--budget", "5steps", "--profile", "test",
       "--executor", "inline"]


@pytest.fixture(scope="module")
def set_runs(tmp_path_factory):
    """One runs folder with vae on ring8 twice: at its defaults and with --set vae.hidden=32."""
    runs = tmp_path_factory.mktemp("runs")
    assert main([*RUN, "--runs-dir", str(runs)]) == 0
    assert main([*RUN, "--runs-dir", str(runs), "--set", "vae.hidden=32", "--set", "vae.kl_warmup=0.5"]) == 0
    return runs


def test_set_goes_into_the_recorded_config_and_its_hash(set_runs):
    records = _records(set_runs)
    assert len(records) == 2
    by_hidden = {r["config"]["hidden"]: r for r in records}
    assert set(by_hidden) == {400, 32}  # 400: the family's default
    assert by_hidden[32]["config"]["kl_warmup"] == 0.5 and by_hidden[400]["config"]["kl_warmup"] == 0.0
    assert by_hidden[32]["config_hash"] != by_hidden[400]["config_hash"]
    assert all(r["status"] == "ok" for r in records)


def test_set_is_the_same_trial_as_a_suite_file_override_and_wins_over_it(set_runs, tmp_path, capsys):
    suite_file = tmp_path / "suite.toml"
    suite_file.write_text("[config.vae]\nhidden = 64\nkl_warmup = 0.5\n")
    before = {r["config_hash"] for r in _records(set_runs)}
    capsys.readouterr()
    # the file says hidden = 64, the flag 32: the flag wins, and the trial is the one already run
    assert main([*RUN, "--runs-dir", str(set_runs), "--suite-file", str(suite_file), "--set", "vae.hidden=32"]) == 0
    assert "1 trial(s) already finished" in capsys.readouterr().out
    assert {r["config_hash"] for r in _records(set_runs)} == before


def test_published_command_reproduces_the_override_with_set_flags(set_runs, manager):
    from genbench.publish.rows import trial_row

    defaults = {"vae": {"latent_dim": 0, "hidden": 400, "lr": 1e-3, "batch_size": 100, "kl_warmup": 0.0,
                        "min_log_scale": -6.0}}
    rec = next(r for r in _records(set_runs) if r["config"]["hidden"] == 32)
    command = trial_row(rec, "", defaults)["command"]
    assert "--set vae.hidden=32 --set vae.kl_warmup=0.5" in command and "suite-file" not in command
    args = _parser().parse_args(shlex.split(command)[1:])
    assert parse_sets(args.sets, manager, args.model) == {"vae": {"hidden": 32, "kl_warmup": 0.5}}


def test_published_command_keeps_a_suite_file_only_for_values_no_flag_can_spell():
    command = reproduce_command("quick", "wae-gan", "digits", "30s", 3, "quick",
                                {"lr": 3e-4, "adversary": True, "weights": {"a": 1.0}})
    assert "--set wae-gan.adversary=true --set wae-gan.lr=0.0003" in command
    assert command.endswith('# plus --suite-file FILE.toml with [config.wae-gan] weights = {"a": 1.0}')


# ----------------------------------------------------------------------------- --json


def test_list_json_has_the_facts_of_the_tables(capsys):
    assert main(["list", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    models = {m["name"]: m for m in facts["models"]}
    assert models["vae"]["family"] == "VAE" and "latent" in models["vae"]["capabilities"]
    assert models["vae"]["all_datasets"] == ["digits", "grid25", "ring8"]
    assert "mnist" in models["vae"]["datasets"] and models["vae"]["plugin"] == "vae"
    datasets = {d["name"]: d for d in facts["datasets"]}
    assert datasets["digits"]["shape"] == [1, 8, 8] and datasets["digits"]["in_default_suite"]
    assert not datasets["mnist"]["in_default_suite"]
    metrics = {m["name"]: m for m in facts["metrics"]}
    assert "fid" in metrics["sample_quality"]["columns"]
    assert all(m["needs"] for m in facts["metrics"]), [m["name"] for m in facts["metrics"] if not m["needs"]]


def test_leaderboard_json_rows_have_the_csv_columns(set_runs, capsys):
    capsys.readouterr()
    assert main(["leaderboard", "--suite", "test", "--runs-dir", str(set_runs), "--json"]) == 0
    boards = json.loads(capsys.readouterr().out)
    assert list(boards) == ["ring8"]
    with open(set_runs / "test" / "leaderboard-ring8.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [list(row) for row in boards["ring8"]] == [list(row) for row in csv_rows]
    assert sorted(row["config_hash"] for row in boards["ring8"]) == sorted(r["config_hash"] for r in csv_rows)
    assert all(row["model"] == "vae" and isinstance(row["mode_kl"], float) for row in boards["ring8"])


def test_leaderboard_json_error_goes_to_stderr(tmp_path, capsys):
    assert main(["leaderboard", "--suite", "test", "--runs-dir", str(tmp_path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no results for suite 'test'" in " ".join(captured.err.split())


WRONG_SHAPE_PLUGIN = textwrap.dedent('''
    from __future__ import annotations

    from dataclasses import dataclass

    import torch

    import genbench


    @dataclass
    class Cfg:
        scale: float | None = None  # typed by its annotation: --set wrong-shape.scale=2.5 is a float
        batch_size: int = 16


    class WrongShape(genbench.GenerativeModel):
        """Trains fine; samples one point too many."""
        name = "wrong-shape"
        family = "test"
        capabilities = frozenset({genbench.Capability.SAMPLE})
        data_kinds = frozenset({"points"})
        Config = Cfg

        def __init__(self, config, spec):
            super().__init__(config, spec)
            self.w = torch.nn.Parameter(torch.zeros(spec.dim))
            self.optimizers = {"sgd": torch.optim.SGD(self.parameters(), lr=0.1)}

        def train_step(self, batch, progress):
            loss = ((batch["x"] - self.w) ** 2).mean()
            self.optimizers["sgd"].zero_grad()
            loss.backward()
            self.optimizers["sgd"].step()
            return {"loss": loss.detach()}

        def sample(self, n, generator=None, condition=None):
            return self.w + torch.randn(n + 1, self.spec.dim, generator=generator)


    @genbench.hookimpl
    def register_models(register):
        register(WrongShape)
''')


def test_check_json_lists_every_check_and_keeps_the_exit_code(tmp_path, capsys):
    plugin = tmp_path / "wrong_shape.py"
    plugin.write_text(WRONG_SHAPE_PLUGIN)
    code = main(["--plugin", str(plugin), "check", "wrong-shape", "--dataset", "ring8", "--steps", "2",
                 "--set", "wrong-shape.scale=2.5", "--json"])
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)}
    assert code == 1  # as without --json: a check failed
    assert checks["config"]["ok"] and "scale=2.5" in checks["config"]["detail"]
    assert checks["train_step"]["ok"]
    assert not checks["sample"]["ok"] and "(3, 2)" not in checks["sample"]["detail"]
    assert "expected (16, 2)" in checks["sample"]["detail"] and checks["sample"]["fix"]
    assert {"model", "dataset", "check", "ok", "detail", "fix"} == set(checks["sample"])


def test_check_builds_the_model_with_the_set_config(manager):
    from genbench.check import ModelChecker

    dataset = manager.datasets.get("ring8").build()
    checker = ModelChecker(manager.models.get("vae"), dataset, steps=2, config={"hidden": 16})
    results = checker.run()
    assert all(r.ok for r in results), [(r.check, r.detail) for r in results if not r.ok]
    assert checker.trained.config.hidden == 16
    assert checker.trained.encoder[0].out_features == 16


def test_check_rejects_a_set_for_a_model_it_does_not_check(capsys):
    assert main(["check", "vae", "--set", "gan.lr=1e-3", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "model 'gan' is not in this run (models: vae); name it: genbench check gan" in " ".join(captured.err.split())


# ----------------------------------------------------------------------------- genbench list


def test_list_is_short_one_line_per_model_dataset_and_metric(manager, capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < 60, len(lines)
    for kind in ("models", "datasets", "metrics"):
        registry = getattr(manager, kind)
        for name in registry:
            rows = [line for line in lines if line.split() and line.split()[0] == name]
            if kind == "datasets" and name.startswith("mnist-"):  # MNIST's task sets share one row
                rows = [line for line in lines if line.startswith("mnist-* ") and name.split("-")[1] in line]
            assert len(rows) == 1, (kind, name, rows)
    vae = next(line for line in lines if line.startswith("vae "))
    assert "digits, grid25, ring8" in vae and "mnist" not in vae  # the datasets --all runs it on
    ais = next(line for line in lines if line.startswith("ais "))
    assert "decoder or latent" in ais
    agg = next(line for line in lines if line.startswith("aggregate_posterior "))
    assert "an encoder" in agg


def test_list_verbose_shows_every_dataset_and_plugin(capsys):
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    vae = next(line for line in out.splitlines() if line.startswith("│ vae "))
    assert "mnist-captions" in out and "plugin" in out and "│ vae" in vae
    assert len(out.splitlines()) > 60  # the full detail wraps the dataset lists


# ----------------------------------------------------------------------------- a fast --help


def _modules_after(code: str) -> list[str]:
    """Which heavy modules are imported after running ``code`` in a fresh interpreter."""
    probe = (code + "\nimport sys\nheavy = ('torch', 'pandas', 'rich', 'pluggy', 'genbench.model', "
             "'genbench.manager', 'genbench_plugins')\nprint('imported:', *(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "imported:", done.stdout
    return last[1:]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["check", "--help"]])
def test_help_imports_neither_torch_nor_the_plugins(argv):
    code = f"from genbench.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
    assert _modules_after(code) == []


def test_import_genbench_is_light_and_its_names_load_on_first_use():
    assert _modules_after("import genbench") == []
    loaded = _modules_after("import genbench\nassert genbench.GenerativeModel.__name__ == 'GenerativeModel'\n"
                            "from genbench import hookimpl, Capability\nassert Capability.SAMPLE == 'sample'")
    assert "torch" in loaded and "genbench.model" in loaded


def test_genbench_keeps_its_public_names():
    import genbench
    from genbench.hookspecs import hookimpl
    from genbench.model import Capability, DataSpec, GenerativeModel

    assert genbench.__all__ == ["Capability", "DataSpec", "GenerativeModel", "hookimpl", "leaderboard", "run",
                                "__version__"]
    assert (genbench.Capability, genbench.DataSpec, genbench.GenerativeModel, genbench.hookimpl) == \
        (Capability, DataSpec, GenerativeModel, hookimpl)
    assert set(genbench.__all__) <= set(dir(genbench))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        genbench.nope  # noqa: B018
