"""The ``supplyflow`` command: worker, kafka, produce, demo, schemas.

Errors that the operator can fix end the command with exit code 2 and one clear message;
nothing prints a traceback for a bad setting or a missing broker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supplyflow import __version__
from supplyflow.errors import SupplyflowError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from supplyflow.app.sample import SampleRecord
    from supplyflow.app.settings import Settings

__all__ = ["main"]

log = logging.getLogger("supplyflow")
_USAGE_ERROR = 2
_PING_TIMEOUT_S = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supplyflow",
        description="Keeps ERP, procurement, WMS, 3PL and sales channels in step over Kafka.",
    )
    parser.add_argument("--version", action="version", version=f"supplyflow {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML settings file (default: $SUPPLYFLOW_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = sub.add_parser("worker", help="run a long-running worker (several form a group)")
    worker.add_argument("--web-port", type=int, help="overrides SUPPLYFLOW_WEB_PORT")

    kafka = sub.add_parser("kafka", help="a local single-node Apache Kafka for development")
    kafka.add_argument(
        "action",
        choices=["up", "down", "status", "fetch", "logs", "ping"],
        help="ping: exit 0 if any broker answers at SUPPLYFLOW_BOOTSTRAP",
    )
    kafka.add_argument("--port", type=int, default=9092, help="broker port (default 9092)")
    kafka.add_argument("--home", type=Path, help="state folder (default .supplyflow/kafka)")

    produce = sub.add_parser("produce", help="produce sample or load records to the input topics")
    produce.add_argument(
        "scenario",
        choices=["sample", "load"],
        help="sample: a few records of every type (some bad); load: a mid-size distributor's "
        "workload (25,000 SKUs x 4 locations, about 250,000 records at scale 1)",
    )
    produce.add_argument(
        "--run-id", help="prefix of every generated id (default: the scenario's name)"
    )
    produce.add_argument(
        "--scale", type=float, default=1.0, help="load: x the distributor's volumes (default 1)"
    )
    produce.add_argument(
        "--seed", type=int, default=7, help="load: the same seed gives the same records"
    )

    sub.add_parser("demo", help="start everything, run the sample scenario, show the result")

    schemas = sub.add_parser("schemas", help="JSON Schemas of the input events")
    schemas.add_argument("action", choices=["export", "check"])
    schemas.add_argument("--dir", type=Path, default=Path("schemas"))
    schemas.add_argument(
        "--force", action="store_true", help="export even if it breaks compatibility"
    )
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # aiokafka narrates every metadata change at INFO; the commands say what matters.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _cmd_worker(args: argparse.Namespace) -> int:
    from supplyflow.app.settings import load_settings
    from supplyflow.app.worker import run_worker

    overrides: dict[str, Any] = {}
    if args.web_port is not None:
        overrides["web_port"] = args.web_port
    settings = load_settings(args.config, **overrides)
    return run_worker(settings)


def _cmd_kafka(args: argparse.Namespace) -> int:
    from supplyflow.app import local_kafka

    if args.action == "ping":
        from supplyflow.app.settings import load_settings

        bootstrap = load_settings(args.config).bootstrap
        ready = local_kafka.wait_until_ready(bootstrap, _PING_TIMEOUT_S)
        print(f"Kafka {'answers' if ready else 'does not answer'} at {bootstrap}")
        return 0 if ready else 1
    cfg = local_kafka.default_config(home=args.home, port=args.port)
    if args.action == "fetch":
        print(f"Kafka jars in {local_kafka.fetch(cfg)}")
        return 0
    if args.action == "logs":
        print(local_kafka.log_tail(cfg))
        return 0
    action = {"up": local_kafka.up, "down": local_kafka.down, "status": local_kafka.status}
    status = action[args.action](cfg)
    print(status.detail)
    if args.action == "down":
        return 1 if status.running else 0
    return 0 if status.ready else 1


def _cmd_produce(args: argparse.Namespace) -> int:
    from supplyflow.app.exceptions import AppError
    from supplyflow.app.produce import produce_records
    from supplyflow.app.settings import load_settings
    from supplyflow.app.topics import ensure_topics

    settings = load_settings(args.config)
    run_id = args.run_id or args.scenario
    if args.scenario == "load":
        if not args.scale > 0:
            raise AppError(f"--scale must be a positive number, not {args.scale}")
        return _produce_load(settings, run_id, args.scale, args.seed)
    from supplyflow.app.sample import sample_scenario

    records = sample_scenario(run_id, max_record_bytes=settings.max_record_bytes)

    async def run() -> int:
        await ensure_topics(settings)
        return await produce_records(settings, records)

    sent = asyncio.run(run())
    bad = sum(1 for r in records if r.expect != "ok")
    print(f"produced {sent} records ({bad} deliberately invalid) to {settings.bootstrap}")
    return 0


def _produce_load(settings: Settings, run_id: str, scale: float, seed: int) -> int:
    from collections import Counter

    from tqdm import tqdm

    from supplyflow.app.produce import produce_records
    from supplyflow.app.topics import ensure_topics
    from supplyflow.app.workload import DISTRIBUTOR, estimate_records, iter_records

    shape = DISTRIBUTOR.scaled(scale)
    invalid: Counter[str] = Counter()

    def counted() -> Iterator[SampleRecord]:
        for record in iter_records(seed, run_id, shape):
            if record.expect != "ok":
                invalid[record.expect] += 1
            yield record

    with tqdm(
        total=estimate_records(shape, seed), unit=" records", unit_scale=True, file=sys.stderr
    ) as bar:

        def progress(sent: int) -> None:
            if bar.total is not None and bar.n + sent > bar.total:
                bar.total = bar.n + sent  # the estimate was a little low
            bar.update(sent)

        async def run() -> int:
            await ensure_topics(settings)
            return await produce_records(settings, counted(), on_progress=progress)

        sent = asyncio.run(run())
        bar.total = sent  # the estimate was close; end the bar at 100%
        bar.refresh()
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(invalid.items()))
    print(
        f"produced {sent} records of {shape.positions} SKU-locations, {shape.pos} POs and "
        f"{shape.orders} sales orders to {settings.bootstrap} "
        f"({sum(invalid.values())} deliberately invalid: {reasons or 'none'})"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from supplyflow.app.demo import run_demo
    from supplyflow.app.settings import load_settings

    return run_demo(load_settings(args.config))


def _cmd_schemas(args: argparse.Namespace) -> int:
    from supplyflow.app.schemas import check_directory, export_schemas

    problems = [p for p in check_directory(args.dir) if not p.startswith("not exported:")]
    if args.action == "export":
        if problems and not args.force:
            for problem in problems:
                print(problem, file=sys.stderr)
            print(
                "refusing to overwrite the committed schemas with incompatible ones: keep the "
                "change backward compatible, or bump SCHEMA_VERSION in codecs/events.py "
                "(or pass --force)",
                file=sys.stderr,
            )
            return 1
        written = export_schemas(args.dir)
        print(f"wrote {len(written)} schemas to {args.dir}")
        return 0
    problems = check_directory(args.dir)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


_COMMANDS = {
    "worker": _cmd_worker,
    "kafka": _cmd_kafka,
    "produce": _cmd_produce,
    "demo": _cmd_demo,
    "schemas": _cmd_schemas,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supplyflow`` console script."""
    args = _parser().parse_args(argv)
    if args.command != "worker":  # the worker configures logging through Faust
        _setup_logging("INFO")
    try:
        return _COMMANDS[args.command](args)
    except SupplyflowError as exc:
        print(f"supplyflow {args.command}: {exc}", file=sys.stderr)
        return _USAGE_ERROR
    except KeyboardInterrupt:
        return 130
