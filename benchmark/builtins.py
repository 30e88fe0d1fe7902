"""genbench's own plugin: the built-in datasets and metrics (model families live in plugins/)."""

from genbench.datasets import BUILTIN_DATASETS
from genbench.hookspecs import hookimpl
from genbench.imagesets import IMAGE_SETS
from genbench.metrics.ais import AISLikelihood
from genbench.metrics.fidelity import SampleQuality
from genbench.metrics.inception import InceptionSampleQuality
from genbench.metrics.likelihood import ExactLikelihood
from genbench.metrics.memorisation import Memorisation
from genbench.metrics.modes import Modes
from genbench.metrics.parzen import ParzenWindow
from genbench.metrics.posterior import AggregatePosteriorMMD, PosteriorGaps


@hookimpl
def register_datasets(register):
    for entry in [*BUILTIN_DATASETS, *IMAGE_SETS]:
        register(entry)


@hookimpl
def register_metrics(register):
    for metric in (SampleQuality(), InceptionSampleQuality(), Memorisation(), ExactLikelihood(), AISLikelihood(),
                   PosteriorGaps(), AggregatePosteriorMMD(), ParzenWindow(), Modes()):
        register(metric)
