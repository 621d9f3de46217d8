"""Faust codecs: by name, through a topic, through a table's changelog and its store."""

import pickle
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs

from supplyflow.agents.state import state_table
from supplyflow.codecs import JSON_CODEC, MSGPACK_CODEC, DecodeError, register_codecs

STATE: dict[str, Any] = {
    "revision": 3,
    "lines": {"1": {"sku": "SKU-1", "ordered": 12500, "received": 0}},
    "acks": {"erp": [3, "accepted"]},
    "cancelled": False,
    "applied": {"0": 1234},
    "note": "ünïcode",
    "big": 2**62,
    "neg": -17,
}


@pytest.fixture
def app(tmp_path: Path) -> Any:
    register_codecs()
    return faust.App("codec-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))


def test_codecs_are_registered_by_name() -> None:
    register_codecs()
    for name in (JSON_CODEC, MSGPACK_CODEC):
        codec = codecs.get_codec(name)
        assert codec.loads(codec.dumps(STATE)) == STATE


def test_msgpack_is_compact_and_json_is_text() -> None:
    register_codecs()
    packed = codecs.get_codec(MSGPACK_CODEC).dumps(STATE)
    text = codecs.get_codec(JSON_CODEC).dumps(STATE)
    assert len(packed) < len(text)
    assert text.startswith(b"{")


@pytest.mark.parametrize(("name", "garbage"), [(JSON_CODEC, b"{nope"), (MSGPACK_CODEC, b"\xc1")])
def test_decoding_garbage_raises_decode_error(name: str, garbage: bytes) -> None:
    register_codecs()
    with pytest.raises(DecodeError):
        codecs.get_codec(name).loads(garbage)


def test_value_round_trips_through_a_topic(app: Any) -> None:
    topic = app.topic("t", key_serializer=MSGPACK_CODEC, value_serializer=MSGPACK_CODEC)
    value, _ = topic.prepare_value(STATE, None)
    key, _ = topic.prepare_key("PO-17", None)
    assert isinstance(value, bytes)
    assert app.serializers.loads_value(None, value, serializer=MSGPACK_CODEC) == STATE
    assert app.serializers.loads_key(None, key, serializer=MSGPACK_CODEC) == "PO-17"


def test_value_round_trips_through_a_table_changelog(app: Any) -> None:
    table = state_table(app, "po_state", partitions=4, help="test")
    changelog = table.changelog_topic
    # What Faust sends to the changelog topic when the table is written (its
    # Table.send_changelog passes the table's serializers)...
    assert table.key_serializer == MSGPACK_CODEC
    assert table.value_serializer == MSGPACK_CODEC
    key_bytes, _ = changelog.prepare_key("PO-17", table.key_serializer)
    value_bytes, _ = changelog.prepare_value(STATE, table.value_serializer)
    # ...recovery reads back as raw bytes (they go to RocksDB as they are)...
    assert changelog.key_serializer == "raw"
    assert changelog.value_serializer == "raw"
    raw_key = app.serializers.loads_key(None, key_bytes, serializer=changelog.key_serializer)
    raw_value = app.serializers.loads_value(
        None, value_bytes, serializer=changelog.value_serializer
    )
    assert (raw_key, raw_value) == (key_bytes, value_bytes)
    # ...and the store decodes with the table's codec.
    key = app.serializers.loads_key(None, raw_key, serializer=table.key_serializer)
    value = app.serializers.loads_value(None, raw_value, serializer=table.value_serializer)
    assert table._to_key(key) == "PO-17"
    assert table._to_value(value) == STATE


SIDE_EFFECTS: list[str] = []


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (SIDE_EFFECTS.append, ("code ran",))


def test_table_never_unpickles(app: Any) -> None:
    table = state_table(app, "pos", partitions=2, help="test")
    assert "pickle" not in {table.key_serializer, table.value_serializer}
    evil = pickle.dumps(_Exploit())
    with pytest.raises(ValueDecodeError) as info:
        app.serializers.loads_value(None, evil, serializer=table.value_serializer)
    assert isinstance(info.value.__cause__, DecodeError)
    assert SIDE_EFFECTS == []


def test_the_raw_changelog_topic_is_fausts_own_but_for_its_codecs(app: Any) -> None:
    table = state_table(app, "po_state", partitions=4, help="test")
    ours = table.changelog_topic
    fausts = faust.Table._new_changelog_topic(table)  # what Faust itself would build
    for attribute in (
        "topics", "partitions", "retention", "compacting", "deleting", "acks", "internal",
        "config", "maxsize", "allow_empty", "replicas",
    ):  # fmt: skip
        assert getattr(ours, attribute) == getattr(fausts, attribute), attribute
    assert ours.acks is False  # no offset tracking for compaction's gaps
    assert (ours.key_serializer, ours.value_serializer) == ("raw", "raw")
