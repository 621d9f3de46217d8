"""Faust codecs: ``orjson`` for the JSON output topics, ``msgpack`` for internal state.

Registered once by name with :func:`register_codecs`; tables and internal topics name
``msgpack`` explicitly so Faust never falls back to its pickle codec (whoever can write to
a topic would run code in the worker). Decoding errors become :class:`DecodeError`.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
import orjson
from faust.serializers import codecs

from supplyflow.codecs.exceptions import DecodeError
from supplyflow.codecs.packing import pack, unpack

__all__ = ["JSON_CODEC", "MSGPACK_CODEC", "MsgpackCodec", "OrjsonCodec", "register_codecs"]

JSON_CODEC: Final = "orjson"
MSGPACK_CODEC: Final = "msgpack"


class OrjsonCodec(codecs.Codec):
    """UTF-8 JSON via orjson; datetimes as RFC 3339, dataclasses and numpy supported."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_json", str(exc)) from exc


class MsgpackCodec(codecs.Codec):
    """MessagePack with str keys and bin for bytes; lists come back as lists; integers of
    any size (:mod:`supplyflow.codecs.packing`)."""

    def _dumps(self, obj: Any) -> bytes:
        return pack(obj)

    def _loads(self, s: bytes) -> Any:
        try:
            return unpack(s)
        except (ValueError, msgpack.UnpackException) as exc:
            raise DecodeError("invalid_msgpack", str(exc)) from exc


def register_codecs() -> None:
    """Make ``orjson`` and ``msgpack`` known to Faust by name (idempotent)."""
    codecs.register(JSON_CODEC, OrjsonCodec())
    codecs.register(MSGPACK_CODEC, MsgpackCodec())
