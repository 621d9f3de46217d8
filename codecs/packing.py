"""MessagePack for supplyflow's own records (state, changelogs, deltas): integers of any size.

msgpack holds integers in 64 bits, but sums in state are not bounded by any bound on one
record: a position adds up every PO, order and adjustment that touches it (about 9,300
adjustments of the largest quantity already pass 2**63 thousandths), a PO adds up its
receipts. Quantities are exact Python integers everywhere else, so only the encoding
could fail. :func:`pack` packs as msgpack does and, only when an integer does not fit
(``OverflowError``), packs again with every such integer as the extension type
:data:`BIG_INT_EXT` (its two's-complement bytes, big-endian). :func:`unpack` turns them
back into integers. The usual case costs nothing extra.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

__all__ = ["BIG_INT_EXT", "pack", "unpack"]

#: msgpack extension type code of an integer outside msgpack's 64-bit range.
BIG_INT_EXT: Final = 1
_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1

#: One packer for the process (``msgpack.packb`` builds one per call, twice the time of
#: packing a state); a packer resets its buffer after every call, and after an error.
_PACKER: Final = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """``obj`` as msgpack; integers beyond 64 bits as :data:`BIG_INT_EXT`."""
    try:
        packed: bytes = _PACKER.pack(obj)
    except OverflowError:
        packed = _PACKER.pack(_widen(obj))
    return packed


def _widen(obj: Any) -> Any:
    if type(obj) is int:
        if _INT_MIN <= obj <= _UINT_MAX:
            return obj
        size = (obj.bit_length() + 8) // 8  # room for the sign bit
        return msgpack.ExtType(BIG_INT_EXT, obj.to_bytes(size, "big", signed=True))
    if isinstance(obj, list | tuple):
        return [_widen(item) for item in obj]
    if isinstance(obj, dict):
        return {_widen(key): _widen(value) for key, value in obj.items()}
    return obj


def _ext_hook(code: int, data: bytes) -> Any:
    if code == BIG_INT_EXT:
        return int.from_bytes(data, "big", signed=True)
    return msgpack.ExtType(code, data)


def unpack(raw: bytes) -> Any:
    """What :func:`pack` packed (str keys allowed anywhere, lists as lists)."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_ext_hook)
