"""The plugin author's path: `genbench new-plugin` writes a package that installs, registers
through its entry point, passes `genbench check` and its own test unchanged; the README's
example is that package's model; `genbench.testing.check_model` fails a model that breaks the
contract, naming the check."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genbench.cli import main
from genbench.scaffold import model_source
from genbench.testing import check_model

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_model_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Adding a model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_is_the_skeleton_model():
    assert readme_model_example() == model_source("my-model")


def load_example(tmp_path, name="my_model_example"):
    path = tmp_path / f"{name}.py"
    path.write_text(readme_model_example())
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_example_passes_the_contract_check_as_written(tmp_path):
    results = check_model(load_example(tmp_path).MyModel, steps=3)
    assert {r.dataset for r in results} == {"digits", "ring8"} and all(r.ok for r in results)


def test_check_model_names_the_broken_check_and_its_fix(tmp_path):
    module = load_example(tmp_path, "broken_example")

    class NoSigmoid(module.MyModel):  # the mistake the README once made: image samples outside [0, 1]
        name = "no-sigmoid"

        def sample(self, n, generator=None, condition=None):
            z = torch.randn(n, self.config.latent_dim, generator=generator)
            return (self.net(z) * 10).reshape(n, *self.spec.shape)

    with pytest.raises(AssertionError) as err:
        check_model(NoSigmoid, datasets=["digits"], steps=2)
    message = str(err.value)
    assert "no-sigmoid on digits: sample failed" in message and "[0, 1]" in message and "fix:" in message

    class NoFamily(module.MyModel):
        name, family = "no-family", ""

    with pytest.raises(AssertionError, match="would not register: .*no 'family'"):
        check_model(NoFamily)


def test_new_plugin_package_installs_registers_and_passes_check_and_its_own_test(tmp_path, capsys):
    assert main(["new-plugin", "tiny-gmmn", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "tiny-gmmn"
    assert "pip install -e" in capsys.readouterr().out
    assert {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "tiny_gmmn/__init__.py", "tests/test_tiny_gmmn.py"}
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, capture_output=True)
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    listed = subprocess.run([str(BIN / "genbench"), "list", "--json"], env=env, capture_output=True, text=True,
                            check=True)
    models = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    assert models["tiny-gmmn"]["family"] == "GMMN"

    check = subprocess.run([str(BIN / "genbench"), "check", "tiny-gmmn", "--steps", "2"], env=env,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 model(s) honour the contract" in check.stdout

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(pkg)], env=env,
                         cwd=pkg, capture_output=True, text=True)
    assert own.returncode == 0 and "1 passed" in own.stdout, own.stdout + own.stderr


@pytest.mark.parametrize("name, says", [("My_Model", "lowercase letters and digits joined by hyphens"),
                                        ("exists", "already exists"), ("torch", "'torch' is already importable")])
def test_new_plugin_refuses_a_bad_name_or_an_existing_folder(name, says, tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert says in out and len(out.strip().splitlines()) == 1
