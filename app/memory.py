"""Hand the C allocator's free pages back to the operating system, every 15 seconds.

A worker allocates and frees a lot of short-lived memory outside Python's small-object
allocator: fetched record batches, msgpack and orjson buffers, RocksDB's reads. glibc
keeps freed memory inside its heaps for reuse and only returns the part at the top, so
a worker that has drained a large backlog keeps the RSS of its busiest moment.
``malloc_trim(0)`` returns every whole free page, wherever it lies.

Measured on one worker that processed 774,216 distributor records (300,000 SKU-locations):
RSS 700 MiB right after processing, 432 MiB after one ``malloc_trim(0)`` (a garbage
collection before it freed nothing; ``MALLOC_ARENA_MAX=2`` with a fixed mmap threshold
changed the first number by less than run-to-run noise). The worker trims every
:data:`TRIM_INTERVAL_S` from a timer (``supplyflow_memory_trim_seconds`` shows what it
costs). On a C library without ``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TRIM_INTERVAL_S", "malloc_trim", "register_memory_trim", "trim"]

log = logging.getLogger(__name__)

#: How often the worker trims. Measured on the worker above: 4 trims took 35 ms in all,
#: the longest under 50 ms (a short pause of the event loop every 15 s).
TRIM_INTERVAL_S: Final = 15.0


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    function = getattr(libc, "malloc_trim", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim_fn: Callable[[int], int] = function
    return trim_fn


_MALLOC_TRIM: Final = malloc_trim()


def trim() -> float | None:
    """Return free heap pages to the system now; the seconds it took (None: unsupported)."""
    if _MALLOC_TRIM is None:
        return None
    started = time.perf_counter()
    _MALLOC_TRIM(0)
    return time.perf_counter() - started


def register_memory_trim(app: Any, observe: Callable[[float], None]) -> None:
    """A timer of ``app`` that trims every :data:`TRIM_INTERVAL_S`; ``observe`` gets the
    seconds each trim took."""
    if _MALLOC_TRIM is None:
        log.info("this C library has no malloc_trim: freed memory stays with the process")
        return

    @app.timer(TRIM_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust ships no types
    async def trim_memory() -> None:
        seconds = trim()
        if seconds is not None:
            observe(seconds)
