"""Helpers for the tests of a plugin's own package.

:func:`check_model` runs on a model class what ``genbench check`` runs on a registered model (the
checks listed in :mod:`genbench.check`), so a family's test suite can hold it to the contract
without going through the command line::

    from genbench.testing import check_model
    from my_model import MyModel

    def test_my_model_honours_the_contract():
        check_model(MyModel)
"""

from __future__ import annotations

from genbench.check import CheckResult, ModelChecker, datasets_to_check
from genbench.errors import RegistrationError
from genbench.manager import PluginManager, validate_model
from genbench.runner import resolve_device


def check_model(model_cls: type, datasets: list[str] | None = None, steps: int = 4, device: str = "cpu",
                config: dict | None = None) -> list[CheckResult]:
    """Every contract check of ``model_cls`` on ``datasets`` (default: what ``genbench check``
    picks, one registered default dataset per data kind the family models), each with ``steps``
    training steps and the config ``config`` (field -> value over the defaults).

    Returns the results when all passed; raises AssertionError listing each failed check, what
    went wrong and how to fix it.  The class need not be registered: it is validated as
    registration would validate it, against the datasets and metrics installed."""
    manager = PluginManager()
    try:
        validate_model(model_cls, manager.known_capabilities())
    except RegistrationError as exc:
        raise AssertionError(f"{model_cls!r} would not register: {exc}") from None
    dev = resolve_device(device)
    results: list[CheckResult] = []
    for name in datasets_to_check(manager, model_cls, datasets):
        dataset = manager.datasets.get(name).build().to(dev)
        results.extend(ModelChecker(model_cls, dataset, steps, dev, config).run())
    failed = [r for r in results if not r.ok]
    if failed:
        lines = [f"{r.model} on {r.dataset}: {r.check} failed: {r.detail}" + (f" (fix: {r.fix})" if r.fix else "")
                 for r in failed]
        raise AssertionError(f"{len(failed)} contract check(s) failed:\n" + "\n".join(lines))
    return results
