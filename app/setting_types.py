"""Parsing and checks of the settings a deployment supplies (pure: no sockets, no Kafka).

- the URL a worker advertises to the others for forwarding (``SUPPLYFLOW_ADVERTISED_URL``),
  and the default derived from the bind address;
- secrets read from files (``SUPPLYFLOW_<SECRET>_FILE``, as container platforms mount them);
- Kafka client options passed through to every client (``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "CLIENT_OPTIONS",
    "CLIENT_OPTION_PREFIX",
    "WILDCARD_HOSTS",
    "check_advertised_url",
    "client_options_from_env",
    "derive_advertised_url",
    "is_wildcard",
    "parse_client_options",
    "read_secret_files",
]

#: Bind addresses that mean "every interface": no other worker can connect to them.
WILDCARD_HOSTS: Final = frozenset(
    {"", "0.0.0.0", "::", "[::]", "*", "0:0:0:0:0:0:0:0"}  # noqa: S104  # recognised, not bound
)

#: ``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>`` sets ``<option>`` on every Kafka client.
CLIENT_OPTION_PREFIX: Final = "SUPPLYFLOW_KAFKA_CLIENT_"

#: The client options every client takes: supplyflow's aiokafka producers, consumers and
#: admin clients directly, the worker's Faust app through its equivalent settings. Options
#: only some clients know (``linger_ms``, ``fetch_max_wait_ms``, ...) are not offered: they
#: could not be applied to every client. Values: option -> type.
CLIENT_OPTIONS: Final[Mapping[str, type]] = {
    "client_id": str,
    "request_timeout_ms": int,
    "metadata_max_age_ms": int,
    "connections_max_idle_ms": int,
}
#: What a pass-through option may not replace: settings of their own decide these.
_OWNED_OPTIONS: Final = {
    "bootstrap_servers": "SUPPLYFLOW_BOOTSTRAP",
    "security_protocol": "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL",
    "sasl_mechanism": "SUPPLYFLOW_KAFKA_SASL_MECHANISM",
    "sasl_plain_username": "SUPPLYFLOW_KAFKA_SASL_USERNAME",
    "sasl_plain_password": "SUPPLYFLOW_KAFKA_SASL_PASSWORD",
    "ssl_context": "SUPPLYFLOW_KAFKA_SSL_*",
    "group_id": "SUPPLYFLOW_APP_ID",
}


def is_wildcard(host: str) -> bool:
    """Whether ``host`` (a bind address or a URL's host) means "every interface"."""
    return host.strip().lower() in WILDCARD_HOSTS


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def derive_advertised_url(web_host: str, web_port: int) -> str:
    """The URL other workers reach this one at, when ``SUPPLYFLOW_ADVERTISED_URL`` is unset.

    The bind address when it names one interface; this machine's host name when it is a
    wildcard (in a container or a Kubernetes pod, the name the others resolve).
    """
    host = socket.gethostname() if is_wildcard(web_host) else web_host
    return f"http://{_url_host(host)}:{web_port}"


def check_advertised_url(value: str) -> str:
    """``value`` without a trailing slash, or ValueError saying what a usable URL looks like."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    example = "e.g. http://worker-1:6066"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// URL ({example})")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has no valid port ({example})") from exc
    host = parts.hostname or ""
    if is_wildcard(host):
        raise ValueError(
            f"{value!r} is a wildcard address, which no other worker can reach: give the "
            f"host name or address the other workers reach this one at ({example})"
        )
    if port is None:
        raise ValueError(f"{value!r} names no port ({example})")
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"{value!r} must be scheme, host and port only ({example})")
    return url


def read_secret_files(data: dict[str, Any], secrets: Iterable[str]) -> dict[str, Any]:
    """``data`` with each secret whose ``<secret>_file`` is set read from that file.

    One trailing newline (as ``echo`` and most secret stores write) is dropped; anything
    else in the file is the secret. Setting a secret both ways is an error.
    """
    result = dict(data)
    for name in secrets:
        path = result.get(f"{name}_file")
        if path is None or (isinstance(path, str) and not path.strip()):
            continue
        variable = f"SUPPLYFLOW_{name.upper()}"
        given = result.get(name)
        if given is not None and not (isinstance(given, str) and not given.strip()):
            raise ValueError(f"set {variable} or {variable}_FILE, not both")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ValueError(f"{variable}_FILE: cannot read {path}: {reason}") from exc
        secret = text.removesuffix("\n").removesuffix("\r")
        if not secret.strip():
            raise ValueError(f"{variable}_FILE: {path} is empty")
        result[name] = secret
    return result


def parse_client_options(value: Any) -> dict[str, int | str]:
    """Kafka client options from a mapping (TOML, keyword arguments) or ``k=v,k=v`` text."""
    if isinstance(value, str):
        pairs: dict[str, Any] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not option=value (e.g. request_timeout_ms=60000)")
            pairs[key.strip()] = raw.strip()
        value = pairs
    if not isinstance(value, Mapping):
        raise ValueError("give option=value pairs, e.g. request_timeout_ms=60000")
    options: dict[str, int | str] = {}
    known = ", ".join(sorted(CLIENT_OPTIONS))
    for raw_key, raw in value.items():
        key = str(raw_key).strip().lower()
        if key in _OWNED_OPTIONS:
            raise ValueError(f"{key} is not passed through: set {_OWNED_OPTIONS[key]} instead")
        kind = CLIENT_OPTIONS.get(key)
        if kind is None:
            raise ValueError(
                f"{key!r} is not an option every Kafka client takes; supported: {known}"
            )
        if kind is int:
            try:
                number = int(str(raw).strip())
            except ValueError as exc:
                raise ValueError(f"{key} must be a whole number, not {raw!r}") from exc
            if number <= 0:
                raise ValueError(f"{key} must be positive, not {number}")
            options[key] = number
        else:
            text = str(raw).strip()
            if not text:
                raise ValueError(f"{key} must not be empty")
            options[key] = text
    return options


def client_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>=value`` variables as ``{option: value}``."""
    env = os.environ if environ is None else environ
    return {
        name.removeprefix(CLIENT_OPTION_PREFIX).lower(): value
        for name, value in env.items()
        if name.startswith(CLIENT_OPTION_PREFIX) and value.strip()
    }
