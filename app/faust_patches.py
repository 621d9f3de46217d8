"""Every change supplyflow makes to Faust's behaviour, in one place.

1. :class:`QuietWeb`: Faust's aiohttp web server without its built-in blueprints. The
   ``/table`` and ``/router`` views dump raw table contents to anyone who can reach the
   port, and ``/`` would shadow our status page; the contract allows only our routes.
2. :class:`SupplyflowApp`: a ``faust.App`` that builds :class:`QuietWeb`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust
from faust.web.drivers.aiohttp import Web as AiohttpWeb

__all__ = ["QuietWeb", "SupplyflowApp"]


class QuietWeb(AiohttpWeb):
    """The aiohttp web driver serving only the pages the app registers itself."""

    default_blueprints: ClassVar[list[Any]] = []
    production_blueprints: ClassVar[list[Any]] = []
    debug_blueprints: ClassVar[list[Any]] = []
    optional_blueprints: ClassVar[list[Any]] = []


class SupplyflowApp(faust.App):
    """``faust.App`` whose web server is :class:`QuietWeb`."""

    def _new_web(self) -> QuietWeb:
        return QuietWeb(self)
