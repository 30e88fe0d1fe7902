"""genbench: a fixed-budget, plugin-based benchmark for deep generative models.

The public surface a plugin author needs is re-exported here::

    import genbench

    @genbench.hookimpl
    def register_models(register):
        register(MyModel)
"""

from genbench.hookspecs import hookimpl
from genbench.model import Capability, DataSpec, GenerativeModel

__version__ = "0.1.0"

__all__ = ["Capability", "DataSpec", "GenerativeModel", "hookimpl", "__version__"]
