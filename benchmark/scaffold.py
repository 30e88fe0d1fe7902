"""`genbench new-plugin NAME`: a package skeleton for a new model family.

The skeleton is a small, complete family that honours the contract as written: a generative
moment-matching network (Li, Swersky & Zemel 2015), a generator trained to minimise the MMD
between its samples and the data batch.  It is also the README's *Adding a model* example (a test
keeps the two the same), so the example a newcomer copies is the one ``genbench check`` passes.

    NAME/
      pyproject.toml          the package, with its entry point in the ``genbench`` group
      README.md               how to install, check and run it
      MODULE/__init__.py      the family and its ``register_models`` hook
      tests/test_MODULE.py    the contract check through :func:`genbench.testing.check_model`

``MODULE`` is ``NAME`` with hyphens as underscores.  Nothing is overwritten: a folder that
already exists is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from genbench.errors import GenbenchError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

MODEL = '''\
"""{name}: a generative moment-matching network (Li, Swersky & Zemel 2015): a generator trained
to minimise the MMD between its samples and the data."""

from dataclasses import dataclass

import torch

import genbench
from genbench.nn import mlp, randn
from genbench.optim import adam
from genbench.toolkit.mmd import mmd2_unbiased


@dataclass
class Config:
    latent_dim: int = 8
    hidden: int = 256
    lr: float = 1e-3
    bandwidths: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0)  # Gaussian kernels, times sqrt(dim)


class {cls}(genbench.GenerativeModel):
    name, family, Config = "{name}", "GMMN", Config
    paper = "Li, Swersky & Zemel 2015, Generative Moment Matching Networks"
    capabilities = frozenset({{genbench.Capability.SAMPLE}})
    batch_size = 128

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.net = mlp([config.latent_dim, config.hidden, config.hidden, spec.dim])
        self.optimizers = {{"generator": adam(self.parameters(), lr=config.lr)}}
        self.widths = [b * spec.dim**0.5 for b in config.bandwidths]

    def kernel(self, a, b):
        sq = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-sq / (2 * w * w)) for w in self.widths)

    def train_step(self, batch, progress):  # progress: the fraction of the budget spent
        x = batch["x"].flatten(1)  # images are (n, C, H, W) in [0, 1]; points are (n, D)
        loss = mmd2_unbiased(self.sample(len(x)).flatten(1), x, self.kernel)
        opt = self.optimizers["generator"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {{"mmd2": loss.detach()}}  # a detached tensor: the runner reads it when it logs

    def sample(self, n, generator=None, condition=None):
        out = self.net(randn((n, self.config.latent_dim), generator, self.device))
        if self.spec.kind == "image":
            out = torch.sigmoid(out)  # image samples live in [0, 1], like the data
        return out.reshape(n, *self.spec.shape)


@genbench.hookimpl
def register_models(register):
    register({cls})
'''

TEST = '''\
"""The contract check of {name}: `pytest` here runs what `genbench check {name}` runs."""

from genbench.testing import check_model

from {module} import {cls}


def test_{module}_honours_the_genbench_contract():
    results = check_model({cls})  # raises AssertionError naming each failed check and its fix
    assert {{"train_step", "sample", "checkpoint"}} <= {{r.check for r in results}}
'''

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "genbench-{name}"
version = "0.1.0"
description = "{name}: a model family for genbench"
requires-python = ">=3.11"
dependencies = ["genbench"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.genbench]
{module} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# {name}

A model family for genbench (`{module}/__init__.py`).

```bash
pip install -e .                  # registers "{name}" through the `genbench` entry-point group
genbench check {name}             # the contract, on one image and one point dataset
pytest                            # the same check as a test
genbench run --model {name} --dataset digits --budget 30s
```
'''


def module_name(name: str) -> str:
    return name.replace("-", "_")


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))


def check_plugin_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise GenbenchError(f"plugin name {name!r} is not lowercase letters and digits joined by hyphens; "
                            "give e.g. genbench new-plugin my-model")


def check_module_free(name: str) -> None:
    """A new plugin's module must not shadow an importable one (genbench, torch, a family)."""
    import importlib.util

    module = module_name(name)
    try:
        taken = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        taken = True
    if taken:
        raise GenbenchError(f"a module named {module!r} is already importable here; pick another plugin name "
                            "(e.g. my-model)")


def model_source(name: str) -> str:
    """The family module of the skeleton (and of the README's example, for ``my-model``)."""
    check_plugin_name(name)
    return MODEL.format(name=name, cls=class_name(name))


def new_plugin(name: str, parent: str | Path = ".") -> Path:
    """Write the skeleton of plugin ``name`` into ``parent/name`` and return that folder."""
    check_plugin_name(name)
    check_module_free(name)
    root = Path(parent) / name
    if root.exists():
        raise GenbenchError(f"{str(root)!r} already exists; pick another name or --dir, or move it away")
    if not root.parent.is_dir():
        raise GenbenchError(f"--dir {str(root.parent)!r} is not a folder; create it or give another")
    module, cls = module_name(name), class_name(name)
    files = {
        "pyproject.toml": PYPROJECT.format(name=name, module=module),
        "README.md": README.format(name=name, module=module),
        f"{module}/__init__.py": model_source(name),
        f"tests/test_{module}.py": TEST.format(name=name, module=module, cls=cls),
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
