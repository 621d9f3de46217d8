"""Patches 9 and 11: recovery's ``need_recovery`` and ``wait_for`` answer as Faust's do."""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery

from supplyflow.agents.runtime import faust as faust_runtime
from supplyflow.agents.runtime.faust.recovery import need_recovery, wait_for_inline


def _remaining_any(highwaters: dict[str, int | None], offsets: dict[str, int | None]) -> bool:
    """Faust's own ``need_recovery``: a Counter of what is left, any value above 0."""
    known = Counter(offsets)
    left = Counter(
        {
            tp: hw - known[tp]
            for tp, hw in highwaters.items()
            if hw is not None and known[tp] is not None
        }
    )
    return any(v > 0 for v in left.values())


@pytest.mark.parametrize(
    ("highwaters", "offsets"),
    [
        ({}, {}),
        ({"a": 10, "b": 5}, {"a": 10, "b": 5}),
        ({"a": 10, "b": 5}, {"a": 10, "b": 4}),
        ({"a": 10, "b": None}, {"a": 9, "b": 0}),
        ({"a": 10}, {"a": None}),
        ({"a": 3}, {}),  # no offset yet: a Counter reads 0
        ({"a": 3}, {"a": 7}),  # past the highwater
    ],
)
def test_need_recovery_answers_as_faust_does(
    highwaters: dict[str, int | None], offsets: dict[str, int | None]
) -> None:
    recovery = SimpleNamespace(active_highwaters=highwaters, active_offsets=Counter(offsets))
    assert need_recovery(recovery) is _remaining_any(highwaters, offsets)


async def test_wait_for_inline_returns_a_ready_item_without_a_task() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait("record")
    tasks_before = len(asyncio.all_tasks())
    assert await wait_for_inline(queue.get(), timeout=5.0) == "record"
    assert len(asyncio.all_tasks()) == tasks_before


async def test_wait_for_inline_waits_for_an_item_and_times_out_as_wait_for() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.05, queue.put_nowait, "later")
    assert await wait_for_inline(queue.get(), timeout=5.0) == "later"
    with pytest.raises(TimeoutError):
        await wait_for_inline(queue.get(), timeout=0.05)
    # The timed-out get left no waiter behind: the next item goes to the next get.
    queue.put_nowait("next")
    assert await wait_for_inline(queue.get(), timeout=5.0) == "next"


def test_install_gives_recovery_the_inline_wait_for() -> None:
    from faust.tables import recovery as faust_recovery

    faust_runtime.install()
    patched: Any = getattr(faust_recovery, "asyncio")  # noqa: B009  # not exported: read it as such
    assert patched.wait_for is wait_for_inline
    assert patched.TimeoutError is asyncio.TimeoutError


def test_install_replaces_need_recovery() -> None:
    faust_runtime.install()
    assert Recovery.need_recovery is need_recovery
