"""Faust's web server, serving only the routes the app registers (patches 1 and 2).

1. :class:`QuietWeb`: Faust's aiohttp web server without its built-in blueprints. The
   ``/table`` and ``/router`` views dump raw table contents to anyone who can reach the
   port, and ``/`` would shadow our status page; the contract allows only our routes.
2. :class:`SupplyflowApp`: a ``faust.App`` that builds :class:`QuietWeb`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import faust
from faust.app.base import App
from faust.web.base import Web
from faust.web.drivers.aiohttp import Web as AiohttpWeb

__all__ = ["ORIGINALS", "QuietWeb", "SupplyflowApp"]


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


#: The Faust code these patches replace or depend on, as the pinned release defines it.
ORIGINALS: Final = {
    # reads the blueprint lists QuietWeb empties
    "Web._enabled_blueprints": Web._enabled_blueprints,
    "App._new_web": App._new_web,
}
