"""Every change supplyflow makes to Faust's behaviour, one module per part of Faust.

Importing this package checks that the installed faust-streaming and mode-streaming are
the releases the patches were written for (:mod:`.versions`), and stops with a
:class:`~supplyflow.agents.runtime.exceptions.FaustVersionError` saying what to do if
not. Each module lists, in ``ORIGINALS``, the Faust functions its patches replace, copy
or depend on; ``tests/agents/runtime/faust/`` pins a hash of each one's source, so a
release that changes one fails a test, and tests each patch's behaviour.

- web (:mod:`.web`): 1. a web server without the built-in views; 2. the app that builds
  it;
- tables (:mod:`.tables`): 3. msgpack tables whose changelogs are read as raw bytes;
  6. RocksDB's key estimates;
- worker (:mod:`.worker`): 5. a worker without the terminal spinner;
- streams (:mod:`.streams`): 8. ``take_until_idle``, batches that close when input goes
  idle;
- table recovery (:mod:`.recovery`): 9. ``need_recovery`` without a ``Counter``;
  11. ``wait_for`` inline;
- consumer (:mod:`.consumer`): 10. a per-record callback inline;
- RocksDB stores (:mod:`.rocksdb`): 12. one block cache and memtable budget for all.

Each module's docstring gives its patches' reasons. Two patches were removed once nothing
used them any more; their reasons, for the record:

4. ``partition_scope``: run table reads and writes as if ``event`` were the current
   event. Faust's RocksDB store and changelog pick the partition of the *current event*;
   a batch from ``take_events`` mixes partitions, so each partition's keys must be read
   and written in the scope of an event from that partition. Removed: the agents read and
   write their tables through :class:`~supplyflow.agents.runtime.table_io.TableIO`, which
   takes the partition as an argument.
7. ``ProducerBuffer.flush`` waits until the buffer is empty *and* the message it is
   handing to the Kafka client has arrived there. Faust's version gives up after 0.1 s
   without progress and returns with messages still queued, and counts a message as gone
   the moment it leaves the queue, before the client has it; the offset commit that
   follows then overtakes unsent changelog records, and a worker killed at that moment
   loses table writes whose input is already committed (found by the SIGKILL integration
   test: state lost, its position deltas never emitted). Removed: no table is written
   through Faust's per-key path (``send_soon`` into that buffer) any more; the
   :class:`~supplyflow.agents.runtime.checkpoint.Checkpoint` waits for every changelog
   record itself, and input offsets are the progress markers', not Faust's.
"""

from __future__ import annotations

from supplyflow.agents.runtime.faust.versions import check_versions

check_versions()

# Only once the releases are known good: the modules below touch Faust's internals.
from supplyflow.agents.runtime.faust import consumer, recovery  # noqa: E402
from supplyflow.agents.runtime.faust.rocksdb import (  # noqa: E402
    SharedRocksDBMemory,
    share_rocksdb_memory,
)
from supplyflow.agents.runtime.faust.streams import BatchingStream  # noqa: E402
from supplyflow.agents.runtime.faust.tables import MsgpackTable, table_key_estimate  # noqa: E402
from supplyflow.agents.runtime.faust.web import QuietWeb, SupplyflowApp  # noqa: E402
from supplyflow.agents.runtime.faust.worker import new_worker  # noqa: E402

__all__ = [
    "BatchingStream",
    "MsgpackTable",
    "QuietWeb",
    "SharedRocksDBMemory",
    "SupplyflowApp",
    "install",
    "new_worker",
    "share_rocksdb_memory",
    "table_key_estimate",
]


def install() -> None:
    """Apply the process-wide patches (idempotent; before the app starts)."""
    recovery.install()
    consumer.install()
