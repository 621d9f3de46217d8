"""A minimal Kafka wire-protocol probe: "does a real broker answer at ``host:port``?".

It sends an ``ApiVersions`` v0 request and then a ``Metadata`` v4 request over a plain
blocking socket, and calls the broker ready when the metadata answer lists at least one
broker. No event loop is involved, so :func:`wait_until_ready` works the same from
synchronous code, from a CLI and from inside a running asyncio loop (tests, fixtures).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import dataclass

__all__ = ["ProbeResult", "parse_bootstrap", "probe", "wait_until_ready"]

logger = logging.getLogger(__name__)

API_VERSIONS_KEY = 18
METADATA_KEY = 3
METADATA_VERSION = 4  # non-flexible encoding, supported from Kafka 1.0 through 4.x
CLIENT_ID = b"supplyflow-local-kafka"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
PROBE_ATTEMPT_TIMEOUT = 3.0
"""Seconds one connect + ApiVersions + Metadata exchange may take."""
RETRY_INTERVAL = 0.25
"""Seconds between two probes while waiting for a broker."""
DEFAULT_KAFKA_PORT = 9092


class ProtocolError(ValueError):
    """The peer answered, but not like a Kafka broker."""


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: ``ready`` and a short reason for logs and messages."""

    ready: bool
    reason: str
    brokers: tuple[tuple[int, str, int], ...] = ()


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """Split ``"h1:9092,h2:9093"`` (or ``[::1]:9092``; a bare host means 9092)."""
    result: list[tuple[str, int]] = []
    for raw in bootstrap.split(","):
        item = raw.strip()
        if not item:
            continue
        for prefix in ("PLAINTEXT://", "kafka://"):
            if item.startswith(prefix):
                item = item[len(prefix) :]
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif item.count(":") == 1:
            host, _, port_text = item.partition(":")
        else:
            host, port_text = item, ""
        try:
            port = int(port_text) if port_text else DEFAULT_KAFKA_PORT
        except ValueError:
            raise ValueError(f"{raw.strip()!r} is not host:port") from None
        result.append((host, port))
    if not result:
        raise ValueError("the bootstrap list is empty; write host:port, e.g. 127.0.0.1:9092")
    return result


def probe(host: str, port: int, timeout: float = PROBE_ATTEMPT_TIMEOUT) -> ProbeResult:
    """One attempt: connect, ask ApiVersions and Metadata, report whether a broker answered."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            versions = _api_versions(sock)
            supported = versions.get(METADATA_KEY)
            if supported is None or not supported[0] <= METADATA_VERSION <= supported[1]:
                # A broker too old (or too new) for Metadata v4 still answered ApiVersions.
                return ProbeResult(True, f"ApiVersions answered (Metadata {supported})")
            brokers = _metadata(sock)
    except (OSError, ProtocolError, struct.error) as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {exc}")
    if not brokers:
        return ProbeResult(False, "metadata lists no broker yet")
    return ProbeResult(True, f"metadata lists {len(brokers)} broker(s)", tuple(brokers))


def wait_until_ready(bootstrap: str, timeout: float) -> bool:
    """Probe every address of ``bootstrap`` until one answers Kafka metadata, or time out.

    Returns ``True`` as soon as one broker answers a metadata request with at least one
    broker, ``False`` when ``timeout`` seconds passed without that. Always probes at least
    once, even with ``timeout <= 0``.
    """
    addresses = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    last = ProbeResult(False, "not probed")
    while True:
        for host, port in addresses:
            remaining = max(deadline - time.monotonic(), 0.05)
            last = probe(host, port, timeout=min(PROBE_ATTEMPT_TIMEOUT, remaining))
            if last.ready:
                logger.debug("kafka at %s:%s is ready: %s", host, port, last.reason)
                return True
        if time.monotonic() + RETRY_INTERVAL >= deadline:
            logger.debug("kafka at %s not ready after %.1fs: %s", bootstrap, timeout, last.reason)
            return False
        time.sleep(RETRY_INTERVAL)


def encode_request(api_key: int, api_version: int, correlation_id: int, body: bytes) -> bytes:
    """A size-prefixed request with a v1 header (api key, version, correlation id, client)."""
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID))
    payload = header + CLIENT_ID + body
    return struct.pack(">i", len(payload)) + payload


def decode_api_versions(body: bytes) -> dict[int, tuple[int, int]]:
    """Parse an ApiVersions v0 response body into ``{api_key: (min, max)}``."""
    error_code, count = struct.unpack_from(">hi", body, 0)
    if error_code != 0:
        raise ProtocolError(f"ApiVersions error code {error_code}")
    if count < 0 or 6 + count * 6 > len(body):
        raise ProtocolError(f"ApiVersions lists {count} APIs in {len(body)} bytes")
    result: dict[int, tuple[int, int]] = {}
    for index in range(count):
        key, low, high = struct.unpack_from(">hhh", body, 6 + index * 6)
        result[key] = (low, high)
    if API_VERSIONS_KEY not in result:
        raise ProtocolError("ApiVersions answer does not list ApiVersions itself")
    return result


def decode_metadata_brokers(body: bytes) -> list[tuple[int, str, int]]:
    """The ``(node_id, host, port)`` of a Metadata v4 response body."""
    _throttle, count = struct.unpack_from(">ii", body, 0)
    if count < 0 or count > len(body):
        raise ProtocolError(f"metadata lists {count} brokers in {len(body)} bytes")
    offset = 8
    brokers: list[tuple[int, str, int]] = []
    for _ in range(count):
        (node_id,) = struct.unpack_from(">i", body, offset)
        host, offset = _string(body, offset + 4)
        (port,) = struct.unpack_from(">i", body, offset)
        _rack, offset = _string(body, offset + 4)
        brokers.append((node_id, host or "", port))
    return brokers


def _api_versions(sock: socket.socket) -> dict[int, tuple[int, int]]:
    return decode_api_versions(_exchange(sock, API_VERSIONS_KEY, 0, 1, b""))


def _metadata(sock: socket.socket) -> list[tuple[int, str, int]]:
    # topics: empty array (no topics, cheap), allow_auto_topic_creation: false
    body = struct.pack(">ib", 0, 0)
    return decode_metadata_brokers(_exchange(sock, METADATA_KEY, METADATA_VERSION, 2, body))


def _exchange(
    sock: socket.socket, api_key: int, api_version: int, correlation_id: int, body: bytes
) -> bytes:
    sock.sendall(encode_request(api_key, api_version, correlation_id, body))
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 4 <= size <= MAX_RESPONSE_BYTES:
        raise ProtocolError(f"response size {size} is not plausible for Kafka")
    data = _recv_exact(sock, size)
    (answered_id,) = struct.unpack_from(">i", data, 0)
    if answered_id != correlation_id:
        raise ProtocolError(f"correlation id {answered_id} != {correlation_id}")
    return data[4:]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProtocolError(f"connection closed after {len(chunks)} of {size} bytes")
        chunks += chunk
    return bytes(chunks)


def _string(body: bytes, offset: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", body, offset)
    offset += 2
    if length < 0:
        return None, offset
    if offset + length > len(body):
        raise ProtocolError("string runs past the end of the response")
    return body[offset : offset + length].decode("utf-8", "replace"), offset + length
