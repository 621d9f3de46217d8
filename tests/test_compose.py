"""docker-compose.yml, the Dockerfile and the Prometheus config stay in step with the code.

Checked statically (no Docker engine needed): every setting the containers get is one the
worker knows and accepts, the workers reach Kafka on the listener Kafka advertises to
containers, Prometheus scrapes every worker, and the topics the file documents are the
ones the worker creates.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import yaml

from supplyflow.app.settings import CONFIG_ENV, ENV_PREFIX, Settings, load_settings
from supplyflow.app.topics import topic_specs

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services built from this repository are the supplyflow workers.
WORKERS = sorted(name for name, service in SERVICES.items() if "build" in service)

#: What the contract says a user must be able to set, so the compose file shows them all.
CONTRACT_SETTINGS = (
    "BOOTSTRAP",
    "APP_ID",
    "DATA_DIR",
    "TOPIC_PREFIX",
    "PARTITIONS",
    "WEB_HOST",
    "WEB_PORT",
    "SLA_PO_ACK",
    "SLA_ORDER_ACK",
    "SLA_INVOICE",
    "RECEIPT_TOLERANCE_PCT",
    "DEADLINE_GRACE",
    "MAX_RECORD_BYTES",
)
#: Settings every worker of one group must agree on.
GROUP_SETTINGS = ("BOOTSTRAP", "APP_ID", "TOPIC_PREFIX", "PARTITIONS")
_LISTENER = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)$")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process's own SUPPLYFLOW_* variables would feed Settings too."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# -- reading the files ---------------------------------------------------------------------


def _env(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment as strings, from the mapping or the list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = [item.partition("=") for item in raw]
        return {key: (value if sep else None) for key, sep, value in pairs}
    result: dict[str, str | None] = {}
    for key, value in raw.items():
        if value is None:
            result[key] = None
        elif isinstance(value, bool):
            result[key] = "true" if value else "false"
        else:
            result[key] = str(value)
    return result


def _supplyflow_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = _env(service)
    unset = [key for key, value in env.items() if key.startswith(ENV_PREFIX) and value is None]
    assert not unset, f"{unset} take their value from the host: give them one in the file"
    return {k: v for k, v in env.items() if k.startswith(ENV_PREFIX) and v is not None}


def _setting_values(env: Mapping[str, str]) -> dict[str, str]:
    """SUPPLYFLOW_X=value -> {"x": value}, as keyword arguments of load_settings()."""
    return {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in env.items()
        if key != CONFIG_ENV
    }


def _worker_settings(worker: str) -> Settings:
    return load_settings(None, **_setting_values(_supplyflow_env(SERVICES[worker])))


def _kafka() -> tuple[str, dict[str, Any]]:
    found = [
        (name, service)
        for name, service in SERVICES.items()
        if str(service.get("image", "")).startswith("apache/kafka:")
    ]
    assert len(found) == 1, f"expected one apache/kafka service, found {[n for n, _ in found]}"
    return found[0]


def _listeners(value: str | None) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    assert value, "listener list is empty"
    result: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        match = _LISTENER.match(item.strip())
        assert match, f"{item!r} is not NAME://host:port"
        result[match["name"]] = (match["host"], int(match["port"]))
    return result


def _ports(service: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(published host port or None, container port) of every port the service maps."""
    result: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            result.append((int(published) if published else None, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].rsplit(":", 2)
        target = int(parts[-1])
        result.append((int(parts[-2]) if len(parts) > 1 and parts[-2] else None, target))
    return result


def _volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume the service mounts."""
    result: list[tuple[str, str]] = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            result.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            source, _, rest = str(entry).partition(":")
            result.append((source, rest.split(":")[0]))
    return result


def _named_volume_at(service: Mapping[str, Any], target: str) -> str:
    """The named volume mounted at ``target``; fails for a bind mount or none."""
    sources = [src for src, dst in _volume_mounts(service) if dst.rstrip("/") == target]
    assert len(sources) == 1, f"expected one volume mounted at {target}, found {sources}"
    source = sources[0]
    assert source in (COMPOSE.get("volumes") or {}), (
        f"{source!r} mounted at {target} is not a named volume of the top-level `volumes:`"
    )
    return source


def _dockerfile(build: Any) -> Path:
    if isinstance(build, str):
        context, dockerfile = build, "Dockerfile"
    else:
        context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    path = (COMPOSE_FILE.parent / context / dockerfile).resolve()
    assert path.is_file(), f"build file {path} is missing"
    return path


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)
    result = []
    for text in logical:
        instruction, _, args = text.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def _dockerfile_last(path: Path, instruction: str) -> str | None:
    found = [args for name, args in _dockerfile_instructions(path) if name == instruction]
    return found[-1] if found else None


def _exec_form(value: Any, what: str) -> list[str]:
    """A command in exec (JSON list) form; a shell string would hide signals from Faust."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pytest.fail(f"{what} {value!r} is in shell form: write it as a JSON/YAML list")
    assert isinstance(value, list), f"{what} {value!r} is not a list"
    assert all(isinstance(part, str) for part in value), f"{what} {value!r}"
    return value


def _command_line(worker: str) -> list[str]:
    """What the worker container runs: its entrypoint followed by its command."""
    service = SERVICES[worker]
    dockerfile = _dockerfile(service["build"])
    entrypoint = service.get("entrypoint", _dockerfile_last(dockerfile, "ENTRYPOINT"))
    command = service.get("command", _dockerfile_last(dockerfile, "CMD"))
    assert entrypoint is not None, f"{worker}: no entrypoint in compose file or {dockerfile}"
    assert command is not None, f"{worker}: no command in compose file or {dockerfile}"
    return _exec_form(entrypoint, "entrypoint") + _exec_form(command, "command")


# -- the checks ----------------------------------------------------------------------------


def test_compose_file_is_compose_spec() -> None:
    assert "version" not in COMPOSE, "the Compose spec has no `version:` key"
    allowed = {"name", "services", "volumes", "networks", "configs", "secrets", "include"}
    unknown = [k for k in COMPOSE if k not in allowed and not k.startswith("x-")]
    assert not unknown, f"unknown top-level keys {unknown}"
    assert len(WORKERS) >= 2, f"expected at least two workers built from the repo: {WORKERS}"


def test_every_supplyflow_variable_is_a_setting() -> None:
    fields = set(Settings.model_fields)
    for name, service in SERVICES.items():
        for key in _supplyflow_env(service):
            if key == CONFIG_ENV:
                continue
            field = key.removeprefix(ENV_PREFIX).lower()
            assert field in fields, f"{name}: {key} is not a setting (Settings has no {field!r})"


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_environment_is_accepted_by_settings(
    worker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _supplyflow_env(SERVICES[worker])
    from_kwargs = load_settings(None, **_setting_values(env))
    # The container gets them as environment variables: that path must agree.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from_env = load_settings()
    assert from_env.model_dump() == from_kwargs.model_dump()
    assert from_env.web_host == "0.0.0.0", "a worker in a container must bind all interfaces"


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_environment_shows_every_contract_setting(worker: str) -> None:
    fields = set(Settings.model_fields)
    assert {name.lower() for name in CONTRACT_SETTINGS} <= fields
    env = _supplyflow_env(SERVICES[worker])
    missing = [name for name in CONTRACT_SETTINGS if ENV_PREFIX + name not in env]
    assert not missing, f"{worker} does not set {[ENV_PREFIX + m for m in missing]}"


def test_workers_form_one_group_with_their_own_state() -> None:
    envs = {worker: _supplyflow_env(SERVICES[worker]) for worker in WORKERS}
    for name in GROUP_SETTINGS:
        values = {worker: env.get(ENV_PREFIX + name) for worker, env in envs.items()}
        assert len(set(values.values())) == 1, f"workers disagree on {ENV_PREFIX}{name}: {values}"
    volumes = {
        worker: _named_volume_at(SERVICES[worker], str(_worker_settings(worker).data_dir))
        for worker in WORKERS
    }
    assert len(set(volumes.values())) == len(WORKERS), f"workers share a state volume: {volumes}"


def test_workers_bootstrap_on_kafka_internal_listener() -> None:
    kafka_name, kafka = _kafka()
    env = _env(kafka)
    advertised = _listeners(env.get("KAFKA_ADVERTISED_LISTENERS"))
    bound = _listeners(env.get("KAFKA_LISTENERS"))
    protocols = dict(
        item.split(":", 1)
        for item in (env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP") or "").split(",")
    )
    names = {str(n) for n in (kafka_name, kafka.get("hostname"), kafka.get("container_name")) if n}
    internal = {
        f"{host}:{port}": listener for listener, (host, port) in advertised.items() if host in names
    }
    assert internal, f"kafka advertises no listener on {sorted(names)}: {advertised}"
    for listener in internal.values():
        assert bound.get(listener, (None, None))[1] == advertised[listener][1], (
            f"advertised listener {listener} is not bound on its port: {bound}"
        )
        assert listener in protocols, f"{listener} is not in the security protocol map"
    for worker in WORKERS:
        for server in _worker_settings(worker).bootstrap.split(","):
            assert server in internal, (
                f"{worker} bootstraps on {server}, not kafka's internal listener {sorted(internal)}"
            )


def test_each_worker_advertises_its_service_name_not_the_wildcard_it_binds() -> None:
    """Look-ups are forwarded to the advertised URL: it must reach that very container."""
    advertised = {}
    for worker in WORKERS:
        settings = _worker_settings(worker)
        url = urlsplit(settings.web_advertised_url)
        names = {worker, SERVICES[worker].get("hostname"), SERVICES[worker].get("container_name")}
        assert url.hostname in names, f"{worker} advertises {url.geturl()}, not its own name"
        assert url.port == settings.web_port, f"{worker} advertises port {url.port}"
        advertised[worker] = url.geturl()
    assert len(set(advertised.values())) == len(WORKERS), advertised


def test_kafka_advertises_a_host_listener_on_a_published_port() -> None:
    _, kafka = _kafka()
    env = _env(kafka)
    advertised = _listeners(env.get("KAFKA_ADVERTISED_LISTENERS"))
    bound = _listeners(env.get("KAFKA_LISTENERS"))
    published = dict(_ports(kafka))
    host_listeners = {
        listener: port
        for listener, (host, port) in advertised.items()
        if host in ("localhost", "127.0.0.1")
    }
    assert host_listeners, f"kafka advertises no listener for the host: {advertised}"
    for listener, port in host_listeners.items():
        assert port in published, f"{listener} advertises port {port}, which is not published"
        assert published[port] == bound[listener][1], (
            f"host port {port} maps to {published[port]}, but {listener} listens on "
            f"{bound[listener][1]}"
        )


def test_kafka_is_a_single_kraft_node_that_leaves_topics_to_supplyflow() -> None:
    kafka_name, kafka = _kafka()
    env = _env(kafka)
    assert set((env.get("KAFKA_PROCESS_ROLES") or "").split(",")) == {"broker", "controller"}
    node_id = env.get("KAFKA_NODE_ID")
    controller = env.get("KAFKA_CONTROLLER_LISTENER_NAMES")
    assert controller in _listeners(env.get("KAFKA_LISTENERS"))
    controller_port = _listeners(env.get("KAFKA_LISTENERS"))[controller][1]
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") in {
        f"{node_id}@{kafka_name}:{controller_port}",
        f"{node_id}@{kafka.get('hostname', kafka_name)}:{controller_port}",
        f"{node_id}@localhost:{controller_port}",
    }
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
    ):
        assert env.get(key) == "1", f"{key} must be 1 on a single broker"
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", "supplyflow creates its topics"
    assert env.get("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS") == "0"
    for worker in WORKERS:
        assert _worker_settings(worker).replication_factor == 1, (
            f"{worker} would create topics with more replicas than the one broker"
        )
    log_dirs = env.get("KAFKA_LOG_DIRS") or "/tmp/kraft-combined-logs"  # the image's default
    for log_dir in log_dirs.split(","):
        _named_volume_at(kafka, log_dir.rstrip("/"))
    health = _exec_form(kafka.get("healthcheck", {}).get("test"), "kafka healthcheck")
    assert health[0] in ("CMD", "CMD-SHELL")
    assert health[1].endswith("/kafka-broker-api-versions.sh"), health
    server = health[health.index("--bootstrap-server") + 1]
    assert server in {f"{h}:{p}" for h, p in _listeners(env["KAFKA_ADVERTISED_LISTENERS"]).values()}


@pytest.mark.parametrize("worker", WORKERS)
def test_workers_start_once_kafka_is_healthy(worker: str) -> None:
    kafka_name, kafka = _kafka()
    assert "healthcheck" in kafka
    depends = SERVICES[worker].get("depends_on")
    assert isinstance(depends, dict), f"{worker}: depends_on must name a condition"
    assert depends.get(kafka_name, {}).get("condition") == "service_healthy"
    assert SERVICES[worker].get("restart") == "unless-stopped"


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_runs_the_supplyflow_worker_command(worker: str) -> None:
    command = _command_line(worker)
    assert command[:2] == ["supplyflow", "worker"], command
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    target = pyproject["project"]["scripts"].get(command[0])
    assert target, f"pyproject.toml [project.scripts] has no {command[0]!r}"
    module, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize("worker", WORKERS)
def test_worker_image_runs_as_a_user_and_exposes_the_web_port(worker: str) -> None:
    dockerfile = _dockerfile(SERVICES[worker]["build"])
    user = SERVICES[worker].get("user") or _dockerfile_last(dockerfile, "USER")
    assert user, f"{dockerfile} runs as root: add USER"
    assert user.split(":")[0] not in ("root", "0"), f"{worker} runs as root ({user})"
    exposed = " ".join(a for n, a in _dockerfile_instructions(dockerfile) if n == "EXPOSE")
    port = _worker_settings(worker).web_port
    assert str(port) in re.split(r"[\s/]+", exposed), f"{dockerfile} does not EXPOSE {port}"


class _Health(BaseHTTPRequestHandler):
    """Answers like a worker: GET /health with the status the test chose."""

    status = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(self.status if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_worker_healthcheck_probes_health(worker: str, status: int, healthy: bool) -> None:
    test = _exec_form(SERVICES[worker].get("healthcheck", {}).get("test"), "healthcheck")
    # The slim image has Python but neither curl nor wget.
    assert test[:3] == ["CMD", "python", "-c"], test
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    _Health.status, _Health.paths = status, []
    server = HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-worker")
    thread.start()
    try:
        env[ENV_PREFIX + "WEB_PORT"] = str(server.server_address[1])
        result = subprocess.run(
            [sys.executable, "-c", test[3]], env=env, capture_output=True, timeout=30, check=False
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert _Health.paths == ["/health"], (
        f"the healthcheck must GET /health on the port in {ENV_PREFIX}WEB_PORT: {result.stderr!r}"
    )
    assert (result.returncode == 0) is healthy, (status, result.returncode, result.stderr)


def test_prometheus_scrapes_every_worker_on_its_published_web_port() -> None:
    targets: set[str] = set()
    host_ports: list[int] = []
    for worker in WORKERS:
        settings = _worker_settings(worker)
        assert settings.web_host == "0.0.0.0", f"{worker} must bind all interfaces"
        published = [
            host for host, target in _ports(SERVICES[worker]) if target == settings.web_port
        ]
        assert published, f"{worker} does not publish its web port {settings.web_port}"
        assert published[0] is not None, f"{worker}: give its web port a fixed host port"
        host_ports.append(published[0])
        targets.add(f"{worker}:{settings.web_port}")
    assert len(set(host_ports)) == len(host_ports), f"workers share host ports {host_ports}"

    prometheus = [s for s in SERVICES.values() if str(s.get("image", "")).startswith("prom/")]
    assert len(prometheus) == 1
    config_mounts = [
        (COMPOSE_FILE.parent / source).resolve()
        for source, target in _volume_mounts(prometheus[0])
        if target == "/etc/prometheus/prometheus.yml"
    ]
    assert config_mounts, "prometheus does not mount /etc/prometheus/prometheus.yml"
    assert config_mounts[0] == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    config = yaml.safe_load(config_mounts[0].read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["supplyflow"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    scraped = {t for static in job["static_configs"] for t in static["targets"]}
    assert scraped == targets


def test_documented_topics_are_the_ones_the_worker_creates() -> None:
    header = []
    for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    documented = [line.removeprefix("topics:") for line in header if line.startswith("topics:")]
    assert len(documented) == 1, "document the topics in one `# topics: a, b, ...` header line"
    names = {name.strip() for name in documented[0].split(",") if name.strip()}
    for worker in WORKERS:
        specs = topic_specs(_worker_settings(worker))
        created = {spec.name for spec in specs if not spec.internal}
        assert names == created, f"documented {sorted(names)}, {worker} creates {sorted(created)}"
