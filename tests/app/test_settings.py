from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from supplyflow.app.durations import format_duration, parse_duration, parse_sla_map
from supplyflow.app.exceptions import SettingsError
from supplyflow.app.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SUPPLYFLOW_"):
            monkeypatch.delenv(name)


def test_defaults_follow_the_contract() -> None:
    s = load_settings()
    assert s.bootstrap == "localhost:9092"
    assert s.partitions == 8
    assert s.max_record_bytes == 1024 * 1024
    assert s.web_host == "127.0.0.1"
    assert s.deadline_grace == timedelta(seconds=2)
    assert s.receipt_tolerance_pct == Decimal(0)
    assert s.sla_po_ack == {}
    assert s.sla_invoice is None
    assert s.instance_id is None  # derived (supplyflow.app.membership.instance_id)
    assert s.leave_group_on_stop is False


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPLYFLOW_SLA_PO_ACK", "erp=30s,wms=60s,supplier=24h")
    monkeypatch.setenv("SUPPLYFLOW_SLA_ORDER_ACK", "erp=30s")
    monkeypatch.setenv("SUPPLYFLOW_SLA_INVOICE", "4h")
    monkeypatch.setenv("SUPPLYFLOW_RECEIPT_TOLERANCE_PCT", "2.5")
    monkeypatch.setenv("SUPPLYFLOW_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("SUPPLYFLOW_PARTITIONS", "3")
    monkeypatch.setenv("SUPPLYFLOW_BATCH_MAX", "500")
    monkeypatch.setenv("SUPPLYFLOW_BATCH_WINDOW", "50ms")
    monkeypatch.setenv("SUPPLYFLOW_BATCH_IDLE", "5ms")
    monkeypatch.setenv("SUPPLYFLOW_INSTANCE_ID", "dc1-worker-2")
    monkeypatch.setenv("SUPPLYFLOW_LEAVE_GROUP_ON_STOP", "true")
    s = load_settings()
    assert s.sla_po_ack == {
        "erp": timedelta(seconds=30),
        "wms": timedelta(seconds=60),
        "supplier": timedelta(hours=24),
    }
    assert s.sla_order_ack == {"erp": timedelta(seconds=30)}
    assert s.sla_invoice == timedelta(hours=4)
    assert s.receipt_tolerance_pct == Decimal("2.5")
    assert s.topic("po.events") == "acme.po.events"
    assert s.partitions == 3
    assert s.batch_max == 500
    assert s.batch_window == timedelta(milliseconds=50)
    assert s.batch_idle == timedelta(milliseconds=5)
    assert s.instance_id == "dc1-worker-2"
    assert s.leave_group_on_stop is True


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SUPPLYFLOW_PARTITIONS", "zero"),
        ("SUPPLYFLOW_PARTITIONS", "0"),
        ("SUPPLYFLOW_SLA_PO_ACK", "erp=30x"),
        ("SUPPLYFLOW_SLA_PO_ACK", "erp"),
        ("SUPPLYFLOW_SLA_INVOICE", "soon"),
        ("SUPPLYFLOW_DEADLINE_GRACE", "-2s"),
        ("SUPPLYFLOW_BOOTSTRAP", "localhost"),
        ("SUPPLYFLOW_TOPIC_PREFIX", "bad prefix/"),
        ("SUPPLYFLOW_RECEIPT_TOLERANCE_PCT", "-1"),
        ("SUPPLYFLOW_WEB_PORT", "70000"),
        ("SUPPLYFLOW_BATCH_MAX", "0"),
        ("SUPPLYFLOW_BATCH_WINDOW", "0ms"),
        ("SUPPLYFLOW_BATCH_IDLE", "soon"),
        ("SUPPLYFLOW_INSTANCE_ID", "worker one"),
        ("SUPPLYFLOW_LEAVE_GROUP_ON_STOP", "sometimes"),
    ],
)
def test_bad_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert variable in str(info.value)


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "supplyflow.toml"
    config.write_text('app_id = "from-file"\nsla_po_ack = "erp=1m"\npartitions = 4\n')
    monkeypatch.setenv("SUPPLYFLOW_PARTITIONS", "6")
    s = load_settings(config)
    assert s.app_id == "from-file"
    assert s.sla_po_ack == {"erp": timedelta(minutes=1)}
    assert s.partitions == 6


def test_toml_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('SUPPLYFLOW_DEADLINE_GRACE = "5s"\n')
    monkeypatch.setenv("SUPPLYFLOW_CONFIG", str(config))
    assert load_settings().deadline_grace == timedelta(seconds=5)


def test_unknown_key_in_toml_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("partitons = 4\n")
    with pytest.raises(SettingsError, match="partitons"):
        load_settings(config)


def test_missing_toml_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="SUPPLYFLOW_CONFIG"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.partitions = 2  # type: ignore[misc]  # the point of the test


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
        (" 1.5h ", timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "30", "s", "3 weeks", "0s", "1y"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_sla_map_rejects_duplicates_and_accepts_empty() -> None:
    assert parse_sla_map("") == {}
    with pytest.raises(ValueError, match="twice"):
        parse_sla_map("erp=1s,erp=2s")


def test_settings_dump_round_trips() -> None:
    s = Settings(sla_po_ack={"erp": timedelta(seconds=30)}, sla_invoice=timedelta(hours=4))
    dumped = s.model_dump(mode="json")
    assert dumped["sla_po_ack"] == "erp=30s"
    assert dumped["sla_invoice"] == "4h"
    assert Settings(**dumped) == s
