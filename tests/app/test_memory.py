"""Returning free heap pages to the system (app.memory)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from supplyflow.app import memory

# A child process fragments its heap: 150,000 blocks of 1 KiB (glibc's, not Python's
# small-object allocator), every 64th kept, so the top of the heap stays in use and
# glibc alone returns nothing. Prints its RSS (KiB) before and after one trim.
_CHILD = textwrap.dedent(
    """
    from supplyflow.app import memory

    def rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    blocks = [bytes(1024) for _ in range(150_000)]
    kept = blocks[::64]
    del blocks
    before = rss()
    seconds = memory.trim()
    print(before, rss(), seconds, len(kept))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_returns_freed_pages_to_the_system() -> None:
    assert memory.malloc_trim() is not None, "this Linux C library should have malloc_trim"
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, after, seconds = int(out[0]), int(out[1]), float(out[2])
    # About 150 MiB freed inside the heap; at least 100 MiB of it goes back.
    assert before - after > 100 * 1024, (before, after)
    assert 0 <= seconds < 1


def test_the_worker_timer_observes_each_trim() -> None:
    observed: list[float] = []
    timers: list[tuple[float, Callable[[], Coroutine[Any, Any, None]]]] = []

    class App:
        def timer(
            self, interval: float
        ) -> Callable[
            [Callable[[], Coroutine[Any, Any, None]]], Callable[[], Coroutine[Any, Any, None]]
        ]:
            def register(
                fn: Callable[[], Coroutine[Any, Any, None]],
            ) -> Callable[[], Coroutine[Any, Any, None]]:
                timers.append((interval, fn))
                return fn

            return register

    memory.register_memory_trim(App(), observed.append)
    ((interval, fn),) = timers
    assert interval == memory.TRIM_INTERVAL_S
    asyncio.run(fn())
    assert len(observed) == 1
    assert observed[0] >= 0
