"""The contribution diff that turns an entity's before/after into position deltas."""

from __future__ import annotations

import random

from supplyflow.tables.common import WIDTH, Contributions, diff


def _reference(old: Contributions, new: Contributions) -> dict[str, list[int]]:
    """``new - old`` per key, all-zero differences left out, written the plain way."""
    zero = [0] * WIDTH
    out = {}
    for key in old.keys() | new.keys():
        delta = [a - b for a, b in zip(new.get(key, zero), old.get(key, zero), strict=True)]
        if any(delta):
            out[key] = delta
    return out


def _contributions(rng: random.Random) -> Contributions:
    return {
        f"SKU-{rng.randint(1, 6)}@DC1": [rng.choice((0, 0, 1, -2, 500)) for _ in range(WIDTH)]
        for _ in range(rng.randint(0, 5))
    }


def test_diff_matches_the_plain_definition() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        old, new = _contributions(rng), _contributions(rng)
        assert diff(old, new) == _reference(old, new)


def test_diff_returns_new_lists() -> None:
    old: Contributions = {}
    new: Contributions = {"SKU-1@DC1": [1] * WIDTH}
    delta = diff(old, new)
    delta["SKU-1@DC1"][0] = 99
    assert new["SKU-1@DC1"][0] == 1
