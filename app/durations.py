"""Parsing of the human durations and SLA maps used in settings (``30s``, ``erp=30s,wms=4h``)."""

import re
from datetime import timedelta

__all__ = ["MAX_DURATION", "format_duration", "parse_duration", "parse_sla_map"]

#: The longest duration a setting takes (SLAs, grace...): 100 years. Deadlines add it to
#: an ``occurred_at`` of at most year 9000, so every due time stays a valid date.
MAX_DURATION = timedelta(days=36_500)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SYSTEM = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``15m``, ``4h``, ``2d`` (or ``250ms``) into a positive timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, e.g. 30s, 15m, 4h or 2d"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be greater than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r}: a duration must be at most {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)


def parse_sla_map(text: str) -> dict[str, timedelta]:
    """Parse ``erp=30s,wms=60s,supplier=24h`` into ``{system: duration}``.

    An empty string means no system is required to answer.
    """
    result: dict[str, timedelta] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        system, sep, duration = item.partition("=")
        system = system.strip().lower()
        if not sep or not _SYSTEM.match(system):
            raise ValueError(f"{item!r} is not system=duration (e.g. erp=30s,wms=60s,supplier=24h)")
        if system in result:
            raise ValueError(f"system {system!r} is listed twice")
        result[system] = parse_duration(duration)
    return result


def format_duration(value: timedelta) -> str:
    """The shortest exact form of ``value`` in the units :func:`parse_duration` accepts."""
    millis = round(value.total_seconds() * 1000)
    for unit, factor in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % factor == 0:
            return f"{millis // factor}{unit}"
    return f"{millis}ms"
