"""Bytes to canonical events and back: event models, decoding, dead letters, Faust codecs."""

from supplyflow.codecs.decode import content_type, decode_input
from supplyflow.codecs.dlq import DeadLetter, build_dead_letter, parse_dead_letter
from supplyflow.codecs.events import EVENT_ADAPTER, EVENT_TYPE_TOPIC, AnyEvent, entity_key
from supplyflow.codecs.exceptions import REASONS, DecodeError, Reason
from supplyflow.codecs.quantity import format_qty, parse_qty, qty_to_json
from supplyflow.codecs.serializers import JSON_CODEC, MSGPACK_CODEC, register_codecs

__all__ = [
    "EVENT_ADAPTER",
    "EVENT_TYPE_TOPIC",
    "JSON_CODEC",
    "MSGPACK_CODEC",
    "REASONS",
    "AnyEvent",
    "DeadLetter",
    "DecodeError",
    "Reason",
    "build_dead_letter",
    "content_type",
    "decode_input",
    "entity_key",
    "format_qty",
    "parse_dead_letter",
    "parse_qty",
    "qty_to_json",
    "register_codecs",
]
