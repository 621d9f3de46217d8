"""The stored form of state: a format version first, then the fields in order.

Every value supplyflow keeps in a state table (a PO, an order, a position, a progress
marker) is a list ``[version, field_0, field_1, ...]``, packed with msgpack. Each kind
of value has one :class:`StateFormat`, which reads any version up to its own:

- A field added at the end with a default needs no migration: a value written before it
  is one field shorter, and the state's dataclass fills in the default when it is built
  from the shorter list. Bump the version all the same: a release that does not know
  the field then refuses the value instead of dropping the field when it writes the
  state back.
- Any other change (a field removed, moved or reshaped) bumps the version and adds a
  migration from the previous version: a function from the old field list to the new.
- A value of a version newer than the release knows raises :class:`StateFormatError`,
  whose message says what to do; the worker stops on it rather than guess.
- Values written before formats had versions are "version 0", recognised by their shape
  (``legacy``): an entity's list starts with its id (a string), never a version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from supplyflow.errors import SupplyflowError

__all__ = ["MAX_STATE_BYTES", "StateFormat", "StateFormatError", "starts_with_id"]

#: The largest a stored PO, order or position may be, packed (``codecs.packing``). A
#: state is one record of its table's changelog, whose topic takes Kafka's default
#: ``max.message.bytes`` (1 MiB: 1,048,588 bytes); a state above it made every batch that
#: wrote it fail, forever. The 48 KiB left cover the key (at most 128 characters), the
#: record framing and what a deadline firing adds to a state (an exception entry per
#: fired deadline, a few hundred bytes each). An event that would make its entity larger
#: is dead-lettered with reason ``entity_too_large`` and changes nothing.
MAX_STATE_BYTES: Final = 1_000_000

#: Turns the field list of one version into the next version's.
Migration = Callable[[list[Any]], list[Any]]


class StateFormatError(SupplyflowError):
    """A stored state value this release cannot read."""


def starts_with_id(value: Any) -> list[Any] | None:
    """``legacy`` of an entity: its unversioned list began with its id (a string)."""
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value
    return None


@dataclass(frozen=True)
class StateFormat:
    """The versions of one kind of stored value, and how to read any of them."""

    #: what the values are, for messages ("PO", "progress marker")
    kind: str
    #: the version this release writes
    version: int
    #: how many fields this version has (a longer value was written by a newer release)
    fields: int
    #: the field list of a value stored before versions, or None if ``value`` is not one
    legacy: Callable[[Any], list[Any] | None] = starts_with_id
    #: version -> how its field list becomes the next version's (absent: unchanged, or
    #: fields appended, which the defaults fill in)
    migrations: Mapping[int, Migration] = field(default_factory=dict)

    def unpack(self, stored: Any) -> list[Any]:
        """The field values of ``stored`` (any version up to this one), migrated to this
        version; fields added after the value was written are left out (their defaults
        apply)."""
        if type(stored) is list and stored and type(stored[0]) is int:
            version = stored[0]
            if version == self.version and len(stored) <= self.fields + 1:
                return stored[1:]  # the usual case: written by this release
            values = stored[1:]
        else:
            legacy = self.legacy(stored)
            if legacy is None:
                raise StateFormatError(
                    f"a stored {self.kind} value is not in any state format supplyflow "
                    f"wrote ({type(stored).__name__}): the state is corrupt; delete "
                    "SUPPLYFLOW_DATA_DIR and restart to restore it from the changelog"
                )
            version, values = 0, list(legacy)
        if version > self.version or len(values) > self.fields:
            raise StateFormatError(self._newer(version))
        for step in range(version, self.version):
            migrate = self.migrations.get(step)
            if migrate is not None:
                values = migrate(values)
        return values

    def _newer(self, version: int) -> str:
        return (
            f"stored {self.kind} state has format version {version}, but this release of "
            f"supplyflow reads {self.kind} state up to version {self.version}: it was "
            "written by a newer release. Run that release (or a later one) again. To go "
            "back to this release, rebuild its state from the input topics: start it with "
            "a new SUPPLYFLOW_APP_ID (or delete the <app_id>-*-changelog topics and "
            "SUPPLYFLOW_DATA_DIR first)"
        )
