"""``python -m bench [all|throughput|latency|state|processes|readme|decode|domain] [--quick]``.

``all`` (the default) runs every part in one run against the broker at
``SUPPLYFLOW_BOOTSTRAP`` and writes ``<out>/<date>-<host>.json``, ``.md`` and PNG plots;
``processes`` (not part of ``all``) compares one worker process with ``--processes 2``
over ``--rounds`` alternated rounds; ``readme`` rewrites the generated section of
``docs/benchmarks.md`` from the newest complete report. ``decode`` needs no broker: it
times the ways to decode input records against each other (:mod:`bench.decode`);
``domain --compare`` (no broker either) times the compiled domain against plain CPython
(:mod:`bench.domain`; ``make compile`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from bench.harness import PLANS, Plan, prime
from bench.report import latest_report, markdown, update_page, write
from supplyflow.app import local_kafka
from supplyflow.app.topics import delete_topics
from supplyflow.errors import SupplyflowError

ROOT: Final = Path(__file__).resolve().parents[1]
RESULTS: Final = ROOT / "bench" / "results"
PARTS: Final = ("throughput", "latency", "state")
#: The deployments (topic prefix and app id suffixes) each part uses.
DEPLOYMENTS: Final = {
    "throughput": ("tp1", "tp2", "tpp"),
    "latency": ("latency",),
    "state": ("state",),
    "processes": (),  # a fresh pair per round, primed by the part itself
}
_BROKER_CHECK_S: Final = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "part",
        nargs="?",
        default="all",
        choices=["all", *PARTS, "processes", "readme", "decode", "domain"],
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="scaled down: under 5 minutes")
    size.add_argument(
        "--smoke", action="store_true", help="a few seconds per part: checks the harness only"
    )
    parser.add_argument("--scale", type=float, help="throughput workload scale (overrides plan)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rounds",
        type=int,
        help=(
            "alternated rounds: processes (default 3), decode (default 10, per candidate), "
            "domain (default 6, per build)"
        ),
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="domain: the compiled build (`make compile`) against plain CPython",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="latency: one `supplyflow worker --processes N` instead of one worker process",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where reports are written")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("SUPPLYFLOW_BOOTSTRAP", "127.0.0.1:9092")
    )
    parser.add_argument("--report", type=Path, help="readme: this report, not the newest")
    parser.add_argument(
        "--page",
        "--readme",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="readme: the page whose generated section is rewritten",
    )
    return parser


def _run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    from bench.latency import run_latency
    from bench.processes import run_processes
    from bench.state import run_state
    from bench.throughput import run_throughput

    if not local_kafka.wait_until_ready(args.bootstrap, _BROKER_CHECK_S):
        raise SupplyflowError(
            f"no Kafka broker answers at {args.bootstrap}: run `make bench` (it starts one), "
            "or `supplyflow kafka up`, or set SUPPLYFLOW_BOOTSTRAP"
        )
    started_at = datetime.now(UTC)
    run_id = "bench-" + started_at.strftime("%Y%m%d%H%M%S")
    host = platform.node() or "host"
    report: dict[str, Any] = {
        "stem": f"{started_at.strftime('%Y%m%d-%H%M%S')}-{host}",
        "date": started_at.isoformat(),
        "host": host,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "mode": plan.mode,
        "plan": {k: v for k, v in vars(plan).items() if k != "mode"},
        "bootstrap": args.bootstrap,
        "seed": args.seed,
        "command": "python -m bench " + shlex.join(sys.argv[1:]),
    }
    parts = PARTS if args.part == "all" else (args.part,)
    runners: dict[str, Callable[[Plan, str, str, Path, int], dict[str, Any]]] = {
        "throughput": run_throughput,
        "latency": partial(run_latency, processes=args.processes),
        "state": run_state,
        "processes": partial(run_processes, rounds=args.rounds or 3),
    }
    work = Path(tempfile.mkdtemp(prefix=f"supplyflow-{run_id}-"))
    clock = time.monotonic()
    try:
        print("priming the deployments (first start of their workers)", flush=True)
        prime(args.bootstrap, run_id, work, [n for part in parts for n in DEPLOYMENTS[part]])
        for part in parts:
            part_started = time.monotonic()
            report[part] = runners[part](plan, args.bootstrap, run_id, work, args.seed)
            report[part]["part_seconds"] = round(time.monotonic() - part_started, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        # Everything this run created on the broker, also of parts that never ran.
        asyncio.run(delete_topics(args.bootstrap, (f"{run_id}-",)))
    report["wall_seconds"] = round(time.monotonic() - clock, 1)
    return report


def _decode(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.decode import DEFAULT_SCALE, SMOKE_SCALE, markdown, run_decode

    scale = args.scale or (SMOKE_SCALE if args.smoke else DEFAULT_SCALE)
    rounds = 2 if args.smoke else args.rounds or 10
    part = run_decode(scale, rounds, args.seed)
    command = "python -m bench " + shlex.join(argv)
    print(f"{command} (scale {scale}, Python {platform.python_version()})\n")
    print(markdown(part))
    return 0


def _domain(args: argparse.Namespace, argv: list[str]) -> int:
    from bench.domain import DEFAULT_SCALE, SMOKE_SCALE, markdown, run_domain

    scale = args.scale or (SMOKE_SCALE if args.smoke else DEFAULT_SCALE)
    rounds = 2 if args.smoke else args.rounds or 6
    part = run_domain(scale, rounds, args.seed, compare=args.compare)
    command = "python -m bench " + shlex.join(argv)
    print(f"{command} (scale {scale}, Python {platform.python_version()})\n")
    print(markdown(part))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # aiokafka warns about every retry while new topics elect leaders; retries are normal.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        if args.part == "readme":
            source = args.report or latest_report(args.out)
            update_page(args.page, source)
            print(f"{args.page}: benchmark section from {source}")
            return 0
        if args.part == "decode":
            return _decode(args, sys.argv[1:] if argv is None else argv)
        if args.part == "domain":
            return _domain(args, sys.argv[1:] if argv is None else argv)
        plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
        if args.scale is not None:
            plan = replace(plan, throughput_scale=args.scale)
        report = _run(args, plan)
        files = write(report, args.out)
    except (SupplyflowError, FileNotFoundError, ValueError) as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    print("\n" + markdown(report))
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
