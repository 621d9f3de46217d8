"""Stored state formats: any older version is read, a newer one stops with what to do."""

from __future__ import annotations

from typing import Any

import pytest

from supplyflow.codecs.state import StateFormat, StateFormatError


def _split_name(values: list[Any]) -> list[Any]:
    """Version 1 to 2 of the test format: "name" became "first" and "last"."""
    first, _, last = values[0].partition(" ")
    return [first, last, *values[1:]]


#: Version 1: [name, qty]; version 2: [first, last, qty] (a migration); version 3 added
#: a field at the end (none: its default applies).
FORMAT = StateFormat("thing", 3, 4, migrations={1: _split_name})


def test_a_value_of_this_version_is_its_fields() -> None:
    assert FORMAT.unpack([3, "Ada", "L", 5, ["x"]]) == ["Ada", "L", 5, ["x"]]


def test_older_versions_are_migrated_step_by_step_and_appended_fields_left_out() -> None:
    assert FORMAT.unpack([1, "Ada Lovelace", 5]) == ["Ada", "Lovelace", 5]
    assert FORMAT.unpack([2, "Ada", "Lovelace", 5]) == ["Ada", "Lovelace", 5]


def test_a_value_from_before_versions_is_version_0() -> None:
    legacy = StateFormat("thing", 1, 2)
    assert legacy.unpack(["T-1", 5]) == ["T-1", 5]
    stored = ["T-1", 5]
    legacy.unpack(stored)[0] = "changed"
    assert stored == ["T-1", 5]  # the stored value is never changed in place


@pytest.mark.parametrize("stored", [[4, "Ada", "L", 5, []], [3, "Ada", "L", 5, [], "more"]])
def test_a_newer_value_stops_with_what_to_do(stored: list[Any]) -> None:
    with pytest.raises(StateFormatError) as raised:
        FORMAT.unpack(stored)
    message = str(raised.value)
    assert "reads thing state up to version 3" in message
    assert "written by a newer release" in message
    assert "SUPPLYFLOW_APP_ID" in message


@pytest.mark.parametrize("stored", [7, "x", [], {"a": 1}])
def test_a_value_in_no_known_shape_is_corrupt(stored: Any) -> None:
    with pytest.raises(StateFormatError, match="delete SUPPLYFLOW_DATA_DIR"):
        FORMAT.unpack(stored)
