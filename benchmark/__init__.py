"""genbench: a fixed-budget, plugin-based benchmark for deep generative models.

The public surface a plugin author needs is re-exported here::

    import genbench

    @genbench.hookimpl
    def register_models(register):
        register(MyModel)

and a notebook runs a suite and reads its leaderboard as pandas DataFrames with
``genbench.run(...)`` and ``genbench.leaderboard(...)`` (:mod:`genbench.api`).

The names are imported on first use (``_LAZY``), so ``import genbench`` -- and with it
``genbench --help`` -- does not pay for importing torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it, imported when the name is first looked up
_LAZY = {
    "Capability": "genbench.model",
    "DataSpec": "genbench.model",
    "GenerativeModel": "genbench.model",
    "hookimpl": "genbench.hookspecs",
    "leaderboard": "genbench.api",
    "run": "genbench.api",
}

__all__ = ["Capability", "DataSpec", "GenerativeModel", "hookimpl", "leaderboard", "run", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'genbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups find it without coming back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
