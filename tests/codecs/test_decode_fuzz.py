"""Hostile input: every record ends as a valid event or a DecodeError with a reason.

Hypothesis drives the decoder with valid records of every event type (the sample
scenario, JSON and MessagePack), mutated at a random place of their tree: wrong types,
huge and non-finite numbers, more than 3 decimals, deep nesting, unknown types and
topics, mismatched or missing keys, stray or missing headers, truncation and byte
flips, records over the size limit, and plain random bytes. Whatever comes in, the
decoder must answer with an accepted event that is consistent with its record, or with
:class:`DecodeError` carrying one of the dead-letter reasons and a detail; any other
exception fails the test with the record that caused it.

24,000 cases in ~25 s on a 2-core machine; ``test_decode_atheris.py`` adds a
coverage-guided run of 100,000 more.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any, Final

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supplyflow.app.sample import OK, sample_scenario
from supplyflow.codecs import (
    EVENT_TYPE_TOPIC,
    REASONS,
    DecodeError,
    decode_input,
    entity_key,
)

MAX_BYTES: Final = 4096
TOPICS: Final = ("po.events", "order.events", "inventory.events")
MSGPACK: Final = ("content-type", b"application/msgpack")


def fuzz(examples: int) -> settings:
    """Many examples, no deadline (a shared CI machine stalls now and then), no example
    database (each run searches afresh; a failure prints its record)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _valid_bodies() -> list[tuple[str, dict[str, Any]]]:
    """(topic, decoded body) of every valid sample record: all 15 event types."""
    found = []
    for record in sample_scenario("fz"):
        if record.expect != OK:
            continue
        if MSGPACK in record.headers:
            body = msgpack.unpackb(record.value)
        else:
            body = orjson.loads(record.value)
        found.append((record.topic, body))
    return found


VALID: Final = _valid_bodies()


def check(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, Any]] | None,
    max_bytes: int = MAX_BYTES,
) -> str:
    """Decode one record; return ``ok`` or the reason. Anything else escapes and fails."""
    rejected: DecodeError | None = None
    try:
        event = decode_input(topic, key, value, headers, max_bytes=max_bytes)
    except DecodeError as error:
        rejected = error
    if rejected is not None:
        assert rejected.reason in REASONS, rejected.reason
        assert isinstance(rejected.detail, str)
        assert rejected.detail.strip(), rejected
        assert rejected.event_id is None or isinstance(rejected.event_id, str)
        return rejected.reason
    # An accepted event is consistent with the record it came from.
    assert EVENT_TYPE_TOPIC[event.type] == topic
    assert key is not None
    assert key.decode("utf-8") == entity_key(event)
    assert len(key) + len(value or b"") <= max_bytes
    return OK


# --- hostile values ------------------------------------------------------------------

_NASTY: Final[list[Any]] = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    10**12,
    -(10**12),
    10**12 - 0.001,
    1e308,
    -1e308,
    5e-324,
    0.1 + 0.2,
    12.5001,
    "12.5001",
    "12.500000000000000000000",
    "1e3",
    "NaN",
    "Infinity",
    "-0",
    " 7 ",
    "",
    " ",
    "\x00",
    "\ud7ff" * 3,
    "a" * 129,
    "a" * 2000,
    "SKU@DC1",
    "has space",
    "2026-11-27T10:15:00",
    "2026-13-45T99:99:99Z",
    "1",
    [],
    {},
    [{}],
    {"line_no": 1},
    [{"line_no": 1, "sku": "S", "qty": 1}] * 3,
    # where a decoder other than orjson + pydantic would most likely differ
    # (bench/onepass.py, compared with this one in tests/bench/test_decode.py)
    "2026-11-27T10:15:00.1234567Z",
    "2026-11-27T10:15:00.9999995+01:00",
    "2026-11-27t10:15:00z",
    "2026-11-27 10:15:00+05:30",
    "2026-11-27T10:15:00,5Z",
    "2026-11-27T10:15Z",
    "2026-11-27T24:00:00Z",
    "2026-02-29T10:15:00Z",
    "2026-11-27T10:15:00+05:75",
    "1969-12-31T23:59:59-01:00",
    "1970-01-01T00:59:59+01:00",
    "8999-12-31T23:59:59-00:01",
    "9000-01-01T00:00:00+00:01",
    1_700_000_000,
    "SKU-1\n",
    "SKU\x7f1",
    "SK\u00dc-1",
    "\u00a0",
    "DC 1",
    "SKU@",
    "\u2028",
    "po.created",
    "12.500",
    "0012.5",
    "-0",
    -0.0,
    "+1",
    "1_000",
    "\uff11\uff12",
    10**12 - 1,
    "999999999999.999",
    2**63,
]


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


_SCALARS: Final = st.one_of(
    st.sampled_from(_NASTY),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str),
    st.text(max_size=40),
)
HOSTILE: Final = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=5),
    st.dictionaries(st.text(max_size=8), _SCALARS, max_size=5),
    st.builds(_deep, st.integers(1, 120), _SCALARS),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a decoded record (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.extend(_paths(child, (*prefix, index)))
    return found


#: Names of fields added to a record: unknown ones and ones the contract knows.
_FIELD_NAMES: Final = st.text(max_size=8) | st.sampled_from(
    ("type", "event_id", "occurred_at", "data", "lines", "qty", "sku", "reason", "location")
)


def _get(body: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        body = body[part]
    return body


def _set(body: Any, path: tuple[Any, ...], value: Any, *, delete: bool) -> Any:
    if not path:
        return value
    parent = body
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return body


def _encode(body: Any, fmt: str) -> tuple[bytes, list[tuple[str, Any]]]:
    if fmt == "msgpack":
        return msgpack.packb(body, use_bin_type=True), [MSGPACK]
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), []


@st.composite
def mutated_records(draw: st.DrawFn) -> tuple[str, bytes | None, bytes, list[Any]]:
    """A valid record with one to three of its values replaced, removed or added."""
    topic, original = draw(st.sampled_from(VALID))
    body = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths))
        node = _get(body, path)
        action = draw(st.sampled_from(("set", "delete", "add"))) if path else "set"
        if action == "add" and isinstance(node, dict):
            node[draw(_FIELD_NAMES)] = copy.deepcopy(draw(HOSTILE))
            continue
        body = _set(body, path, copy.deepcopy(draw(HOSTILE)), delete=action == "delete")
        if not isinstance(body, dict):
            break
    fmt = draw(st.sampled_from(("json", "msgpack")))
    try:
        value, headers = _encode(body, fmt)
    except (TypeError, ValueError, OverflowError):  # not representable: send it as msgpack
        value, headers = msgpack.packb(repr(body)), [MSGPACK]
    key_choice = draw(st.sampled_from(("right", "right", "none", "other", "binary")))
    if key_choice == "right":
        key: bytes | None = _expected_key(topic, original)
    elif key_choice == "none":
        key = None
    elif key_choice == "other":
        key = draw(st.text(max_size=30)).encode("utf-8", "surrogatepass")
    else:
        key = draw(st.binary(max_size=30))
    topic = draw(st.sampled_from((topic, topic, topic, *TOPICS)))
    return topic, key, value, headers


def _expected_key(topic: str, body: dict[str, Any]) -> bytes:
    data = body["data"]
    if topic == "inventory.events":
        return f"{data['sku']}@{data['location']}".encode()
    return str(data.get("po_id") or data.get("order_id")).encode()


@fuzz(6_000)
@given(mutated_records())
def test_mutated_records_decode_or_are_rejected_with_a_reason(
    record: tuple[str, bytes | None, bytes, list[Any]],
) -> None:
    check(*record)


@fuzz(6_000)
@given(
    st.sampled_from(VALID),
    st.sampled_from(("json", "msgpack")),
    st.data(),
)
def test_truncated_and_flipped_bytes(
    valid: tuple[str, dict[str, Any]], fmt: str, data: st.DataObject
) -> None:
    topic, body = valid
    value, headers = _encode(body, fmt)
    raw = bytearray(value)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(("flip", "cut", "insert", "drop")))
        if action == "flip":
            raw[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[position:]
        elif action == "insert":
            raw[position:position] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[position]
        if not raw:
            break
    check(topic, _expected_key(topic, body), bytes(raw), headers)


@fuzz(6_000)
@given(
    st.sampled_from(TOPICS),
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.lists(
        st.tuples(
            st.sampled_from(("content-type", "Content-Type", "CONTENT-TYPE", "x-trace")),
            st.one_of(
                st.none(),
                st.sampled_from(
                    (
                        b"application/json",
                        b"application/msgpack; charset=x",
                        b" application/X-MSGPACK ",
                        b"application/vnd.msgpack",
                        b"text/json",
                        b"application/xml",
                        b"",
                        b"\xff\xfe",
                    )
                ),
                st.binary(max_size=20),
            ),
        ),
        max_size=3,
    ),
)
def test_random_bytes_and_headers(
    topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, Any]]
) -> None:
    check(topic, key, value, headers)


@fuzz(2_000)
@given(
    st.sampled_from(VALID),
    st.sampled_from(("json", "msgpack")),
    st.integers(0, 3),
    st.integers(1024, 8192),
)
def test_records_around_the_size_limit(
    valid: tuple[str, dict[str, Any]], fmt: str, padding_kb: int, max_bytes: int
) -> None:
    topic, body = valid
    padded = {**body, "padding": "p" * (padding_kb * 1024 + max_bytes // 2)}
    value, headers = _encode(padded, fmt)
    key = _expected_key(topic, body)
    reason = check(topic, key, value, headers, max_bytes=max_bytes)
    size = len(key) + len(value) + sum(len(name.encode()) + len(v) for name, v in headers)
    assert (reason == "too_large") == (size > max_bytes)


@fuzz(4_000)
@given(
    st.sampled_from(VALID),
    st.sampled_from(("json", "msgpack")),
    st.text(min_size=0, max_size=30) | st.sampled_from(sorted(EVENT_TYPE_TOPIC)),
    st.sampled_from(("type", "event_id", "schema_version", "source", "occurred_at", "data")),
)
def test_types_and_envelopes(
    valid: tuple[str, dict[str, Any]], fmt: str, type_: str, dropped: str
) -> None:
    topic, body = valid
    retyped = {**body, "type": type_}
    value, headers = _encode(retyped, fmt)
    reason = check(topic, _expected_key(topic, body), value, headers)
    if type_ not in EVENT_TYPE_TOPIC:
        assert reason == "unknown_type"
    elif EVENT_TYPE_TOPIC[type_] != topic:
        assert reason == "wrong_topic"
    missing = {k: v for k, v in body.items() if k != dropped}
    value, headers = _encode(missing, fmt)
    expected = "unknown_type" if dropped == "type" else "schema"
    assert check(topic, _expected_key(topic, body), value, headers) == expected


def test_extremes_are_rejected_with_their_reason() -> None:
    """Deterministic worst cases the random search may not reach in a short run."""
    topic, body = next(v for v in VALID if v[1]["type"] == "po.created")
    key = _expected_key(topic, body)

    def with_data(**changes: Any) -> dict[str, Any]:
        return {**body, "data": {**body["data"], **changes}}

    def with_extra(raw_json: bytes) -> bytes:
        return orjson.dumps(body)[:-1] + b', "x": ' + raw_json + b"}"

    line = body["data"]["lines"][0]
    cases: list[tuple[bytes, list[tuple[str, Any]], str]] = [
        (b"[" * 100_000 + b"]" * 100_000, [], "invalid_json"),
        (b"\x91" * 100_000 + b"\xc0", [MSGPACK], "invalid_msgpack"),
        (b"\x81\xa1x" * 5_000 + b"\xc0", [MSGPACK], "invalid_msgpack"),
        (b"\x91" * 400 + b"\xc0", [MSGPACK], "not_an_object"),
        (msgpack.packb(with_data(lines=_deep(400, 1))), [MSGPACK], "schema"),
        (msgpack.packb(with_data(extra=_deep(400, 1))), [MSGPACK], OK),
        (with_extra(b"[" * 1000 + b"]" * 1000), [], OK),
        (with_extra(b"[" * 2000 + b"]" * 2000), [], "invalid_json"),
        (b'{"data": ' * 200 + b"1" + b"}" * 200, [], "unknown_type"),
        (orjson.dumps(with_data(revision=2**64 - 1)), [], "schema"),
        (b'{"revision": 1' + b"0" * 400 + b"}", [], "invalid_json"),
        (orjson.dumps(with_data(lines=[{**line, "qty": "1.0001"}])), [], "schema"),
        (orjson.dumps(with_data(lines=[{**line, "qty": 10**12}])), [], "schema"),
        (orjson.dumps(with_data(lines=[{**line, "qty": str(Decimal("1e400"))}])), [], "schema"),
        (orjson.dumps(with_data(lines=[line] * 10_001)), [], "schema"),
        (msgpack.packb(with_data(lines=[{**line, "qty": float("nan")}])), [MSGPACK], "schema"),
        (msgpack.packb({**body, b"type": "x"}), [MSGPACK], OK),
        (msgpack.packb({1: 2}, strict_types=False), [MSGPACK], "invalid_msgpack"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), [MSGPACK], "not_an_object"),
        (b"\xff\xfe{}", [], "invalid_json"),
        (b"", [], "invalid_json"),
    ]
    for value, headers, expected in cases:
        assert check(topic, key, value, headers, max_bytes=2**31) == expected, value[:60]
    assert check(topic, key, None, None) == "invalid_json"
    huge = orjson.dumps(with_data(note="x" * (8 * 1024 * 1024)))
    assert check(topic, key, huge, None, max_bytes=1024 * 1024) == "too_large"
    assert check(topic, None, orjson.dumps(body), None) == "key_mismatch"
    assert check(topic, b"\xff", orjson.dumps(body), None) == "key_mismatch"
    assert check(topic, key, orjson.dumps(body), [("content-type", None)]) == (
        "unsupported_content_type"
    )
