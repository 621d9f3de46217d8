"""Header keys that are not UTF-8: aiokafka's fetch path with the supplyflow fallback."""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Iterator

import pytest
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy, _DefaultRecordBatchPy
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord, TopicPartition

from supplyflow.app import kafka_records
from supplyflow.app.kafka_records import ORIGINALS, SlicedMemoryRecords

#: sha256 of each replaced aiokafka function in aiokafka 0.14.0, the version the copies in
#: app/kafka_records.py were written against. A new release that changes one fails here:
#: compare the copy with the new original, then update the hash.
PINNED = {
    "PartitionRecords._unpack_records": (
        "b803e6d46480732c7a7faa8e784b338bcdd4e707ea67fba96c013654b04b8a08"
    ),
    "_DefaultRecordBatchPy._read_msg": (
        "0997ab7a58505c939c31b1cf5809aff4ac6de70f713794d3c62bd049a3270a4a"
    ),
    "Fetcher._proc_fetch_request": (
        "59bf948fff47eed580671971252454daa614df479733f3bedfefe95bc4d8ad30"
    ),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_replaced_aiokafka_code_is_the_pinned_version(name: str) -> None:
    source = inspect.getsource(ORIGINALS[name])
    assert hashlib.sha256(source.encode()).hexdigest() == PINNED[name], (
        f"aiokafka's {name} changed: check app/kafka_records.py against it"
    )


def batch_bytes(header_keys: list[bytes], base_offset: int = 0) -> bytes:
    """One record batch of ``len(header_keys)`` records; record i has one header whose key
    is ``b"@" + header_keys[i]`` (any bytes), or none if that is empty. aiokafka's builder
    writes str keys only, so each key is written as ASCII digits of the same length,
    replaced in the built bytes, and the CRC computed again."""
    builder = _DefaultRecordBatchBuilderPy(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    swaps: list[tuple[bytes, bytes]] = []
    for i, key in enumerate(header_keys):
        headers: list[tuple[str, bytes]] = []
        if key:
            digits = f"@{i:0{len(key)}d}"
            headers = [(digits, b"h")]
            swaps.append((digits.encode(), b"@" + key))
        builder.append(
            i, timestamp=1, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=headers
        )
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base_offset)
    for stand_in, key in swaps:
        at = data.index(stand_in)
        data[at : at + len(key)] = key
    crc = calc_crc32c(bytes(data[_DefaultRecordBatchPy.ATTRIBUTES_OFFSET :]))
    struct.pack_into(">I", data, _DefaultRecordBatchPy.CRC_OFFSET, crc)
    return bytes(data)


def records_of(data: bytes, fetch_offset: int = 0) -> list[ConsumerRecord[bytes, bytes]]:
    partition = fetcher.PartitionRecords(
        TopicPartition("t", 0), SlicedMemoryRecords(data), None, fetch_offset, None, None, True, 0
    )
    return list(partition)


@pytest.fixture
def patched() -> Iterator[None]:
    before = fetcher.MemoryRecords, fetcher.PartitionRecords._unpack_records
    kafka_records.install()
    yield
    fetcher.MemoryRecords, fetcher.PartitionRecords._unpack_records = before


def test_without_the_patch_a_bad_header_key_stops_the_partition() -> None:
    original = fetcher.PartitionRecords._unpack_records
    data = batch_bytes([b"", b"\xff\xfe", b""])
    partition = fetcher.PartitionRecords(
        TopicPartition("t", 0), fetcher.MemoryRecords(data), None, 0, None, None, True, 0
    )
    partition._records_iterator = original(partition)
    with pytest.raises(UnicodeDecodeError):
        list(partition)


@pytest.mark.usefixtures("patched")
def test_a_bad_header_key_arrives_with_its_bytes_and_the_records_around_it() -> None:
    data = batch_bytes([b"", b"\xff\xfe", b"ok", b""]) + batch_bytes([b"", b"\xc3"], 4)
    got = records_of(data)
    assert [r.offset for r in got] == [0, 1, 2, 3, 4, 5]
    assert [r.value for r in got] == [b"v0", b"v1", b"v2", b"v3", b"v0", b"v1"]
    key = got[1].headers[0][0]
    assert key.encode("utf-8", "surrogateescape") == b"@\xff\xfe"
    assert got[2].headers == (("@ok", b"h"),)
    assert got[5].headers[0][0].encode("utf-8", "surrogateescape") == b"@\xc3"


@pytest.mark.usefixtures("patched")
def test_the_fallback_starts_at_the_fetch_position() -> None:
    got = records_of(batch_bytes([b"", b"", b"\xff", b""]), fetch_offset=2)
    assert [r.offset for r in got] == [2, 3]


@pytest.mark.usefixtures("patched")
def test_good_batches_are_parsed_as_before() -> None:
    data = batch_bytes([b"", b"abc", b""]) + batch_bytes([b"x"], 3)
    got = records_of(data)
    assert [(r.offset, r.key, r.headers) for r in got] == [
        (0, b"k0", ()),
        (1, b"k1", (("@abc", b"h"),)),
        (2, b"k2", ()),
        (3, b"k0", (("@x", b"h"),)),
    ]
