import subprocess
import zlib
from collections import Counter

import pytest

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.app.partitioners import PARTITIONERS, fnv1a_32, partitioner

EVERY = list(range(8))
KEYS = [f"SKU-{i}@DC{i % 3}" for i in range(200)] + ["PO-17", "SO-5", "PO-9"]


def test_murmur2_is_kafkas_default() -> None:
    pick = partitioner("murmur2")
    assert [pick(k.encode(), EVERY, EVERY) for k in KEYS] == [partition_for(k, 8) for k in KEYS]


def test_crc32_is_librdkafkas_consistent_random() -> None:
    # kcat -P -K: with no -X partitioner put these keys here (checked against a broker)
    seen = {"SKU-1@DC1": 5, "SKU-2@DC1": 5, "PO-17": 3, "SO-5": 1, "PO-9": 4}
    pick = partitioner("crc32")
    assert {k: pick(k.encode(), EVERY, EVERY) for k in seen} == seen
    assert all(pick(k.encode(), EVERY, EVERY) == zlib.crc32(k.encode()) % 8 for k in KEYS)


def test_fnv1a_is_gos_fnv32a_with_saramas_sign_fold() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C  # Go: fnv.New32a().Write([]byte("a"))
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    pick = partitioner("fnv1a")
    for key in KEYS:
        signed = fnv1a_32(key.encode())
        signed = signed - 2**32 if signed >= 2**31 else signed
        remainder = abs(signed) % 8
        assert pick(key.encode(), EVERY, EVERY) == remainder


def test_round_robin_ignores_the_key_and_random_is_seeded() -> None:
    pick = partitioner("round-robin")
    assert [pick(b"same", EVERY, EVERY) for _ in range(10)] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    first, second = partitioner("random", 3), partitioner("random", 3)
    draws = [first(b"k", EVERY, EVERY) for _ in range(50)]
    assert draws == [second(b"k", EVERY, EVERY) for _ in range(50)]
    assert len(Counter(draws)) > 4


def test_the_deterministic_ones_differ_from_murmur2_for_most_keys() -> None:
    murmur = partitioner("murmur2")
    for name in ("crc32", "fnv1a"):
        other = partitioner(name)
        moved = sum(
            other(k.encode(), EVERY, EVERY) != murmur(k.encode(), EVERY, EVERY) for k in KEYS
        )
        assert moved > len(KEYS) // 2


def test_an_unknown_name_says_which_exist() -> None:
    with pytest.raises(ValueError, match="round-robin"):
        partitioner("sticky")
    assert set(PARTITIONERS) == {"murmur2", "crc32", "fnv1a", "round-robin", "random"}


def test_the_cli_offers_every_partitioner() -> None:
    out = subprocess.run(
        [".venv/bin/supplyflow", "produce", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in PARTITIONERS:
        assert name in out
