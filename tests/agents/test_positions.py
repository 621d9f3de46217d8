"""The position actor's batch bookkeeping: what it emits and what it writes back."""

from __future__ import annotations

from typing import Any

from supplyflow.agents.positions import _PartitionBatch


class FakeIO:
    """``TableIO.get`` over a dict of one partition's states."""

    def __init__(self, states: dict[str, Any]) -> None:
        self.states = states

    def get(self, partition: int, key: str) -> Any:
        return self.states.get(key)


NOW = "2026-11-27T10:00:00.000Z"
KEY = "SKU-1@DC1"
#: one delta item from PO partition 1, offset 5: +1 unit inbound
DELTAS: list[Any] = ["po:1", [[KEY, [[5, 1_795_000_000_000, 0, 0, 1000, 0, 0]]]]]


def test_a_replayed_delta_writes_the_position_again_and_emits_nothing() -> None:
    # After a SIGKILL the local store can hold a position the changelog never got; the
    # replay that finds it applied must still write it (see agents.progress).
    first = _PartitionBatch(FakeIO({}), 0, NOW)  # type: ignore[arg-type]
    first.deltas(DELTAS)
    assert first.changed == first.dirty == {KEY}
    again = _PartitionBatch(FakeIO({KEY: first.cache[KEY].to_wire()}), 0, NOW)  # type: ignore[arg-type]
    again.deltas(DELTAS)
    assert again.changed == set()
    assert again.dirty == {KEY}
    assert again.cache[KEY].totals == first.cache[KEY].totals
