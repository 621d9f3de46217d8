"""Inventory position state per SKU@location, and applying deltas and adjustments to it.

A position sums the contributions of POs and orders (received as deltas) and the
inventory adjustments. Both are applied at most once:

- deltas carry ``(source, offset)``: the input partition and offset of the event that
  caused them; a position remembers the highest offset applied per source and skips
  anything at or below it (replays after a crash or rebalance);
- adjustments are skipped when their offset is at or below the inventory watermark
  (replays) or their ``event_id`` is among the last :data:`RECENT_EVENT_IDS` seen for
  this position (a producer sending the same event twice).

``available = on_hand - allocated``; ``projected = on_hand + inbound - reserved``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final

from supplyflow.codecs.events import InventoryAdjusted, InventoryEvent, InventorySnapshot
from supplyflow.codecs.packing import pack, unpack
from supplyflow.codecs.quantity import format_qty, qty_to_json
from supplyflow.codecs.state import MAX_STATE_BYTES, StateFormat
from supplyflow.tables.common import (
    ALLOCATED,
    IN_TRANSIT,
    INBOUND,
    ON_HAND,
    RECENT_EVENT_IDS,
    RESERVED,
    WIDTH,
    Rejection,
    Vec,
)
from supplyflow.tables.exceptions import ExceptionBook, Transition, exception_id, identity_of

__all__ = [
    "INVENTORY_SOURCE",
    "POSITION_FORMAT",
    "RECENT_EVENT_IDS",
    "DeltaItem",
    "PositionState",
    "WrittenLookup",
    "adopt_overallocation",
    "apply_deltas",
    "apply_inventory_event",
    "apply_inventory_event_bounded",
    "check_overallocation",
    "position_record",
    "record_time",
]

#: Watermark name of the position's own input topic (inventory.events).
INVENTORY_SOURCE: Final = "inventory"

#: ``[offset, occurred_at ms, d_on_hand, d_allocated, d_inbound, d_in_transit, d_reserved]``
DeltaItem = list[int]


@dataclass(slots=True)
class PositionState:
    sku: str
    location: str
    totals: Vec = field(default_factory=lambda: [0] * WIDTH)
    #: source ("po:3", "order:0", "inventory") -> highest offset applied
    watermarks: dict[str, int] = field(default_factory=dict)
    recent_ids: list[str] = field(default_factory=list)
    updated_at: str = ""
    #: system -> on_hand of its latest snapshot
    snapshots: dict[str, int] = field(default_factory=dict)
    exceptions: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.sku}@{self.location}"

    def to_wire(self) -> list[Any]:
        """The stored form (:data:`POSITION_FORMAT`): a new field goes at the end, here
        and in the class (with a default), and bumps the format's version."""
        return [
            POSITION_FORMAT.version,
            self.sku,
            self.location,
            self.totals,
            self.watermarks,
            self.recent_ids,
            self.updated_at,
            self.snapshots,
            self.exceptions,
        ]

    @classmethod
    def from_wire(cls, stored: Any) -> PositionState:
        """A position from its stored form, of any format version this release reads."""
        return cls(*POSITION_FORMAT.unpack(stored))

    @classmethod
    def new(cls, key: str) -> PositionState:
        sku, _, location = key.rpartition("@")
        return cls(sku, location)


#: How a position is stored (see supplyflow.codecs.state). Version 1 added the version in
#: front; the fields are those of version 0.
POSITION_FORMAT: Final = StateFormat("position", 1, len(fields(PositionState)))


def apply_deltas(state: PositionState, source: str, items: list[DeltaItem]) -> list[int]:
    """Apply the delta items from ``source`` not applied yet.

    Returns the ``occurred_at`` (epoch ms) of each item applied: empty if nothing changed.
    """
    mark = state.watermarks.get(source, -1)
    applied: list[int] = []
    totals = state.totals
    for item in items:
        offset = item[0]
        if offset <= mark:
            continue
        mark = offset
        for i in range(WIDTH):
            totals[i] += item[i + 2]
        applied.append(item[1])
    state.watermarks[source] = mark
    return applied


def apply_inventory_event(
    state: PositionState,
    event: InventoryEvent,
    offset: int,
    *,
    now: str = "",
    source: str = INVENTORY_SOURCE,
) -> tuple[str, list[Transition]]:
    """Apply an adjustment or snapshot read at ``offset`` of the input stream ``source``
    (``inventory``, or ``inventory/r`` for events routed from another partition); returns
    the outcome and exception transitions.

    A snapshot whose ``on_hand`` differs from the computed one opens
    ``INVENTORY_MISMATCH`` for its system; a later matching snapshot resolves it.
    """
    mark = state.watermarks.get(source, -1)
    if offset <= mark or event.event_id in state.recent_ids:
        return "duplicate", []
    state.watermarks[source] = offset
    state.recent_ids.append(event.event_id)
    if len(state.recent_ids) > RECENT_EVENT_IDS:
        del state.recent_ids[: len(state.recent_ids) - RECENT_EVENT_IDS]
    if isinstance(event, InventoryAdjusted):
        state.totals[ON_HAND] += event.data.delta
        return "applied", []
    book = ExceptionBook("position", state.key, state.exceptions)
    data = event.data
    state.snapshots[data.system] = data.on_hand
    computed = state.totals[ON_HAND]
    detail = {"system": data.system}
    if data.on_hand == computed:
        book.resolve("INVENTORY_MISMATCH", detail, event_id=event.event_id, now=now)
    else:
        book.open(
            "INVENTORY_MISMATCH",
            detail,
            message=(
                f"{data.system} reports {format_qty(data.on_hand)} on hand of {state.key}, "
                f"supplyflow computes {format_qty(computed)}"
            ),
            event_ids=[event.event_id],
            now=now,
        )
    return "applied", book.transitions


def apply_inventory_event_bounded(
    state: PositionState,
    event: InventoryEvent,
    offset: int,
    *,
    now: str = "",
    source: str = INVENTORY_SOURCE,
    max_bytes: int = MAX_STATE_BYTES,
) -> tuple[PositionState, str | Rejection, list[Transition]]:
    """:func:`apply_inventory_event`, unless it makes the position pack larger than
    ``max_bytes``: then the event is rejected (``entity_too_large``) and the position
    returned is the one before it. Returns (the position to keep, the outcome or the
    rejection, transitions).

    A position grows without bound only by snapshots of systems it has not seen (their
    last ``on_hand``, their ``INVENTORY_MISMATCH``): its other fields are bounded (the
    last :data:`RECENT_EVENT_IDS` ids, a watermark per source partition), so only those
    snapshots are measured.
    """
    grows = isinstance(event, InventorySnapshot) and event.data.system not in state.snapshots
    before = pack(state.to_wire()) if grows else b""
    outcome, transitions = apply_inventory_event(state, event, offset, now=now, source=source)
    if not grows:
        return state, outcome, transitions
    after = len(pack(state.to_wire()))
    if after <= max_bytes or after <= len(before):
        return state, outcome, transitions
    rejection = Rejection(
        "entity_too_large",
        f"{state.key} would take {after} bytes stored with a snapshot of one more system, "
        f"more than the {max_bytes} a position may (it takes {len(before)}); the event is "
        "not applied",
    )
    return PositionState.from_wire(unpack(before)), rejection, []


#: The one position rule evaluated per batch.
OVERALLOCATION: Final = "OVERALLOCATION"


#: What ``exceptions`` holds of one exception id: its ``open`` record (None if the topic
#: has none) and whether its ``resolved`` record is there.
WrittenLookup = Callable[[str], tuple[dict[str, Any] | None, bool]]


def adopt_overallocation(state: PositionState, written: WrittenLookup) -> bool:
    """Bring the state's ``OVERALLOCATION`` up to what ``exceptions`` holds for it.

    Transitions are written before the state that produced them, so a worker killed in
    between leaves ``exceptions`` ahead of the state its successor restores, and
    ``OVERALLOCATION`` depends on how deltas are batched: the successor may never take
    the same path. Without this, two kinds of transitions were lost:

    - an ``open`` the state never recorded: the successor batched the deltas without the
      dip and had nothing to resolve (SIGKILL fault test, seed 748909);
    - a ``resolved`` the state never recorded: the successor, still holding occurrence
      *k* open, saw ``available`` < 0 at the end of its batch and opened nothing, while
      ``exceptions`` says *k* is resolved; no open one was left (seed 78334).

    Walks the occurrences forward from the state's (open ones resolved on the topic are
    closed, occurrences opened on the topic are taken in) so that the next check opens
    a new occurrence or resolves the one the topic holds open. Returns whether the state
    changed.
    """
    identity = identity_of(OVERALLOCATION, {})
    entry = state.exceptions.get(identity)
    changed = False
    while True:
        occurrence = entry[0] if entry else 0
        if entry is not None and entry[1]:
            if not written(exception_id("position", state.key, identity, occurrence))[1]:
                return changed
            entry[1] = False
        else:
            next_id = exception_id("position", state.key, identity, occurrence + 1)
            opened, resolved = written(next_id)
            if opened is None and not resolved:
                return changed
            record = opened or {}
            entry = [
                occurrence + 1,
                not resolved,
                OVERALLOCATION,
                {},
                record.get("raised_at"),
                record.get("message"),
                list(record.get("event_ids") or []),
            ]
            state.exceptions[identity] = entry
        changed = True


def check_overallocation(state: PositionState, now: str) -> list[Transition]:
    """Open ``OVERALLOCATION`` while ``available`` < 0, resolve it when it is >= 0 again."""
    book = ExceptionBook("position", state.key, state.exceptions)
    available = state.totals[ON_HAND] - state.totals[ALLOCATED]
    if available < 0:
        book.open(
            OVERALLOCATION,
            {},
            message=(
                f"{state.key} has {format_qty(available)} available: "
                f"{format_qty(state.totals[ALLOCATED])} allocated of "
                f"{format_qty(state.totals[ON_HAND])} on hand"
            ),
            event_ids=[],
            now=now,
        )
    else:
        book.resolve(OVERALLOCATION, {}, event_id=None, now=now)
    return book.transitions


def position_record(state: PositionState, updated_at: str) -> dict[str, Any]:
    """The ``inventory.positions`` record (and HTTP answer) for this position."""
    on_hand, allocated, inbound, in_transit, reserved = (
        state.totals[ON_HAND],
        state.totals[ALLOCATED],
        state.totals[INBOUND],
        state.totals[IN_TRANSIT],
        state.totals[RESERVED],
    )
    return {
        "sku": state.sku,
        "location": state.location,
        "on_hand": qty_to_json(on_hand),
        "allocated": qty_to_json(allocated),
        "available": qty_to_json(on_hand - allocated),
        "inbound": qty_to_json(inbound),
        "in_transit": qty_to_json(in_transit),
        "reserved": qty_to_json(reserved),
        "projected": qty_to_json(on_hand + inbound - reserved),
        "updated_at": updated_at,
    }


def record_time(now: datetime) -> str:
    """RFC 3339 UTC with a ``Z``, as every supplyflow output writes times."""
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
