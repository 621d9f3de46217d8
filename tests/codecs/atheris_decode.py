"""Coverage-guided fuzzing of the input decoder with atheris (libFuzzer).

Run by ``test_decode_atheris.py``; by hand::

    python tests/codecs/atheris_decode.py --write-seeds CORPUS_DIR
    python tests/codecs/atheris_decode.py CORPUS_DIR -runs=1000000 -max_len=8192

Each input is three control bytes and a value: topic, key and ``content-type`` are chosen
by the control bytes, the rest is the record's value. Every input must decode into an
event consistent with its record or raise :class:`DecodeError` with a dead-letter
reason; any other exception is a crash, saved by libFuzzer as ``crash-<sha1>``.
``--write-seeds`` writes the sample scenario's records as a starting corpus.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import atheris
import orjson

with atheris.instrument_imports(include=["supplyflow.codecs"]):
    from supplyflow.codecs import REASONS, DecodeError, decode_input, entity_key

TOPICS: Final = ("po.events", "order.events", "inventory.events")
CONTENT_TYPES: Final[tuple[bytes | None, ...]] = (
    None,
    b"application/json",
    b"application/msgpack",
    b"application/x-msgpack; v=1",
    b"application/xml",
    b"",
)
MAX_BYTES: Final = 4096


def _guess_key(value: bytes) -> bytes | None:
    """The key a correct producer would send for ``value``, when it is readable JSON."""
    try:
        body = orjson.loads(value)
        data = body["data"]
        if "po_id" in data or "order_id" in data:
            return str(data.get("po_id") or data.get("order_id")).encode()
        return f"{data['sku']}@{data['location']}".encode()
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None


def split(data: bytes) -> tuple[str, bytes | None, list[tuple[str, Any]], bytes]:
    """Control bytes -> (topic, key, headers, value)."""
    head = data[:3].ljust(3, b"\x00")
    value = data[3:]
    topic = TOPICS[head[0] % len(TOPICS)]
    key_mode = head[1] % 4
    key = (_guess_key(value), None, b"\xff\xfe", value[:12])[key_mode]
    ctype = CONTENT_TYPES[head[2] % len(CONTENT_TYPES)]
    headers = [] if ctype is None else [("content-type", ctype)]
    return topic, key, headers, value


def one_input(data: bytes) -> None:
    topic, key, headers, value = split(data)
    try:
        event = decode_input(topic, key, value, headers, max_bytes=MAX_BYTES)
    except DecodeError as error:
        if error.reason not in REASONS or not error.detail.strip():
            raise AssertionError(f"bad reason {error.reason!r} / {error.detail!r}") from error
        return
    if key is None or key.decode("utf-8") != entity_key(event):
        raise AssertionError(f"accepted {event.type} with key {key!r}")


def write_seeds(folder: Path) -> int:
    """The sample scenario's records (good and bad) as seed inputs; returns how many."""
    from supplyflow.app.sample import sample_scenario

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for i, record in enumerate(sample_scenario("az", max_record_bytes=MAX_BYTES)):
        ctype = dict(record.headers).get("content-type")
        control = bytes([TOPICS.index(record.topic), 0, CONTENT_TYPES.index(ctype) if ctype else 0])
        (folder / f"seed-{i:03d}").write_bytes(control + record.value[:MAX_BYTES])
        count += 1
    return count


def main() -> None:
    if sys.argv[1:2] == ["--write-seeds"]:
        print(write_seeds(Path(sys.argv[2])))
        return
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
