"""Errors of the codecs package: a record that cannot become a canonical event."""

from typing import Final, Literal, get_args

from supplyflow.errors import SupplyflowError

__all__ = ["REASONS", "DecodeError", "Reason"]

#: Machine-readable reasons a record is dead-lettered (the ``reason`` field in ``dlq``).
Reason = Literal[
    "too_large",
    "invalid_header",
    "unsupported_content_type",
    "invalid_json",
    "invalid_msgpack",
    "not_an_object",
    "unknown_type",
    "wrong_topic",
    "schema",
    "key_mismatch",
    "unknown_entity",
    "line_mismatch",
    "entity_too_large",
    "processing_failed",
]
#: Every reason, in the order above.
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)


class DecodeError(SupplyflowError):
    """A record that is not a valid canonical event; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: Reason, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail
        self.event_id = event_id
