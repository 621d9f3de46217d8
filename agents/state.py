"""Creating supplyflow's state tables: RocksDB-backed, msgpack keys and values.

The serializers are named explicitly: Faust would otherwise pick a table's codec from its
value type and could fall back to pickle, letting whoever writes to a changelog topic run
code in the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supplyflow.agents.runtime.faust import MsgpackTable

__all__ = ["StateTables", "state_table"]


@dataclass(frozen=True)
class StateTables:
    """The worker's tables: per PO, per order, per position (all keyed by entity id)."""

    po: Any
    order: Any
    position: Any


def state_table(app: Any, name: str, *, partitions: int, help: str) -> Any:  # noqa: A002
    """A Faust table with msgpack-encoded keys and values, co-partitioned with its input."""
    table = MsgpackTable(
        app, name=name, default=None, partitions=partitions, beacon=app.tables.beacon, help=help
    )
    return app.tables.add(table)
