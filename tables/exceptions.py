"""Exceptions: the rules' bookkeeping inside entity state, and the records they emit.

Each entity keeps, per *identity* (rule + the detail fields that identify it, such as
``ACK_MISSING|wms|2``), the number of times it has opened and whether it is open now.
The ``exception_id`` is derived from the identity and that number, so a replay computes
the same id and the emitter can drop a transition it has already written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final, Literal, Protocol, get_args

__all__ = [
    "RULES",
    "ExceptionBook",
    "RuleSettings",
    "Rules",
    "Transition",
    "exception_id",
]

Rule = Literal[
    "ACK_MISSING",
    "ACK_REJECTED",
    "INVOICE_MISSING",
    "RECEIPT_REVISION_MISMATCH",
    "OVER_RECEIPT",
    "ASN_MISSING",
    "OVERALLOCATION",
    "INVENTORY_MISMATCH",
]
RULES: Final[tuple[Rule, ...]] = get_args(Rule)
EntityType = Literal["po", "order", "position"]


class RuleSettings(Protocol):
    """The settings the rules read (the app's settings object has them all)."""

    @property
    def sla_po_ack(self) -> Mapping[str, timedelta]: ...

    @property
    def sla_order_ack(self) -> Mapping[str, timedelta]: ...

    @property
    def sla_invoice(self) -> timedelta | None: ...

    @property
    def receipt_tolerance_pct(self) -> Decimal: ...

    @property
    def deadline_grace(self) -> timedelta: ...


def _ms(value: timedelta) -> int:
    return round(value.total_seconds() * 1000)


@dataclass(frozen=True)
class Rules:
    """The settings the rules read: SLAs (milliseconds), tolerance, grace."""

    po_ack_ms: dict[str, int] = field(default_factory=dict)
    order_ack_ms: dict[str, int] = field(default_factory=dict)
    invoice_ms: int | None = None
    receipt_tolerance_pct: Decimal = Decimal(0)
    grace_ms: int = 2000

    @classmethod
    def from_settings(cls, settings: RuleSettings) -> Rules:
        """The rules' parameters from the settings (a rule's SLA is read here, nowhere
        else)."""
        invoice = settings.sla_invoice
        return cls(
            po_ack_ms={k: _ms(v) for k, v in settings.sla_po_ack.items()},
            order_ack_ms={k: _ms(v) for k, v in settings.sla_order_ack.items()},
            invoice_ms=None if invoice is None else _ms(invoice),
            receipt_tolerance_pct=settings.receipt_tolerance_pct,
            grace_ms=_ms(settings.deadline_grace),
        )


def exception_id(entity_type: str, entity_id: str, identity: str, occurrence: int) -> str:
    """Deterministic id of the ``occurrence``-th opening of an identity on an entity."""
    text = f"{entity_type}\x1f{entity_id}\x1f{identity}\x1f{occurrence}"
    return "exc-" + hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Transition:
    """One status change of one exception: the record written to ``exceptions``."""

    exception_id: str
    rule: str
    status: Literal["open", "resolved"]
    entity_type: str
    entity_id: str
    detail: dict[str, Any]
    raised_at: str
    resolved_at: str | None
    message: str
    event_ids: list[str]

    def record(self) -> dict[str, Any]:
        return {
            "exception_id": self.exception_id,
            "rule": self.rule,
            "status": self.status,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "detail": self.detail,
            "raised_at": self.raised_at,
            "resolved_at": self.resolved_at,
            "message": self.message,
            "event_ids": self.event_ids,
        }


class ExceptionBook:
    """The exceptions of one entity, kept in its state as a plain dict (msgpack-able).

    ``entries[identity] = [occurrences, is_open, rule, detail, raised_at, message,
    event_ids]``.
    """

    def __init__(self, entity_type: EntityType, entity_id: str, entries: dict[str, list[Any]]):
        self.entity_type = entity_type
        self.entity_id = entity_id
        self.entries = entries
        self.transitions: list[Transition] = []

    def is_open(self, identity: str) -> bool:
        entry = self.entries.get(identity)
        return bool(entry and entry[1])

    def ever_opened(self, identity: str) -> bool:
        return identity in self.entries

    def open(
        self,
        rule: Rule,
        detail: dict[str, Any],
        *,
        message: str,
        event_ids: list[str],
        now: str,
    ) -> None:
        """Open the exception unless the same identity is open already."""
        identity = identity_of(rule, detail)
        entry = self.entries.get(identity)
        if entry is not None and entry[1]:
            return
        occurrences = (entry[0] if entry else 0) + 1
        self.entries[identity] = [occurrences, True, rule, detail, now, message, event_ids]
        self.transitions.append(
            Transition(
                exception_id(self.entity_type, self.entity_id, identity, occurrences),
                rule,
                "open",
                self.entity_type,
                self.entity_id,
                detail,
                now,
                None,
                message,
                list(event_ids),
            )
        )

    def resolve(
        self, rule: Rule, detail: dict[str, Any], *, event_id: str | None, now: str
    ) -> None:
        """Resolve the exception if it is open."""
        if not self.entries:  # the usual case: the entity never had an exception
            return
        identity = identity_of(rule, detail)
        entry = self.entries.get(identity)
        if entry is None or not entry[1]:
            return
        entry[1] = False
        occurrences, _, _, opened_detail, raised_at, message, event_ids = entry
        ids = [*event_ids, event_id] if event_id else list(event_ids)
        self.transitions.append(
            Transition(
                exception_id(self.entity_type, self.entity_id, identity, occurrences),
                rule,
                "resolved",
                self.entity_type,
                self.entity_id,
                opened_detail,
                raised_at,
                now,
                message,
                ids,
            )
        )

    def open_ones(self) -> list[dict[str, Any]]:
        """The open exceptions as ``exceptions`` records (for the query API)."""
        return self.latest(open_only=True)

    def latest(self, *, open_only: bool) -> list[dict[str, Any]]:
        """The latest occurrence of each identity (only open ones with ``open_only``).

        A resolved one's ``resolved_at`` is not kept in state: it is the time on the
        ``resolved`` record in the ``exceptions`` topic.
        """
        out = []
        for identity, (n, is_open, rule, detail, raised_at, message, ids) in self.entries.items():
            if open_only and not is_open:
                continue
            out.append(
                Transition(
                    exception_id(self.entity_type, self.entity_id, identity, n),
                    rule,
                    "open" if is_open else "resolved",
                    self.entity_type,
                    self.entity_id,
                    detail,
                    raised_at,
                    None,
                    message,
                    ids,
                ).record()
            )
        return out


def identity_of(rule: str, detail: dict[str, Any]) -> str:
    """``RULE|value|value`` from the detail's identity fields, in a fixed order."""
    if len(detail) < 2:  # every rule but PO acks (system, revision): no sort, no list
        return rule if not detail else rule + "|" + str(next(iter(detail.values())))
    parts = [str(detail[k]) for k in sorted(detail)]
    return "|".join([rule, *parts])
