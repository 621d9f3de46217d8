"""supplyflow: keeps a distributor's ERP, procurement, WMS, 3PL and sales channels in step.

The subpackages mirror the architecture: ``codecs`` turns bytes into canonical events and
back, ``tables`` holds state models and the pure functions that change them, ``agents``
wires Kafka topics to those functions, and ``app`` builds the Faust app, settings, CLI,
web views and metrics.
"""

from importlib.metadata import PackageNotFoundError, version

from supplyflow.compiled import choose_build
from supplyflow.errors import SupplyflowError

__all__ = ["SupplyflowError", "__version__"]

# The compiled domain (`make compile`) if built and current, else its sources
# (supplyflow.compiled); a stale build would run old code, so it is refused.
choose_build()

try:
    __version__ = version("supplyflow")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
