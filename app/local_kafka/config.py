"""Configuration, status record and file layout of the local development broker.

Everything here is pure (no processes, no sockets): the settings of one local broker, where
its files live, and the ``server.properties`` rendered from them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from supplyflow.app.local_kafka.exceptions import LocalKafkaError

__all__ = [
    "DEFAULT_PORT",
    "ENV_BOOTSTRAP",
    "ENV_KAFKA_HOME",
    "KAFKA_VERSION",
    "OAUTH_MECHANISM",
    "SCRAM_MECHANISMS",
    "BrokerPaths",
    "BrokerStatus",
    "LocalKafkaConfig",
    "default_cache_dir",
    "default_config",
    "render_server_properties",
]

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka release pinned in ``pom.xml`` (also names the jar cache folder)."""

DEFAULT_PORT = 9092
ENV_KAFKA_HOME = "SUPPLYFLOW_KAFKA_HOME"
ENV_BOOTSTRAP = "SUPPLYFLOW_BOOTSTRAP"
_DEFAULT_HOME = Path(".supplyflow") / "kafka"
#: SASL mechanisms of the secure listener; users get credentials for each.
SCRAM_MECHANISMS = ("SCRAM-SHA-512",)
#: The secure listener also takes OAUTHBEARER with Kafka's built-in unsecured validator:
#: any unsigned JWT (``{"alg": "none"}``) naming a ``sub`` and a future ``exp`` passes.
#: For development and tests of the token path only, never for a real cluster.
OAUTH_MECHANISM = "OAUTHBEARER"
_HEAP = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_MAX_PORT = 65535


@dataclass(frozen=True)
class LocalKafkaConfig:
    """Settings of one local single-node KRaft broker.

    ``home`` holds the state (``data/``, ``logs/``, ``server.properties``, ``broker.pid``,
    ``cluster.id``); ``cache_dir`` holds the jars, shared between runs and clones. Both are
    made absolute on construction, so the pid-file check does not depend on the cwd.
    """

    home: Path
    cache_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    controller_port: int | None = None
    partitions: int = 8
    heap: str = "1g"
    #: a SASL_SSL listener (SCRAM-SHA-512) on this port, next to the PLAINTEXT one
    secure_port: int | None = None
    #: PEM certificate (chain) and unencrypted PEM key of the secure listener
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        # A frozen dataclass may only normalise its own fields through object.__setattr__.
        object.__setattr__(self, "home", Path(self.home).expanduser().absolute())
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser().absolute())
        ports = (("port", self.port), ("controller_port", self.resolved_controller_port))
        for name, value in ports:
            if not 0 < value <= _MAX_PORT:
                raise LocalKafkaError(f"{name} {value} is not a TCP port (1..{_MAX_PORT})")
        if self.resolved_controller_port == self.port:
            raise LocalKafkaError(
                f"controller_port must differ from port ({self.port}): the broker needs two"
            )
        if self.secure_port is not None:
            taken = (self.port, self.resolved_controller_port)
            if not 0 < self.secure_port <= _MAX_PORT or self.secure_port in taken:
                raise LocalKafkaError(
                    f"secure_port {self.secure_port} must be a free TCP port other than "
                    f"{taken[0]} and {taken[1]}"
                )
            if self.tls_cert is None or self.tls_key is None:
                raise LocalKafkaError(
                    "a secure listener needs a TLS certificate and its key (PEM files): "
                    "give --tls-cert and --tls-key"
                )
            object.__setattr__(self, "tls_cert", Path(self.tls_cert).expanduser().absolute())
            object.__setattr__(self, "tls_key", Path(self.tls_key).expanduser().absolute())
        if self.partitions < 1:
            raise LocalKafkaError(f"partitions must be at least 1, not {self.partitions}")
        if not _HEAP.match(self.heap):
            raise LocalKafkaError(f"heap {self.heap!r} is not a JVM size such as 512m or 1g")
        if not self.host or any(ch in self.host for ch in " ,/"):
            raise LocalKafkaError(f"host {self.host!r} is not a host name or address")

    @property
    def resolved_controller_port(self) -> int:
        """The KRaft controller port: ``controller_port``, or ``port + 1`` when unset."""
        return self.controller_port if self.controller_port is not None else self.port + 1

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients (what ``SUPPLYFLOW_BOOTSTRAP`` should be set to)."""
        return f"{_bracket(self.host)}:{self.port}"

    @property
    def secure_bootstrap(self) -> str | None:
        """``host:port`` of the SASL_SSL listener, when there is one."""
        if self.secure_port is None:
            return None
        return f"{_bracket(self.host)}:{self.secure_port}"

    @property
    def paths(self) -> BrokerPaths:
        """Where this broker's files live."""
        return BrokerPaths.of(self)


@dataclass(frozen=True)
class BrokerPaths:
    """The files of one broker home and of the shared jar cache."""

    home: Path
    data: Path
    logs: Path
    server_log: Path
    stdout_log: Path
    server_properties: Path
    log4j_config: Path
    pid_file: Path
    cluster_id_file: Path
    meta_properties: Path
    keystore: Path
    libs: Path

    @classmethod
    def of(cls, cfg: LocalKafkaConfig) -> BrokerPaths:
        """The layout of ``cfg``'s home and cache."""
        home = cfg.home
        logs = home / "logs"
        return cls(
            home=home,
            data=home / "data",
            logs=logs,
            server_log=logs / "server.log",
            stdout_log=logs / "stdout.log",
            server_properties=home / "server.properties",
            log4j_config=home / "log4j2.properties",
            pid_file=home / "broker.pid",
            cluster_id_file=home / "cluster.id",
            meta_properties=home / "data" / "meta.properties",
            keystore=home / "tls" / "keystore.pem",
            libs=cfg.cache_dir / "libs",
        )


@dataclass(frozen=True)
class BrokerStatus:
    """What :func:`status`, :func:`up` and :func:`down` found.

    ``running`` means our broker process is alive; ``ready`` that it also answered a Kafka
    metadata request. ``detail`` is one human-readable line for the CLI.
    """

    running: bool
    pid: int | None
    bootstrap: str
    home: Path
    detail: str
    ready: bool = False


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/supplyflow/kafka-<version>`` (``~/.cache`` when XDG is unset)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "supplyflow" / f"kafka-{KAFKA_VERSION}"


def default_config(
    home: Path | None = None,
    port: int = DEFAULT_PORT,
    *,
    secure_port: int | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> LocalKafkaConfig:
    """The usual config: ``home`` or ``$SUPPLYFLOW_KAFKA_HOME`` or ``./.supplyflow/kafka``."""
    if home is None:
        env_home = os.environ.get(ENV_KAFKA_HOME, "").strip()
        home = Path(env_home) if env_home else Path.cwd() / _DEFAULT_HOME
    return LocalKafkaConfig(
        home=home,
        cache_dir=default_cache_dir(),
        port=port,
        secure_port=secure_port,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def render_server_properties(cfg: LocalKafkaConfig) -> str:
    """The broker's ``server.properties`` (single node, combined broker and controller)."""
    host = _bracket(cfg.host)
    cport = cfg.resolved_controller_port
    listeners = f"PLAINTEXT://{host}:{cfg.port},CONTROLLER://{host}:{cport}"
    advertised = f"PLAINTEXT://{host}:{cfg.port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    secure: list[tuple[str, str | int]] = []
    if cfg.secure_port is not None:
        listeners += f",SASL_SSL://{host}:{cfg.secure_port}"
        advertised += f",SASL_SSL://{host}:{cfg.secure_port}"
        protocols += ",SASL_SSL:SASL_SSL"
        secure = [
            ("sasl.enabled.mechanisms", ",".join((*SCRAM_MECHANISMS, OAUTH_MECHANISM))),
            *(
                (
                    f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config",
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                )
                for mechanism in SCRAM_MECHANISMS
            ),
            (
                "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            ),
            ("listener.name.sasl_ssl.ssl.keystore.type", "PEM"),
            ("listener.name.sasl_ssl.ssl.keystore.location", _escape(str(cfg.paths.keystore))),
        ]
    settings: list[tuple[str, str | int]] = [
        ("process.roles", "broker,controller"),
        ("node.id", 1),
        ("controller.quorum.voters", f"1@{host}:{cport}"),
        ("listeners", listeners),
        ("advertised.listeners", advertised),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("controller.listener.names", "CONTROLLER"),
        ("listener.security.protocol.map", protocols),
        *secure,
        ("log.dirs", _escape(str(cfg.paths.data))),
        ("num.partitions", cfg.partitions),
        ("default.replication.factor", 1),
        ("min.insync.replicas", 1),
        ("offsets.topic.replication.factor", 1),
        ("transaction.state.log.replication.factor", 1),
        ("transaction.state.log.min.isr", 1),
        ("share.coordinator.state.topic.replication.factor", 1),
        ("share.coordinator.state.topic.min.isr", 1),
        ("group.initial.rebalance.delay.ms", 0),
        ("auto.create.topics.enable", "false"),
    ]
    lines = [
        "# Written by supplyflow.app.local_kafka on every `up`; edits here are overwritten.",
        *(f"{key}={value}" for key, value in settings),
    ]
    return "\n".join(lines) + "\n"


def _bracket(host: str) -> str:
    """IPv6 literals need brackets in listener URLs and ``host:port`` strings."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _escape(value: str) -> str:
    """Escape a value for a Java ``.properties`` file."""
    return value.replace("\\", "\\\\")
