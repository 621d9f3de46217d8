"""State written by the release before state formats had versions is read and migrated.

``fixtures/state_v0.json`` holds values as that release stored them (its ``to_wire``,
packed as its table codec packs them); they must read back as the same entities, with
the deadlines in the shape every rule now shares, and be written back in version 1.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

import pytest

from supplyflow.agents.runtime.progress import MARKER_FORMAT
from supplyflow.codecs.packing import unpack
from supplyflow.codecs.state import StateFormatError
from supplyflow.tables.order import ORDER_FORMAT, OrderState, order_view
from supplyflow.tables.po import PO_FORMAT, PoState, po_view
from supplyflow.tables.position import POSITION_FORMAT, PositionState

FIXTURE: Final = json.loads((Path(__file__).parent / "fixtures" / "state_v0.json").read_text())


def _stored(name: str) -> Any:
    return unpack(bytes.fromhex(FIXTURE[name]))


def test_a_po_of_the_previous_release_is_read_and_migrated() -> None:
    po = PoState.from_wire(_stored("po"))
    assert (po.po_id, po.revision, po.supplier_id, po.location) == ("PO-17", 2, "SUP-3", "DC1")
    assert po.lines[2].ordered == 5_500
    assert po.receipts["R-1"].location == "DC2"
    assert po.received(1) == 4_000
    assert po.asn_qty(1) == 6_000
    assert po.offsets == {"": 41}
    assert po.revision_at == 1795000000000
    assert po.deadlines == [
        [1795000030000, "ACK_MISSING", {"system": "wms", "revision": 2}, "e-2"],
        [1795086400000, "ACK_MISSING", {"system": "supplier", "revision": 2}, "e-2"],
    ]
    assert po.next_due() == 1795000030000
    assert po_view(po)["pending_deadlines"][0] == {
        "system": "wms",
        "revision": 2,
        "due": "2026-11-18T11:07:10.000Z",
    }
    assert po.exceptions["ACK_REJECTED|wms|1"][1] is True
    # Written back in this release's format, it reads back the same.
    stored = po.to_wire()
    assert stored[0] == PO_FORMAT.version == 1
    assert PoState.from_wire(stored) == po


def test_a_po_stored_with_one_int_offset_reads_it_as_the_direct_stream() -> None:
    assert PoState.from_wire(_stored("po_int_offset")).offsets == {"": 39}


def test_an_order_of_the_previous_release_is_read_and_migrated() -> None:
    order = OrderState.from_wire(_stored("order"))
    assert (order.order_id, order.channel, order.location) == ("SO-9", "web", "DC1")
    assert order.lines[1].allocated == 2_000
    assert order.shipped(1) == 1_000
    assert order.returns == {"RMA-1": [True, {1: 500}]}
    assert order.deadlines == [
        [1795000060000, "ACK_MISSING", {"system": "wms"}, "o-1"],
        [1795014400000, "INVOICE_MISSING", {"shipment_id": "SH-1"}, "o-3"],
    ]
    # The HTTP view shows them as before.
    assert [(d["kind"], d["subject"]) for d in order_view(order)["pending_deadlines"]] == [
        ("ack", "wms"),
        ("invoice", "SH-1"),
    ]
    stored = order.to_wire()
    assert stored[0] == ORDER_FORMAT.version == 1
    assert OrderState.from_wire(stored) == order


def test_a_position_and_a_marker_of_the_previous_release_are_read() -> None:
    position = PositionState.from_wire(_stored("position"))
    assert position.key == "SKU-1@DC1"
    assert position.totals == [3500, 1000, 8000, 2000, 2000]
    assert position.watermarks == {"po:0": 41, "order:1": 7, "inventory": 12}
    assert position.to_wire()[0] == POSITION_FORMAT.version == 1
    assert PositionState.from_wire(position.to_wire()) == position
    assert MARKER_FORMAT.unpack(_stored("marker")) == [355]


def test_a_field_added_at_the_end_needs_no_migration() -> None:
    """As if ``revision_at`` had been added to the PO in version 1: a value of version
    1 written before it is one field shorter, and the class's default fills it in."""
    stored = PoState.from_wire(_stored("po")).to_wire()[:-1]
    assert PoState.from_wire(stored).revision_at == 0
    assert len(fields(PoState)) == PO_FORMAT.fields


@pytest.mark.parametrize(
    ("read", "stored"),
    [
        (PoState.from_wire, [2, "PO-1"]),
        (OrderState.from_wire, [9, "SO-1"]),
        (PositionState.from_wire, [2, "SKU", "LOC"]),
    ],
)
def test_state_of_a_newer_release_stops_with_what_to_do(read: Any, stored: list[Any]) -> None:
    with pytest.raises(StateFormatError, match="written by a newer release"):
        read(stored)
