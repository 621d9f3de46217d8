"""A real local single-node KRaft Apache Kafka for development, tests and demos.

The broker is Apache Kafka 4.1.1 (pinned in ``pom.xml``), run from jars that Maven downloads
once into a shared cache (``~/.cache/supplyflow/kafka-<version>``), with its state in a home
folder (``./.supplyflow/kafka`` or ``$SUPPLYFLOW_KAFKA_HOME``)::

    cfg = default_config()
    print(up(cfg).detail)      # fetch jars, format storage on first use, start, wait
    print(status(cfg).detail)
    down(cfg)                  # clean shutdown; data is kept for the next ``up``

Needs Java 17+ and Maven; to use an existing cluster instead, set ``SUPPLYFLOW_BOOTSTRAP``.
Nothing here prints: every call returns a :class:`BrokerStatus` (the CLI prints ``detail``)
or raises :class:`LocalKafkaError` with what to do.
"""

from supplyflow.app.local_kafka.broker import down, log_tail, status, up
from supplyflow.app.local_kafka.config import (
    KAFKA_VERSION,
    BrokerStatus,
    LocalKafkaConfig,
    default_config,
    render_server_properties,
)
from supplyflow.app.local_kafka.exceptions import LocalKafkaError
from supplyflow.app.local_kafka.protocol import wait_until_ready
from supplyflow.app.local_kafka.tooling import fetch

__all__ = [
    "KAFKA_VERSION",
    "BrokerStatus",
    "LocalKafkaConfig",
    "LocalKafkaError",
    "default_config",
    "down",
    "fetch",
    "log_tail",
    "render_server_properties",
    "status",
    "up",
    "wait_until_ready",
]
