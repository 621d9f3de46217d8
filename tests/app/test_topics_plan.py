"""`supplyflow topics plan`: every topic the workers use, as shell lines that say the same."""

from __future__ import annotations

import os
import shlex

import pytest

from supplyflow.app.settings import load_settings
from supplyflow.app.topics import topic_specs
from supplyflow.app.topics_plan import plan, render_plan


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SUPPLYFLOW_"):
            monkeypatch.delenv(name)


def _lines(text: str, tool: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.startswith(tool)]


def test_plan_lists_every_topic_spec_with_its_configs() -> None:
    settings = load_settings(topic_prefix="acme.", app_id="sf", partitions=12, replication_factor=3)
    text = render_plan(settings)
    creates = _lines(text, "kafka-topics.sh")
    specs = topic_specs(settings)
    assert len(creates) == len(specs)
    for args, spec in zip(creates, specs, strict=True):
        assert args[args.index("--topic") + 1] == spec.name
        assert args[args.index("--partitions") + 1] == "12"
        assert args[args.index("--replication-factor") + 1] == "3"
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        assert configs == [f"{k}={v}" for k, v in spec.config.items()]
        assert "$BOOTSTRAP" in args


def test_acls_grant_the_workers_what_they_do_and_nothing_more() -> None:
    settings = load_settings(
        topic_prefix="acme.",
        app_id="sf",
        create_topics=False,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc-sf",
        kafka_sasl_password="pw",
    )
    data = plan(settings)
    assert data["principal"] == "User:svc-sf"
    ops = {t["name"]: set(t["operations"]) for t in data["topics"]}
    assert ops["acme.po.events"] == {"Read", "Describe"}
    assert ops["acme.inventory.positions"] == {"Write", "Describe"}
    assert ops["acme.dlq"] == {"Read", "Write", "Describe"}
    assert ops["sf-po-changelog"] == {"Read", "Write", "Describe"}
    # workers delete the routed records they applied
    assert ops["sf-po.events-routed"] == {"Read", "Write", "Describe", "Delete"}
    assert data["cluster_operations"] == []
    acls = _lines(render_plan(settings, "User:other"), "kafka-acls.sh")
    assert all(a[a.index("--allow-principal") + 1] == "User:other" for a in acls)
    groups = {a[a.index("--group") + 1] for a in acls if "--group" in a}
    assert groups == {"sf", "sf-input"}
    assert not any("--cluster" in a for a in acls)
    assert any("--cluster" in a for a in _lines(render_plan(load_settings()), "kafka-acls.sh"))
