"""Build the Faust app of a worker from settings and run it.

The app is assembled here and nowhere else: codecs registered, topics and agents
declared, web views mounted. ``build_app`` has no side effects beyond creating objects,
so tests and the benchmark build the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final, NoReturn

import faust
from prometheus_client import CollectorRegistry

from supplyflow import __version__
from supplyflow.agents.dead_letters import SentLetters
from supplyflow.agents.entities import EntityActor, EntityKind
from supplyflow.agents.exceptions_out import ExceptionEmitter, OpenExceptions
from supplyflow.agents.ingest import register_input_agent
from supplyflow.agents.metrics import Metrics
from supplyflow.agents.positions import register_position_agent
from supplyflow.agents.runtime import faust as faust_runtime
from supplyflow.agents.runtime.checkpoint import Checkpoint
from supplyflow.agents.runtime.driver import register_ticks_agent
from supplyflow.agents.runtime.faust import (
    BatchingStream,
    SupplyflowApp,
    new_worker,
    table_key_estimate,
)
from supplyflow.agents.runtime.reader import InputReader, owned_partitions
from supplyflow.agents.state import StateTables, state_table
from supplyflow.app import kafka_records, membership
from supplyflow.app.exceptions import AppError
from supplyflow.app.health import PartitionHealth
from supplyflow.app.kafka_clients import faust_client_settings, ssl_context, token_source
from supplyflow.app.logs import logging_config
from supplyflow.app.memory import register_memory_trim
from supplyflow.app.metrics import StateProbes, WorkerCollector
from supplyflow.app.runtime_config import StopOnFatal, runtime_config
from supplyflow.app.setting_types import check_advertised_url
from supplyflow.app.settings import Settings
from supplyflow.app.topics import (
    INVENTORY_EVENTS,
    ORDER_EVENTS,
    PO_EVENTS,
    STATE_TABLES,
    ensure_topics,
    max_dlq_message_bytes,
    max_input_message_bytes,
)
from supplyflow.app.web import register_views
from supplyflow.codecs import MSGPACK_CODEC, register_codecs
from supplyflow.tables.exceptions import RULES, Rules
from supplyflow.tables.order import OrderState, apply_order_event, fire_order_deadlines
from supplyflow.tables.po import PoState, apply_po_event, fire_po_deadlines

PO_KIND: Final = EntityKind("po", apply_po_event, fire_po_deadlines, PoState.from_wire)
ORDER_KIND: Final = EntityKind(
    "order", apply_order_event, fire_order_deadlines, OrderState.from_wire
)

__all__ = ["Worker", "broker_credentials", "build_app", "run_worker"]

log = logging.getLogger(__name__)

#: Deadlines fire within about this much of due (plus SUPPLYFLOW_DEADLINE_GRACE).
TICK_INTERVAL_S: Final = 0.5
#: Standby replicas double the changelog traffic each worker reads; recovery from the
#: changelog is fast enough that supplyflow runs without them.
_STANDBY_REPLICAS: Final = 0
_MIB: Final = 1024 * 1024
#: RocksDB per partition database (3 tables x partitions of them per worker). Faust's
#: defaults (a 2 GiB block cache and 3 x 64 MiB write buffers *each*) let a worker's memory
#: grow by gigabytes. State is small records read once per batch, so a small cache costs
#: little; the cache and the memtables are shared by all databases (below).
ROCKSDB_OPTIONS: Final = {
    "write_buffer_size": 4 * _MIB,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * _MIB,
}
#: One block cache for all of a worker's RocksDB databases (it had 8 MiB per database:
#: 192 MiB with 8 partitions).
ROCKSDB_CACHE_BYTES: Final = 64 * _MIB
#: One memtable budget for all of them: past it RocksDB flushes the largest memtable
#: (each database could hold 2 x 4 MiB: 192 MiB with 8 partitions).
ROCKSDB_MEMTABLE_BYTES: Final = 64 * _MIB


@dataclass
class Worker:
    """A built (not yet started) worker: the Faust app, its tables and metrics."""

    app: Any
    metrics: Metrics
    settings: Settings
    tables: StateTables
    stop_on_fatal: StopOnFatal


def _seconds(value: timedelta) -> float:
    return value.total_seconds()


#: Garbage-collector thresholds for the worker process. Python's defaults (700, 10, 10)
#: collect after every 700 net allocations: measured with ``gc.callbacks`` on one worker
#: draining distributor input, that was about 30% of its CPU, with full collections of
#: 100-240 ms each (latency spikes). A larger first threshold cuts that to about 5% (the
#: longest pause seen: 94 ms). The older generations keep their defaults: with them made
#: rarer too, cyclic garbage piled up (+69 MiB RSS in the hostile-input test, +15 MiB
#: with these).
_GC_THRESHOLDS: Final = (20_000, 10, 10)

#: The largest record batch supplyflow builds (Kafka's default topic limit is 1 MiB).
_PRODUCE_BATCH_BYTES: Final = 512 * 1024


def broker_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` (TLS and/or SASL) for the settings; None for PLAINTEXT.

    The same settings as every other client (:mod:`supplyflow.app.kafka_clients`).
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    if settings.kafka_sasl_mechanism == "OAUTHBEARER":
        return faust.OAuthCredentials(
            oauth_cb=token_source(settings),
            ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
        )
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.get_secret_value() if password else None,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
        mechanism=settings.kafka_sasl_mechanism,
    )


def build_app(settings: Settings, registry: CollectorRegistry | None = None) -> Worker:
    """Create the worker's Faust app, topics, agents and views."""
    config = runtime_config(settings)
    register_codecs()
    faust_runtime.install()
    kafka_records.install()
    rocksdb_memory = faust_runtime.share_rocksdb_memory(ROCKSDB_CACHE_BYTES, ROCKSDB_MEMTABLE_BYTES)
    metrics = Metrics(registry or CollectorRegistry(), app_id=settings.app_id, version=__version__)
    brokers = [f"kafka://{host}" for host in settings.bootstrap.split(",")]
    app = SupplyflowApp(
        settings.app_id,
        broker=brokers,
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        rocksdb_options=ROCKSDB_OPTIONS,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=settings.create_topics,
        # Nothing here elects a leader: without it, every topic the worker uses is one of
        # topics.topic_specs (what `supplyflow topics plan` lists for pre-provisioning).
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=_STANDBY_REPLICAS,
        broker_session_timeout=_seconds(settings.broker_session_timeout),
        consumer_group_instance_id=membership.instance_id(settings),
        broker_heartbeat_interval=max(0.5, _seconds(settings.broker_session_timeout) / 10),
        producer_max_request_size=max_dlq_message_bytes(settings),
        # The outbox sends a partition's records of one agent batch as one record batch:
        # room for a few thousand (a batch may not exceed a topic's 1 MiB message limit).
        producer_max_batch_size=_PRODUCE_BATCH_BYTES,
        consumer_max_fetch_size=max_input_message_bytes(settings),
        Stream=BatchingStream,
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        # What the other workers forward look-ups to (never the bind address 0.0.0.0).
        canonical_url=settings.web_advertised_url,
        web_in_thread=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        web_tables_enabled=False,
        web_metrics_enabled=False,
        store_check_exists=True,
        **faust_client_settings(settings),
    )
    # Tables name their codecs (agents.state); this covers any table that forgets to.
    app.conf.table_key_serializer = MSGPACK_CODEC
    app.conf.table_value_serializer = MSGPACK_CODEC
    tables = StateTables(
        po=state_table(app, "po", partitions=settings.partitions, help="purchase orders"),
        order=state_table(app, "order", partitions=settings.partitions, help="sales orders"),
        position=state_table(
            app, "position", partitions=settings.partitions, help="positions per SKU@LOC"
        ),
    )
    checkpoints = {
        name: Checkpoint.of(app, getattr(tables, name), config.kafka) for name in STATE_TABLES
    }
    open_index = OpenExceptions(settings.partitions)
    emitter = ExceptionEmitter(config, metrics, open_index)
    letters = SentLetters(config)
    rules = Rules.from_settings(settings)
    actors = {
        name: EntityActor(
            kind=kind,
            checkpoint=checkpoint,
            deltas_topic=config.deltas_topic,
            emitter=emitter,
            rules=rules,
            partitions=settings.partitions,
            metrics=metrics,
        )
        for name, kind, checkpoint in (
            (PO_EVENTS, PO_KIND, checkpoints["po"]),
            (ORDER_EVENTS, ORDER_KIND, checkpoints["order"]),
        )
    }
    ticks = config.ticks_topic
    drivers = [
        register_input_agent(
            app,
            config,
            topic=topic,
            handler=actor,
            metrics=metrics,
            checkpoint=actor.checkpoint,
            letters=letters,
            on_tick=actor.tick,
        )
        for topic, actor in actors.items()
    ]
    positions = register_position_agent(
        app,
        config,
        checkpoint=checkpoints["position"],
        metrics=metrics,
        emitter=emitter,
        letters=letters,
    )
    drivers.append(positions)
    every_partition = range(settings.partitions)

    def forget_tails() -> None:
        """What a failed batch queued was dropped, maybe unsent: the tails of exceptions and
        dlq are read again before the next write (the emitter's is also what positions
        reconcile ``OVERALLOCATION`` with)."""
        emitter.forget(every_partition)
        letters.forget(every_partition)

    for driver in drivers:
        driver.on_error = _then(driver.on_error, forget_tails)
    stop_on_fatal = StopOnFatal()
    register_ticks_agent(
        app, ticks, drivers, batch_window_s=config.batch.window_s, on_fatal=stop_on_fatal
    )
    readers = [driver.reader for driver in drivers]
    health = PartitionHealth(readers, config, (PO_EVENTS, ORDER_EVENTS, INVENTORY_EVENTS))
    register_ticker(app, ticks)
    register_memory_trim(app, metrics.memory_trim.observe)

    async def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """A revoked partition's exception and dead-letter tails must be read again if it
        comes back."""
        revoked = args[0] if args else kwargs.get("revoked", ())
        emitter.forget(sorted({tp.partition for tp in revoked}))
        letters.forget(sorted({tp.partition for tp in revoked}))

    app.on_partitions_revoked.connect(forget_revoked)

    def ensure_index() -> None:
        owned = owned_partitions(app, ticks)
        open_index.ensure(
            owned, (("po", tables.po), ("order", tables.order), ("position", tables.position))
        )

    def open_counts() -> dict[str, int]:
        ensure_index()
        return open_index.counts()

    probes = _probes(
        app,
        settings,
        metrics=metrics,
        tables=tables,
        actors=actors.values(),
        open_counts=open_counts,
        readers=readers,
        rocksdb_memory=rocksdb_memory,
        stalled=health.stalled,
    )
    metrics.registry.register(WorkerCollector(probes, RULES))
    register_views(
        app,
        metrics,
        tables,
        open_index,
        ensure_index,
        api_token=settings.api_token,
        degraded=health.degraded,
    )
    return Worker(
        app=app, metrics=metrics, settings=settings, tables=tables, stop_on_fatal=stop_on_fatal
    )


def _then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _probes(
    app: Any,
    settings: Settings,
    *,
    metrics: Metrics,
    tables: StateTables,
    actors: Iterable[EntityActor],
    open_counts: Callable[[], dict[str, int]],
    readers: Sequence[InputReader],
    rocksdb_memory: faust_runtime.SharedRocksDBMemory,
    stalled: Callable[[], Mapping[tuple[str, int], bool]],
) -> StateProbes:
    """Scrape-time readings of the worker's state."""
    inputs = {settings.topic(t): t for t in (PO_EVENTS, ORDER_EVENTS, INVENTORY_EVENTS)}

    def lag() -> dict[tuple[str, int], tuple[int, int]]:
        out = {}
        for reader in readers:
            for full_name in reader.topics:
                topic = inputs.get(full_name)
                if topic is None:
                    continue  # the internal deltas topic
                for partition in reader.active:
                    position = metrics.next_offsets.get((topic, partition))
                    highwater = reader.highwater(full_name, partition)
                    if position is not None and highwater is not None and highwater >= 0:
                        out[(topic, partition)] = (highwater, position)
        return out

    def disk_bytes() -> int:
        total = 0
        for path in settings.data_dir.rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file():
                    total += path.stat().st_size
        return total

    def recovery_remaining() -> int:
        remaining: int = app.tables.recovery.active_remaining_total()
        return remaining

    return StateProbes(
        lag=lag,
        table_keys=lambda: {
            "po": table_key_estimate(tables.po),
            "order": table_key_estimate(tables.order),
            "position": table_key_estimate(tables.position),
        },
        disk_bytes=disk_bytes,
        recovery_remaining=recovery_remaining,
        open_exceptions=open_counts,
        pending_deadlines=lambda: sum(actor.index.size() for actor in actors),
        rocksdb_memory=rocksdb_memory.usage,
        stalled=stalled,
    )


def register_ticker(app: Any, ticks: str) -> None:
    """Every :data:`TICK_INTERVAL_S`, a tick to each ticks partition owned here (it
    activates the partition's input readers and fires its deadlines)."""
    topic = app.topic(ticks, key_serializer="raw", value_serializer="raw")

    @app.timer(TICK_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust ships no types
    async def tick() -> None:
        for partition in sorted(owned_partitions(app, ticks)):
            await topic.send(key=None, value=b"", partition=partition)


def check_advertised(settings: Settings) -> None:
    """Refuse a URL the other workers cannot reach (exit 2): look-ups would fail."""
    url = settings.web_advertised_url
    try:
        check_advertised_url(url)
    except ValueError as exc:
        raise AppError(
            f"SUPPLYFLOW_ADVERTISED_URL: this worker would advertise {url}: {exc}"
        ) from exc


def run_worker(settings: Settings) -> NoReturn:
    """Create the topics, then run a worker until it is stopped (SIGTERM/SIGINT)."""
    check_advertised(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AppError(
            f"SUPPLYFLOW_DATA_DIR {settings.data_dir} cannot be created: {exc.strerror}"
        ) from exc
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    instance = membership.instance_id(settings)
    loop.run_until_complete(
        membership.take_instance(settings, instance, runtime_config(settings).ticks_topic)
    )
    membership.install(leave_on_stop=settings.leave_group_on_stop)
    worker = build_app(settings)
    # What exists before the agents start (modules, the app, its tables) lives as long as
    # the process: keep it out of every collection, then collect less often.
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)
    runner = new_worker(
        worker.app,
        loop=loop,
        loglevel=settings.log_level.lower(),
        logging_config=logging_config(settings.log_format, settings.log_level),
    )
    worker.stop_on_fatal.runner = runner
    runner.execute_from_commandline()
