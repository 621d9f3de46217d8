"""The patches to Faust's behaviour do what their docstrings say."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from mode import Service

from supplyflow.app import faust_patches
from supplyflow.app.faust_patches import QuietWeb, SupplyflowApp, flush_until_empty


class SlowBuffer:
    """A producer buffer whose messages leave one every 0.3 s (slower than Faust's 0.1 s)."""

    def __init__(self, messages: int) -> None:
        self.size = messages
        self.state = "running"
        self.message_sent = asyncio.Event()

    async def drain(self) -> None:
        while self.size:
            await asyncio.sleep(0.3)
            self.size -= 1
            self.message_sent.set()


async def test_flush_waits_until_the_buffer_is_empty() -> None:
    buffer = SlowBuffer(3)
    drain = asyncio.create_task(buffer.drain())
    await asyncio.wait_for(flush_until_empty(buffer), timeout=5)
    assert buffer.size == 0
    await drain


async def test_faust_flush_alone_would_return_early() -> None:
    """The upstream behaviour the patch replaces: returns with messages still queued."""
    buffer: Any = SlowBuffer(3)
    drain = asyncio.create_task(buffer.drain())
    await ProducerBuffer.flush_atmost(buffer, None)
    assert buffer.size > 0
    drain.cancel()


def test_install_replaces_producer_buffer_flush() -> None:
    faust_patches.install()
    assert ProducerBuffer.flush is flush_until_empty


async def test_flush_waits_for_a_message_still_on_its_way_to_the_client() -> None:
    buffer: Any = SlowBuffer(0)
    buffer._supplyflow_in_flight = 1

    async def arrive() -> None:
        await asyncio.sleep(0.3)
        buffer._supplyflow_in_flight = 0

    task = asyncio.create_task(arrive())
    await asyncio.wait_for(flush_until_empty(buffer), timeout=5)
    assert buffer._supplyflow_in_flight == 0
    await task


def test_web_serves_no_builtin_views(tmp_path: Path) -> None:
    app = SupplyflowApp("p", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    web = app.web
    assert isinstance(web, QuietWeb)
    assert web.blueprints._enabled == []


def test_partition_scope_sets_and_restores_the_current_event() -> None:
    from faust.streams import current_event

    event: Any = object.__new__(type("Event", (), {}))
    assert current_event() is None
    with faust_patches.partition_scope(event):
        assert current_event() is event
    assert current_event() is None


class Delivery:
    """A stand-in for Faust's per-record delivery coroutine, recording what happened."""

    def __init__(self) -> None:
        self.blocker: asyncio.Future[str] | None = None
        self.events: list[str] = []

    async def at_once(self) -> str:
        self.events.append("delivered")
        return "done"

    async def after_wait(self) -> str:
        self.blocker = asyncio.get_running_loop().create_future()
        try:
            value = await self.blocker  # a full stream queue
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise
        self.events.append(f"delivered {value}")
        return value

    async def failing(self) -> str:
        raise ValueError("bad record")


async def test_eager_delivery_completes_without_the_race_when_nothing_waits() -> None:
    service: Any = _service()
    delivery = Delivery()
    suspend = asyncio.Event()
    other: Any = suspend.wait()
    result = await faust_patches.wait_first_eager(service, delivery.at_once(), other)
    assert result.results == ["done"]
    assert delivery.events == ["delivered"]
    assert other.cr_frame is None  # closed, never started: no "never awaited" warning


async def test_a_delivery_that_waits_finishes_inside_the_race() -> None:
    service: Any = _service()
    delivery = Delivery()
    suspend = asyncio.Event()
    race = asyncio.create_task(
        faust_patches.wait_first_eager(service, delivery.after_wait(), suspend.wait())
    )
    await asyncio.sleep(0.01)
    assert delivery.blocker is not None
    assert delivery.events == []
    delivery.blocker.set_result("later")
    result = await asyncio.wait_for(race, 5)
    assert "later" in result.results
    assert delivery.events == ["delivered later"]


async def test_a_suspended_flow_still_interrupts_a_waiting_delivery() -> None:
    """What Faust's race is for: a rebalance must not wait for a full queue to drain."""
    service: Any = _service()
    delivery = Delivery()
    suspend = asyncio.Event()
    race = asyncio.create_task(
        faust_patches.wait_first_eager(service, delivery.after_wait(), suspend.wait())
    )
    await asyncio.sleep(0.01)
    suspend.set()
    await asyncio.wait_for(race, 5)
    assert delivery.events == ["cancelled"]
    assert delivery.blocker is not None
    assert delivery.blocker.cancelled()


async def test_a_failing_delivery_raises_and_closes_the_rest() -> None:
    service: Any = _service()
    other: Any = asyncio.Event().wait()
    with pytest.raises(ValueError, match="bad record"):
        await faust_patches.wait_first_eager(service, Delivery().failing(), other)
    assert other.cr_frame is None


def test_install_makes_the_consumer_deliver_eagerly() -> None:
    faust_patches.install()
    assert Consumer.wait_first is faust_patches.wait_first_eager


def _service() -> Any:
    return Service()
