"""Faust internals the runtime calls directly without patching them, pinned like a patch.

The outbox (:mod:`supplyflow.agents.runtime.outbox`) sends record batches with the
aiokafka producer Faust started, which Faust hands out only through a private method.
"""

from __future__ import annotations

from typing import Final

from faust.transport.drivers.aiokafka import Producer

__all__ = ["ORIGINALS"]

#: The Faust code the runtime depends on, as the pinned release defines it.
ORIGINALS: Final = {
    "aiokafka.Producer._ensure_producer": Producer._ensure_producer,
}
