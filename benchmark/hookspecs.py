"""Every hook a genbench plugin can implement, grouped by phase.

A plugin is a module (or object) with functions decorated by ``genbench.hookimpl`` whose names
match the specifications below.  Hooks *register* things; the registered classes do the work.
All hooks are called with keyword arguments only.

Registration phase (called once, when the plugin manager loads):

* ``register_models(register)``   -- model families (``GenerativeModel`` subclasses)
* ``register_datasets(register)`` -- datasets (``DatasetEntry`` objects)
* ``register_metrics(register)``  -- metrics (``Metric`` objects)

Run phase (observers; return values are ignored):

* ``trial_started(trial)``
* ``trial_finished(trial, record)``
* ``suite_finished(records)``
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "genbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration phase -------------------------------------------------------------------


@hookspec
def register_models(register):
    """Register model families.

    :param register: call ``register(ModelClass)`` once per ``genbench.GenerativeModel``
        subclass.  The class's ``name`` attribute is its registry key; registering a name twice
        is an error that names both plugins.
    Returning None (the usual case) is fine: the return value is ignored.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    :param register: call ``register(entry)`` with a ``genbench.datasets.DatasetEntry`` (a name,
        a data kind and a builder that returns a ``genbench.datasets.Dataset``).
    Returning None is fine: the return value is ignored.
    """


@hookspec
def register_metrics(register):
    """Register metrics.

    :param register: call ``register(metric)`` with a ``genbench.metrics.Metric`` instance.  A
        metric declares the capabilities and data kinds it needs; the runner evaluates every
        metric whose needs a model meets.
    Returning None is fine: the return value is ignored.
    """


# --- run phase (observers) ----------------------------------------------------------------


@hookspec
def trial_started(trial):
    """Called before a trial trains.

    :param trial: the ``genbench.runner.Trial`` (model, dataset, seed, budget, profile).
    The return value is ignored.
    """


@hookspec
def trial_finished(trial, record):
    """Called when a trial has a result, whether it succeeded or failed.

    :param trial: the ``genbench.runner.Trial``.
    :param record: the result record (a dict, as written to the runs folder); ``record["status"]``
        is ``"ok"`` or ``"failed"`` with ``record["reason"]``.
    The return value is ignored.
    """


@hookspec
def suite_finished(records):
    """Called once after every trial of a suite has a result.

    :param records: the list of result records of the suite (finished earlier ones included).
    The return value is ignored.
    """
