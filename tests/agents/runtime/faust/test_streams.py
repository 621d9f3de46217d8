"""``BatchingStream``: a batch closes when full, when input went idle, or at its window.

The closing rule (``_until_idle``) is tested here with a stand-in stream and a producer
task; every agent of the integration suite runs the whole ``take_until_idle`` on Kafka.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import faust
from mode.utils.locks import Event

from supplyflow.agents.runtime.faust.streams import BatchingStream


class _Take:
    def __init__(self) -> None:
        self.values: list[int] = []
        self.full = Event()


class _Stream:
    """What ``_until_idle`` uses of the stream: ``should_stop`` and ``wait_for_stopped``."""

    should_stop = False

    async def wait_for_stopped(self, event: Event, *, timeout: float) -> bool:  # noqa: ASYNC109 - mode's signature
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return True
        return False


async def _close(take: _Take, *, within: float, idle: float) -> float:
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + within
    await BatchingStream._until_idle(_Stream(), take, deadline, idle)  # type: ignore[arg-type]
    return time.monotonic() - started


async def _feed(take: _Take, count: int, every: float, *, full_at: int | None = None) -> None:
    for i in range(count):
        take.values.append(i)
        if full_at is not None and len(take.values) >= full_at:
            take.full.set()
            return
        await asyncio.sleep(every)


def test_the_app_uses_the_batching_stream(tmp_path: Path) -> None:
    app = faust.App("batching-test", Stream=BatchingStream, datadir=str(tmp_path))
    assert isinstance(app.stream(app.channel()), BatchingStream)


async def test_sparse_input_closes_after_the_idle_gap() -> None:
    take = _Take()
    take.values.extend([1, 2, 3])  # then nothing more arrives
    took = await _close(take, within=30, idle=0.05)
    assert took < 5  # the idle gap closed it, far before the 30 s window


async def test_steady_input_closes_at_the_window() -> None:
    take = _Take()
    feeder = asyncio.create_task(_feed(take, 10_000, 0.002))  # always within the gap
    took = await _close(take, within=0.3, idle=1.0)
    feeder.cancel()
    assert 0.3 <= took < 5
    assert 10 < len(take.values) < 10_000  # it did not wait for the input to end


async def test_a_full_batch_closes_before_window_and_gap() -> None:
    take = _Take()
    feeder = asyncio.create_task(_feed(take, 10_000, 0.001, full_at=50))
    took = await _close(take, within=30, idle=10)
    await feeder
    assert took < 5
    assert len(take.values) == 50
