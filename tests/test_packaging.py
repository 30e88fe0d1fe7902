"""The package lists every subpackage, so a wheel (not only an editable install) holds all of it."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    missing, gone = sorted(found - listed), sorted(listed - found)
    assert found == listed, f"add to [tool.setuptools] packages: {missing}; no longer there: {gone}"
