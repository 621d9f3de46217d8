"""Shared pieces of the entity state models: contribution vectors, outcomes, rejections.

An entity (PO or order) *contributes* to the positions of the SKU@locations it touches:
a vector of the position fields it adds. After each event the entity's new contributions
are compared with the old ones; the differences are the position deltas it emits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "ALLOCATED",
    "FIELDS",
    "INBOUND",
    "IN_TRANSIT",
    "ON_HAND",
    "RECENT_EVENT_IDS",
    "RESERVED",
    "Applied",
    "Contributions",
    "Rejection",
    "Vec",
    "add_into",
    "check_lines",
    "diff",
    "epoch_ms",
    "iso_ms",
    "offsets_from_wire",
    "position_key",
    "remember_event",
    "settle",
]

#: Indexes of a contribution vector (integer thousandths of a unit).
ON_HAND: Final = 0
ALLOCATED: Final = 1
INBOUND: Final = 2
IN_TRANSIT: Final = 3
RESERVED: Final = 4
FIELDS: Final = ("on_hand", "allocated", "inbound", "in_transit", "reserved")
WIDTH: Final[int] = len(FIELDS)

Vec = list[int]
#: position key ``SKU@LOCATION`` -> contribution vector
Contributions = dict[str, Vec]
Outcome = Literal["applied", "duplicate", "stale"]


def position_key(sku: str, location: str) -> str:
    """The key of a position: ``SKU@LOCATION`` (neither part may contain ``@``)."""
    return f"{sku}@{location}"


def add_into(contributions: Contributions, key: str, index: int, amount: int) -> None:
    """Add ``amount`` to one field of ``key``'s vector, creating it when needed."""
    if amount:
        vec = contributions.get(key)
        if vec is None:
            vec = contributions[key] = [0] * WIDTH
        vec[index] += amount


def diff(old: Contributions, new: Contributions) -> dict[str, Vec]:
    """Per position key, ``new - old`` where it is not all zeros."""
    deltas: dict[str, Vec] = {}
    for key, after in new.items():
        before = old.get(key)
        if before is None:
            if any(after):
                deltas[key] = list(after)
        elif after != before:  # the usual case, equal vectors, is one comparison in C
            deltas[key] = [a - b for a, b in zip(after, before, strict=True)]
    for key, before in old.items():
        if key not in new and any(before):
            deltas[key] = [-b for b in before]
    return deltas


@dataclass(frozen=True, slots=True)
class Rejection:
    """A valid record the entity cannot apply: it goes to the dead-letter topic."""

    reason: Literal["unknown_entity", "line_mismatch", "entity_too_large"]
    detail: str


@dataclass(slots=True)
class Applied:
    """What applying one event did: outcome, position deltas, exception transitions."""

    outcome: Outcome
    deltas: dict[str, Vec] = field(default_factory=dict)
    transitions: list[Any] = field(default_factory=list)
    #: (system, seconds) from a PO revision to a required system's ack of it
    sync: list[tuple[str, float]] = field(default_factory=list)


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC (``...Z``) of epoch milliseconds."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def check_lines(entity_id: str, known: Mapping[int, Any], lines: Iterable[Any]) -> Rejection | None:
    """A ``line_mismatch`` if a line number is unknown or names another SKU, else None."""
    for line in lines:
        existing = known.get(line.line_no)
        if existing is None:
            return Rejection(
                "line_mismatch", f"{entity_id} has no line {line.line_no} (sku {line.sku})"
            )
        if existing.sku != line.sku:
            return Rejection(
                "line_mismatch",
                f"{entity_id} line {line.line_no} is {existing.sku}, not {line.sku}",
            )
    return None


def settle(state: Any, new: Contributions, occurred_at: datetime) -> dict[str, Vec]:
    """Store a PO's or order's new contributions and time; return the deltas."""
    deltas = diff(state.contributions, new)
    state.contributions = {k: v for k, v in new.items() if any(v)}
    state.updated_at = iso_ms(epoch_ms(occurred_at))
    return deltas


#: How many of its latest event ids an entity (PO, order, position) remembers, to give a
#: repeated ``event_id`` (a producer's retry or resend) no second effect. Replays after a
#: crash are recognised by offset instead (``offsets`` in the states), whatever the
#: entity's age, so the ids need not grow with it: unbounded, ~8,000 events on one PO
#: outgrew the changelog's record limit.
RECENT_EVENT_IDS: Final = 1000


def remember_event(event_ids: list[str], event_id: str) -> bool:
    """Record ``event_id`` among the last :data:`RECENT_EVENT_IDS`; False if it was already
    there (a repeated event)."""
    if event_id in event_ids:
        return False
    event_ids.append(event_id)
    if len(event_ids) > RECENT_EVENT_IDS:
        del event_ids[: len(event_ids) - RECENT_EVENT_IDS]
    return True


def offsets_from_wire(value: int | dict[str, int]) -> dict[str, int]:
    """An entity's ``offsets`` as stored: a dict, or (before streams) one int offset."""
    if isinstance(value, dict):
        return value
    return {"": value} if value >= 0 else {}
