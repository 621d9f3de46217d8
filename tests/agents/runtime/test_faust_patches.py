"""The patches to Faust's behaviour do what their docstrings say."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer

from supplyflow.agents.runtime import faust_patches
from supplyflow.agents.runtime.faust_patches import QuietWeb, SupplyflowApp, flush_until_empty


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
    assert faust_patches.need_recovery(recovery) is _remaining_any(highwaters, offsets)


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
    result = await faust_patches.consumer_wait_first(
        consumer, callback(), consumer.suspend_flow.wait()
    )
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
        faust_patches.consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
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
        faust_patches.consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
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
        await faust_patches.consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())


async def test_wait_first_while_suspended_does_not_run_the_callback() -> None:
    consumer, ran = _consumer(), []
    consumer.suspend_flow.set()

    async def callback() -> None:
        ran.append(1)

    result = await faust_patches.consumer_wait_first(
        consumer, callback(), consumer.suspend_flow.wait()
    )
    # Faust's own wait_first: both start as tasks; the callback may or may not have run
    # by the time the already-set suspension wins, but it is not run inline first.
    assert True in result.results
    assert len(result.done) >= 1


def test_install_replaces_need_recovery_and_consumer_wait_first() -> None:
    faust_patches.install()
    assert Recovery.need_recovery is faust_patches.need_recovery
    assert Consumer.wait_first is faust_patches.consumer_wait_first


async def test_wait_first_hands_the_awaited_futures_error_to_the_callback() -> None:
    consumer, gate = _consumer(), asyncio.get_running_loop().create_future()

    async def callback() -> str:
        try:
            await gate
        except KeyError as exc:
            return f"handled {exc}"
        return "no error"

    waiting = asyncio.ensure_future(
        faust_patches.consumer_wait_first(consumer, callback(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.01)
    gate.set_exception(KeyError("k"))
    result = await asyncio.wait_for(waiting, 5)
    assert result.results == ["handled 'k'"]


async def test_wait_for_inline_returns_a_ready_item_without_a_task() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    queue.put_nowait("record")
    tasks_before = len(asyncio.all_tasks())
    assert await faust_patches.wait_for_inline(queue.get(), timeout=5.0) == "record"
    assert len(asyncio.all_tasks()) == tasks_before


async def test_wait_for_inline_waits_for_an_item_and_times_out_as_wait_for() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    asyncio.get_running_loop().call_later(0.05, queue.put_nowait, "later")
    assert await faust_patches.wait_for_inline(queue.get(), timeout=5.0) == "later"
    with pytest.raises(TimeoutError):
        await faust_patches.wait_for_inline(queue.get(), timeout=0.05)
    # The timed-out get left no waiter behind: the next item goes to the next get.
    queue.put_nowait("next")
    assert await faust_patches.wait_for_inline(queue.get(), timeout=5.0) == "next"


def test_install_gives_recovery_the_inline_wait_for() -> None:
    from faust.tables import recovery

    faust_patches.install()
    patched: Any = getattr(recovery, "asyncio")  # noqa: B009  # not exported: read it as such
    assert patched.wait_for is faust_patches.wait_for_inline
    assert patched.TimeoutError is asyncio.TimeoutError


def test_every_rocksdb_database_shares_one_cache_and_memtable_budget(tmp_path: Path) -> None:
    from faust.stores.rocksdb import RocksDBOptions

    original = RocksDBOptions.as_options
    try:
        shared = faust_patches.share_rocksdb_memory(8 * 1024 * 1024, 8 * 1024 * 1024)
        options = RocksDBOptions(write_buffer_size=1024 * 1024)
        dbs = [options.open(tmp_path / f"p{i}.db") for i in range(2)]
        opened = shared.write_buffers.get_usage()  # each empty memtable's first block
        for db in dbs:
            for i in range(2000):
                db.put(b"key-%d" % i, b"v" * 100)
        # Both databases' 2 x 2,000 writes of over 100 bytes count against the one budget.
        assert shared.write_buffers.get_usage() - opened > 2 * 2000 * 100
        # What the worker's gauges report (supplyflow_rocksdb_memory_*): use and budget.
        memtables_used, memtables_budget = shared.usage()["memtables"]
        assert memtables_used - opened > 2 * 2000 * 100
        assert memtables_budget == 8 * 1024 * 1024
        assert shared.usage()["block_cache"] == (shared.cache.get_usage(), 8 * 1024 * 1024)
        for db in dbs:
            db.flush()
            assert db.get(b"key-7") == b"v" * 100  # read through the shared cache
        assert shared.cache.get_usage() > 0
        assert shared.usage()["block_cache"][0] == shared.cache.get_usage()
        for db in dbs:
            db.close()
    finally:
        RocksDBOptions.as_options = original  # type: ignore[method-assign]  # the test's own patch
