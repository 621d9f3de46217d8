"""Errors of the local development Kafka broker (``supplyflow.app.local_kafka``)."""

from supplyflow.errors import SupplyflowError

__all__ = ["LocalKafkaError"]


class LocalKafkaError(SupplyflowError):
    """The local broker could not be fetched, started, checked or stopped.

    The message always says what the operator can do about it (install Java or Maven, free a
    port, read the broker log, or point ``SUPPLYFLOW_BOOTSTRAP`` at an existing cluster).
    """
