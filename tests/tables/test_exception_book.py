"""Exception identities and the book's open/resolve bookkeeping."""

from __future__ import annotations

import random
from typing import Any

from supplyflow.tables.exceptions import ExceptionBook, identity_of

NOW = "2026-11-27T10:00:00.000Z"


def _plain_identity(rule: str, detail: dict[str, Any]) -> str:
    """The definition: the rule, then every detail value ordered by field name."""
    return "|".join([rule, *(str(detail[k]) for k in sorted(detail))])


def test_identity_matches_the_plain_definition_for_any_detail() -> None:
    rng = random.Random(11)
    fields = ["system", "revision", "line_no", "receipt_id", "shipment_id"]
    values: list[Any] = ["wms", "erp", 0, 3, 12, "R-1", "", "a|b"]
    for _ in range(2000):
        keys = rng.sample(fields, rng.randint(0, 3))
        detail = {key: rng.choice(values) for key in keys}
        assert identity_of("ACK_MISSING", detail) == _plain_identity("ACK_MISSING", detail)


def test_resolving_in_a_book_without_exceptions_changes_nothing() -> None:
    entries: dict[str, list[Any]] = {}
    book = ExceptionBook("po", "PO-1", entries)
    book.resolve("ACK_MISSING", {"system": "wms", "revision": 1}, event_id="e1", now=NOW)
    assert entries == {}
    assert book.transitions == []


def test_an_open_exception_is_resolved_once_by_its_identity() -> None:
    entries: dict[str, list[Any]] = {}
    book = ExceptionBook("po", "PO-1", entries)
    detail = {"system": "wms", "revision": 1}
    book.open("ACK_MISSING", detail, message="m", event_ids=["e0"], now=NOW)
    book.resolve("ACK_MISSING", {"system": "wms", "revision": 2}, event_id="e1", now=NOW)
    assert [t.status for t in book.transitions] == ["open"]  # another revision: not this one
    book.resolve("ACK_MISSING", dict(detail), event_id="e2", now=NOW)
    book.resolve("ACK_MISSING", dict(detail), event_id="e3", now=NOW)
    assert [t.status for t in book.transitions] == ["open", "resolved"]
    assert book.transitions[1].event_ids == ["e0", "e2"]
    assert entries["ACK_MISSING|1|wms"][1] is False  # revision sorts before system
