"""Applying a batch of one partition's events to entity states: pure, no Kafka.

The agent loads each key's state once, calls :func:`apply_entity_batch`, sends the
position deltas, waits until Kafka has them, and only then writes each state an event
reached once (a duplicate's too). That order makes redelivery exact: if the worker dies
before the state write, the replayed events produce the same deltas again (same
offsets), which positions skip.

Every state to write is packed here, and no state is written larger than
:data:`~supplyflow.codecs.state.MAX_STATE_BYTES`: if one would be, the batch is applied
again with that entity checked after each of its events, and an event that makes it too
large is rejected (``entity_too_large``) and leaves it as it was. Packing each state once
per batch is what writing it costs anyway (the agent writes these bytes); the check per
event costs only for an entity at the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Generic, Protocol, Self, TypeVar

from supplyflow.codecs.packing import pack, unpack
from supplyflow.codecs.state import MAX_STATE_BYTES
from supplyflow.tables.common import Applied, Rejection, epoch_ms
from supplyflow.tables.exceptions import Transition
from supplyflow.tables.position import DeltaItem

__all__ = ["EntityBatch", "apply_entity_batch"]


class Streamed(Protocol):
    """An entity state that remembers how far it has read each input stream, and its
    stored form."""

    offsets: dict[str, int]

    def to_wire(self) -> list[Any]: ...

    @classmethod
    def from_wire(cls, stored: Any) -> Self: ...


S = TypeVar("S", bound=Streamed)
E = TypeVar("E")


class EntityBatch(Generic[S]):
    """The result of one batch: states to write, deltas to send, what happened to each.

    (A plain class, not a dataclass: mypyc cannot compile a generic dataclass.)"""

    def __init__(self) -> None:
        #: key -> state to write: every key an event was applied to or found a duplicate in
        self.states: dict[str, S] = {}
        #: key -> the state to write, packed (``to_wire()``, as the table stores it)
        self.packed: dict[str, bytes] = {}
        #: input stream -> position key -> delta items in offset order
        self.deltas: dict[str, dict[str, list[DeltaItem]]] = {}
        #: per input event, in order: applied / duplicate / stale, or the rejection
        self.results: list[str | Rejection] = []
        #: exception transitions, in the order they happened
        self.transitions: list[Transition] = []
        #: (system, seconds) PO synchronisation latencies observed
        self.sync: list[tuple[str, float]] = []


def apply_entity_batch(
    events: Sequence[tuple[str, E, int, str]],
    load: Callable[[str], S | None],
    apply: Callable[[S | None, E], tuple[S | None, Applied | Rejection]],
    *,
    max_bytes: int = MAX_STATE_BYTES,
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

    No state packs larger than ``max_bytes`` (see the module doc). ``load`` must return a
    state of its own on each call (the batch may be applied twice).
    """
    batch = _apply(events, load, apply, frozenset(), max_bytes)
    too_large = {key for key, packed in batch.packed.items() if len(packed) > max_bytes}
    if too_large:
        batch = _apply(events, load, apply, too_large, max_bytes)
    return batch


def _apply(
    events: Sequence[tuple[str, E, int, str]],
    load: Callable[[str], S | None],
    apply: Callable[[S | None, E], tuple[S | None, Applied | Rejection]],
    careful: Collection[str],
    max_bytes: int,
) -> EntityBatch[S]:
    """The batch, with each event of a ``careful`` key rejected if it makes the state
    pack larger than ``max_bytes`` (and larger than it was: a state stored before the
    bound may shrink)."""
    batch: EntityBatch[S] = EntityBatch()
    cache: dict[str, S | None] = {}
    #: careful key -> its current state, packed (None: no state)
    packed: dict[str, bytes | None] = {}
    for key, event, offset, stream in events:
        state = cache[key] if key in cache else load(key)
        if state is not None and offset <= state.offsets.get(stream, -1):
            cache[key] = batch.states[key] = state
            batch.results.append("duplicate")
            continue
        if key in careful and key not in packed:
            packed[key] = None if state is None else pack(state.to_wire())
        new_state, result = apply(state, event)
        if key in careful and new_state is not None and not isinstance(result, Rejection):
            before = packed[key]
            new_state.offsets[stream] = offset
            after = pack(new_state.to_wire())
            if len(after) > max_bytes and len(after) > len(before or b""):
                size = len(before) if before is not None else 0
                result = Rejection(
                    "entity_too_large",
                    f"{key} would take {len(after)} bytes stored, more than the "
                    f"{max_bytes} an entity may (it takes {size}); the event is not applied",
                )
                new_state = None if before is None else type(new_state).from_wire(unpack(before))
                if new_state is not None and key in batch.states:
                    batch.states[key] = new_state  # (the one there was changed in place)
            else:
                packed[key] = after
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
    for key, state in batch.states.items():
        batch.packed[key] = pack(state.to_wire())
    return batch
