"""genbench's own plugin: the built-in datasets and metrics (model families live in plugins/)."""

from genbench.datasets import BUILTIN_DATASETS
from genbench.hookspecs import hookimpl
from genbench.metrics.fidelity import SampleQuality
from genbench.metrics.likelihood import ExactLikelihood, LatentBounds
from genbench.metrics.modes import Modes


@hookimpl
def register_datasets(register):
    for entry in BUILTIN_DATASETS:
        register(entry)


@hookimpl
def register_metrics(register):
    for metric in (SampleQuality(), ExactLikelihood(), LatentBounds(), Modes()):
        register(metric)
