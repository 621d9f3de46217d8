"""What the runtime needs to know about its deployment, built once by the app.

The app builds one :class:`RuntimeConfig` from its settings at start and passes it down;
nothing below the app reads settings or the environment. Kafka client options arrive as
a plain mapping of aiokafka keyword arguments (bootstrap servers, TLS, SASL), so the
runtime creates its consumers without knowing how the connection was configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ApplyOrderName", "BatchTunables", "RuntimeConfig"]

#: The order a partition applies its records in (``SUPPLYFLOW_APPLY_ORDER``): as read,
#: or by timestamp across source partitions (see ``ordering``).
ApplyOrderName = Literal["arrival", "timestamp"]


@dataclass(frozen=True)
class BatchTunables:
    """How the readers batch input (``SUPPLYFLOW_BATCH_*``)."""

    #: Most records per batch: amortises table writes and per-batch work over many events
    #: while keeping memory per batch small.
    batch_max: int = 2000
    #: Longest a batch stays open after its first record, in seconds: bounds the latency
    #: batching adds under sustained load.
    window_s: float = 0.025
    #: A batch closes when no record arrived for this long, in seconds (caught up): the
    #: latency batching adds when input is sparse.
    idle_s: float = 0.002


@dataclass(frozen=True)
class RuntimeConfig:
    """The deployment as the runtime and the agents see it (frozen: built once)."""

    #: the Faust app id: consumer group, changelog and internal topic prefix
    app_id: str
    #: prepended to every contract topic name (``SUPPLYFLOW_TOPIC_PREFIX``)
    topic_prefix: str
    #: partitions of every topic, and so of every state table
    partitions: int
    #: input records larger than this are dead-lettered (``SUPPLYFLOW_MAX_RECORD_BYTES``)
    max_record_bytes: int
    #: the largest record an input topic accepts (room to dead-letter oversized ones)
    max_input_message_bytes: int
    #: the largest record the ``dlq`` topic accepts: a larger letter is sent truncated
    max_dlq_message_bytes: int
    #: the internal topic of PO/order contributions to positions (keyed SKU@LOC)
    deltas_topic: str
    #: the internal topic of ticks (deadlines, and activation after a rebalance)
    ticks_topic: str
    #: the consumer group the readers commit processed input offsets to (for Kafka's tools)
    input_group: str
    #: keyword arguments for every aiokafka client: ``bootstrap_servers`` and security
    kafka: Mapping[str, Any] = field(repr=False)
    #: input topic (full name) -> the internal topic its records are routed through when
    #: they arrive in a partition that does not own their key (see ``routing``)
    routed_topics: Mapping[str, str] = field(default_factory=dict)
    batch: BatchTunables = BatchTunables()
    #: a partition with records to process that has not advanced for this long, in
    #: seconds, is stalled (``SUPPLYFLOW_STALL_AFTER``; see ``runtime.stall``)
    stall_after_s: float = 30.0
    #: test only (``SUPPLYFLOW_TEST_FAIL_ON_ID``): the agents raise on an event with this
    #: ``event_id``, to prove a record that makes processing fail is quarantined
    fail_on_event_id: str | None = None
    #: the order each partition applies its records in (see ``ordering``)
    apply_order: ApplyOrderName = "arrival"
    #: in timestamp order, how late (ms) a record may reach Kafka after its timestamp
    apply_lateness_ms: int = 2000

    def topic(self, name: str) -> str:
        """The full Kafka topic name of a contract topic such as ``po.events``."""
        return f"{self.topic_prefix}{name}"

    def routed_topic(self, name: str) -> str:
        """The routed topic of the contract input topic ``name`` (``po.events``...)."""
        return self.routed_topics[self.topic(name)]
