"""Planning a suite: which (model, dataset, seed) trials `genbench run` asks for, with each family's
config overrides checked.
"""

from __future__ import annotations

import dataclasses

from genbench.budget import Budget
from genbench.errors import GenbenchError
from genbench.manager import PluginManager
from genbench.metrics import EVERY_METRIC, MetricSelection
from genbench.profiles import get_profile
from genbench.runner import Trial


def default_datasets(manager: PluginManager) -> list[str]:
    """What `--all` runs on: every registered dataset marked for the default suite."""
    return [name for name in manager.datasets if manager.datasets.get(name).in_default_suite]


def runs_by_default(model_cls, spec) -> bool:
    """Under `--all`, a task dataset (one with extra batch keys: captions, domains, patches) is for
    the families that need those keys; plain samplers run on the base datasets only."""
    if not model_cls.applies_to(spec)[0]:
        return False
    return not spec.extras or bool(model_cls.requires & set(spec.extras))


def _has_list(value) -> bool:
    return isinstance(value, list) or isinstance(value, tuple | dict) and any(
        _has_list(v) for v in (value.values() if isinstance(value, dict) else value))


def _tuples(value):
    """``value`` with every list a tuple, at any depth."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def check_overrides(model_cls, overrides: dict, where: str) -> None:
    """Config overrides name fields of the family's config and are values of each field's annotated
    type, checked by pydantic in strict mode: ``scale: float = 1`` takes 0.5 and 1, ``lr: float``
    refuses "3e-4" (a string) and ``hidden: int`` refuses 2.5 and true; ``width: int | None = None``
    takes 8 or none but not "8".  A suite file has no tuples: a list stands for a tuple field."""

    from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

    from genbench.overrides import field_types

    if not isinstance(overrides, dict):
        raise GenbenchError(f"{where}: the config of {model_cls.name!r} must be a table of field = value, "
                            f"got {type(overrides).__name__}")
    model_cls.make_config(overrides)  # unknown fields list the known ones
    annotations = field_types(model_cls.Config)
    defaults = model_cls.make_config({})
    for name, value in overrides.items():
        annotation = annotations[name]
        try:
            adapter = TypeAdapter(annotation)
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError:
                if not _has_list(value):
                    raise
                adapter.validate_python(_tuples(value), strict=True)  # TOML lists for tuple fields, at any depth
        except (PydanticSchemaGenerationError, TypeError, NameError):
            continue  # an annotation pydantic cannot check (a module, a forward reference): the family checks it
        except ValidationError as exc:
            field = next(f for f in dataclasses.fields(model_cls.Config) if f.name == name)
            why = exc.errors()[0]["msg"].lower()
            raise GenbenchError(f"{where}: {model_cls.name}.{name} expects {field.type} (default "
                                f"{getattr(defaults, name)!r}), got {type(value).__name__} {value!r}: {why}") from None


def plan_trials(manager: PluginManager, models: list[str] | None, datasets: list[str] | None, budget: Budget,
                seeds: int, profile: str, run_all: bool = False, config: dict | None = None,
                metrics: MetricSelection | None = None) -> list[Trial]:
    """Every (model, dataset, seed) asked for.  ``--all`` = every registered model on every default
    dataset it applies to (see ``runs_by_default``); otherwise the named models on the named
    datasets (a named pair that does not apply is an error that says why).  ``config`` maps a model
    name to overrides of its family's config; ``metrics`` is the metric selection of every trial
    (:func:`genbench.metrics.select_metrics`; default: every metric)."""
    get_profile(profile)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise GenbenchError(f"seeds must be a whole number of at least 1, got {seeds!r}")
    model_names = list(manager.models) if (run_all and not models) else list(models or [])
    if not model_names:
        raise GenbenchError("nothing to run: name models with --model NAME (see `genbench list`) or use --all")
    for m in model_names:
        manager.models.get(m)  # unknown names list the known ones
    config = dict(config or {})
    for m, overrides in config.items():
        if m not in model_names:
            raise GenbenchError(f"config given for model {m!r}, which is not in this suite "
                                f"(models: {', '.join(model_names)}); config is a table per model: [config.vae]")
        check_overrides(manager.models.get(m), overrides, "config")
    ds_names = list(datasets) if datasets else default_datasets(manager)
    for d in ds_names:
        manager.datasets.get(d)
    trials = []
    for m in model_names:
        cls = manager.models.get(m)
        if datasets and not run_all:
            for d in ds_names:
                ok, why = cls.applies_to(manager.datasets.get(d).spec)
                if not ok:
                    raise GenbenchError(f"model {m!r} does not apply to dataset {d!r}: {why}")
            chosen = ds_names
        else:
            chosen = [d for d in ds_names if runs_by_default(cls, manager.datasets.get(d).spec)]
        for d in chosen:
            for s in range(seeds):
                trials.append(Trial(m, d, s, budget, profile, dict(config.get(m, {})),
                                    metrics or EVERY_METRIC))
    if not trials:
        raise GenbenchError(f"no model among {model_names} applies to datasets {ds_names}")
    for name in sorted({t.dataset for t in trials}):  # a set's missing files are one line, before any trial
        check = getattr(manager.datasets.get(name), "check", None)
        if check is not None:
            check()
    return trials


