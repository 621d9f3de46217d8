"""The Prometheus config, the Grafana dashboard and its provisioning stay in step with the code.

Checked without Docker: ``promtool`` accepts the Prometheus config, the metrics a worker
renders and every dashboard query; every metric the dashboard queries is one a worker
exports (names taken from the live ``supplyflow.app.metrics`` code, not a copied list); and
the grafana service in docker-compose.yml mounts the repository's provisioning and
dashboards and reaches the prometheus service on its container port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from supplyflow.agents.metrics import Metrics
from supplyflow.app.metrics import StateProbes, WorkerCollector

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
DASHBOARD_FILE = DASHBOARDS_DIR / "supplyflow.json"
DATASOURCES_FILE = PROVISIONING_DIR / "datasources" / "prometheus.yml"
PROVIDERS_FILE = PROVISIONING_DIR / "dashboards" / "supplyflow.yml"

#: Where the grafana image reads provisioning, and where our provider loads dashboards from.
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
GRAFANA_DASHBOARDS = "/var/lib/grafana/dashboards"
DATASOURCE_UID = "prometheus"
#: Panels and queries pick the data source through the dashboard's variable, so the
#: dashboard imports into any Grafana, whatever its Prometheus data source's uid.
PANEL_DATASOURCE = "${datasource}"
ALERTS_FILE = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
KUBERNETES_CONFIG = ROOT / "deploy" / "prometheus" / "kubernetes.yml"
PROMETHEUS_PORT = 9090
PROMTOOL = "/usr/bin/promtool"
METRIC_NAME = re.compile(r"supplyflow_[a-z_]+")


# -- helpers -------------------------------------------------------------------------------


def _promtool() -> str:
    """The promtool binary; its absence is a broken dev setup, never a reason to skip."""
    found = PROMTOOL if Path(PROMTOOL).is_file() else shutil.which("promtool")
    if not found:
        pytest.fail(
            f"{PROMTOOL} is missing: run `make system-deps` (installs the Debian "
            "`prometheus` package, which provides promtool)"
        )
    return found


def _run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    assert path.is_file(), f"{path} is missing"
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(dashboard, dict), f"{path} is not a JSON object"
    return dashboard


def _panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _query_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Panels that show data (rows only group them)."""
    return [panel for panel in _panels(dashboard) if panel.get("type") != "row"]


def _exprs(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target in the dashboard."""
    return [
        (str(panel.get("title")), str(target.get("expr", "")))
        for panel in _query_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _unknown_metrics(dashboard: Mapping[str, Any], known: set[str]) -> dict[str, list[str]]:
    """Metric name -> titles of the panels querying it, for names not in ``known``."""
    unknown: dict[str, list[str]] = {}
    for title, expr in _exprs(dashboard):
        for name in METRIC_NAME.findall(expr):
            if name not in known:
                unknown.setdefault(name, []).append(title)
    return unknown


def _volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of every volume the service mounts."""
    result: list[tuple[str, str, bool]] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            result.append(
                (
                    str(entry.get("source", "")),
                    str(entry["target"]),
                    bool(entry.get("read_only", False)),
                )
            )
        else:
            source, _, rest = str(entry).partition(":")
            target, _, mode = rest.partition(":")
            result.append((source, target, "ro" in mode.split(",")))
    return result


def _bind_source(service: Mapping[str, Any], target: str) -> tuple[Path, bool]:
    """The repository path bind-mounted at ``target`` and whether it is read-only."""
    found = [(src, ro) for src, dst, ro in _volume_mounts(service) if dst.rstrip("/") == target]
    assert len(found) == 1, f"expected one mount at {target}, found {found}"
    source, read_only = found[0]
    assert source.startswith((".", "/")), f"{source!r} at {target} is not a bind mount"
    return (COMPOSE_FILE.parent / source).resolve(), read_only


def _container_ports(service: Mapping[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports", []) + service.get("expose", []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            ports.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def _service_by_image(prefix: str) -> tuple[str, dict[str, Any]]:
    found = [
        (name, service)
        for name, service in SERVICES.items()
        if str(service.get("image", "")).startswith(prefix)
    ]
    assert len(found) == 1, f"expected one {prefix}* service, found {[n for n, _ in found]}"
    return found[0]


def _env(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in raw.items()}


def _depends_on(service: Mapping[str, Any]) -> set[str]:
    depends = service.get("depends_on") or []
    return set(depends)


# -- what a worker exports -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered_metrics() -> str:
    """The text a worker serves on GET /metrics, with one sample of every series."""
    metrics = Metrics(CollectorRegistry(), app_id="t", version="0")
    metrics.events.labels(topic="po.events", type="po.created", outcome="applied").inc()
    metrics.dead_letters.labels(topic="po.events", reason="invalid").inc()
    metrics.batch_size.labels(topic="po.events").observe(3)
    metrics.record_to_processed.labels(topic="po.events").observe(0.1)
    metrics.event_to_position.observe(0.2)
    metrics.po_sync.labels(system="erp").observe(12)
    metrics.exceptions_opened.labels(rule="ACK_MISSING").inc()
    metrics.exceptions_resolved.labels(rule="ACK_MISSING").inc()
    metrics.note_processed("po.events", 0, 4)
    probes = StateProbes(
        lag=lambda: {("po.events", 0): (10, 5)},
        table_keys=lambda: {"po": 1},
        disk_bytes=lambda: 1,
        recovery_remaining=lambda: 0,
        open_exceptions=lambda: {"ACK_MISSING": 1},
        pending_deadlines=lambda: 0,
        rocksdb_memory=lambda: {"block_cache": (1, 2), "memtables": (1, 2)},
        stalled=lambda: {("po.events", 0): False},
    )
    metrics.registry.register(WorkerCollector(probes, rules=("ACK_MISSING",)))
    return metrics.render().decode("utf-8")


@pytest.fixture(scope="module")
def known_series(rendered_metrics: str) -> set[str]:
    """Every sample name a worker exports (``_total``, ``_bucket``, ``_sum``, ... included)."""
    names = {
        sample.name
        for family in text_string_to_metric_families(rendered_metrics)
        for sample in family.samples
    }
    # The fixture must have produced the families every dashboard panel builds on.
    assert "supplyflow_events_total" in names, sorted(names)
    assert "supplyflow_consumer_lag_records" in names, sorted(names)
    return names


# -- the checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [PROMETHEUS_CONFIG, KUBERNETES_CONFIG], ids=lambda p: p.name)
def test_prometheus_config_passes_promtool(config: Path) -> None:
    result = _run_promtool("check", "config", str(config.relative_to(ROOT)))
    assert result.returncode == 0, (
        f"promtool check config failed ({result.returncode}):\n{result.stdout}{result.stderr}"
    )
    rule_files = yaml.safe_load(config.read_text(encoding="utf-8")).get("rule_files", [])
    assert [(config.parent / f).resolve() for f in rule_files] == [ALERTS_FILE]


def test_exported_metrics_pass_promtool_lint(rendered_metrics: str) -> None:
    result = _run_promtool("check", "metrics", stdin=rendered_metrics)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    for line in problems:
        print(line)
    assert result.returncode == 0, f"promtool check metrics failed ({result.returncode})"
    assert not problems, "promtool check metrics reported:\n" + "\n".join(problems)


def test_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    dashboard = _load_dashboard()
    assert dashboard.get("uid") == "supplyflow"
    assert dashboard.get("title") == "supplyflow"
    assert isinstance(dashboard.get("schemaVersion"), int)
    assert dashboard["schemaVersion"] >= 36, "reference data sources by uid (schema 36+)"
    assert dashboard.get("refresh") == "10s"
    assert dashboard.get("time") == {"from": "now-1h", "to": "now"}
    # A provisioned dashboard gets its id from Grafana.
    assert dashboard.get("id") is None
    panels = list(_panels(dashboard))
    assert _query_panels(dashboard), "the dashboard has no panels"
    ids = [panel.get("id") for panel in panels]
    assert len(set(ids)) == len(ids), f"panel ids repeat: {ids}"


def test_every_panel_has_a_title_a_unit_and_prometheus_queries() -> None:
    problems: list[str] = []
    for panel in _query_panels(_load_dashboard()):
        title = str(panel.get("title") or "").strip()
        where = f"panel {panel.get('id')} {title!r}"
        if not title:
            problems.append(f"{where}: no title")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
        datasource = panel.get("datasource") or {}
        if datasource.get("uid") != PANEL_DATASOURCE:
            problems.append(f"{where}: panel datasource {datasource!r}")
        targets = panel.get("targets") or []
        if not any(str(target.get("expr", "")).strip() for target in targets):
            problems.append(f"{where}: no target with an expr")
        ref_ids = [target.get("refId") for target in targets]
        if len(set(ref_ids)) != len(ref_ids):
            problems.append(f"{where}: refIds repeat {ref_ids}")
        for target in targets:
            source = target.get("datasource") or {}
            if source.get("uid") != PANEL_DATASOURCE or source.get("type") != "prometheus":
                problems.append(f"{where}: target {target.get('refId')} datasource {source!r}")
            if not str(target.get("expr", "")).strip():
                problems.append(f"{where}: target {target.get('refId')} has no expr")
    assert not problems, "\n".join(problems)


def test_dashboard_queries_only_metrics_a_worker_exports(known_series: set[str]) -> None:
    dashboard = _load_dashboard()
    queried = {name for _, expr in _exprs(dashboard) for name in METRIC_NAME.findall(expr)}
    assert queried, "no dashboard expr queries a supplyflow_* metric"
    unknown = _unknown_metrics(dashboard, known_series)
    assert not unknown, (
        f"the dashboard queries metrics no worker exports: {sorted(unknown)} "
        f"(in panels {unknown}); exported: {sorted(known_series)}"
    )


def test_unknown_metric_check_reports_a_misspelt_name(known_series: set[str]) -> None:
    """The check above can fail: a near-miss name or a missing suffix is reported."""
    dashboard = {
        "panels": [
            {
                "title": "typo",
                "targets": [
                    {"expr": "sum(rate(supplyflow_events_totl[1m]))"},
                    {"expr": "histogram_quantile(0.5, rate(supplyflow_po_sync_seconds[5m]))"},
                    {"expr": "sum(rate(supplyflow_events_total[1m]))"},
                ],
            }
        ]
    }
    assert _unknown_metrics(dashboard, known_series) == {
        "supplyflow_events_totl": ["typo"],
        "supplyflow_po_sync_seconds": ["typo"],
    }


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expr as the expression of a recording rule."""
    exprs = _exprs(_load_dashboard())
    assert exprs
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}:check", "expr": expr}
                    for index, (_, expr) in enumerate(exprs)
                ],
            }
        ]
    }
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    result = _run_promtool("check", "rules", str(rule_file))
    assert result.returncode == 0, (
        f"a dashboard expr is not valid PromQL:\n{result.stdout}{result.stderr}"
    )


def test_grafana_mounts_the_repository_provisioning_and_dashboards() -> None:
    _, grafana = _service_by_image("grafana/grafana:")
    tag = str(grafana["image"]).rpartition(":")[2]
    assert tag not in ("", "latest"), f"pin a concrete grafana image tag, not {tag!r}"

    provisioning, _ = _bind_source(grafana, GRAFANA_PROVISIONING)
    assert provisioning == PROVISIONING_DIR, f"{GRAFANA_PROVISIONING} comes from {provisioning}"
    assert provisioning.is_dir(), f"{provisioning} does not exist"
    assert DATASOURCES_FILE.is_file(), f"{DATASOURCES_FILE} is missing"
    assert PROVIDERS_FILE.is_file(), f"{PROVIDERS_FILE} is missing"

    dashboards, read_only = _bind_source(grafana, GRAFANA_DASHBOARDS)
    assert dashboards == DASHBOARDS_DIR, f"{GRAFANA_DASHBOARDS} comes from {dashboards}"
    assert dashboards.is_dir(), f"{dashboards} does not exist"
    assert read_only, f"mount {GRAFANA_DASHBOARDS} read-only"
    assert DASHBOARD_FILE.parent == dashboards

    providers = yaml.safe_load(PROVIDERS_FILE.read_text(encoding="utf-8"))["providers"]
    paths = {p["options"]["path"].rstrip("/") for p in providers if p.get("type") == "file"}
    assert paths == {GRAFANA_DASHBOARDS}, f"file providers load {paths}"

    env = _env(grafana)
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    assert 3000 in _container_ports(grafana), "grafana serves on container port 3000"
    prometheus_name, _ = _service_by_image("prom/prometheus:")
    assert prometheus_name in _depends_on(grafana)


def test_grafana_datasource_is_the_prometheus_service() -> None:
    datasources = yaml.safe_load(DATASOURCES_FILE.read_text(encoding="utf-8"))["datasources"]
    ours = [ds for ds in datasources if ds.get("uid") == DATASOURCE_UID]
    assert len(ours) == 1, f"expected one datasource with uid {DATASOURCE_UID!r}: {datasources}"
    datasource = ours[0]
    assert datasource.get("type") == "prometheus"
    assert datasource.get("isDefault") is True
    assert datasource.get("access", "proxy") == "proxy", "the browser cannot reach prometheus:9090"

    prometheus_name, prometheus = _service_by_image("prom/prometheus:")
    names = {
        str(n)
        for n in (prometheus_name, prometheus.get("hostname"), prometheus.get("container_name"))
        if n
    }
    url = urlsplit(str(datasource.get("url")))
    assert url.scheme == "http", url
    assert url.hostname in names, f"datasource host {url.hostname!r} is not one of {names}"
    assert url.port == PROMETHEUS_PORT, f"datasource port {url.port}, prometheus listens on 9090"
    assert PROMETHEUS_PORT in _container_ports(prometheus), (
        f"the prometheus service does not map container port {PROMETHEUS_PORT}"
    )
    command = prometheus.get("command") or []
    listen = [str(a) for a in command if str(a).startswith("--web.listen-address")]
    assert all(a.endswith(f":{PROMETHEUS_PORT}") for a in listen), listen


# -- alert rules -------------------------------------------------------------------------------


def _alert_rules(path: Path = ALERTS_FILE) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_pass_promtool_check() -> None:
    result = _run_promtool("check", "rules", str(ALERTS_FILE.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = _run_promtool("test", "rules", str(ALERTS_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TESTS.read_text(encoding="utf-8")))
    assert tested == {rule["alert"] for rule in _alert_rules()}, "every alert has a test"


def test_alert_unit_tests_can_fail(tmp_path: Path) -> None:
    """The tests above catch a rule that fires too late."""
    rules = ALERTS_FILE.read_text(encoding="utf-8").replace("for: 2m", "for: 20m")
    (tmp_path / "alerts.yml").write_text(rules, encoding="utf-8")
    (tmp_path / "alerts.test.yml").write_text(ALERTS_TESTS.read_text(encoding="utf-8"))
    result = _run_promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert result.returncode != 0
    assert "SupplyflowWorkerDown" in result.stdout + result.stderr


def test_alerts_cover_what_operators_must_hear_about() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    for name in (
        "SupplyflowWorkerDown",
        "SupplyflowConsumerLagGrowing",
        "SupplyflowPartitionStalled",
        "SupplyflowDeadLetters",
        "SupplyflowExceptionsOpen",
        "SupplyflowRecoveryTooLong",
    ):
        assert name in rules, f"no {name} alert"
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
    assert "by (job, rule)" in rules["SupplyflowExceptionsOpen"]["expr"]


def test_alerts_query_only_metrics_a_worker_exports(known_series: set[str]) -> None:
    used = {name for rule in _alert_rules() for name in METRIC_NAME.findall(str(rule["expr"]))}
    unknown = used - known_series
    assert not unknown, f"alert rules query metrics no worker exports: {sorted(unknown)}"


def test_compose_prometheus_loads_the_alert_rules() -> None:
    _, prometheus = _service_by_image("prom/prometheus:")
    mounted = {target: source for source, target, _ in _volume_mounts(prometheus)}
    config_dir = Path("/etc/prometheus")
    for rule_file in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]:
        target = str(config_dir / rule_file)
        assert target in mounted, f"{target} is not mounted into the prometheus service"
        assert (COMPOSE_FILE.parent / mounted[target]).resolve() == ALERTS_FILE


# -- the dashboard imports into any Grafana ------------------------------------------------------


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def test_dashboard_has_datasource_app_and_worker_variables() -> None:
    variables = {v["name"]: v for v in _load_dashboard()["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    for name, label in (("app_id", "app_id"), ("worker", "instance")):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == PANEL_DATASOURCE
        query = variable["query"]["query"]
        assert query == variable["definition"]
        assert query.startswith("label_values(supplyflow_build_info")
        assert query.endswith(f", {label})")
    assert "$app_id" in variables["worker"]["query"]["query"], "workers of the chosen app"
    assert variables["worker"]["includeAll"] is True
    assert variables["worker"]["multi"] is True


def test_dashboard_names_no_datasource_of_its_own() -> None:
    """A fresh Grafana has no data source with our uid: everything goes through the variable."""
    dashboard = _load_dashboard()
    sources = [value for key, value in _walk(dashboard) if key == "datasource"]
    assert sources
    builtin = {"type": "grafana", "uid": "-- Grafana --"}  # every Grafana has it
    for source in sources:
        assert source in ({"type": "prometheus", "uid": PANEL_DATASOURCE}, builtin), source
    assert dashboard.get("id") is None
    assert "__inputs" not in dashboard, "nothing to map on import"


def test_every_query_follows_the_worker_variable() -> None:
    for title, expr in _exprs(_load_dashboard()):
        selectors = re.findall(r"(supplyflow_[a-z_]+)(\{[^}]*\})?", expr)
        assert selectors, (title, expr)
        for name, matchers in selectors:
            assert 'instance=~"$worker"' in matchers, f"{title}: {name} ignores $worker"
