"""Pending deadlines in entity state, in one shape every rule shares.

A deadline is ``[due_ms, rule, detail, cause]``: when it falls due (epoch ms), the
exception rule it opens when it passes unanswered (``ACK_MISSING``, ``INVOICE_MISSING``,
...), that rule's detail identity (``{"system": "wms", "revision": 2}``,
``{"shipment_id": "SH-1"}``), and the ``event_id`` of the request that set it. An entity
keeps its pending deadlines in one list; the runtime's deadline index only reads their
due times (:func:`next_due`), and firing them is the same for every rule
(:func:`fire_due`). A rule with a deadline of its own adds entries to that list: no new
field in the state, no state migration.

An answer is on time iff its ``occurred_at`` is at or before due + grace; one that
comes later still records the breach (:func:`answer`), and a deadline that passes
unanswered opens its exception raised at due + grace. Both depend only on event time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from supplyflow.tables.common import iso_ms
from supplyflow.tables.exceptions import ExceptionBook, Rule

__all__ = ["Deadline", "Message", "answer", "deadline", "fire_due", "next_due"]

#: ``[due_ms, rule, detail, cause event_id]``
Deadline = list[Any]
#: The text of the exception a breached deadline opens: (rule, detail, due as RFC 3339).
Message = Callable[[str, dict[str, Any], str], str]


def deadline(due_ms: int, rule: Rule, detail: dict[str, Any], cause: str) -> Deadline:
    """A pending deadline (see the module doc)."""
    return [due_ms, rule, detail, cause]


def next_due(deadlines: list[Deadline]) -> int | None:
    """The earliest due time among ``deadlines`` (epoch ms), or None."""
    return min((d[0] for d in deadlines), default=None)


def _open(book: ExceptionBook, item: Deadline, grace_ms: int, message: Message) -> None:
    """The exception of a breached deadline, raised at its due time plus grace."""
    due, rule, detail, cause = item
    book.open(
        rule,
        detail,
        message=message(rule, detail, iso_ms(due)),
        event_ids=[cause],
        now=iso_ms(due + grace_ms),
    )


def answer(
    deadlines: list[Deadline],
    answered: Callable[[str, dict[str, Any]], bool],
    *,
    at_ms: int,
    grace_ms: int,
    book: ExceptionBook,
    message: Message,
) -> list[Deadline]:
    """``deadlines`` without those ``answered(rule, detail)`` takes away, answered at
    ``at_ms`` (event time). One answered after its due time plus grace was breached: its
    exception opens (raised at due + grace) in ``book``, for the caller to resolve."""
    kept = []
    for item in deadlines:
        if not answered(item[1], item[2]):
            kept.append(item)
        elif at_ms > item[0] + grace_ms:
            _open(book, item, grace_ms, message)
    return kept


def fire_due(
    deadlines: list[Deadline],
    until_ms: int,
    *,
    grace_ms: int,
    book: ExceptionBook,
    message: Message,
) -> list[Deadline]:
    """Open the exception of every deadline whose due time plus grace is before
    ``until_ms`` (the time up to which the entity's input is known to be read, so no
    on-time answer can still be unread); returns the deadlines still pending."""
    pending = []
    for item in deadlines:
        if item[0] + grace_ms < until_ms:
            _open(book, item, grace_ms, message)
        else:
            pending.append(item)
    return pending
