"""Static membership of the worker's consumer group: fast restarts, one worker per id.

Every worker joins Faust's consumer group with a ``group.instance.id`` (KIP-345),
``SUPPLYFLOW_INSTANCE_ID`` or one derived from the host, the data dir and the app id
(:func:`instance_id`). Restarted within the session timeout, a worker takes its own place
back and gets its partitions again without a rebalance, and the other workers never stop.
A worker stopped for good keeps its partitions until the session timeout unless it leaves
(``SUPPLYFLOW_LEAVE_GROUP_ON_STOP``: a LeaveGroup by instance id once its consumer
stopped; aiokafka never sends one for a static member). One worker per id: a new worker
refuses to start while the holder of its id still sends ticks (:func:`take_instance`),
and a worker that finds another member holding its id before it would join again exits
with :data:`FENCED_EXIT_CODE`. A worker coming back with another web address gives its
old place up first (Faust refuses an assignment made out to another address).

aiokafka 0.14 speaks DescribeGroups only up to v3 and LeaveGroup up to v1, which carry no
instance ids; the v4 and v3 requests are defined here (Kafka 2.4 or later). Neither
aiokafka nor Faust implements cooperative rebalancing: see docs/failover.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String
from faust.assignor.client_assignment import ClientMetadata
from yarl import URL

from supplyflow.app.exceptions import AppError
from supplyflow.app.kafka_clients import client_options
from supplyflow.app.settings import Settings

__all__ = [
    "FENCED_EXIT_CODE",
    "Member",
    "group_members",
    "install",
    "instance_id",
    "take_instance",
    "web_url",
]

log = logging.getLogger(__name__)

#: Exit code of a worker whose group place another process with its instance id took.
FENCED_EXIT_CODE: Final = 3
#: How long the start check watches a member's ticks partitions for a new tick: a live
#: worker sends one to each every 0.5 s (three intervals, for a busy event loop).
TICK_WATCH_S: Final = 1.5
#: The member id of a LeaveGroup by instance id.
_UNKNOWN_MEMBER_ID: Final = ""
#: Reading the last tick of each partition: fetches, and the wait of each.
_TAIL_FETCHES: Final = 5
_TAIL_FETCH_MS: Final = 500


def instance_id(settings: Settings) -> str:
    """``SUPPLYFLOW_INSTANCE_ID``, or one derived from what identifies this worker: the
    host, its data dir (absolute) and the app id."""
    if settings.instance_id:
        return settings.instance_id
    parts = (socket.gethostname(), str(settings.data_dir.resolve()), settings.app_id)
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
    return f"{settings.app_id}-{digest}"


def web_url(settings: Settings) -> str:
    """The address other workers forward queries to (Faust's ``canonical_url``)."""
    return str(URL(settings.web_advertised_url))


# --- the two requests aiokafka lacks --------------------------------------------------


class _DescribeGroupsResponseV4(Response):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 15
    API_VERSION = 4
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("group_instance_id", String("utf-8")),
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class _DescribeGroupsRequestV4(RequestStruct):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 15
    API_VERSION = 4
    RESPONSE_TYPE = _DescribeGroupsResponseV4
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class DescribeGroups(Request[_DescribeGroupsRequestV4]):  # type: ignore[misc]  # aiokafka ships no types
    """DescribeGroups v4: members with their ``group.instance.id``."""

    API_KEY: ClassVar[int] = 15

    def __init__(self, group: str) -> None:
        self.group = group

    def build(self, request_struct_class: type[_DescribeGroupsRequestV4]) -> Any:
        return request_struct_class([self.group], False)


class _LeaveGroupResponseV3(Response):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(
                ("member_id", String("utf-8")),
                ("group_instance_id", String("utf-8")),
                ("error_code", Int16),
            ),
        ),
    )


class _LeaveGroupRequestV3(RequestStruct):  # type: ignore[misc]  # aiokafka ships no types
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class LeaveGroup(Request[_LeaveGroupRequestV3]):  # type: ignore[misc]  # aiokafka ships no types
    """LeaveGroup v3: a static member leaves by its instance id."""

    API_KEY: ClassVar[int] = 13

    def __init__(self, group: str, instance: str) -> None:
        self.group = group
        self.instance = instance

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> Any:
        return request_struct_class(self.group, [(_UNKNOWN_MEMBER_ID, self.instance)])


# --- who holds an instance id ---------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One member of a consumer group, as DescribeGroups reports it."""

    member_id: str
    instance_id: str | None
    client_host: str
    #: topic -> partitions assigned to it
    assignment: dict[str, list[int]]
    #: the web address its assignment was made out to (Faust's), if it has one
    url: str | None = None


def _members(response: Any) -> list[Member]:
    (group,) = response.groups
    error_code, _, _, _, _, members, _ = group
    if error_code:
        raise for_code(error_code)(f"DescribeGroups: {for_code(error_code).__name__}")
    out = []
    for member_id, instance, _, host, _, assignment_bytes in members:
        assignment: dict[str, list[int]] = {}
        url = None
        if assignment_bytes:
            decoded = ConsumerProtocol.ASSIGNMENT.decode(assignment_bytes)
            assignment = {topic: list(parts) for topic, parts in decoded.assignment}
            url = _assigned_url(decoded.user_data)
        out.append(Member(member_id, instance, host, assignment, url))
    return out


def _assigned_url(user_data: bytes | None) -> str | None:
    """The web address in a Faust assignment (its user data), or None."""
    if not user_data:
        return None
    try:
        url = ClientMetadata.loads(zlib.decompress(user_data)).url
    except (zlib.error, ValueError, TypeError, KeyError):
        return None
    return str(url)


async def _describe(client: Any, node_id: int, group: str) -> list[Member]:
    return _members(await client.send(node_id, DescribeGroups(group)))


async def group_members(settings: Settings) -> list[Member]:
    """The members of the worker's consumer group (``SUPPLYFLOW_APP_ID``)."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        node_id = await admin.find_coordinator(settings.app_id)
        return _members(await admin._send_request(DescribeGroups(settings.app_id), node_id))
    finally:
        await admin.close()


async def _ticking(settings: Settings, topic: str, partitions: list[int]) -> bool:
    """Whether any of ``topic``'s ``partitions`` receives records (ticks) right now.

    A partition whose last record is older than :data:`TICK_WATCH_S` is quiet at once (a
    worker killed and restarted); otherwise the end offsets are compared once
    :data:`TICK_WATCH_S` later (a clock far ahead only makes the check wait).
    """
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await consumer.end_offsets(tps)
        tails = {tp: end - 1 for tp, end in ends.items() if end > 0}
        if not tails:
            return False
        consumer.assign(list(tails))
        for tp, offset in tails.items():
            consumer.seek(tp, offset)
        newest = 0
        for _ in range(_TAIL_FETCHES):
            for records in (await consumer.getmany(timeout_ms=_TAIL_FETCH_MS)).values():
                newest = max([newest, *(r.timestamp for r in records)])
            positions = {tp: await consumer.position(tp) for tp in tails}
            if all(positions[tp] > offset for tp, offset in tails.items()):
                break
        if time.time() * 1000 - newest > TICK_WATCH_S * 1000:
            return False
        await asyncio.sleep(TICK_WATCH_S)
        after = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return any(after[tp] > ends[tp] for tp in tps)


async def take_instance(settings: Settings, instance: str, ticks_topic: str) -> None:
    """Make ``instance`` this worker's to join with; refuse to start (:class:`AppError`)
    if a live worker holds it.

    A member holding it that no longer sends ticks is this worker's predecessor (killed,
    crashed, stopped), which the broker keeps until the session timeout: this worker takes
    its place and partitions. If the predecessor had another web address, the place is
    given up first (a LeaveGroup, then one rebalance): the others learn addresses only at
    rebalances, and Faust refuses an assignment made out to another address. A holder
    with no ticks partitions cannot be told apart; the second check (see the module
    docstring) stops one of the two if both run.
    """
    try:
        holders = [m for m in await group_members(settings) if m.instance_id == instance]
    except KafkaError as exc:  # no group yet, or a broker too old for v4: nothing to check
        log.info("group %s not described (%r): no check of %s", settings.app_id, exc, instance)
        return
    if not holders:
        return
    (holder,) = holders
    partitions = holder.assignment.get(ticks_topic, [])
    if partitions and await _ticking(settings, ticks_topic, partitions):
        raise AppError(
            f"another worker runs with group instance id {instance!r} (on {holder.client_host}, "
            f"owning partitions {sorted(partitions)}): each worker needs its own "
            "SUPPLYFLOW_INSTANCE_ID (the default is derived from the host, "
            "SUPPLYFLOW_DATA_DIR and SUPPLYFLOW_APP_ID); stop that worker or give this one "
            "another id"
        )
    if holder.url is not None and holder.url != web_url(settings):
        log.warning(
            "group instance id %s had web address %s, this worker has %s: leaving its place "
            "first (one rebalance)",
            instance,
            holder.url,
            web_url(settings),
        )
        await _leave(settings, instance)
        return
    log.info(
        "taking over group instance id %s from member %s (no ticks: stopped)",
        instance,
        holder.member_id,
    )


async def _leave(settings: Settings, instance: str) -> None:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        node_id = await admin.find_coordinator(settings.app_id)
        response = await admin._send_request(LeaveGroup(settings.app_id, instance), node_id)
    finally:
        await admin.close()
    _log_left(response, settings.app_id, instance)


def _log_left(response: Any, group: str, instance: str) -> None:
    codes = [response.error_code, *(code for _, _, code in response.members)]
    if any(codes):
        error = for_code(next(code for code in codes if code))
        log.warning("leaving consumer group %s as %s: %s", group, instance, error.__name__)
    else:
        log.info("left consumer group %s as %s: its partitions move now", group, instance)


# --- aiokafka: stop when fenced, leave on close ---------------------------------------

_original_rejoin = GroupCoordinator._do_rejoin_group
_original_close = GroupCoordinator.close
#: leave the group when the consumer closes (``SUPPLYFLOW_LEAVE_GROUP_ON_STOP``)
_leave_on_close = False


async def _rejoin_unless_fenced(self: Any, subscription: Any) -> bool:
    """``GroupCoordinator._do_rejoin_group`` that, for a static member that has been in
    the group, first checks that no other member holds its instance id (one whose member
    id is not this one's: another process took its place)."""
    instance = self._group_instance_id
    rejoin = getattr(self, "_supplyflow_joined", False) and self.coordinator_id is not None
    if instance is not None and rejoin:
        try:
            members = await _describe(self._client, self.coordinator_id, self.group_id)
        except KafkaError as exc:
            log.warning("could not check group instance id %s before rejoining: %r", instance, exc)
            members = []
        taken = [m for m in members if m.instance_id == instance and m.member_id != self.member_id]
        if taken:
            log.critical(
                "another worker took this worker's place in consumer group %s: it joined "
                "with the same group instance id %r (from %s). Each worker needs its own "
                "SUPPLYFLOW_INSTANCE_ID; this one stops now (exit code %d) and writes "
                "nothing more.",
                self.group_id,
                instance,
                taken[0].client_host,
                FENCED_EXIT_CODE,
            )
            logging.shutdown()
            os._exit(FENCED_EXIT_CODE)
    joined: bool = await _original_rejoin(self, subscription)
    if joined:
        self._supplyflow_joined = True
    return joined


async def _close_and_leave(self: Any) -> None:
    """``GroupCoordinator.close`` that also leaves the group by instance id when asked
    (aiokafka never sends LeaveGroup for a static member)."""
    joined = getattr(self, "_supplyflow_joined", False)
    await _original_close(self)
    instance = self._group_instance_id
    if not (
        _leave_on_close and joined and instance is not None and self.coordinator_id is not None
    ):
        return
    try:
        response = await self._client.send(self.coordinator_id, LeaveGroup(self.group_id, instance))
    except KafkaError as exc:
        log.warning("could not leave consumer group %s as %s: %r", self.group_id, instance, exc)
        return
    _log_left(response, self.group_id, instance)


def install(*, leave_on_stop: bool) -> None:
    """Patch aiokafka's group coordinator (idempotent, process-wide)."""
    global _leave_on_close  # noqa: PLW0603  # one process, one worker
    _leave_on_close = leave_on_stop
    GroupCoordinator._do_rejoin_group = _rejoin_unless_fenced
    GroupCoordinator.close = _close_and_leave
