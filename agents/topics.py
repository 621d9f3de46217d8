"""The contract's topic names, without ``SUPPLYFLOW_TOPIC_PREFIX``.

The agents label their metrics with these names and build full names from them with
:meth:`~supplyflow.agents.runtime.config.RuntimeConfig.topic`; the app creates the topics
(``supplyflow.app.topics``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DLQ",
    "EXCEPTIONS",
    "INPUT_TOPICS",
    "INVENTORY_EVENTS",
    "ORDER_EVENTS",
    "POSITIONS",
    "PO_EVENTS",
]

PO_EVENTS: Final = "po.events"
ORDER_EVENTS: Final = "order.events"
INVENTORY_EVENTS: Final = "inventory.events"
POSITIONS: Final = "inventory.positions"
EXCEPTIONS: Final = "exceptions"
DLQ: Final = "dlq"
INPUT_TOPICS: Final = (PO_EVENTS, ORDER_EVENTS, INVENTORY_EVENTS)
