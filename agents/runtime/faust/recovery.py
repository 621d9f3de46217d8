"""Faust's table recovery, one changelog record at a time made cheap (patches 9 and 11).

9. :func:`install`: ``Recovery.need_recovery`` stops at the first partition with records
   left. Faust's builds a ``Counter`` over every partition and runs it after *every*
   changelog record: 8% of a rebuild's samples (py-spy, 300,000 SKU-locations).
11. :func:`install`: recovery's ``asyncio.wait_for(changelog_queue.get(), timeout=5.0)``,
   once per changelog record, returns at once when the queue has a record
   (:func:`wait_for_inline`). ``asyncio.wait_for`` starts a task and a timer for it
   every time and takes three turns of the event loop: 7% of a rebuild's samples.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final

from faust.tables import recovery as faust_recovery
from faust.tables.recovery import Recovery

from supplyflow.agents.runtime.faust.inline import start

__all__ = ["ORIGINALS", "install", "need_recovery", "wait_for_inline"]


def need_recovery(self: Any) -> bool:
    """``Recovery.need_recovery``: does any active partition have changelog records left?"""
    offsets = self.active_offsets
    for tp, highwater in self.active_highwaters.items():
        offset = offsets[tp]
        if highwater is not None and offset is not None and highwater > offset:
            return True
    return False


async def wait_for_inline(awaitable: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
    """``asyncio.wait_for`` that returns at once if ``awaitable``, a coroutine, finishes
    without waiting (no task, no timer); otherwise ``asyncio.wait_for`` on the rest."""
    if isinstance(awaitable, Coroutine):
        finished, outcome = start(awaitable)
        if finished:
            return outcome
        awaitable = outcome
    return await asyncio.wait_for(awaitable, timeout)


class _RecoveryAsyncio:
    """The ``asyncio`` module as ``faust.tables.recovery`` sees it: ``wait_for`` inline."""

    wait_for = staticmethod(wait_for_inline)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


#: The Faust code these patches replace or depend on, as the pinned release defines it.
ORIGINALS: Final = {
    "Recovery.need_recovery": Recovery.need_recovery,
    # awaits asyncio.wait_for(changelog_queue.get(), ...) once per changelog record
    "Recovery._slurp_changelogs": Recovery._slurp_changelogs.fun,  # a Service.task
}


def install() -> None:
    """Patches 9 and 11 (idempotent)."""
    Recovery.need_recovery = need_recovery  # type: ignore[method-assign]  # the patch
    faust_recovery.asyncio = _RecoveryAsyncio()  # type: ignore[assignment,attr-defined]  # the patch
