"""What the app hands the runtime: its frozen config, and how to stop on a fatal error.

The runtime and the agents never read settings: :func:`runtime_config` builds, once,
everything they need (topic names, partitions, record limits, batch tunables, and the
aiokafka client options of :mod:`supplyflow.app.kafka_clients` as a plain mapping).
"""

from __future__ import annotations

import logging
import os
import signal
from types import MappingProxyType
from typing import Any

from supplyflow.agents.runtime.config import BatchTunables, RuntimeConfig
from supplyflow.app.kafka_clients import client_options
from supplyflow.app.settings import Settings
from supplyflow.app.topics import (
    INPUT_TOPICS,
    deltas_topic_name,
    input_group,
    max_dlq_message_bytes,
    max_input_message_bytes,
    routed_topic_name,
    ticks_topic_name,
)

__all__ = ["StopOnFatal", "runtime_config"]

log = logging.getLogger(__name__)


def runtime_config(settings: Settings) -> RuntimeConfig:
    """What the runtime and the agents need of the settings, built once."""
    return RuntimeConfig(
        app_id=settings.app_id,
        topic_prefix=settings.topic_prefix,
        partitions=settings.partitions,
        max_record_bytes=settings.max_record_bytes,
        max_input_message_bytes=max_input_message_bytes(settings),
        max_dlq_message_bytes=max_dlq_message_bytes(settings),
        deltas_topic=deltas_topic_name(settings),
        ticks_topic=ticks_topic_name(settings),
        input_group=input_group(settings),
        kafka=MappingProxyType(client_options(settings)),
        routed_topics=MappingProxyType(
            {settings.topic(name): routed_topic_name(settings, name) for name in INPUT_TOPICS}
        ),
        batch=BatchTunables(
            settings.batch_max,
            settings.batch_window.total_seconds(),
            settings.batch_idle.total_seconds(),
        ),
        stall_after_s=settings.stall_after.total_seconds(),
        fail_on_event_id=settings.test_fail_on_id,
        apply_order=settings.apply_order,
        apply_lateness_ms=int(settings.apply_lateness.total_seconds() * 1000),
    )


class StopOnFatal:
    """Stops the worker process on an error the runtime must not retry (a state format
    this release cannot read): logs it and stops the worker as SIGTERM does, which then
    exits with status 1 and the error (Faust re-raises a worker's ``crash_reason``)."""

    def __init__(self) -> None:
        #: the running Faust worker (None until :func:`run_worker` starts one)
        self.runner: Any = None

    def __call__(self, error: BaseException) -> None:
        log.critical("stopping the worker: %s", error)
        if self.runner is not None:
            self.runner.crash_reason = error
            os.kill(os.getpid(), signal.SIGTERM)
