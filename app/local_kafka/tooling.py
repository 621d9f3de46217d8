"""Finding Java and fetching the Kafka jars with Maven into a shared cache.

The jars come from ``pom.xml`` (package data next to this module) through
``mvn dependency:copy-dependencies`` into ``<cache_dir>/libs``. A marker file written after
a complete download (``libs.complete``: the pom's hash and the jar names) lets later runs
skip Maven entirely; a file lock keeps two clones from downloading into the same cache at
once.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from importlib import resources
from pathlib import Path

from supplyflow.app.local_kafka.config import ENV_BOOTSTRAP, KAFKA_VERSION, LocalKafkaConfig
from supplyflow.app.local_kafka.exceptions import LocalKafkaError

__all__ = [
    "MIN_JAVA_VERSION",
    "fetch",
    "find_java",
    "java_major_version",
    "libs_complete",
    "parse_java_version",
    "resource_text",
    "tail_text",
]

logger = logging.getLogger(__name__)

MIN_JAVA_VERSION = 17
JAVA_VERSION_TIMEOUT = 30.0
"""Seconds ``java -version`` may take."""
MVN_TIMEOUT = 900.0
"""Seconds the Maven download may take (43 MB; a few seconds on a normal network)."""
ERROR_TAIL_LINES = 20
MARKER_NAME = "libs.complete"
POM_RESOURCE = "pom.xml"
_PACKAGE = "supplyflow.app.local_kafka"
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')
_INSTALL_JAVA = (
    f"install OpenJDK {MIN_JAVA_VERSION} (apt-get install openjdk-{MIN_JAVA_VERSION}-jre-headless)"
    f" or point {ENV_BOOTSTRAP} at an existing cluster"
)


def resource_text(name: str) -> str:
    """A text file shipped with this package (``pom.xml``, ``log4j2.properties``)."""
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def tail_text(text: str, lines: int = ERROR_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ``text``."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def parse_java_version(text: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0`` is 8, ``17.0.15`` is 17)."""
    match = _JAVA_VERSION.search(text)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not (java.is_file() and os.access(java, os.X_OK)):
            raise LocalKafkaError(
                f"JAVA_HOME={java_home} has no executable bin/java: fix JAVA_HOME or unset it"
                f" to use java from PATH; or {_INSTALL_JAVA}"
            )
        return java
    found = shutil.which("java")
    if found is None:
        raise LocalKafkaError(f"java not found: {_INSTALL_JAVA}")
    return Path(found)


def java_major_version(java: Path) -> int:
    """Run ``java -version`` and check that it is at least Java 17 (Kafka 4.x needs it)."""
    try:
        done = subprocess.run(
            [str(java), "-version"],
            capture_output=True,
            text=True,
            timeout=JAVA_VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"could not run {java} -version ({exc}): {_INSTALL_JAVA}") from exc
    output = done.stderr + done.stdout
    version = parse_java_version(output)
    if done.returncode != 0 or version is None:
        raise LocalKafkaError(
            f"{java} -version failed (exit {done.returncode}): {tail_text(output, 5)}; "
            f"{_INSTALL_JAVA}"
        )
    if version < MIN_JAVA_VERSION:
        raise LocalKafkaError(
            f"{java} is Java {version}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_VERSION}"
            f" or newer: {_INSTALL_JAVA}, and set JAVA_HOME to it if it is not first on PATH"
        )
    return version


def libs_complete(cfg: LocalKafkaConfig, pom_text: str | None = None) -> bool:
    """Whether ``cache_dir/libs`` holds a complete download of the current ``pom.xml``."""
    marker = cfg.cache_dir / MARKER_NAME
    try:
        lines = marker.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return False
    pom_hash = _sha256(pom_text if pom_text is not None else resource_text(POM_RESOURCE))
    if not lines or lines[0] != f"pom-sha256 {pom_hash}":
        return False
    jars = [line for line in lines[1:] if line.strip()]
    libs = cfg.paths.libs
    return bool(jars) and all((libs / jar).is_file() for jar in jars)


def fetch(cfg: LocalKafkaConfig) -> Path:
    """Make sure the Kafka jars are in ``cfg.cache_dir/libs`` and return that folder.

    Skips Maven when the completion marker matches the shipped ``pom.xml``; otherwise runs
    ``mvn dependency:copy-dependencies`` into a scratch folder and swaps it in whole.
    """
    pom_text = resource_text(POM_RESOURCE)
    libs = cfg.paths.libs
    if libs_complete(cfg, pom_text):
        logger.debug("kafka jars already in %s", libs)
        return libs
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.cache_dir / ".fetch.lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if libs_complete(cfg, pom_text):  # another process fetched while we waited
                return libs
            _download(cfg, pom_text)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return libs


def _download(cfg: LocalKafkaConfig, pom_text: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            f"mvn not found: install Maven (apt-get install maven) so the Kafka {KAFKA_VERSION}"
            f" jars can be downloaded into {cfg.paths.libs}, or point {ENV_BOOTSTRAP} at an"
            " existing cluster"
        )
    pom = cfg.cache_dir / POM_RESOURCE
    pom.write_text(pom_text, encoding="utf-8")
    partial = cfg.cache_dir / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    logger.info("downloading the Kafka %s jars with Maven into %s", KAFKA_VERSION, cfg.cache_dir)
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=cfg.cache_dir,
            capture_output=True,
            text=True,
            timeout=MVN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise LocalKafkaError(
            f"mvn did not finish within {MVN_TIMEOUT:.0f}s: check the network or the Maven"
            " proxy settings (~/.m2/settings.xml) and try again"
        ) from exc
    except OSError as exc:
        raise LocalKafkaError(f"could not run {mvn}: {exc}") from exc
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise LocalKafkaError(
            f"mvn failed (exit {done.returncode}): {tail_text(done.stdout + done.stderr)}"
        )
    jars = sorted(path.name for path in partial.glob("*.jar")) if partial.is_dir() else []
    if not any(name.startswith("kafka_2.13-") for name in jars):
        shutil.rmtree(partial, ignore_errors=True)
        raise LocalKafkaError(
            f"mvn succeeded but {partial} holds no kafka_2.13 jar ({len(jars)} jars): "
            f"{tail_text(done.stdout + done.stderr)}"
        )
    marker = cfg.cache_dir / MARKER_NAME
    marker.unlink(missing_ok=True)
    shutil.rmtree(cfg.paths.libs, ignore_errors=True)
    partial.rename(cfg.paths.libs)
    marker.write_text(
        "\n".join([f"pom-sha256 {_sha256(pom_text)}", *jars]) + "\n", encoding="utf-8"
    )
    logger.info(
        "fetched %d Kafka jars into %s in %.1fs",
        len(jars),
        cfg.paths.libs,
        time.monotonic() - started,
    )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
