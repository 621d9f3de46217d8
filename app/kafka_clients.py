"""How every Kafka client of supplyflow connects: bootstrap servers, TLS and SASL.

The worker's Faust app (``broker_credentials``, built in :mod:`supplyflow.app.worker` from
:func:`ssl_context` and the same settings) and every aiokafka producer, consumer and admin
client supplyflow creates (:func:`client_options`) take their connection from the one
settings object, so a secured cluster needs the ``SUPPLYFLOW_KAFKA_*`` settings
and nothing else. When a client cannot connect, :func:`connection_error` finds out why
(refused TCP, TLS handshake, SASL credentials) and says which setting to fix; secrets
never appear in its messages.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Final

from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.protocol.admin import SaslAuthenticateRequest, SaslHandShakeRequest

from supplyflow.app.exceptions import AppError
from supplyflow.app.oauth_tokens import TokenSource
from supplyflow.app.settings import Settings

__all__ = [
    "client_options",
    "connection_error",
    "diagnose",
    "faust_client_settings",
    "ping",
    "ssl_context",
    "token_source",
]

#: How long the diagnosis waits for one broker to answer (it runs after a failure).
DIAGNOSE_TIMEOUT_S: Final = 10.0
_CREDENTIALS: Final = "SUPPLYFLOW_KAFKA_SASL_USERNAME / SUPPLYFLOW_KAFKA_SASL_PASSWORD"


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the SSL and SASL_SSL protocols (verifies the broker always)."""
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if settings.kafka_ssl_certfile is not None and settings.kafka_ssl_keyfile is not None:
            password = settings.kafka_ssl_key_password
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile),
                password=password.get_secret_value() if password else None,
            )
    except ssl.SSLError as exc:
        raise AppError(
            f"cannot load the Kafka TLS files ({exc.reason or exc}): "
            "SUPPLYFLOW_KAFKA_SSL_CAFILE must be a PEM CA bundle, SUPPLYFLOW_KAFKA_SSL_CERTFILE "
            "a PEM certificate and SUPPLYFLOW_KAFKA_SSL_KEYFILE its key (with "
            "SUPPLYFLOW_KAFKA_SSL_KEY_PASSWORD if it is encrypted)"
        ) from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _security(settings: Settings) -> dict[str, Any]:
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_source(settings)
        else:
            password = settings.kafka_sasl_password
            options["sasl_plain_username"] = settings.kafka_sasl_username
            options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def token_source(settings: Settings) -> TokenSource:
    """The OAUTHBEARER token provider the settings name (a file or a command)."""
    return TokenSource(
        file=settings.kafka_sasl_oauth_token_file,
        command=settings.kafka_sasl_oauth_token_command,
    )


def client_options(target: Settings | str) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: ``bootstrap_servers`` and security.

    ``target`` is the settings, or a bare ``host:port`` list for an unsecured cluster
    (tests and tools that only know an address).
    """
    if isinstance(target, str):
        return {"bootstrap_servers": target}
    return {"bootstrap_servers": target.bootstrap, **target.kafka_client, **_security(target)}


#: ``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>`` -> the Faust settings that carry it to the clients
#: Faust creates (its consumer and producer), with a factor for Faust's unit.
_FAUST_OPTIONS: Final = {
    "client_id": (("broker_client_id",), None),
    "request_timeout_ms": (("broker_request_timeout",), 0.001),
    "metadata_max_age_ms": (
        ("consumer_metadata_max_age_ms", "producer_metadata_max_age_ms"),
        None,
    ),
    "connections_max_idle_ms": (
        ("consumer_connections_max_idle_ms", "producer_connections_max_idle_ms"),
        None,
    ),
}


def faust_client_settings(settings: Settings) -> dict[str, Any]:
    """Faust app settings that apply ``SUPPLYFLOW_KAFKA_CLIENT_*`` to Faust's own clients."""
    result: dict[str, Any] = {}
    for option, value in settings.kafka_client.items():
        names, factor = _FAUST_OPTIONS[option]
        for name in names:
            result[name] = (
                value * factor if factor is not None and isinstance(value, int) else value
            )
    return result


def _explain(settings: Settings, address: str, exc: BaseException) -> str:
    protocol = settings.kafka_security_protocol
    oauth = settings.kafka_sasl_mechanism == "OAUTHBEARER"
    if oauth and isinstance(
        exc, kafka_errors.SaslAuthenticationFailed | kafka_errors.IllegalSaslStateError
    ):
        return (
            f"{address} refused the OAUTHBEARER token: check that the token source "
            "(SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE or _COMMAND) gives a valid, unexpired "
            "token for a principal the cluster knows"
        )
    if isinstance(exc, AppError):  # the token source itself failed
        return str(exc)
    if isinstance(exc, kafka_errors.SaslAuthenticationFailed | kafka_errors.IllegalSaslStateError):
        return (
            f"{address} refused the {settings.kafka_sasl_mechanism} credentials of user "
            f"{settings.kafka_sasl_username!r}: check {_CREDENTIALS} (and "
            "SUPPLYFLOW_KAFKA_SASL_MECHANISM) against the user created on the cluster"
        )
    if isinstance(exc, kafka_errors.UnsupportedSaslMechanismError):
        return f"{exc}: set SUPPLYFLOW_KAFKA_SASL_MECHANISM to one the cluster enables"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of {address} is not trusted ({exc.verify_message}): set "
            "SUPPLYFLOW_KAFKA_SSL_CAFILE to the PEM file of the CA that signed the broker "
            "certificates (and check the host name in SUPPLYFLOW_BOOTSTRAP matches them)"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS handshake with {address} failed ({exc.reason or exc}): is this a TLS "
            f"listener? SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL is {protocol}"
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"nothing listens on {address}: start Kafka (`supplyflow kafka up`) or fix "
            "SUPPLYFLOW_BOOTSTRAP"
        )
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        return f"cannot connect to {address} ({exc}): fix SUPPLYFLOW_BOOTSTRAP"
    hint = (
        "the listener may need TLS or SASL: set SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL to what "
        "the cluster's listener uses (SSL, SASL_SSL, ...)"
        if protocol == "PLAINTEXT"
        else f"check that this listener speaks {protocol}"
    )
    return f"{address} closed the connection ({str(exc) or type(exc).__name__}): {hint}"


async def diagnose(settings: Settings) -> str | None:
    """Why the first bootstrap server cannot be used, or None if it accepts a connection."""
    host, _, port = settings.bootstrap.split(",")[0].rpartition(":")
    address = f"{host}:{port}"
    try:
        security = _security(settings)
    except AppError as exc:
        return str(exc)
    try:
        conn = await asyncio.wait_for(
            create_conn(host.strip("[]"), int(port), **security), DIAGNOSE_TIMEOUT_S
        )
    except TimeoutError:
        return (
            f"{address} did not finish the {settings.kafka_security_protocol} handshake "
            f"within {DIAGNOSE_TIMEOUT_S:.0f}s: check SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL and "
            "that SUPPLYFLOW_BOOTSTRAP names a Kafka listener"
        )
    except (OSError, kafka_errors.KafkaError, AppError) as exc:
        return _explain(settings, address, exc)
    conn.close()
    if protocol_uses_oauth(settings):
        return await _oauth_refusal(settings, host.strip("[]"), int(port), address)
    return None


def protocol_uses_oauth(settings: Settings) -> bool:
    protocol = settings.kafka_security_protocol
    return protocol.startswith("SASL_") and settings.kafka_sasl_mechanism == "OAUTHBEARER"


async def _oauth_refusal(settings: Settings, host: str, port: int, address: str) -> str | None:
    """Why the broker refuses the OAUTHBEARER token, or None when it accepts it.

    aiokafka takes the handshake as done once the token is sent, even when the broker
    answers with an error challenge (RFC 7628) and then drops the connection; this sends
    the token itself and reads the answer.
    """
    tls = settings.kafka_security_protocol == "SASL_SSL"
    conn = await asyncio.wait_for(
        create_conn(
            host,
            port,
            security_protocol="SSL" if tls else "PLAINTEXT",
            ssl_context=ssl_context(settings) if tls else None,
        ),
        DIAGNOSE_TIMEOUT_S,
    )
    try:
        token = await token_source(settings).token()
        await asyncio.wait_for(conn.send(SaslHandShakeRequest("OAUTHBEARER")), DIAGNOSE_TIMEOUT_S)
        message = f"n,,\x01auth=Bearer {token}\x01\x01".encode()
        answer = await asyncio.wait_for(
            conn.send(SaslAuthenticateRequest(message)), DIAGNOSE_TIMEOUT_S
        )
    except (TimeoutError, OSError, kafka_errors.KafkaError, AppError) as exc:
        return _explain(settings, address, exc)
    finally:
        conn.close()
    challenge = bytes(answer.sasl_auth_bytes or b"").decode("utf-8", "replace")
    if answer.error_code == 0 and not challenge:
        return None
    status = challenge or (answer.error_message or f"error code {answer.error_code}")
    return (
        f"{address} refused the OAUTHBEARER token ({status}): check that the token source "
        "(SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE or _COMMAND) gives a valid, unexpired "
        "token for a principal the cluster knows"
    )


async def ping(settings: Settings, timeout_s: float) -> str | None:
    """None when the cluster answers a metadata request with these settings, else why not.

    Uses the same connection settings as every client (TLS, SASL, client options), so a
    ``kafka ping`` that passes means the workers can connect too.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except (TimeoutError, OSError, kafka_errors.KafkaError, AppError) as exc:
        reason = await diagnose(settings)
        return reason or f"no answer within {timeout_s:.0f}s ({type(exc).__name__})"
    finally:
        await admin.close()
    return None


async def connection_error(settings: Settings, what: str, exc: BaseException) -> AppError:
    """An :class:`AppError` for a failed ``what`` ("cannot reach Kafka") saying what to fix."""
    reason = await diagnose(settings)
    if reason is None:
        reason = f"{exc} (the broker accepts connections; see its log)"
    return AppError(f"{what} at {settings.bootstrap}: {reason}")
