"""The one place that decides in which order a batch's effects become durable.

An agent's batch (or tick) has three kinds of effects: records for other topics (deltas,
positions, exception transitions, dead letters) queued in an :class:`.Outbox`; new entity
states staged in the agent's table (:class:`.TableIO`); and the batch's progress markers,
staged in the same table (:class:`.ProgressMarkers`). :meth:`Checkpoint.commit` makes
them durable in this order, and no other code does:

1. the outputs, acknowledged by Kafka;
2. the states and markers, sent to the table's changelog (one record batch per
   partition, which Kafka appends whole or not at all) and acknowledged;
3. RocksDB, one write batch per partition, with the changelog offset persisted the way
   Faust does it (recovery resumes after it).

A worker killed after step 1 leaves outputs whose states were never written: the records
are read again (the markers did not move) and produce the same outputs, which positions
(offset watermarks), the exception emitter and the dead letters (tail read-back) skip.
Killed after step 2, the local store may lack what the changelog has: the next owner
restores it from there. Nothing reaches RocksDB that the changelog does not hold, and no
marker moves past records whose outputs Kafka has not acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from supplyflow.agents.runtime.exceptions import StateWriteError
from supplyflow.agents.runtime.outbox import Outbox
from supplyflow.agents.runtime.progress import ProgressMarkers
from supplyflow.agents.runtime.table_io import TableIO

__all__ = ["Checkpoint"]


class Checkpoint:
    """One agent's pending effects: its outbox, its table's staged writes and markers."""

    def __init__(self, outbox: Outbox, io: TableIO, markers: ProgressMarkers) -> None:
        self.outbox = outbox
        self.io = io
        self.markers = markers
        #: when the last commit's outputs were acknowledged (epoch seconds; 0: never)
        self.outputs_acknowledged_at = 0.0

    @classmethod
    def of(cls, app: Any, table: Any, kafka: Mapping[str, Any]) -> Checkpoint:
        """The checkpoint of an agent writing ``table`` (a Faust table of ``app``);
        ``kafka``: client options of the markers' gap fetch (``RuntimeConfig.kafka``)."""
        io = TableIO(app, table)
        return cls(Outbox(app), io, ProgressMarkers(io, kafka))

    def discard(self) -> None:
        """Drop what a failed batch queued and staged (it is read again from the markers)."""
        self.outbox.discard()
        self.io.discard()

    async def commit(self) -> None:
        """Make the batch durable: outputs, then changelog, then RocksDB (module doc)."""
        # 1. Outputs acknowledged.
        await self.outbox.flush()
        self.outputs_acknowledged_at = time.time()
        staged = self.io.take_staged()
        if not staged:
            return
        try:
            # 2. States and markers in the changelog, acknowledged.
            offsets = await self.io.send_to_changelog(staged)
            # 3. RocksDB and the persisted changelog offset.
            self.io.write_store(staged, offsets)
        except Exception as exc:  # any: the outputs are out already
            raise StateWriteError(
                f"the outputs of a batch were sent but its states could not be written "
                f"({type(exc).__name__}: {exc}); the batch is read again"
            ) from exc
