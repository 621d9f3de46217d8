"""The broker's home folder: its files, storage formatting, JVM command line and logs.

Pure file work plus one short-lived ``kafka.tools.StorageTool format`` run on first use;
starting and stopping the long-lived broker process is :mod:`.broker`'s job.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from supplyflow.app.local_kafka.config import (
    SCRAM_MECHANISMS,
    LocalKafkaConfig,
    render_server_properties,
)
from supplyflow.app.local_kafka.exceptions import LocalKafkaError
from supplyflow.app.local_kafka.process import KAFKA_MAIN_CLASS
from supplyflow.app.local_kafka.tooling import resource_text, tail_text

__all__ = [
    "add_scram_users",
    "ensure_cluster_id",
    "file_tail",
    "java_command",
    "log_options",
    "new_cluster_id",
    "prepare_home",
    "settings_drift",
]

logger = logging.getLogger(__name__)

FORMAT_TIMEOUT = 120.0
"""Seconds ``kafka.tools.StorageTool format`` may take."""
TOOL_HEAP = "256m"
ERROR_LOG_LINES = 20
LOG_TAIL_MAX_BYTES = 512 * 1024
LOG4J_RESOURCE = "log4j2.properties"


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    The same form ``kafka-storage.sh random-uuid`` prints; like Kafka, ids that would start
    with ``-`` (awkward on a command line) are avoided.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def ensure_cluster_id(cfg: LocalKafkaConfig, java: Path | None, libs: Path | None) -> str:
    """The home's stable cluster id; formats ``data/`` with it when it is not formatted yet.

    Existing data is never reformatted: its ``meta.properties`` wins and is copied to
    ``cluster.id`` when that file is missing. ``java``/``libs`` are only needed to format.
    """
    paths = cfg.paths
    stored = _read_text(paths.cluster_id_file)
    formatted = _meta_cluster_id(paths.meta_properties)
    if formatted is not None:
        if stored is None:
            paths.cluster_id_file.write_text(formatted + "\n", encoding="ascii")
        elif stored != formatted:
            raise LocalKafkaError(
                f"{paths.data} belongs to cluster {formatted} but {paths.cluster_id_file} "
                f"says {stored}: delete {paths.cluster_id_file} to keep the data, or delete "
                f"{paths.data} to start empty"
            )
        return formatted
    cluster_id = stored or new_cluster_id()
    paths.cluster_id_file.write_text(cluster_id + "\n", encoding="ascii")
    if java is None or libs is None:
        raise LocalKafkaError(f"{paths.data} is not formatted yet and no java/jars were given")
    command = [
        str(java),
        f"-Xmx{TOOL_HEAP}",
        *log_options(cfg),
        "-cp",
        f"{libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(paths.server_properties),
    ]
    logger.info("formatting %s for cluster %s", paths.data, cluster_id)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run the Kafka storage formatter: {exc}") from exc
    if done.returncode != 0:
        raise LocalKafkaError(
            f"formatting {paths.data} failed (exit {done.returncode}): "
            f"{tail_text(done.stdout + done.stderr, ERROR_LOG_LINES)}"
        )
    logger.debug("StorageTool: %s", done.stdout.strip())
    return cluster_id


def java_command(cfg: LocalKafkaConfig, java: Path, libs: Path) -> list[str]:
    """The broker's command line (``kafka.Kafka <home>/server.properties`` comes last)."""
    return [
        str(java),
        f"-Xms{cfg.heap}",
        f"-Xmx{cfg.heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        *log_options(cfg),
        "-cp",
        f"{libs}/*",
        KAFKA_MAIN_CLASS,
        str(cfg.paths.server_properties),
    ]


def prepare_home(cfg: LocalKafkaConfig) -> None:
    paths = cfg.paths
    for folder in (paths.home, paths.data, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    if cfg.tls_cert is not None and cfg.tls_key is not None:
        _write_keystore(cfg.tls_cert, cfg.tls_key, paths.keystore)
    paths.server_properties.write_text(render_server_properties(cfg), encoding="utf-8")
    paths.log4j_config.write_text(resource_text(LOG4J_RESOURCE), encoding="utf-8")


def _write_keystore(cert: Path, key: Path, keystore: Path) -> None:
    """Kafka's PEM keystore: the private key, then the certificate chain, in one file."""
    try:
        key_pem = key.read_text(encoding="ascii")
        cert_pem = cert.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalKafkaError(f"cannot read the TLS certificate or key: {exc}") from exc
    if "-----BEGIN PRIVATE KEY-----" not in key_pem:
        raise LocalKafkaError(
            f"{key} is not an unencrypted PKCS#8 PEM key (BEGIN PRIVATE KEY): convert it with "
            f"`openssl pkcs8 -topk8 -nocrypt -in {key} -out broker-key.pem`"
        )
    if "-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise LocalKafkaError(f"{cert} holds no PEM certificate (BEGIN CERTIFICATE)")
    keystore.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    keystore.touch(mode=0o600, exist_ok=True)
    keystore.chmod(0o600)
    keystore.write_text(key_pem.strip() + "\n" + cert_pem.strip() + "\n", encoding="ascii")


def add_scram_users(
    cfg: LocalKafkaConfig, java: Path, libs: Path, users: Mapping[str, str]
) -> None:
    """Create or update SCRAM users (every mechanism of the secure listener) on the broker.

    Runs Kafka's own ``ConfigCommand`` against the PLAINTEXT listener; passwords go
    through a private file, never the command line.
    """
    for user, password in users.items():
        if not user or any(ch in user for ch in ",=[] "):
            raise LocalKafkaError(f"SCRAM user name {user!r} may not contain , = [ ] or space")
        if any(ch in password for ch in ",[]\n"):
            raise LocalKafkaError("a local SCRAM password may not contain , [ ] or a newline")
        with tempfile.NamedTemporaryFile(
            "w", dir=cfg.paths.home, prefix=".scram-", suffix=".properties", delete=False
        ) as handle:
            secret_file = Path(handle.name)
            for mechanism in SCRAM_MECHANISMS:
                handle.write(f"{mechanism}=iterations=8192,password={password}\n")
        command = [
            str(java),
            f"-Xmx{TOOL_HEAP}",
            *log_options(cfg),
            "-cp",
            f"{libs}/*",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            cfg.bootstrap,
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            user,
            "--add-config-file",
            str(secret_file),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=FORMAT_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalKafkaError(f"could not run Kafka's ConfigCommand: {exc}") from exc
        finally:
            secret_file.unlink(missing_ok=True)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).replace(password, "***")
            raise LocalKafkaError(
                f"creating SCRAM user {user!r} failed (exit {done.returncode}): "
                f"{tail_text(output, ERROR_LOG_LINES)}"
            )
        logger.info("SCRAM user %r ready on %s", user, cfg.secure_bootstrap)


def log_options(cfg: LocalKafkaConfig) -> list[str]:
    return [
        f"-Dkafka.logs.dir={cfg.paths.logs}",
        f"-Dlog4j2.configurationFile={cfg.paths.log4j_config}",
    ]


def file_tail(path: Path, lines: int) -> str:
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as stream:
            size = stream.seek(0, 2)
            stream.seek(max(size - LOG_TAIL_MAX_BYTES, 0))
            data = stream.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", "replace")
    kept = text.splitlines()
    if size > LOG_TAIL_MAX_BYTES and kept:
        kept = kept[1:]  # the first line was cut by the seek
    return "\n".join(kept[-lines:])


def _read_text(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def _meta_cluster_id(meta: Path) -> str | None:
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip() or None
    return None


def settings_drift(cfg: LocalKafkaConfig) -> list[str]:
    """How the home's ``server.properties`` (what a running broker uses) differs from ``cfg``.

    Empty when they agree or when there is no file yet; otherwise one ``key: file -> wanted``
    entry per differing setting.
    """
    try:
        current = _properties(cfg.paths.server_properties.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    wanted = _properties(render_server_properties(cfg))
    return [
        f"{key}: {current.get(key, '(unset)')} -> {wanted.get(key, '(unset)')}"
        for key in sorted(current.keys() | wanted.keys())
        if current.get(key) != wanted.get(key)
    ]


def _properties(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith(("#", "!")):
            result[key.strip()] = value.strip()
    return result
