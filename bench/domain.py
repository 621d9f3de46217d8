"""Domain micro-benchmark: CPU per event of the PO/order/position functions.

No broker: the distributor workload (:data:`supplyflow.app.workload.DISTRIBUTOR` x
``scale``) is generated and decoded once (not timed), then the domain runs over every
valid event as the actors drive it, from empty tables: batches of :data:`BATCH` events,
``apply_entity_batch`` for POs and orders (states stored packed and read back, as the
table holds them), the deltas applied to positions, inventory events applied to them, and
every position touched checked for overallocation and rendered as its output record.
Reports CPU time per event.

``--compare`` times the compiled build (``make compile``, see :mod:`supplyflow.compiled`)
against plain CPython: each round runs in a fresh subprocess per build (pure one with
``SUPPLYFLOW_COMPILED=0``), the builds alternating (the order swaps each round), so a
busy neighbour slows both alike. Both builds must end with the same positions (a digest
of every position's totals); a difference fails the run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

from supplyflow.app.settings import Settings
from supplyflow.app.workload import DISTRIBUTOR, iter_records
from supplyflow.codecs import DecodeError, decode_input
from supplyflow.codecs.events import EVENT_TYPE_TOPIC, InventoryAdjusted, InventorySnapshot
from supplyflow.codecs.packing import pack, unpack
from supplyflow.compiled import compiled_in_use, domain_status
from supplyflow.errors import SupplyflowError
from supplyflow.tables.batch import apply_entity_batch
from supplyflow.tables.exceptions import Rules
from supplyflow.tables.order import OrderState, apply_order_event
from supplyflow.tables.po import PoState, apply_po_event
from supplyflow.tables.position import (
    PositionState,
    apply_deltas,
    apply_inventory_event_bounded,
    check_overallocation,
    position_record,
)

__all__ = ["BATCH", "DEFAULT_SCALE", "SMOKE_SCALE", "markdown", "run_domain", "time_domain"]

ROOT: Final = Path(__file__).resolve().parents[1]
#: x the distributor workload: about 13,000 records, well under a second a round.
DEFAULT_SCALE: Final = 0.05
SMOKE_SCALE: Final = 0.002
#: Events per batch, per kind (a worker's batches at moderate load are this order).
BATCH: Final = 100
_NOW: Final = "2026-01-01T00:00:00.000Z"
#: (kind, event, offset): kind ``po``, ``order`` or ``inventory``
Item = tuple[str, Any, int]


def _events(scale: float, seed: int) -> list[Item]:
    """The valid events of the workload, in order, each with its offset in its topic."""
    items: list[Item] = []
    offsets: dict[str, int] = {}
    for r in iter_records(seed, "domain", DISTRIBUTOR.scaled(scale)):
        try:
            event = decode_input(r.topic, r.key, r.value, r.headers, max_bytes=1 << 20)
        except DecodeError:
            continue
        kind = EVENT_TYPE_TOPIC[event.type].split(".")[0]
        kind = kind if kind in ("po", "order") else "inventory"
        offsets[kind] = offset = offsets.get(kind, -1) + 1
        items.append((kind, event, offset))
    return items


def _position(store: dict[str, bytes], key: str) -> PositionState:
    raw = store.get(key)
    return PositionState.new(key) if raw is None else PositionState.from_wire(unpack(raw))


def _run(items: list[Item], rules: Rules) -> dict[str, bytes]:
    """The domain over ``items`` from empty tables; returns the positions table."""
    tables: dict[str, dict[str, bytes]] = {"po": {}, "order": {}}
    positions: dict[str, bytes] = {}
    kinds = {
        "po": (partial(apply_po_event, rules=rules), PoState.from_wire),
        "order": (partial(apply_order_event, rules=rules), OrderState.from_wire),
    }
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        touched: dict[str, PositionState] = {}
        for kind, (apply, from_wire) in kinds.items():
            table = tables[kind]
            batch_events = [(e.data.entity_key, e, off, "") for k, e, off in chunk if k == kind]
            if not batch_events:
                continue

            def load(key: str, table: dict[str, bytes] = table, from_wire: Any = from_wire) -> Any:
                raw = table.get(key)
                return None if raw is None else from_wire(unpack(raw))

            batch = apply_entity_batch(batch_events, load, apply)  # type: ignore[arg-type]
            table.update(batch.packed)
            for pk, delta_items in batch.deltas.get("", {}).items():
                state = touched.get(pk) or _position(positions, pk)
                apply_deltas(state, kind, delta_items)
                touched[pk] = state
        for kind, event, offset in chunk:
            if kind == "inventory":
                assert isinstance(event, InventoryAdjusted | InventorySnapshot)
                pk = event.data.entity_key
                state = touched.get(pk) or _position(positions, pk)
                state, _, _ = apply_inventory_event_bounded(state, event, offset, now=_NOW)
                touched[pk] = state
        for pk, state in touched.items():
            check_overallocation(state, _NOW)
            position_record(state, _NOW)
            positions[pk] = pack(state.to_wire())
    return positions


def _digest(positions: dict[str, bytes]) -> str:
    totals = sorted(
        (pk, PositionState.from_wire(unpack(raw)).totals) for pk, raw in positions.items()
    )
    return hashlib.sha256(json.dumps(totals).encode()).hexdigest()[:16]


def time_domain(scale: float, seed: int, rounds: int = 1) -> dict[str, Any]:
    """Times the domain in this process (whatever build it imported): ``rounds`` timed
    rounds after one warm-up round."""
    items = _events(scale, seed)
    rules = Rules.from_settings(Settings(bootstrap="unused:9092"))
    positions = _run(items, rules)  # warm-up
    times = []
    for _ in range(rounds):
        gc.collect()
        started = time.process_time_ns()
        _run(items, rules)
        times.append((time.process_time_ns() - started) / 1000 / len(items))
    return {
        "compiled": compiled_in_use(),
        "modules": domain_status(),
        "events": len(items),
        "rounds_us": [round(t, 3) for t in times],
        "digest": _digest(positions),
    }


def _child(build: str, scale: float, seed: int) -> dict[str, Any]:
    env = {**os.environ, "SUPPLYFLOW_COMPILED": "0" if build == "pure" else "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bench.domain", "--scale", str(scale), "--seed", str(seed)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SupplyflowError(f"the {build} domain round failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    if result["compiled"] != (build == "compiled"):
        raise SupplyflowError(
            f"the {build} round ran {'compiled' if result['compiled'] else 'pure'} modules "
            f"({result['modules']}): run `make compile` before `python -m bench domain --compare`"
        )
    return result


def run_domain(scale: float, rounds: int, seed: int, *, compare: bool) -> dict[str, Any]:
    """The report part: this process's build alone, or (``compare``) compiled against pure
    in alternated subprocess rounds."""
    if not compare:
        result = time_domain(scale, seed, rounds)
        build = "compiled" if result["compiled"] else "pure"
        return {
            "events": result["events"],
            "rounds": rounds,
            "results": {build: _summary(result["rounds_us"], result["digest"])},
        }
    if not compiled_in_use():
        raise SupplyflowError(
            "no compiled domain to compare: run `make compile` first (`make uncompile` "
            "removes it again)"
        )
    builds = ["pure", "compiled"]
    times: dict[str, list[float]] = {b: [] for b in builds}
    digests: dict[str, set[str]] = {b: set() for b in builds}
    events = 0
    for i in range(rounds):
        for build in builds if i % 2 == 0 else builds[::-1]:
            result = _child(build, scale, seed)
            times[build].extend(result["rounds_us"])
            digests[build].add(result["digest"])
            events = result["events"]
    if len(digests["pure"] | digests["compiled"]) != 1:
        raise SupplyflowError(f"the builds computed different positions: {digests}")
    results = {b: _summary(times[b], next(iter(digests[b]))) for b in builds}
    base = results["pure"]["us_per_event_median"]
    for result in results.values():
        result["speedup_vs_pure"] = round(base / result["us_per_event_median"], 2)
    return {"events": events, "rounds": rounds, "results": results}


def _summary(times: list[float], digest: str) -> dict[str, Any]:
    return {
        "us_per_event_median": round(statistics.median(times), 2),
        "us_per_event_best": round(min(times), 2),
        "rounds_us": [round(t, 2) for t in times],
        "positions_digest": digest,
    }


def markdown(part: dict[str, Any]) -> str:
    """The result as a small Markdown table."""
    rows = [
        f"{part['events']} valid events, {part['rounds']} rounds, CPU time per event:",
        "",
        "| build | median µs/event | best µs/event | speed-up | positions |",
        "|---|---:|---:|---:|---|",
    ]
    for name, r in part["results"].items():
        speedup = f"{r['speedup_vs_pure']}x" if "speedup_vs_pure" in r else ""
        rows.append(
            f"| {name} | {r['us_per_event_median']} | {r['us_per_event_best']} | {speedup} "
            f"| {r['positions_digest']} |"
        )
    return "\n".join(rows)


def main() -> int:
    """One subprocess round of ``--compare``: JSON on stdout."""
    parser = argparse.ArgumentParser(prog="python -m bench.domain")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(time_domain(args.scale, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
