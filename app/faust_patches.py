"""Every change supplyflow makes to Faust's behaviour, in one place.

1. :class:`QuietWeb`: Faust's aiohttp web server without its built-in blueprints. The
   ``/table`` and ``/router`` views dump raw table contents to anyone who can reach the
   port, and ``/`` would shadow our status page; the contract allows only our routes.
2. :class:`SupplyflowApp`: a ``faust.App`` that builds :class:`QuietWeb`.
3. :class:`MsgpackTable`: a ``faust.Table`` whose store and changelog use msgpack. Faust
   picks a table's codec from its value type and ignores a ``schema``'s serializers, so a
   table without a model value type would write JSON to RocksDB and its changelog.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from supplyflow.codecs.serializers import MSGPACK_CODEC

__all__ = ["MsgpackTable", "QuietWeb", "SupplyflowApp"]


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


class MsgpackTable(faust.Table[Any, Any]):
    """A table whose keys and values go through the ``msgpack`` codec everywhere."""

    def _serializer_from_type(self, typ: Any) -> str:
        return MSGPACK_CODEC
