"""TLS + SASL/SCRAM-SHA-512 end to end, and secrets that never show.

A local broker with a SASL_SSL listener (certificate signed by a CA made here, a SCRAM
user made by ``supplyflow kafka up``) runs next to the shared one. Two workers connect
with the right credentials and process the sample scenario; a request to one worker for
a key the other owns is forwarded with the API token. Wrong credentials, an untrusted
certificate and a plaintext client are refused with a message that names the setting to
fix. The password and the API token appear in no log, metric, page or API answer.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from supplyflow.agents.runtime.keys import partition_for
from supplyflow.app import local_kafka
from supplyflow.app.processes import WorkerProcess, free_port
from supplyflow.app.produce import produce_records
from supplyflow.app.sample import OK, SampleRecord, sample_scenario
from supplyflow.app.settings import Settings
from supplyflow.app.topics import ORDER_EVENTS, PO_EVENTS, read_topic

pytestmark = pytest.mark.integration

PASSWORD: Final = "scram-Pa55word-that-must-never-show"
TOKEN: Final = "api-token-0123456789abcdef-never-shown"
USER: Final = "supplyflow-it"
WORKER_READY_S: Final = 90.0
PROCESS_S: Final = 60.0
#: A worker that cannot connect must give up and say why well within this.
REFUSED_S: Final = 120.0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a broker certificate for localhost/127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("supplyflow test CA"))
        .issuer_name(_name("supplyflow test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / "ca.pem", folder / "broker.pem", folder / "broker-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class SecureBroker:
    """Where the secure broker listens and how a client authenticates to it."""

    def __init__(self, cfg: local_kafka.LocalKafkaConfig, cafile: Path) -> None:
        self.cfg = cfg
        self.cafile = cafile
        assert cfg.secure_bootstrap is not None
        self.bootstrap = cfg.secure_bootstrap

    def env(self, **changes: str) -> dict[str, str]:
        env = {
            "SUPPLYFLOW_BOOTSTRAP": self.bootstrap,
            "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SUPPLYFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SUPPLYFLOW_KAFKA_SASL_USERNAME": USER,
            "SUPPLYFLOW_KAFKA_SASL_PASSWORD": PASSWORD,
            "SUPPLYFLOW_KAFKA_SSL_CAFILE": str(self.cafile),
        }
        env.update(changes)
        return env


def _port_pair() -> int:
    """A free port whose successor (the controller's) is free too."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and _bindable(port + 1):
            return port
    raise AssertionError("no two consecutive free ports on 127.0.0.1")


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    folder = tmp_path_factory.mktemp("secure-kafka")
    cafile, cert, key = make_tls(folder / "tls")
    port = _port_pair()
    cfg = local_kafka.LocalKafkaConfig(
        home=folder / "home",
        cache_dir=local_kafka.default_config().cache_dir,
        port=port,
        secure_port=free_port(),
        tls_cert=cert,
        tls_key=key,
        partitions=2,
        heap="512m",
    )
    broker = SecureBroker(cfg, cafile)
    # Through the CLI, as an operator would: the SCRAM user comes from the settings.
    up = subprocess.run(
        [
            sys.executable,
            "-m",
            "supplyflow",
            "kafka",
            "up",
            "--home",
            str(cfg.home),
            "--port",
            str(cfg.port),
            "--secure-port",
            str(cfg.secure_port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env={
            **os.environ,
            **broker.env(),
            "SUPPLYFLOW_KAFKA_HOME": str(cfg.home),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert PASSWORD not in up.stdout + up.stderr
        yield broker
    finally:
        local_kafka.down(cfg)


def _settings(broker: SecureBroker, names: dict[str, str]) -> Settings:
    return Settings(
        bootstrap=broker.bootstrap,
        topic_prefix=names["prefix"],
        app_id=names["app_id"],
        partitions=4,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,  # type: ignore[arg-type]  # pydantic converts it
        kafka_ssl_cafile=broker.cafile,
    )


def _applied(worker: WorkerProcess) -> int:
    return sum(
        int(value)
        for (name, labels), value in worker.metrics().items()
        if name == "supplyflow_events_total" and dict(labels)["outcome"] == "applied"
    )


def _covering_samples(app_id: str, settings: Settings) -> list[SampleRecord]:
    """Sample scenarios, one per run id, until their POs and orders fall in every input
    partition: then each of the workers owns some of them, whichever partitions it got
    (the run's ids are random, and one scenario has only five of them)."""
    records: list[SampleRecord] = []
    covered: set[int] = set()
    run = 0
    while covered != set(range(settings.partitions)):
        scenario = sample_scenario(f"{app_id}-{run}", max_record_bytes=settings.max_record_bytes)
        records += scenario
        covered |= {
            partition_for(r.key.decode(), settings.partitions)
            for r in scenario
            if r.expect == OK and r.key and r.topic in (PO_EVENTS, ORDER_EVENTS)
        }
        run += 1
    return records


def test_workers_process_records_over_sasl_ssl_and_never_show_secrets(
    secure_broker: SecureBroker,
    names: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    env = secure_broker.env(
        SUPPLYFLOW_API_TOKEN=TOKEN, SUPPLYFLOW_LOG_LEVEL="DEBUG", SUPPLYFLOW_PARTITIONS="4"
    )
    workers = [start_worker(**env), start_worker(**env)]
    for worker in workers:
        worker.wait_healthy(WORKER_READY_S)
    settings = _settings(secure_broker, names)
    records = _covering_samples(names["app_id"], settings)
    asyncio.run(produce_records(settings, records))
    good = [r for r in records if r.expect == OK]
    bad = [r for r in records if r.expect != OK]
    deadline = time.monotonic() + PROCESS_S
    while sum(_applied(w) for w in workers) < len(good) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert sum(_applied(w) for w in workers) == len(good)
    assert all(_applied(w) > 0 for w in workers), "both workers should own partitions"
    letters = asyncio.run(read_topic(settings, settings.topic("dlq"), expected=len(bad)))
    assert len(letters) == len(bad)

    # The operator tools connect with the same settings.
    listed = subprocess.run(
        [sys.executable, "-m", "supplyflow", "dlq", "list", "--json"],
        env={**os.environ, **env, "SUPPLYFLOW_TOPIC_PREFIX": names["prefix"]},
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSED_S,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(bad)
    assert PASSWORD not in listed.stdout + listed.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "supplyflow", "dlq", "list"],
        env={
            **os.environ,
            **env,
            "SUPPLYFLOW_TOPIC_PREFIX": names["prefix"],
            "SUPPLYFLOW_KAFKA_SASL_PASSWORD": "not-" + PASSWORD,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSED_S,
    )
    assert wrong.returncode == 2
    assert "refused the SCRAM-SHA-512 credentials" in wrong.stderr
    assert PASSWORD not in wrong.stdout + wrong.stderr

    bodies: list[bytes] = []
    ids = sorted({r.key.decode() for r in good if r.key and r.topic != "inventory.events"})
    routes = [f"/pos/{i}" if "-PO-" in i else f"/orders/{i}" for i in ids]
    routes += ["/positions/SKU-A/DC1", "/exceptions?status=all"]
    for worker in workers:
        for route in routes:
            # With the token every key answers on every worker: the one that does not own
            # a key forwards the request, token included (else the owner would say 401).
            status, body = worker.get(route)
            assert status == 200, (worker.url, route, body)
            bodies.append(body)
            status, body = worker.get(route, headers={})
            assert status == 401, (route, body)
            assert "Authorization: Bearer" in orjson.loads(body)["error"]
            bodies.append(body)
            status, body = worker.get(route, headers={"Authorization": "Bearer nope"})
            assert status == 401
            bodies.append(body)
        for open_route in ("/health", "/metrics", "/"):
            status, body = worker.get(open_route, headers={})
            assert status == 200, open_route
            bodies.append(body)
    order = orjson.loads(workers[0].get(routes[-3])[1])
    assert order["lines"], order

    for secret in (PASSWORD, TOKEN):
        for body in bodies:
            assert secret.encode() not in body
        for worker in workers:
            log = worker.log_path.read_text(errors="replace")
            assert "Authenticated as" in log or "SASL" in log or "sasl" in log
            assert secret not in log, f"{secret[:6]}... in {worker.log_path}"


def _run_worker(env: dict[str, str], tmp_path: Path, names: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "supplyflow", "worker"],
        env={
            **os.environ,
            **env,
            "SUPPLYFLOW_TOPIC_PREFIX": names["prefix"],
            "SUPPLYFLOW_APP_ID": names["app_id"],
            "SUPPLYFLOW_DATA_DIR": str(tmp_path / "data"),
            "SUPPLYFLOW_WEB_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSED_S,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        (
            {"SUPPLYFLOW_KAFKA_SASL_PASSWORD": "wrong-" + PASSWORD},
            ["refused the SCRAM-SHA-512 credentials", "SUPPLYFLOW_KAFKA_SASL_PASSWORD"],
        ),
        (
            {"SUPPLYFLOW_KAFKA_SSL_CAFILE": ""},
            ["certificate", "not trusted", "SUPPLYFLOW_KAFKA_SSL_CAFILE"],
        ),
        (
            {
                "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
                "SUPPLYFLOW_KAFKA_SASL_USERNAME": "",
                "SUPPLYFLOW_KAFKA_SASL_PASSWORD": "",
                "SUPPLYFLOW_KAFKA_SSL_CAFILE": "",
            },
            ["closed the connection", "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL"],
        ),
        (
            {"SUPPLYFLOW_KAFKA_SASL_PASSWORD": ""},
            ["SUPPLYFLOW_KAFKA_SASL_PASSWORD", "SASL_SSL needs"],
        ),
    ],
    ids=["wrong-password", "untrusted-certificate", "plaintext-client", "no-password"],
)
def test_bad_credentials_stop_the_worker_with_what_to_fix(
    secure_broker: SecureBroker,
    names: dict[str, str],
    tmp_path: Path,
    changes: dict[str, str],
    says: list[str],
) -> None:
    code, output = _run_worker(secure_broker.env(**changes), tmp_path, names)
    assert code == 2, output
    for words in says:
        assert words in output, output
    assert "Traceback" not in output, output
    assert PASSWORD not in output


def _unsigned_jwt(subject: str, expires_in_s: float) -> str:
    """A token Kafka's unsecured OAUTHBEARER validator (the local broker's) accepts."""

    def part(claims: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")

    now = time.time()
    header = part({"alg": "none"})
    return f"{header}.{part({'sub': subject, 'iat': now, 'exp': now + expires_in_s})}."


def _oauth_env(broker: SecureBroker, token_file: Path) -> dict[str, str]:
    return broker.env(
        SUPPLYFLOW_KAFKA_SASL_MECHANISM="OAUTHBEARER",
        SUPPLYFLOW_KAFKA_SASL_USERNAME="",
        SUPPLYFLOW_KAFKA_SASL_PASSWORD="",
        SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE=str(token_file),
    )


def test_worker_authenticates_with_an_oauthbearer_token_file(
    secure_broker: SecureBroker,
    names: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(_unsigned_jwt("supplyflow-oauth", 3600) + "\n")
    env = _oauth_env(secure_broker, token_file)
    ping = subprocess.run(
        [sys.executable, "-m", "supplyflow", "kafka", "ping"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSED_S,
    )
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "SASL_SSL OAUTHBEARER" in ping.stdout
    worker = start_worker(**env, SUPPLYFLOW_PARTITIONS="4")
    worker.wait_healthy(WORKER_READY_S)
    settings = Settings(
        bootstrap=secure_broker.bootstrap,
        topic_prefix=names["prefix"],
        app_id=names["app_id"],
        partitions=4,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="OAUTHBEARER",
        kafka_sasl_oauth_token_file=token_file,
        kafka_ssl_cafile=secure_broker.cafile,
    )
    records = sample_scenario(names["app_id"], max_record_bytes=settings.max_record_bytes)
    asyncio.run(produce_records(settings, records))
    good = sum(1 for r in records if r.expect == OK)
    deadline = time.monotonic() + PROCESS_S
    while _applied(worker) < good and time.monotonic() < deadline:
        time.sleep(0.25)
    assert _applied(worker) == good
    token = token_file.read_text().strip()
    assert token not in worker.log_path.read_text(errors="replace")

    # An expired token is refused, and `kafka ping` says what to check.
    token_file.write_text(_unsigned_jwt("supplyflow-oauth", -600))
    refused = subprocess.run(
        [sys.executable, "-m", "supplyflow", "kafka", "ping"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=REFUSED_S,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused the OAUTHBEARER token" in refused.stdout


def test_kafka_ping_uses_tls_and_sasl(secure_broker: SecureBroker) -> None:
    def ping(**changes: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supplyflow", "kafka", "ping"],
            env={**os.environ, **secure_broker.env(**changes)},
            capture_output=True,
            text=True,
            check=False,
            timeout=REFUSED_S,
        )

    ok = ping()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "answers" in ok.stdout
    wrong = ping(SUPPLYFLOW_KAFKA_SASL_PASSWORD="not-" + PASSWORD)
    assert wrong.returncode == 1
    assert "refused the SCRAM-SHA-512 credentials" in wrong.stdout
    assert PASSWORD not in wrong.stdout + wrong.stderr
