"""Records whose header keys are not UTF-8 reach supplyflow instead of stopping a partition.

Kafka header keys are strings on the wire, but nothing stops a producer from writing any
bytes there (kcat passes its command line through). aiokafka decodes each key with
``bytes.decode("utf-8")`` while it iterates a fetched batch; one bad key raises
``UnicodeDecodeError`` out of ``getmany``, the consumer's position stays on that record,
and the next fetch raises again: the partition never moves past it.

:func:`install` changes two things in aiokafka's fetcher, both only on that path:

* the fetcher frames a fetch response into record batches in Python (one ``struct`` read
  per batch) and parses each batch with aiokafka's C parser as before, remembering the
  bytes of the batch it handed out (:class:`SlicedMemoryRecords`);
* ``PartitionRecords._unpack_records`` is aiokafka's own, except that a batch whose
  iteration fails with ``UnicodeDecodeError`` is parsed again by :class:`TolerantBatch`,
  aiokafka's pure-Python parser with header keys decoded with ``surrogateescape``. The
  records it already returned are skipped as aiokafka skips them after a seek (by
  offset).

The record then reaches decoding with the key's bytes kept as lone surrogates
(``key.encode("utf-8", "surrogateescape")`` gives them back) and is dead-lettered with
reason ``invalid_header`` (:func:`supplyflow.codecs.decode.decode_input`).

Each replaced function is compared with the pinned aiokafka's source in
``tests/app/test_kafka_records.py``: a new aiokafka release fails that test until the
copies here are checked against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.memory_records import _MemoryRecordsPy
from aiokafka.record.util import decode_varint

__all__ = ["ORIGINALS", "SlicedMemoryRecords", "TolerantBatch", "install", "tolerant_batch"]

#: How header keys that are not UTF-8 are kept: ``encode("utf-8", _HEADER_ERRORS)``
#: restores the producer's bytes.
HEADER_KEY_ERRORS: Final = "surrogateescape"


class TolerantBatch(_DefaultRecordBatchPy):  # type: ignore[misc]  # aiokafka: no types
    """aiokafka's Python batch parser; header keys that are not UTF-8 keep their bytes as
    lone surrogates instead of raising."""

    def _read_msg(
        self, decode_varint: Callable[[bytearray, int], tuple[int, int]] = decode_varint
    ) -> _DefaultRecordPy:
        # aiokafka's _DefaultRecordBatchPy._read_msg, with the header key decoded leniently.
        buffer: bytearray = self._buffer
        pos: int = self._pos  # type: ignore[has-type]  # set by the base class
        length, pos = decode_varint(buffer, pos)
        start_pos = pos
        _, pos = decode_varint(buffer, pos)  # attributes
        ts_delta, pos = decode_varint(buffer, pos)
        if self.timestamp_type == self.LOG_APPEND_TIME:
            timestamp = self.max_timestamp
        else:
            timestamp = self.first_timestamp + ts_delta
        offset_delta, pos = decode_varint(buffer, pos)
        offset = self.base_offset + offset_delta
        key_len, pos = decode_varint(buffer, pos)
        key = None
        if key_len >= 0:
            key = bytes(buffer[pos : pos + key_len])
            pos += key_len
        value_len, pos = decode_varint(buffer, pos)
        value = None
        if value_len >= 0:
            value = bytes(buffer[pos : pos + value_len])
            pos += value_len
        header_count, pos = decode_varint(buffer, pos)
        if header_count < 0:
            raise CorruptRecordException(f"Found invalid number of record headers {header_count}")
        headers: list[tuple[str, bytes | None]] = []
        while header_count:
            h_key_len, pos = decode_varint(buffer, pos)
            if h_key_len < 0:
                raise CorruptRecordException(f"Invalid negative header key size {h_key_len}")
            h_key = buffer[pos : pos + h_key_len].decode("utf-8", HEADER_KEY_ERRORS)
            pos += h_key_len
            h_value_len, pos = decode_varint(buffer, pos)
            h_value = None
            if h_value_len >= 0:
                h_value = bytes(buffer[pos : pos + h_value_len])
                pos += h_value_len
            headers.append((h_key, h_value))
            header_count -= 1
        if pos - start_pos != length:
            raise CorruptRecordException(
                f"Invalid record size: expected to read {length} bytes in record "
                f"payload, but instead read {pos - start_pos}"
            )
        self._pos = pos
        return _DefaultRecordPy(offset, timestamp, self.timestamp_type, key, value, headers)


def tolerant_batch(data: bytes | memoryview) -> TolerantBatch:
    """The batch in ``data`` (one whole record batch), parsed by :class:`TolerantBatch`."""
    return TolerantBatch(data)


class SlicedMemoryRecords(_MemoryRecordsPy):  # type: ignore[misc]  # aiokafka: no types
    """A fetch response's record set: Python framing, aiokafka's C (or Python) batch
    parser, and the bytes of the last batch handed out (:attr:`last_slice`)."""

    def __init__(self, bytes_data: bytes) -> None:
        self.last_slice: memoryview | None = None
        super().__init__(bytes_data)

    def next_batch(self, *args: Any, **kwargs: Any) -> Any:
        self.last_slice = self._next_slice
        return super().next_batch(*args, **kwargs)


def _unpack_records(self: Any) -> Iterator[Any]:
    # aiokafka's PartitionRecords._unpack_records; the inner loop falls back to the
    # tolerant parser (marked "supplyflow"). Names resolve in aiokafka's fetcher module.
    tp = self._tp
    records = self._records
    while records.has_next():
        next_batch = records.next_batch()
        if self._check_crcs and not next_batch.validate_crc():
            raise fetcher.Errors.CorruptRecordException(f"Invalid CRC - {tp}")
        if self._isolation_level == fetcher.READ_COMMITTED and next_batch.producer_id is not None:
            self._consume_aborted_up_to(next_batch.base_offset)
            if next_batch.is_control_batch and self._contains_abort_marker(next_batch):
                self._aborted_producers.discard(next_batch.producer_id)
            if next_batch.is_transactional and next_batch.producer_id in self._aborted_producers:
                self.next_fetch_offset = next_batch.next_offset
                continue
        if next_batch.is_control_batch:
            self.next_fetch_offset = next_batch.next_offset
            continue
        try:
            for record in next_batch:
                if record.offset < self.next_fetch_offset:
                    continue
                consumer_record = self._consumer_record(tp, record)
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
        except UnicodeDecodeError:  # supplyflow: a header key that is not UTF-8
            data = getattr(records, "last_slice", None)
            if data is None:
                raise
            for record in tolerant_batch(data):
                if record.offset < self.next_fetch_offset:
                    continue
                consumer_record = self._consumer_record(tp, record)
                self.next_fetch_offset = record.offset + 1
                yield consumer_record
        self.next_fetch_offset = next_batch.next_offset


#: What :func:`install` replaces, as the pinned aiokafka defines it (for the source check).
ORIGINALS: Final = {
    "PartitionRecords._unpack_records": fetcher.PartitionRecords._unpack_records,
    "_DefaultRecordBatchPy._read_msg": _DefaultRecordBatchPy._read_msg,
    # where the fetcher builds the record set from a fetch response (``MemoryRecords``)
    "Fetcher._proc_fetch_request": fetcher.Fetcher._proc_fetch_request,
}


def install() -> None:
    """Make every aiokafka consumer of this process take header keys that are not UTF-8."""
    fetcher.MemoryRecords = SlicedMemoryRecords
    fetcher.PartitionRecords._unpack_records = _unpack_records
