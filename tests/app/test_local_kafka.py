"""Unit tests of ``supplyflow.app.local_kafka`` that need neither Java, Maven nor a network.

The broker itself is replaced by stand-ins: a tiny in-process server that speaks just enough
of the Kafka protocol (ApiVersions v0, Metadata v4), and short-lived Python processes whose
command line looks like ``... kafka.Kafka <home>/server.properties``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supplyflow.app.local_kafka import (
    KAFKA_VERSION,
    LocalKafkaConfig,
    LocalKafkaError,
    default_config,
    down,
    fetch,
    log_tail,
    render_server_properties,
    status,
    up,
    wait_until_ready,
)
from supplyflow.app.local_kafka.home import (
    ensure_cluster_id,
    java_command,
    new_cluster_id,
    prepare_home,
    settings_drift,
)
from supplyflow.app.local_kafka.process import command_line, is_our_broker, write_pid_file
from supplyflow.app.local_kafka.protocol import encode_request, parse_bootstrap, probe
from supplyflow.app.local_kafka.tooling import (
    find_java,
    java_major_version,
    libs_complete,
    parse_java_version,
    resource_text,
)

WAIT = 10.0


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_cfg(tmp_path: Path, port: int | None = None) -> LocalKafkaConfig:
    return LocalKafkaConfig(
        home=tmp_path / "home",
        cache_dir=tmp_path / "cache",
        port=port if port is not None else free_port(),
        controller_port=free_port(),
    )


def parse_properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def wait_for(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


class _FakeKafkaHandler(socketserver.BaseRequestHandler):
    """Answers ApiVersions v0 and Metadata v4 like a one-broker cluster."""

    server: _FakeKafkaServer

    def handle(self) -> None:
        while True:
            head = self._read(4)
            if head is None:
                return
            (size,) = struct.unpack(">i", head)
            request = self._read(size)
            if request is None:
                return
            api_key, _version, correlation_id = struct.unpack_from(">hhi", request, 0)
            if api_key == 18:
                apis = [(18, 0, 4), (3, 0, 12)]
                body = struct.pack(">hi", 0, len(apis)) + b"".join(
                    struct.pack(">hhh", *api) for api in apis
                )
            elif api_key == 3:
                host = b"127.0.0.1"
                brokers = b"".join(
                    struct.pack(">ih", node, len(host)) + host + struct.pack(">ih", 9092, -1)
                    for node in range(self.server.broker_count)
                )
                body = struct.pack(">ii", 0, self.server.broker_count) + brokers
                body += struct.pack(">hii", -1, 1, 0)  # no cluster id, controller 1, no topics
            else:
                return
            payload = struct.pack(">i", correlation_id) + body
            self.request.sendall(struct.pack(">i", len(payload)) + payload)

    def _read(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.request.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data


class _FakeKafkaServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    broker_count = 1


@pytest.fixture
def fake_kafka() -> Iterator[_FakeKafkaServer]:
    server = _FakeKafkaServer(("127.0.0.1", 0), _FakeKafkaHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


@pytest.fixture
def plain_listener() -> Iterator[tuple[socket.socket, int]]:
    """A socket that listens but never speaks Kafka (connections are accepted by the OS)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock, sock.getsockname()[1]
    sock.close()


FAKE_BROKER = """
import pathlib, signal, sys, time
if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(120)
"""


@pytest.fixture
def spawn_fake_broker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes whose argv looks like our broker's (``kafka.Kafka <properties>``)."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(cfg: LocalKafkaConfig, *, ignore_term: bool = False) -> subprocess.Popen[bytes]:
        ready = tmp_path / f"ready-{len(started)}"
        mode = "ignore-term" if ignore_term else "normal"
        argv = [sys.executable, "-c", FAKE_BROKER, str(ready), mode]
        argv += ["kafka.Kafka", str(cfg.paths.server_properties)]
        process = subprocess.Popen(argv, start_new_session=True)
        started.append(process)
        wait_for(ready.exists)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(WAIT)


# --------------------------------------------------------------------------- config


def test_server_properties_describe_a_single_node_kraft_broker(tmp_path: Path) -> None:
    cfg = LocalKafkaConfig(home=tmp_path / "h", cache_dir=tmp_path / "c", port=19500)
    props = parse_properties(render_server_properties(cfg))
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19501"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19500,CONTROLLER://127.0.0.1:19501"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19500"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "h" / "data")
    assert props["num.partitions"] == "8"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_server_properties_follow_explicit_ports_and_partitions(tmp_path: Path) -> None:
    cfg = LocalKafkaConfig(
        home=tmp_path, cache_dir=tmp_path, port=19600, controller_port=19700, partitions=3
    )
    props = parse_properties(render_server_properties(cfg))
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19700"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19600,CONTROLLER://127.0.0.1:19700"
    assert props["num.partitions"] == "3"
    assert cfg.bootstrap == "127.0.0.1:19600"


def test_secure_listener_adds_sasl_ssl_with_a_private_pem_keystore(tmp_path: Path) -> None:
    cert, key = tmp_path / "broker.pem", tmp_path / "broker-key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    cfg = LocalKafkaConfig(
        home=tmp_path / "h",
        cache_dir=tmp_path / "c",
        port=19500,
        secure_port=19510,
        tls_cert=cert,
        tls_key=key,
    )
    props = parse_properties(render_server_properties(cfg))
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19500,CONTROLLER://127.0.0.1:19501,SASL_SSL://127.0.0.1:19510"
    )
    assert props["advertised.listeners"].endswith(",SASL_SSL://127.0.0.1:19510")
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512,OAUTHBEARER"
    assert "OAuthBearerLoginModule" in props["listener.name.sasl_ssl.oauthbearer.sasl.jaas.config"]
    assert "ScramLoginModule" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert cfg.secure_bootstrap == "127.0.0.1:19510"
    prepare_home(cfg)
    keystore = cfg.paths.keystore
    assert props["listener.name.sasl_ssl.ssl.keystore.location"] == str(keystore)
    assert keystore.read_text().index("PRIVATE KEY") < keystore.read_text().index("CERTIFICATE")
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600


def test_secure_listener_needs_a_pkcs8_key_and_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError, match="--tls-cert and --tls-key"):
        LocalKafkaConfig(home=tmp_path, cache_dir=tmp_path, secure_port=19510)
    with pytest.raises(LocalKafkaError, match="other than"):
        LocalKafkaConfig(home=tmp_path, cache_dir=tmp_path, port=19500, secure_port=19501)
    key = tmp_path / "rsa.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n")
    cfg = LocalKafkaConfig(
        home=tmp_path / "h", cache_dir=tmp_path, secure_port=19510, tls_cert=key, tls_key=key
    )
    with pytest.raises(LocalKafkaError, match="openssl pkcs8 -topk8 -nocrypt"):
        prepare_home(cfg)


def test_config_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = LocalKafkaConfig(home=Path("rel/home"), cache_dir=Path("rel/cache"))
    assert cfg.home == tmp_path / "rel" / "home"
    assert cfg.paths.server_properties == tmp_path / "rel" / "home" / "server.properties"
    assert cfg.paths.libs == tmp_path / "rel" / "cache" / "libs"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 0}, "not a TCP port"),
        ({"port": 70000}, "not a TCP port"),
        ({"port": 19000, "controller_port": 19000}, "must differ"),
        ({"partitions": 0}, "partitions"),
        ({"heap": "lots"}, "JVM size"),
        ({"host": "a b"}, "host"),
    ],
)
def test_config_rejects_bad_values(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(LocalKafkaError, match=message):
        LocalKafkaConfig(home=tmp_path, cache_dir=tmp_path, **changes)  # type: ignore[arg-type]


def test_default_config_uses_cwd_and_xdg_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUPPLYFLOW_KAFKA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cfg = default_config()
    assert cfg.home == tmp_path / ".supplyflow" / "kafka"
    assert cfg.cache_dir == tmp_path / "xdg" / "supplyflow" / f"kafka-{KAFKA_VERSION}"
    assert cfg.port == 9092
    assert cfg.resolved_controller_port == 9093


def test_default_config_honours_env_home_and_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_HOME", str(tmp_path / "k"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    cfg = default_config(port=19092)
    assert cfg.home == tmp_path / "k"
    assert cfg.cache_dir == tmp_path / "user" / ".cache" / "supplyflow" / f"kafka-{KAFKA_VERSION}"
    assert cfg.bootstrap == "127.0.0.1:19092"
    assert default_config(home=tmp_path / "explicit").home == tmp_path / "explicit"


def test_package_data_ships_pom_and_bounded_log_config() -> None:
    pom = resource_text("pom.xml")
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert f"<version>{KAFKA_VERSION}</version>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom
    log4j = parse_properties(resource_text("log4j2.properties").replace(" = ", "="))
    assert log4j["appender.server.type"] == "RollingFile"
    assert log4j["appender.server.fileName"] == "${sys:kafka.logs.dir}/server.log"
    assert log4j["appender.server.policies.size.size"] == "50MB"
    assert log4j["appender.server.strategy.max"] == "2"


# --------------------------------------------------------------------------- protocol


def test_parse_bootstrap_accepts_lists_ipv6_and_bare_hosts() -> None:
    assert parse_bootstrap("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap("[::1]:9093") == [("::1", 9093)]
    assert parse_bootstrap("PLAINTEXT://h:9") == [("h", 9)]
    assert parse_bootstrap("kafka") == [("kafka", 9092)]
    with pytest.raises(ValueError, match="empty"):
        parse_bootstrap(" , ")
    with pytest.raises(ValueError, match="host:port"):
        parse_bootstrap("h:port")


def test_encode_request_has_size_and_v1_header() -> None:
    frame = encode_request(18, 0, 7, b"")
    (size,) = struct.unpack_from(">i", frame, 0)
    assert size == len(frame) - 4
    api_key, version, correlation, client_len = struct.unpack_from(">hhih", frame, 4)
    assert (api_key, version, correlation) == (18, 0, 7)
    assert frame[14 : 14 + client_len] == b"supplyflow-local-kafka"


def test_probe_and_wait_until_ready_accept_a_kafka_answer(fake_kafka: _FakeKafkaServer) -> None:
    port = fake_kafka.server_address[1]
    result = probe("127.0.0.1", port)
    assert result.ready
    assert result.brokers == ((0, "127.0.0.1", 9092),)
    assert wait_until_ready(f"127.0.0.1:{free_port()},127.0.0.1:{port}", timeout=5)


def test_metadata_without_brokers_is_not_ready(fake_kafka: _FakeKafkaServer) -> None:
    fake_kafka.broker_count = 0
    port = fake_kafka.server_address[1]
    assert probe("127.0.0.1", port).reason == "metadata lists no broker yet"
    started = time.monotonic()
    assert not wait_until_ready(f"127.0.0.1:{port}", timeout=0.6)
    assert time.monotonic() - started < 3


def test_an_open_port_that_is_not_kafka_is_not_ready(
    plain_listener: tuple[socket.socket, int],
) -> None:
    _sock, port = plain_listener
    result = probe("127.0.0.1", port, timeout=0.3)
    assert not result.ready
    assert not wait_until_ready(f"127.0.0.1:{port}", timeout=0.5)


def test_a_closed_port_is_not_ready_and_fails_fast() -> None:
    started = time.monotonic()
    assert not wait_until_ready(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------- java and maven


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "25-ea" 2025-09-16', 25),
        ("no version here", None),
    ],
)
def test_parse_java_version(output: str, major: int | None) -> None:
    assert parse_java_version(output) == major


def test_java_missing_tells_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError) as caught:
        find_java()
    message = str(caught.value)
    assert message.startswith("java not found")
    assert "apt-get install openjdk-17-jre-headless" in message
    assert "SUPPLYFLOW_BOOTSTRAP" in message


def test_java_home_without_java_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(LocalKafkaError, match=r"JAVA_HOME=.*jdk has no executable bin/java"):
        find_java()


def test_java_home_wins_and_old_java_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jdk" / "bin").mkdir(parents=True)
    java = write_script(
        tmp_path / "jdk" / "bin" / "java", "echo 'java version \"1.8.0_392\"' >&2\n"
    )
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert find_java() == java
    with pytest.raises(LocalKafkaError, match=r"is Java 8, but Kafka .* needs Java 17"):
        java_major_version(java)


def test_java_17_is_accepted(tmp_path: Path) -> None:
    java = write_script(tmp_path / "java", "echo 'openjdk version \"17.0.2\" 2022-01-18' >&2\n")
    assert java_major_version(java) == 17


def test_up_without_java_fails_before_touching_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cfg = make_cfg(tmp_path)
    with pytest.raises(LocalKafkaError, match="java not found"):
        up(cfg)
    assert not cfg.home.exists()
    assert not cfg.cache_dir.exists()


FAKE_MVN = """
echo run >> "$MVN_CALLS"
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
if [ -n "$MVN_FAIL" ]; then
  echo "[ERROR] first line"; echo "[ERROR] Could not resolve dependencies"; exit 3
fi
mkdir -p "$out"
echo jar > "$out/kafka_2.13-4.1.1.jar"
echo jar > "$out/kafka-clients-4.1.1.jar"
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir / "mvn", FAKE_MVN)
    calls = tmp_path / "mvn-calls"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("MVN_CALLS", str(calls))
    return calls


def test_fetch_runs_maven_once_then_uses_the_cache(tmp_path: Path, fake_mvn: Path) -> None:
    cfg = make_cfg(tmp_path)
    libs = fetch(cfg)
    assert libs == cfg.cache_dir / "libs"
    assert sorted(p.name for p in libs.iterdir()) == [
        "kafka-clients-4.1.1.jar",
        "kafka_2.13-4.1.1.jar",
    ]
    assert libs_complete(cfg)
    assert (cfg.cache_dir / "pom.xml").read_text(encoding="utf-8") == resource_text("pom.xml")
    assert fetch(cfg) == libs
    assert fake_mvn.read_text(encoding="utf-8").splitlines() == ["run"]


def test_fetch_refetches_when_a_jar_went_missing(tmp_path: Path, fake_mvn: Path) -> None:
    cfg = make_cfg(tmp_path)
    fetch(cfg).joinpath("kafka-clients-4.1.1.jar").unlink()
    assert not libs_complete(cfg)
    assert (fetch(cfg) / "kafka-clients-4.1.1.jar").is_file()
    assert len(fake_mvn.read_text(encoding="utf-8").splitlines()) == 2


def test_marker_of_another_pom_is_not_complete(tmp_path: Path, fake_mvn: Path) -> None:
    cfg = make_cfg(tmp_path)
    fetch(cfg)
    assert not libs_complete(cfg, pom_text="<project>other</project>")


def test_fetch_reports_maven_failure_with_its_last_lines(
    tmp_path: Path, fake_mvn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MVN_FAIL", "1")
    cfg = make_cfg(tmp_path)
    with pytest.raises(LocalKafkaError, match=r"mvn failed \(exit 3\)") as caught:
        fetch(cfg)
    assert "Could not resolve dependencies" in str(caught.value)
    assert not (cfg.cache_dir / "libs").exists()
    assert not libs_complete(cfg)


def test_fetch_without_maven_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(LocalKafkaError, match=r"mvn not found: install Maven"):
        fetch(make_cfg(tmp_path))


def test_fetch_skips_maven_when_the_cache_is_complete(
    tmp_path: Path, fake_mvn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_cfg(tmp_path)
    fetch(cfg)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mvn at all now
    assert fetch(cfg) == cfg.cache_dir / "libs"


# --------------------------------------------------------------------------- home folder


def test_new_cluster_id_is_kafka_shaped() -> None:
    ids = {new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_formatted_data_keeps_its_cluster_id(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    cfg.paths.data.mkdir(parents=True)
    cfg.paths.meta_properties.write_text("node.id=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\n")
    assert ensure_cluster_id(cfg, java=None, libs=None) == "AbCdEfGhIjKlMnOpQrStUv"
    assert cfg.paths.cluster_id_file.read_text().strip() == "AbCdEfGhIjKlMnOpQrStUv"
    cfg.paths.cluster_id_file.write_text("SomethingElse000000000A\n")
    with pytest.raises(LocalKafkaError, match="belongs to cluster AbCdEfGhIjKlMnOpQrStUv"):
        ensure_cluster_id(cfg, java=None, libs=None)


def test_java_command_sets_heap_gc_logging_and_our_properties(tmp_path: Path) -> None:
    cfg = LocalKafkaConfig(home=tmp_path / "h", cache_dir=tmp_path / "c", heap="512m")
    argv = java_command(cfg, Path("/jdk/bin/java"), cfg.paths.libs)
    assert argv[0] == "/jdk/bin/java"
    assert {"-Xms512m", "-Xmx512m", "-XX:+UseG1GC"} <= set(argv)
    assert f"-Dkafka.logs.dir={tmp_path / 'h' / 'logs'}" in argv
    assert f"-Dlog4j2.configurationFile={cfg.paths.log4j_config}" in argv
    assert argv[argv.index("-cp") + 1] == f"{tmp_path / 'c' / 'libs'}/*"
    assert argv[-2:] == ["kafka.Kafka", str(cfg.paths.server_properties)]


def test_prepare_home_and_settings_drift(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    assert settings_drift(cfg) == []
    prepare_home(cfg)
    assert cfg.paths.data.is_dir()
    assert cfg.paths.logs.is_dir()
    assert "RollingFile" in cfg.paths.log4j_config.read_text()
    assert settings_drift(cfg) == []
    other = LocalKafkaConfig(
        home=cfg.home,
        cache_dir=cfg.cache_dir,
        port=cfg.port,
        controller_port=cfg.controller_port,
        partitions=2,
    )
    assert settings_drift(other) == ["num.partitions: 8 -> 2"]


def test_log_tail_returns_the_last_lines(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    assert log_tail(cfg) == ""
    cfg.paths.logs.mkdir(parents=True)
    cfg.paths.server_log.write_text("".join(f"line {i}\n" for i in range(200)))
    assert log_tail(cfg, lines=3) == "line 197\nline 198\nline 199"
    assert log_tail(cfg).splitlines()[0] == "line 120"


# --------------------------------------------------------------------------- pid file, status, down


def test_status_without_pid_file_is_stopped(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    result = status(cfg)
    assert not result.running
    assert result.pid is None
    assert result.bootstrap == cfg.bootstrap
    assert result.detail.startswith("stopped")


@pytest.mark.parametrize("content", ["garbage", "0", "-5", "{own}", "{child}"])
def test_stale_pid_file_is_detected_and_removed(tmp_path: Path, content: str) -> None:
    cfg = make_cfg(tmp_path)
    cfg.home.mkdir(parents=True)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as other:
        # a live process, but not a broker of this home (like a recycled pid after reboot)
        text = content.format(own=os.getpid(), child=other.pid)
        cfg.paths.pid_file.write_text(text)
        result = status(cfg)
        other.kill()
    assert not result.running
    assert not cfg.paths.pid_file.exists()


def test_pid_of_a_broker_of_another_home_is_not_ours(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    mine = make_cfg(tmp_path / "mine")
    theirs = make_cfg(tmp_path / "theirs")
    process = spawn_fake_broker(theirs)
    argv = command_line(process.pid)
    assert argv is not None
    assert argv[-2:] == ["kafka.Kafka", str(theirs.paths.server_properties)]
    assert is_our_broker(process.pid, theirs.paths.server_properties)
    assert not is_our_broker(process.pid, mine.paths.server_properties)
    mine.home.mkdir(parents=True)
    write_pid_file(mine.paths.pid_file, process.pid)
    assert not status(mine).running
    assert process.poll() is None  # status never signals a process that is not ours


def test_status_sees_a_running_broker_that_does_not_answer_yet(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cfg = make_cfg(tmp_path)
    prepare_home(cfg)
    process = spawn_fake_broker(cfg)
    write_pid_file(cfg.paths.pid_file, process.pid)
    result = status(cfg)
    assert result.running
    assert not result.ready
    assert result.pid == process.pid
    assert "not answering" in result.detail


def test_status_finds_our_broker_without_pid_file(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cfg = make_cfg(tmp_path)
    prepare_home(cfg)
    process = spawn_fake_broker(cfg)
    assert status(cfg).pid == process.pid
    assert cfg.paths.pid_file.read_text().strip() == str(process.pid)


def test_down_terminates_cleanly_and_is_idempotent(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cfg = make_cfg(tmp_path)
    prepare_home(cfg)
    process = spawn_fake_broker(cfg)
    write_pid_file(cfg.paths.pid_file, process.pid)
    result = down(cfg, timeout=WAIT)
    assert not result.running
    assert "exited after SIGTERM" in result.detail
    assert process.wait(WAIT) == -signal.SIGTERM
    assert not cfg.paths.pid_file.exists()
    again = down(cfg)
    assert again.detail.startswith("already stopped")
    assert not status(cfg).running


def test_down_kills_a_broker_that_ignores_sigterm(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cfg = make_cfg(tmp_path)
    prepare_home(cfg)
    process = spawn_fake_broker(cfg, ignore_term=True)
    write_pid_file(cfg.paths.pid_file, process.pid)
    started = time.monotonic()
    result = down(cfg, timeout=0.5)
    assert "SIGKILL" in result.detail
    assert process.wait(WAIT) == -signal.SIGKILL
    assert time.monotonic() - started < WAIT
    assert not cfg.paths.pid_file.exists()


# --------------------------------------------------------------------------- up: refusals and reuse


def test_up_reuses_our_running_broker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_kafka: _FakeKafkaServer,
    spawn_fake_broker: Callable[..., subprocess.Popen[bytes]],
) -> None:
    cfg = make_cfg(tmp_path, port=fake_kafka.server_address[1])
    prepare_home(cfg)
    process = spawn_fake_broker(cfg)
    write_pid_file(cfg.paths.pid_file, process.pid)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # starting anything would fail
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = up(cfg, timeout=5)
    assert result.running
    assert result.ready
    assert result.pid == process.pid
    assert result.detail.startswith("already running")
    assert status(cfg).detail.startswith("running")


def test_up_refuses_when_our_broker_runs_with_other_settings(
    tmp_path: Path, spawn_fake_broker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    cfg = make_cfg(tmp_path)
    prepare_home(cfg)
    process = spawn_fake_broker(cfg)
    moved = LocalKafkaConfig(
        home=cfg.home, cache_dir=cfg.cache_dir, port=free_port(), controller_port=free_port()
    )
    with pytest.raises(LocalKafkaError, match=r"already runs with other settings.*listeners"):
        up(moved, timeout=5)
    assert "other settings" in status(moved).detail
    assert process.poll() is None


def test_up_refuses_a_port_held_by_another_process(
    tmp_path: Path, plain_listener: tuple[socket.socket, int]
) -> None:
    _sock, port = plain_listener
    cfg = make_cfg(tmp_path, port=port)
    with pytest.raises(LocalKafkaError, match=f"port {port} is in use by another process"):
        up(cfg)
    assert not cfg.paths.pid_file.exists()


def test_up_refuses_a_controller_port_held_by_another_process(
    tmp_path: Path, plain_listener: tuple[socket.socket, int]
) -> None:
    _sock, port = plain_listener
    cfg = LocalKafkaConfig(
        home=tmp_path / "h", cache_dir=tmp_path / "c", port=free_port(), controller_port=port
    )
    with pytest.raises(LocalKafkaError, match=f"port {port} is in use"):
        up(cfg)


def test_up_points_at_a_foreign_kafka_on_the_port(
    tmp_path: Path, fake_kafka: _FakeKafkaServer
) -> None:
    port = fake_kafka.server_address[1]
    cfg = make_cfg(tmp_path, port=port)
    with pytest.raises(LocalKafkaError, match=f"SUPPLYFLOW_BOOTSTRAP=127.0.0.1:{port}"):
        up(cfg)
    assert not cfg.home.exists()


FAKE_JAVA = """
case "$*" in
  *-version*) echo 'openjdk version "17.0.2" 2022-01-18' >&2; exit 0;;
  *kafka.tools.StorageTool*) echo "$*" >> "$FAKE_JAVA_LOG"; echo "Formatting"; exit 0;;
  *kafka.Kafka*)
    if [ -n "$FAKE_BROKER_FAIL" ]; then echo "Error: broker refused to start"; exit 1; fi
    while true; do sleep 0.1; done;;
esac
exit 2
"""


@pytest.fixture
def fake_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_mvn: Path) -> Path:
    """A JAVA_HOME whose java formats nothing and runs a broker that never answers."""
    (tmp_path / "jdk" / "bin").mkdir(parents=True)
    write_script(tmp_path / "jdk" / "bin" / "java", FAKE_JAVA)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    log = tmp_path / "java-calls"
    monkeypatch.setenv("FAKE_JAVA_LOG", str(log))
    return log


def test_up_stops_a_broker_that_never_answers(tmp_path: Path, fake_java: Path) -> None:
    cfg = make_cfg(tmp_path)
    with pytest.raises(LocalKafkaError) as caught:
        up(cfg, timeout=1)
    message = str(caught.value)
    assert f"broker did not answer on {cfg.bootstrap} within 1s and was stopped" in message
    assert str(cfg.paths.server_log) in message
    cluster_id = cfg.paths.cluster_id_file.read_text().strip()
    assert len(cluster_id) == 22
    assert f"format -t {cluster_id} -c {cfg.paths.server_properties}" in fake_java.read_text()
    assert not cfg.paths.pid_file.exists()
    assert not status(cfg).running
    survivors = subprocess.run(
        ["pgrep", "-f", str(cfg.paths.server_properties)], capture_output=True, check=False
    )
    assert survivors.stdout == b""


def test_up_reports_a_broker_that_exits_at_startup(
    tmp_path: Path, fake_java: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_BROKER_FAIL", "1")
    cfg = make_cfg(tmp_path)
    with pytest.raises(LocalKafkaError, match="exited with code 1 during startup") as caught:
        up(cfg, timeout=WAIT)
    assert "Error: broker refused to start" in str(caught.value)
    assert not cfg.paths.pid_file.exists()
