"""One worker process against one ``supplyflow worker --processes 2``, side by side.

The same distributor workload (the plan's throughput scale) is produced, in full, into the
topics of a fresh deployment per run, on the same broker; then one ``supplyflow worker``
drains it, with one process or with two under the supervisor. The two run alternately,
``rounds`` times (1-2, 2-1, 1-2, ...) so that a machine that warms up or gets busier
favours neither; each run is timed as in :mod:`bench.throughput` (Kafka timestamps of the
first and last record the workers wrote) and its positions are checked against the
reference. The report gives each run and the median events/s of each side.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any, Final

from bench.harness import BenchError, Deployment, Plan, prime
from bench.throughput import run_supervised, valid_reference
from supplyflow.app.workload import DISTRIBUTOR, iter_records

__all__ = ["SIDES", "run_processes"]

#: Worker processes of the compared sides.
SIDES: Final = (1, 2)


def _median(runs: list[dict[str, Any]], processes: int) -> int:
    rates: list[int] = [r["events_per_s"] for r in runs if r["processes"] == processes]
    return round(statistics.median(rates))


def run_processes(
    plan: Plan, bootstrap: str, run_id: str, work: Path, seed: int, *, rounds: int
) -> dict[str, Any]:
    """``rounds`` alternated runs of each side; returns the part of the report."""
    if rounds < 1:
        raise BenchError(f"--rounds must be at least 1, not {rounds}")
    count, reference = valid_reference(seed, run_id, plan.throughput_scale)
    shape = DISTRIBUTOR.scaled(plan.throughput_scale)
    rounds_of = [
        {n: Deployment(bootstrap, run_id, f"pr{r}p{n}", work) for n in SIDES} for r in range(rounds)
    ]
    runs: list[dict[str, Any]] = []
    try:
        # All first starts at once, before any input exists; then every copy of the input.
        prime(bootstrap, run_id, work, [dep.name for deps in rounds_of for dep in deps.values()])
        print(f"processes: producing {count} records {2 * rounds} times", flush=True)
        for deps in rounds_of:
            for dep in deps.values():
                sent = asyncio.run(dep.produce(iter_records(seed, run_id, shape)))
                if sent != count:
                    raise BenchError(f"produced {sent} records, expected {count}")
        for round_, deps in enumerate(rounds_of):
            for processes in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                result = run_supervised(
                    deps[processes], processes, count, reference, plan.timeout_s
                )
                runs.append({**result, "round": round_ + 1, "processes": processes})
                print(
                    f"processes: round {round_ + 1}, {processes} process"
                    f"{'es' if processes > 1 else ''}: {result['events_per_s']} events/s"
                    f"{'' if result['exact'] else ' (positions NOT exact)'}",
                    flush=True,
                )
            for dep in deps.values():  # the broker and the disk only hold what is still due
                asyncio.run(dep.delete())
    finally:
        for deps in rounds_of:
            for dep in deps.values():
                asyncio.run(dep.delete())
    one, two = (_median(runs, n) for n in SIDES)
    return {
        "scale": plan.throughput_scale,
        "records": count,
        "rounds": rounds,
        "runs": runs,
        "median_events_per_s": {str(n): m for n, m in zip(SIDES, (one, two), strict=True)},
        "speedup": round(two / one, 3) if one else None,
        "exact": all(r["exact"] for r in runs),
    }
