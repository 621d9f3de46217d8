"""The ``supplyflow`` command: worker, kafka, produce, demo, dlq, schemas, topics.

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
from supplyflow.app import kafka_records
from supplyflow.app.exceptions import USAGE_EXIT_CODE
from supplyflow.errors import SupplyflowError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from supplyflow.app.partitioners import Partitioner
    from supplyflow.app.sample import SampleRecord
    from supplyflow.app.settings import Settings

__all__ = ["main"]

log = logging.getLogger("supplyflow")
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
    worker.add_argument(
        "--leave",
        action="store_true",
        help="on SIGTERM, leave the consumer group at once (SUPPLYFLOW_LEAVE_GROUP_ON_STOP)",
    )
    worker.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="run N worker processes (one group member each) under one supervisor: "
        "overrides SUPPLYFLOW_PROCESSES (default 1)",
    )

    kafka = sub.add_parser("kafka", help="a local single-node Apache Kafka for development")
    kafka.add_argument(
        "action",
        choices=["up", "down", "status", "fetch", "logs", "ping"],
        help="ping: exit 0 if the cluster at SUPPLYFLOW_BOOTSTRAP answers, connecting with "
        "the workers' TLS/SASL settings",
    )
    kafka.add_argument("--port", type=int, default=9092, help="broker port (default 9092)")
    kafka.add_argument("--home", type=Path, help="state folder (default .supplyflow/kafka)")
    kafka.add_argument(
        "--secure-port",
        type=int,
        help="also open a SASL_SSL (SCRAM) listener on this port, for the user named by "
        "SUPPLYFLOW_KAFKA_SASL_USERNAME / _PASSWORD",
    )
    kafka.add_argument("--tls-cert", type=Path, help="PEM certificate of the secure listener")
    kafka.add_argument("--tls-key", type=Path, help="its unencrypted PEM (PKCS#8) key")

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
    produce.add_argument(
        "--partitioner",
        choices=["murmur2", "crc32", "fnv1a", "round-robin", "random"],
        default="murmur2",
        help="how records are spread over partitions, as your producers do: murmur2 (Java, "
        "aiokafka), crc32 (librdkafka: kcat, confluent-kafka), fnv1a (Sarama), round-robin "
        "(kafka-go), random (default murmur2; supplyflow routes every record to the "
        "partition that owns its key whichever you use)",
    )

    sub.add_parser("demo", help="start everything, run the sample scenario, show the result")

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay after correction")
    dlq_sub = dlq.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")
    listing = dlq_sub.add_parser("list", help="list dead letters (oldest first)")
    listing.add_argument("--reason", help="only this reason, e.g. schema or unknown_entity")
    listing.add_argument("--topic", help="only from this input topic, e.g. po.events")
    listing.add_argument("--limit", type=int, help="show at most this many (the newest)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    showing = dlq_sub.add_parser("show", help="one dead letter in full")
    showing.add_argument("address", help="PARTITION/OFFSET in dlq, as `dlq list` prints it")
    replaying = dlq_sub.add_parser(
        "replay",
        help="send dead letters back to their source topic (each at most once, re-runs skip "
        "what was sent)",
    )
    replaying.add_argument("address", nargs="?", help="PARTITION/OFFSET of one dead letter")
    replaying.add_argument("--reason", help="replay every dead letter of this reason")
    replaying.add_argument("--topic", help="with --reason: only those from this input topic")
    replaying.add_argument(
        "--value-file", type=Path, help="with an address: the corrected value (JSON) to send"
    )
    replaying.add_argument("--dry-run", action="store_true", help="say what would be sent")

    topics = sub.add_parser("topics", help="the topics and ACLs a deployment needs")
    topics.add_argument(
        "action",
        choices=["plan"],
        help="plan: every topic with partitions and configs, kafka-topics.sh and "
        "kafka-acls.sh lines (for SUPPLYFLOW_CREATE_TOPICS=false); connects to nothing",
    )
    topics.add_argument("--principal", help="the workers' principal (default User:<SASL username>)")
    topics.add_argument("--json", action="store_true", help="the plan as one JSON object")

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
    if args.leave:
        overrides["leave_group_on_stop"] = True
    if args.processes is not None:
        overrides["processes"] = args.processes
    settings = load_settings(args.config, **overrides)
    if settings.processes > 1:
        from supplyflow.app.supervisor import run_supervisor

        return run_supervisor(settings, args.config)
    return run_worker(settings)


def _cmd_kafka(args: argparse.Namespace) -> int:
    from supplyflow.app import local_kafka

    if args.action == "ping":
        from supplyflow.app.kafka_clients import ping
        from supplyflow.app.settings import load_settings

        settings = load_settings(args.config)
        how: str = settings.kafka_security_protocol
        if how.startswith("SASL_"):
            how += f" {settings.kafka_sasl_mechanism}"
        problem = asyncio.run(ping(settings, _PING_TIMEOUT_S))
        if problem is None:
            print(f"Kafka answers at {settings.bootstrap} ({how})")
            return 0
        print(f"Kafka does not answer at {settings.bootstrap} ({how}): {problem}")
        return 1
    cfg = local_kafka.default_config(
        home=args.home,
        port=args.port,
        secure_port=args.secure_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    if args.action == "up" and cfg.secure_port is not None:
        print(local_kafka.up(cfg, scram_users=_scram_users(args)).detail)
        return 0
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


def _scram_users(args: argparse.Namespace) -> dict[str, str]:
    """The SCRAM user of the secure listener: the one the settings connect as."""
    from supplyflow.app.local_kafka import LocalKafkaError
    from supplyflow.app.settings import load_settings

    settings = load_settings(args.config)
    password = settings.kafka_sasl_password
    if settings.kafka_sasl_username is None or password is None:
        raise LocalKafkaError(
            "the secure listener needs a SCRAM user: set SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL="
            "SASL_SSL, SUPPLYFLOW_KAFKA_SASL_USERNAME and SUPPLYFLOW_KAFKA_SASL_PASSWORD"
        )
    return {settings.kafka_sasl_username: password.get_secret_value()}


def _cmd_produce(args: argparse.Namespace) -> int:
    from supplyflow.app.exceptions import AppError
    from supplyflow.app.partitioners import partitioner
    from supplyflow.app.produce import produce_records
    from supplyflow.app.settings import load_settings
    from supplyflow.app.topics import ensure_topics

    settings = load_settings(args.config)
    run_id = args.run_id or args.scenario
    spread = partitioner(args.partitioner, args.seed)
    if args.scenario == "load":
        if not args.scale > 0:
            raise AppError(f"--scale must be a positive number, not {args.scale}")
        return _produce_load(settings, run_id, args.scale, args.seed, spread)
    from supplyflow.app.sample import sample_scenario

    records = sample_scenario(run_id, max_record_bytes=settings.max_record_bytes)

    async def run() -> int:
        await ensure_topics(settings)
        return await produce_records(settings, records, partitioner=spread)

    sent = asyncio.run(run())
    bad = sum(1 for r in records if r.expect != "ok")
    print(f"produced {sent} records ({bad} deliberately invalid) to {settings.bootstrap}")
    return 0


def _produce_load(
    settings: Settings, run_id: str, scale: float, seed: int, spread: Partitioner
) -> int:
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
            return await produce_records(
                settings, counted(), on_progress=progress, partitioner=spread
            )

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


def _cmd_topics(args: argparse.Namespace) -> int:
    import orjson

    from supplyflow.app.settings import load_settings
    from supplyflow.app.topics_plan import plan, render_plan

    settings = load_settings(args.config)
    if args.json:
        print(orjson.dumps(plan(settings, args.principal), option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_plan(settings, args.principal), end="")
    return 0


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


def _cmd_dlq(args: argparse.Namespace) -> int:
    import orjson

    from supplyflow.app import dlq_replay, dlq_tools
    from supplyflow.app.exceptions import AppError
    from supplyflow.app.settings import load_settings

    settings = load_settings(args.config)
    if args.dlq_action == "list":
        entries = asyncio.run(
            dlq_tools.read_dead_letters(settings, reason=args.reason, topic=args.topic)
        )
        shown = entries[-args.limit :] if args.limit else entries
        for entry in shown:
            if args.json:
                print(orjson.dumps(dlq_tools.summary(entry)).decode())
            else:
                print(dlq_tools.summary_line(entry))
        counts: dict[str, int] = {}
        for entry in entries:
            counts[entry.reason] = counts.get(entry.reason, 0) + 1
        by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        print(
            f"{len(entries)} dead letters" + (f" ({by_reason})" if by_reason else ""),
            file=sys.stderr,
        )
        return 0
    if args.dlq_action == "show":
        partition, offset = dlq_tools.parse_address(args.address)
        entry = asyncio.run(dlq_tools.fetch_dead_letter(settings, partition, offset))
        print(orjson.dumps(dlq_tools.show(entry), option=orjson.OPT_INDENT_2).decode())
        return 0
    if (args.address is None) == (args.reason is None):
        raise AppError("give a dead letter's PARTITION/OFFSET or --reason (one of them)")
    if args.value_file is not None and args.address is None:
        raise AppError("--value-file corrects one dead letter: give its PARTITION/OFFSET")
    corrected = None
    if args.value_file is not None:
        try:
            corrected = args.value_file.read_bytes()
        except OSError as exc:
            raise AppError(f"cannot read {args.value_file}: {exc.strerror}") from exc

    async def run() -> Any:
        if args.address is not None:
            partition, offset = dlq_tools.parse_address(args.address)
            entries = [await dlq_tools.fetch_dead_letter(settings, partition, offset)]
        else:
            entries = await dlq_tools.read_dead_letters(
                settings, reason=args.reason, topic=args.topic
            )
        return await dlq_replay.replay_dead_letters(
            settings, entries, corrected=corrected, dry_run=args.dry_run
        )

    report = asyncio.run(run())
    for line in report.lines():
        print(line)
    print(
        f"{len(report.sent)} replayed, {len(report.already)} already replayed, "
        f"{len(report.invalid)} not replayed",
        file=sys.stderr,
    )
    return 1 if report.invalid else 0


_COMMANDS = {
    "worker": _cmd_worker,
    "kafka": _cmd_kafka,
    "produce": _cmd_produce,
    "demo": _cmd_demo,
    "schemas": _cmd_schemas,
    "dlq": _cmd_dlq,
    "topics": _cmd_topics,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``supplyflow`` console script."""
    args = _parser().parse_args(argv)
    # Every command's Kafka consumers (the worker's, the dlq tools') take records whose
    # header keys are not UTF-8 (see app/kafka_records.py).
    kafka_records.install()
    if args.command != "worker":  # the worker configures logging through Faust
        _setup_logging("INFO")
    try:
        return _COMMANDS[args.command](args)
    except SupplyflowError as exc:
        print(f"supplyflow {args.command}: {exc}", file=sys.stderr)
        return USAGE_EXIT_CODE
    except KeyboardInterrupt:
        return 130
