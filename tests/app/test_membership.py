"""Static membership: the derived instance id, and reading who holds one from the broker's
DescribeGroups v4 answer (the integration tests run it against the real broker)."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from aiokafka.coordinator.protocol import ConsumerProtocol
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from supplyflow.app import membership
from supplyflow.app.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(bootstrap="127.0.0.1:1", **values)  # type: ignore[arg-type]  # test values


def test_the_derived_instance_id_is_stable_and_differs_per_data_dir_and_app(
    tmp_path: Path,
) -> None:
    one = membership.instance_id(_settings(data_dir=tmp_path / "a", app_id="sf"))
    assert one == membership.instance_id(_settings(data_dir=tmp_path / "a", app_id="sf"))
    assert one.startswith("sf-")
    assert one != membership.instance_id(_settings(data_dir=tmp_path / "b", app_id="sf"))
    assert one != membership.instance_id(_settings(data_dir=tmp_path / "a", app_id="other"))
    # the web address is not part of it: a restart on another port takes the place back
    moved = _settings(data_dir=tmp_path / "a", app_id="sf", web_port=7000)
    assert membership.instance_id(moved) == one


def test_a_relative_data_dir_counts_from_where_the_worker_runs() -> None:
    relative = _settings(data_dir=Path("data"), app_id="sf")
    absolute = _settings(data_dir=Path.cwd() / "data", app_id="sf")
    assert membership.instance_id(relative) == membership.instance_id(absolute)


def test_the_setting_wins() -> None:
    assert membership.instance_id(_settings(instance_id="dc1-w2")) == "dc1-w2"


def _assignment(url: str, ticks: list[int]) -> bytes:
    metadata = ClientMetadata(
        assignment=ClientAssignment(actives={"t-ticks": ticks}, standbys={}),
        url=url,
        changelog_distribution={},
    )
    user_data = zlib.compress(metadata.dumps())
    return bytes(ConsumerProtocol.ASSIGNMENT(0, [("t-ticks", ticks)], user_data).encode())


def _response(members: list[tuple[str, str | None, bytes]]) -> object:
    schema = membership._DescribeGroupsResponseV4.SCHEMA
    group = (
        0,
        "t",
        "Stable",
        "consumer",
        "faust",
        [
            (member_id, instance, "supplyflow", "/127.0.0.1", b"", a)
            for member_id, instance, a in members
        ],
        0,
    )
    raw = schema.encode((0, [group]))
    return membership._DescribeGroupsResponseV4.decode(io.BytesIO(raw))


def test_members_carry_their_instance_id_partitions_and_web_address() -> None:
    response = _response(
        [
            ("m-1", "w-1", _assignment("http://127.0.0.1:6066", [0, 2])),
            ("m-2", None, b""),  # a dynamic member, no assignment yet
        ]
    )
    first, second = membership._members(response)
    assert first == membership.Member(
        "m-1", "w-1", "/127.0.0.1", {"t-ticks": [0, 2]}, "http://127.0.0.1:6066"
    )
    assert second == membership.Member("m-2", None, "/127.0.0.1", {}, None)


def test_an_assignment_without_faust_user_data_has_no_web_address() -> None:
    assert membership._assigned_url(b"not zlib") is None
    assert membership._assigned_url(None) is None
    assert membership._assigned_url(zlib.compress(b"{}")) is None


def test_the_web_address_is_faust_canonical_url() -> None:
    assert membership.web_url(_settings(web_host="10.0.0.5", web_port=6067)) == (
        "http://10.0.0.5:6067"
    )
