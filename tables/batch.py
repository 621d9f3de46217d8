"""Applying a batch of one partition's events to entity states: pure, no Kafka.

The agent loads each key's state once, calls :func:`apply_entity_batch`, sends the
position deltas, waits until Kafka has them, and only then writes each state an event
reached once (a duplicate's too). That order makes redelivery exact: if the worker dies
before the state write, the replayed events produce the same deltas again (same
offsets), which positions skip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from supplyflow.tables.common import Applied, Rejection, epoch_ms
from supplyflow.tables.exceptions import Transition
from supplyflow.tables.position import DeltaItem

__all__ = ["EntityBatch", "apply_entity_batch"]


class Streamed(Protocol):
    """An entity state that remembers how far it has read each input stream."""

    offsets: dict[str, int]


S = TypeVar("S", bound=Streamed)
E = TypeVar("E")


@dataclass
class EntityBatch(Generic[S]):
    """The result of one batch: states to write, deltas to send, what happened to each."""

    #: key -> state to write: every key an event was applied to or found a duplicate in
    states: dict[str, S] = field(default_factory=dict)
    #: input stream -> position key -> delta items in offset order
    deltas: dict[str, dict[str, list[DeltaItem]]] = field(default_factory=dict)
    #: per input event, in order: applied / duplicate / stale, or the rejection
    results: list[str | Rejection] = field(default_factory=list)
    #: exception transitions, in the order they happened
    transitions: list[Transition] = field(default_factory=list)
    #: (system, seconds) PO synchronisation latencies observed
    sync: list[tuple[str, float]] = field(default_factory=list)


def apply_entity_batch(
    events: Sequence[tuple[str, E, int, str]],
    load: Callable[[str], S | None],
    apply: Callable[[S | None, E], tuple[S | None, Applied | Rejection]],
) -> EntityBatch[S]:
    """Apply ``(key, event, offset, stream)`` tuples, in order, to the states ``load``
    returns. ``stream`` names the input stream the event was read from (a topic partition,
    read in offset order: ``""`` for the input topic, ``"r"`` for records routed from
    other partitions, see ``agents.runtime.routing``).

    A state remembers the highest offset of each stream it processed (``offsets``): an
    event at or below it is a replay (a worker restarted on a local store ahead of the
    changelog re-applies what it finds there) and counts as a duplicate, whatever the
    entity's age; its state is written again all the same. Deltas are kept per stream:
    each stream's offsets are the watermarks positions skip replays by.
    """
    batch: EntityBatch[S] = EntityBatch()
    cache: dict[str, S | None] = {}
    for key, event, offset, stream in events:
        state = cache[key] if key in cache else load(key)
        if state is not None and offset <= state.offsets.get(stream, -1):
            cache[key] = batch.states[key] = state
            batch.results.append("duplicate")
            continue
        new_state, result = apply(state, event)
        cache[key] = new_state
        if isinstance(result, Rejection):
            batch.results.append(result)
            continue
        batch.results.append(result.outcome)
        if new_state is not None:
            new_state.offsets[stream] = offset
            # A duplicate changes nothing, but its state is written again: after a crash
            # the local store can hold a state the changelog never got (agents.progress).
            batch.states[key] = new_state
        if result.outcome == "duplicate":
            continue
        occurred_ms = epoch_ms(event.occurred_at)  # type: ignore[attr-defined]
        deltas = batch.deltas.get(stream)
        if deltas is None:
            deltas = batch.deltas[stream] = {}
        for pk, delta in result.deltas.items():
            deltas.setdefault(pk, []).append([offset, occurred_ms, *delta])
        batch.transitions.extend(result.transitions)
        batch.sync.extend(result.sync)
    return batch
