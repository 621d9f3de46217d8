"""What drives the readers: ticks activate partitions and fire deadlines, rebalances reset.

One Faust agent consumes the ticks topic, which has the input topics' partition count,
so Faust's consumer group decides which worker owns partition *p* of every input and
table. A timer on each worker (the app's) sends a tick to each partition it owns twice a
second. For every reader of the worker, a :class:`ReaderAgent`:

* activates partition *p* on its first tick after a rebalance (Faust has restored the
  tables by then), reading from the record after its progress marker;
* calls the agent's tick handler for *p* on every tick (deadlines);
* resets its reader when a rebalance starts, once the batch in progress is done;
* runs the reader's batches in a task beside the ticks (:func:`.read_batches`).

Everything that happens when a partition changes hands is here and in
:class:`~supplyflow.agents.runtime.reader.InputReader` (``activate``, ``reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from supplyflow.agents.runtime.exceptions import FATAL_ERRORS
from supplyflow.agents.runtime.quarantine import Quarantine
from supplyflow.agents.runtime.reader import (
    BatchHandler,
    InputReader,
    owned_partitions,
    read_batches,
)

__all__ = ["FatalHandler", "ReaderAgent", "TickHandler", "drive", "register_ticks_agent"]


#: Called under the agent's lock for each tick of an active partition this worker owns:
#: (partition, the partitions this worker owns).
TickHandler = Callable[[int, frozenset[int]], Awaitable[None]]

#: Wait for the batch in progress when the agent stops, in seconds.
_STOP_TIMEOUT_S: Final = 10.0


class ReaderAgent:
    """Drives an :class:`InputReader`: activation on ticks, batches in a task beside.

    One Faust agent consumes the ticks topic for all of a worker's readers
    (:func:`register_ticks_agent`); the first tick of a partition after a rebalance
    activates it here, from the markers ``markers`` reads for the partition.
    """

    def __init__(
        self,
        app: Any,
        reader: InputReader,
        *,
        ticks_topic: str,
        handle: BatchHandler,
        markers: Callable[[int], Mapping[str, int | None]],
        on_tick: TickHandler | None,
        on_error: Callable[[], None],
        quarantine: Quarantine | None = None,
    ) -> None:
        self.app = app
        self.reader = reader
        self.ticks_topic = ticks_topic
        self.handle = handle
        self.markers = markers
        self.on_tick = on_tick
        self.on_error = on_error
        #: dead-letters a record that fails alone (see ``runtime.quarantine``)
        self.quarantine = quarantine
        self.lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        app.on_partitions_revoked.connect(self._revoked)

    async def _revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """After the batch in progress, stop reading (ticks activate what stays here)."""
        async with self.lock:
            self.reader.reset()
            self.reader.watch.forget()

    def owned(self) -> frozenset[int]:
        return owned_partitions(self.app, self.ticks_topic)

    async def ticked(self, partitions: Iterable[int]) -> None:
        """Activate newly owned ``partitions`` (ticked), then call the tick handler for each."""
        if self._task is not None and self._task.done():
            self._task.result()  # the reader died: raise its error (the agent restarts)
        async with self.lock:
            if self.app.rebalancing:
                return
            owned = self.owned()
            for partition in sorted(partitions):
                if partition not in owned:
                    continue
                if partition not in self.reader.active:
                    self.reader.activate(partition, self.markers(partition))
                if self.on_tick is not None:
                    await self.on_tick(partition, owned)

    async def start(self) -> None:
        """Start reading (in a task); drops what a crash mid-batch left queued."""
        self.on_error()
        self.reader.reset()
        await self.reader.start()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(
            read_batches(
                self.app,
                self.reader,
                self.lock,
                self.handle,
                on_error=self.on_error,
                stopping=self._stopping,
                quarantine=self.quarantine,
            )
        )

    async def stop(self) -> None:
        """Let the batch in progress finish (up to a bound), then stop the reader."""
        self._stopping.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), _STOP_TIMEOUT_S)
        finally:
            if task is not None:
                task.cancel()
            await self.reader.stop()


#: Stops the worker with an error of :data:`.FATAL_ERRORS` (the app decides how).
FatalHandler = Callable[[BaseException], None]


async def drive(
    stream: Any,
    agents: Sequence[ReaderAgent],
    *,
    batch_window_s: float,
    on_fatal: FatalHandler,
) -> None:
    """The ticks agent: start every reader, hand each batch of ticks to each, stop them.

    An error of :data:`.FATAL_ERRORS` in a batch or a tick goes to ``on_fatal``, and
    every reader stops: nothing is retried that would meet it again.
    """
    for agent in agents:
        await agent.start()
    try:
        async for events in stream.take_until_idle(64, batch_window_s, batch_window_s):
            ticked = {event.message.partition for event in events}
            for agent in agents:
                await agent.ticked(ticked)
    except FATAL_ERRORS as exc:
        on_fatal(exc)
    finally:
        for agent in agents:
            await agent.stop()


def register_ticks_agent(
    app: Any,
    ticks_topic: str,
    agents: Sequence[ReaderAgent],
    *,
    batch_window_s: float,
    on_fatal: FatalHandler,
) -> None:
    """One Faust agent on the ticks topic drives every reader of the worker.

    One, not one per reader: Faust counts a record delivered to several agents as
    unacknowledged until every agent acknowledged it, and a rebalance clears the agents'
    queues, so a tick one agent took and another never saw kept the rebalance waiting
    for it forever (found by the two-worker throughput benchmark).
    """
    source = app.topic(ticks_topic, key_serializer="raw", value_serializer="raw")

    async def consume(stream: Any) -> None:
        await drive(stream, agents, batch_window_s=batch_window_s, on_fatal=on_fatal)

    app.agent(source, name="supplyflow.ticks", concurrency=1)(consume)
