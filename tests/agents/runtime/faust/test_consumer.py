"""Patch 10: the consumer runs a per-record callback inline unless it has to wait."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer

from supplyflow.agents.runtime import faust as faust_runtime
from supplyflow.agents.runtime.faust.consumer import consumer_wait_first


def _consumer() -> Any:
    return SimpleNamespace(
        suspend_flow=asyncio.Event(),
        _stopped=asyncio.Event(),
        _crashed=asyncio.Event(),
        loop=asyncio.get_running_loop(),
    )


async def test_wait_first_runs_a_callback_that_never_waits_inline() -> None:
    consumer, ran = _consumer(), []

    async def callback() -> str:
        ran.append(asyncio.current_task())
        return "done"

    tasks_before = len(asyncio.all_tasks())
    result = await consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    assert result.results == ["done"]
    assert result.stopped is False
    assert ran == [asyncio.current_task()]  # no task of its own
    assert len(asyncio.all_tasks()) == tasks_before


async def test_wait_first_finishes_a_callback_that_has_to_wait() -> None:
    consumer, gate, steps = _consumer(), asyncio.get_running_loop().create_future(), []

    async def callback() -> None:
        steps.append("started")
        steps.append(await gate)
        await asyncio.sleep(0)
        steps.append("finished")

    waiting = asyncio.ensure_future(
        consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.01)
    assert steps == ["started"]
    assert not waiting.done()
    gate.set_result("opened")
    result = await asyncio.wait_for(waiting, 5)
    assert steps == ["started", "opened", "finished"]
    assert result.stopped is False
    assert len(result.done) == 1


async def test_wait_first_abandons_a_waiting_callback_when_the_flow_is_suspended() -> None:
    consumer, gate, steps = _consumer(), asyncio.get_running_loop().create_future(), []

    async def callback() -> None:
        try:
            await gate
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise
        steps.append("ran on")  # never: the flow was suspended first

    waiting = asyncio.ensure_future(
        consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()
    result = await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.01)
    assert result.results == [True]  # the suspension won
    assert steps == ["cancelled"]
    assert gate.cancelled()


async def test_wait_first_raises_what_the_callback_raises() -> None:
    consumer = _consumer()

    async def callback() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())


async def test_wait_first_while_suspended_does_not_run_the_callback() -> None:
    consumer, ran = _consumer(), []
    consumer.suspend_flow.set()

    async def callback() -> None:
        ran.append(1)

    result = await consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    # Faust's own wait_first: both start as tasks; the callback may or may not have run
    # by the time the already-set suspension wins, but it is not run inline first.
    assert True in result.results
    assert len(result.done) >= 1


async def test_wait_first_hands_the_awaited_futures_error_to_the_callback() -> None:
    consumer, gate = _consumer(), asyncio.get_running_loop().create_future()

    async def callback() -> str:
        try:
            await gate
        except KeyError as exc:
            return f"handled {exc}"
        return "no error"

    waiting = asyncio.ensure_future(
        consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.01)
    gate.set_exception(KeyError("k"))
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == ["handled 'k'"]


def test_install_replaces_consumer_wait_first() -> None:
    faust_runtime.install()
    assert Consumer.wait_first is consumer_wait_first
