"""The patches to Faust's behaviour do what their docstrings say."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from faust.transport.producer import ProducerBuffer

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
