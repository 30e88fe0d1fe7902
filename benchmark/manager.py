"""The plugin manager: loads built-in and third-party plugins and holds what they register.

Plugins come from three places, in this order:

1. genbench's own datasets and metrics (``genbench.builtins``);
2. every module named in the ``genbench`` entry-point group -- the built-in model families in
   ``plugins/`` load this way, exactly as a pip-installed third-party package would;
3. local files given with ``--plugin path/to/file.py`` (or the ``GENBENCH_PLUGINS`` environment
   variable, ``os.pathsep``-separated).

A plugin that fails to import is recorded in ``broken`` (shown by ``genbench list``) and the rest
still load: one bad plugin never takes the others down.

Model, dataset and metric names become parts of file names, so each is checked where it is
registered: lower-case ASCII letters, digits, '.', '_' and '-', starting with a letter or a digit
(``NAME_PATTERN``).  A name outside that set is a RegistrationError that names the plugin and a
name to use instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy

from genbench import hookspecs
from genbench.errors import GenbenchError, RegistrationError, UnknownNameError
from genbench.model import GenerativeModel

ENTRY_POINT_GROUP = "genbench"

# Model, dataset and metric names become parts of file names (trial records, sample grids, CSVs):
# lower-case letters, digits, '.', '_' and '-', starting with a letter or a digit.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
NAME_RULE = "lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. 'my-vae')"


def check_name(kind: str, name: Any, owner: str) -> str:
    """``name`` if it is a valid model, dataset or metric name, else a RegistrationError that says
    which class registered it and how to fix it."""
    if not isinstance(name, str) or not name:
        raise RegistrationError(f"{owner} has an empty {kind} name; set name = 'my-{kind}'")
    if not NAME_PATTERN.fullmatch(name):
        hint = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("._-") or f"my-{kind}"
        raise RegistrationError(f"{owner} has the {kind} name {name!r}, which is not a plain name: a {kind} name "
                                f"is a file name of {NAME_RULE}; rename it, e.g. name = {hint!r}")
    return name


@dataclass
class Registry:
    """Name -> item, remembering which plugin registered each item."""

    kind: str  # "model", "dataset", "metric"
    validate: Callable[[Any], str]  # returns the item's name or raises RegistrationError
    items: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def add(self, item: Any, plugin: str) -> None:
        try:
            name = self.validate(item)
        except RegistrationError as exc:
            raise RegistrationError(f"plugin {plugin!r} registered an invalid {self.kind}: {exc}") from None
        if name in self.items:
            raise RegistrationError(
                f"{self.kind} {name!r} is registered twice: by plugin {self.owners[name]!r} and by "
                f"plugin {plugin!r}. Rename one of them (the name attribute) or uninstall one plugin."
            )
        self.items[name] = item
        self.owners[name] = plugin

    def get(self, name: str) -> Any:
        if name not in self.items:
            known = ", ".join(sorted(self.items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self.items[name]

    def __contains__(self, name: str) -> bool:
        return name in self.items

    def __iter__(self):
        return iter(sorted(self.items))

    def values(self) -> list[Any]:
        return [self.items[k] for k in sorted(self.items)]


def validate_model(cls: Any, known_capabilities: frozenset[str]) -> str:
    """The name of model class ``cls``, or RegistrationError saying what registration refuses."""
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise RegistrationError(
            f"{cls!r} is not a subclass of genbench.GenerativeModel; register the class itself"
        )
    if not cls.name or not isinstance(cls.name, str):
        raise RegistrationError(f"{cls.__name__} has no 'name' class attribute; set name = 'my-model'")
    check_name("model", cls.name, f"{cls.__name__}")
    if not cls.family:
        raise RegistrationError(f"{cls.__name__} ({cls.name}) has no 'family' class attribute")
    unknown = set(cls.capabilities) - known_capabilities
    if unknown:
        raise RegistrationError(
            f"{cls.__name__} ({cls.name}) declares capabilities {sorted(unknown)} that no registered metric "
            f"needs; known: {sorted(known_capabilities)} (a capability of your own needs a metric that "
            "lists it in its `needs`)"
        )
    import dataclasses

    if not dataclasses.is_dataclass(cls.Config):
        raise RegistrationError(f"{cls.__name__}.Config must be a dataclass with defaults")
    return cls.name


def _validate_named(kind: str, required: tuple[str, ...]) -> Callable[[Any], str]:
    def validate(item: Any) -> str:
        for attr in required:
            if not hasattr(item, attr):
                raise RegistrationError(f"{item!r} has no {attr!r}; a {kind} needs {', '.join(required)}")
        if not isinstance(item.name, str) or not item.name:
            raise RegistrationError(f"{item!r} has an empty name")
        if kind == "dataset":
            from genbench.datasets import check_dataset_names

            return check_dataset_names(item, check_name)
        return check_name(kind, item.name, f"{kind} {type(item).__name__}")

    return validate


def validate_metric(metric: Any) -> str:
    """The name of ``metric``, or RegistrationError naming what is wrong with what it declares."""
    name = _validate_named("metric", ("name", "columns", "compute"))(metric)
    bad = {c: d for c, d in dict(metric.columns).items() if d not in ("higher", "lower", "none")}
    if bad:
        raise RegistrationError(f"metric {name!r}: column directions must be 'higher', 'lower' or 'none', got {bad}")
    headline = dict(getattr(metric, "headline", {}) or {})
    stray = set(headline) - set(metric.columns)
    if stray:
        raise RegistrationError(f"metric {name!r}: headline names columns it does not have: {sorted(stray)}")
    settings = getattr(metric, "Settings", None)
    if settings is not None:
        import dataclasses

        if not dataclasses.is_dataclass(settings):
            raise RegistrationError(f"metric {name!r}: Settings must be a dataclass with defaults")
        fields = {f.name for f in dataclasses.fields(settings)}
        for profile, values in dict(getattr(metric, "profile_settings", {}) or {}).items():
            unknown = set(values) - fields
            if unknown:
                raise RegistrationError(f"metric {name!r}: profile_settings[{profile!r}] sets {sorted(unknown)}, "
                                        f"which its Settings does not have (fields: {sorted(fields)})")
    return name


class PluginManager:
    """Loads plugins and holds the model, dataset and metric registries."""

    def __init__(self, plugin_files: Iterable[str | os.PathLike] = (), entry_points: bool = True):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.broken: dict[str, str] = {}  # plugin name -> why it failed to load
        self.models = Registry("model", lambda cls: validate_model(cls, self.known_capabilities()))
        self.datasets = Registry("dataset", _validate_named("dataset", ("name", "kind", "build")))
        self.metrics = Registry("metric", validate_metric)

        from genbench import builtins

        self.pm.register(builtins, name="genbench.builtins")
        if entry_points:
            self._load_entry_points()
        env_files = [p for p in os.environ.get("GENBENCH_PLUGINS", "").split(os.pathsep) if p]
        for path in [*env_files, *plugin_files]:
            self.load_file(path)
        self.pm.check_pending()
        self._collect()
        self._add_env_folders()

    def _add_env_folders(self) -> None:
        """The ``folder:PATH`` datasets a parent process was given (``GENBENCH_FOLDERS``)."""
        from genbench.imagesets import FOLDERS_ENV, env_folders, folder_entry

        for text in env_folders():
            try:
                entry = folder_entry(text)
            except GenbenchError as exc:  # a folder since moved costs that dataset, not every command
                import warnings

                warnings.warn(f"{FOLDERS_ENV} names {text!r}, left out: {exc}", stacklevel=2)
                continue
            if entry.name not in self.datasets:
                self.datasets.add(entry, "folder")

    # --- loading -----------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if self.pm.get_plugin(ep.name) is not None or ep.name in self.broken:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the others down
                self.broken[ep.name] = (
                    f"entry point {ep.value!r} failed to import: {type(exc).__name__}: {exc}. "
                    "Reinstall or uninstall the package that provides it."
                )
                continue
            self.pm.register(plugin, name=ep.name)

    def load_file(self, path: str | os.PathLike) -> Any:
        """Load one local ``.py`` file as a plugin (the ``--plugin`` flag)."""
        path = Path(path)
        if not path.is_file() or path.suffix != ".py":
            raise RegistrationError(
                f"--plugin {str(path)!r}: not a Python file. Give the path of a .py file that defines "
                "hook functions decorated with @genbench.hookimpl."
            )
        name = f"genbench_local_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise RegistrationError(
                f"--plugin {str(path)!r} failed to import:\n{traceback.format_exc(limit=-3)}"
                f"Fix the error above in {path.name}."
            ) from exc
        self.pm.register(module, name=str(path))
        return module

    def _collect(self) -> None:
        """Call each registration hook implementation separately, so every registered item
        remembers which plugin registered it (error messages name the plugin)."""
        for hook_name, registry in (
            ("register_datasets", self.datasets),
            ("register_metrics", self.metrics),
            ("register_models", self.models),
        ):
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in self.broken:
                    continue

                def register(item, _plugin=impl.plugin_name, _registry=registry):
                    _registry.add(item, _plugin)

                try:
                    impl.function(register=register)
                except RegistrationError:
                    raise
                except Exception as exc:  # a plugin whose hook crashes is set aside, the others load
                    self.broken[impl.plugin_name] = (
                        f"its {hook_name} hook raised {type(exc).__name__}: {exc}. Fix or uninstall the plugin.")

    # --- queries ----------------------------------------------------------------------------

    def known_capabilities(self) -> frozenset[str]:
        """genbench's own capabilities and every one a registered metric needs (metrics register
        before models, so a family's own capability is known when the family registers)."""
        from genbench.model import Capability

        needed = (getattr(self.metrics.get(name), "needs", frozenset()) for name in self.metrics)
        return Capability.ALL.union(*needed)

    def plugin_of(self, kind: str, name: str) -> str:
        return getattr(self, kind + "s").owners[name]

    def datasets_for(self, model_cls: type[GenerativeModel], names: Iterable[str] | None = None) -> list[str]:
        """Dataset names (from ``names``, or all registered) that ``model_cls`` applies to."""
        out = []
        for name in names if names is not None else self.datasets:
            entry = self.datasets.get(name)
            if model_cls.applies_to(entry.spec)[0]:
                out.append(name)
        return out

    @property
    def hook(self):
        return self.pm.hook
