"""Log formats: Faust's coloured text, or one JSON object per line (``SUPPLYFLOW_LOG_FORMAT``).

Warnings about a record carry ``event_id``, ``entity_id``, ``topic``, ``partition`` and
``offset`` as ``extra`` fields; the JSON format writes them as top-level keys so a log
pipeline can index them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = ["RECORD_FIELDS", "JsonFormatter", "logging_config"]

#: ``extra`` fields supplyflow attaches to log lines about one record.
RECORD_FIELDS: Final = ("event_id", "entity_id", "topic", "partition", "offset", "reason")
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


def logging_config(log_format: str, level: str) -> dict[str, Any] | None:
    """A ``logging.config.dictConfig`` for the worker; None keeps Faust's default."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "supplyflow.app.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }
