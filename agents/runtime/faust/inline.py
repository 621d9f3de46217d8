"""Running a coroutine up to its first wait without a task (for patches 10 and 11).

Faust waits for many small coroutines that usually finish at once (a changelog record
already queued, a per-record callback with room in its queue) with ``asyncio.wait_for``
or ``wait_first``, which start tasks and timers for each. :func:`start` runs one inline
and hands back the rest, to be awaited as a task would run it, only when it has to wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["close", "start"]


async def _resume(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Run the rest of ``coro`` (started outside a task; its last step yielded ``waiting``,
    the future it awaits, or None for a bare yield) as a task would."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await waiting  # a task cancelling this one cancels ``waiting`` too
        except BaseException as outcome:  # noqa: BLE001  # the coroutine's to handle
            # What ``coro`` would have been resumed with: the error of the future it
            # awaits, or the cancellation of the task running it.
            try:
                waiting = coro.throw(outcome)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` up to its first wait: ``(True, its result)`` if it finished without
    one, else ``(False, a coroutine that runs the rest as a task would)``."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _resume(coro, waiting)


def close(waitable: Any) -> None:
    """A coroutine that will never run: close it (no "never awaited" warning)."""
    if isinstance(waitable, Coroutine):
        waitable.close()
