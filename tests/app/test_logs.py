import logging

import orjson

from supplyflow.app.logs import JsonFormatter, logging_config


def test_json_lines_carry_record_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "supplyflow.agents.ingest",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "dead-lettered %s",
            "args": ("po.events[3]@7",),
            "event_id": "e-1",
            "entity_id": "PO-17",
            "partition": 3,
            "offset": 7,
        }
    )
    line = JsonFormatter().format(record)
    body = orjson.loads(line)
    assert body["message"] == "dead-lettered po.events[3]@7"
    assert body["level"] == "WARNING"
    assert body["event_id"] == "e-1"
    assert body["entity_id"] == "PO-17"
    assert body["offset"] == 7
    assert body["time"].endswith("Z")
    assert "\n" not in line


def test_text_format_keeps_faust_default() -> None:
    assert logging_config("text", "INFO") is None
    config = logging_config("json", "WARNING")
    assert config is not None
    assert config["root"]["level"] == "WARNING"
