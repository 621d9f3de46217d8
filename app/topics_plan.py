"""``supplyflow topics plan``: every topic a deployment needs, and the ACLs its workers need.

Many managed clusters forbid clients to create topics. With ``SUPPLYFLOW_CREATE_TOPICS=false``
the workers only check that the topics exist; this plan says what to pre-provision (name,
partitions, replication, configs: the same :func:`~supplyflow.app.topics.topic_specs` the
workers create from) and prints the ``kafka-topics.sh`` and ``kafka-acls.sh`` lines to do it
with the Kafka distribution's tools. Nothing here connects to Kafka.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Final

from supplyflow.app.settings import Settings
from supplyflow.app.topics import (
    DLQ,
    EXCEPTIONS,
    INPUT_TOPICS,
    POSITIONS,
    TopicSpec,
    routed_topic_name,
    topic_specs,
)

__all__ = ["TopicAcl", "default_principal", "plan", "render_plan"]

#: What the workers do with each contract topic (internal topics: read and write).
_CONTRACT_OPERATIONS: Final = {
    **dict.fromkeys(INPUT_TOPICS, ("Read", "Describe")),
    POSITIONS: ("Write", "Describe"),
    # The workers read back the tails of these after taking a partition over.
    EXCEPTIONS: ("Read", "Write", "Describe"),
    DLQ: ("Read", "Write", "Describe"),
}
_INTERNAL_OPERATIONS: Final = ("Read", "Write", "Describe")
#: The routed topics also lose the records their owners applied (DeleteRecords).
_ROUTED_OPERATIONS: Final = ("Read", "Write", "Describe", "Delete")
_BOOTSTRAP_PLACEHOLDER: Final = "$BOOTSTRAP"


@dataclass(frozen=True)
class TopicAcl:
    """The operations the workers' principal needs on one topic."""

    topic: str
    operations: tuple[str, ...]


def default_principal(settings: Settings) -> str:
    """``User:<SASL user>`` when there is one, else a placeholder to replace."""
    return f"User:{settings.kafka_sasl_username or 'supplyflow'}"


def _operations(settings: Settings, spec: TopicSpec) -> tuple[str, ...]:
    if spec.name in {routed_topic_name(settings, name) for name in INPUT_TOPICS}:
        return _ROUTED_OPERATIONS
    if spec.internal:
        return _INTERNAL_OPERATIONS
    for name, operations in _CONTRACT_OPERATIONS.items():
        if spec.name == settings.topic(name):
            return operations
    raise ValueError(f"no ACL plan for topic {spec.name}")


def plan(settings: Settings, principal: str | None = None) -> dict[str, Any]:
    """The topics and ACLs as data (``--json``)."""
    who = principal or default_principal(settings)
    specs = topic_specs(settings)
    groups = [settings.app_id, f"{settings.app_id}-input"]
    return {
        "bootstrap": settings.bootstrap,
        "principal": who,
        "replication_factor": settings.replication_factor,
        "create_topics": settings.create_topics,
        "topics": [
            {
                "name": s.name,
                "partitions": s.partitions,
                "config": s.config,
                "internal": s.internal,
                "operations": list(_operations(settings, s)),
            }
            for s in specs
        ],
        "groups": [{"name": g, "operations": ["Read", "Describe"]} for g in groups],
        # Creating topics needs Create; without it the workers only describe them.
        "cluster_operations": ["Create"] if settings.create_topics else [],
    }


def render_plan(settings: Settings, principal: str | None = None) -> str:
    """The plan as a table and shell lines for ``kafka-topics.sh`` and ``kafka-acls.sh``."""
    data = plan(settings, principal)
    who = data["principal"]
    width = max(len(t["name"]) for t in data["topics"])
    lines = [
        f"# supplyflow topics for app id {settings.app_id!r}, topic prefix "
        f"{settings.topic_prefix!r}: {settings.partitions} partitions each, replication "
        f"factor {settings.replication_factor} (SUPPLYFLOW_PARTITIONS, "
        "SUPPLYFLOW_REPLICATION_FACTOR)",
        f"# {'topic'.ljust(width)}  partitions  configs",
    ]
    for topic in data["topics"]:
        config = ",".join(f"{k}={v}" for k, v in topic["config"].items()) or "-"
        kind = "  (internal)" if topic["internal"] else ""
        lines.append(f"  {topic['name'].ljust(width)}  {topic['partitions']:>10}  {config}{kind}")
    bootstrap = _BOOTSTRAP_PLACEHOLDER
    lines += [
        "",
        f"# Create them (set BOOTSTRAP={settings.bootstrap}; add --command-config with the "
        "admin's TLS/SASL client properties):",
    ]
    for topic in data["topics"]:
        args = [
            "kafka-topics.sh",
            "--bootstrap-server",
            bootstrap,
            "--create",
            "--if-not-exists",
            "--topic",
            topic["name"],
            "--partitions",
            str(topic["partitions"]),
            "--replication-factor",
            str(data["replication_factor"]),
        ]
        for key, value in topic["config"].items():
            args += ["--config", f"{key}={value}"]
        lines.append(_shell(args))
    lines += ["", f"# ACLs for the workers' principal {who}:"]
    for topic in data["topics"]:
        lines.append(_acl(bootstrap, who, topic["operations"], ["--topic", topic["name"]]))
    for group in data["groups"]:
        lines.append(_acl(bootstrap, who, group["operations"], ["--group", group["name"]]))
    if data["cluster_operations"]:
        lines += [
            "# SUPPLYFLOW_CREATE_TOPICS=true: the workers create missing topics themselves",
            _acl(bootstrap, who, data["cluster_operations"], ["--cluster"]),
        ]
    lines += [
        "",
        "# Operators running `supplyflow produce` or `supplyflow dlq replay` also need Write on",
        "# the input topics (and IdempotentWrite on the cluster on Kafka before 3.0).",
    ]
    return "\n".join(lines) + "\n"


def _acl(bootstrap: str, principal: str, operations: list[str], resource: list[str]) -> str:
    args = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--add", "--allow-principal"]
    args.append(principal)
    for operation in operations:
        args += ["--operation", operation]
    return _shell(args + resource)


def _shell(args: list[str]) -> str:
    """One shell line; ``$BOOTSTRAP`` stays a variable reference."""
    return " ".join(arg if arg == _BOOTSTRAP_PLACEHOLDER else shlex.quote(arg) for arg in args)
