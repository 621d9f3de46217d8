"""The one settings object: every ``SUPPLYFLOW_*`` variable, optionally from a TOML file.

Precedence (highest first): keyword arguments (the CLI), environment variables, the TOML
file named by ``SUPPLYFLOW_CONFIG`` (or ``--config``), defaults. Nothing here reads the
environment at import time: build :class:`Settings` with :func:`load_settings`.

Each secret can come from a file instead (``SUPPLYFLOW_API_TOKEN_FILE``, as Kubernetes and
Docker mount secrets), and ``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>`` variables collect into
``kafka_client`` (see :mod:`supplyflow.app.setting_types`).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from supplyflow.app.durations import format_duration, parse_duration, parse_sla_map
from supplyflow.app.exceptions import SettingsError
from supplyflow.app.setting_types import (
    check_advertised_url,
    derive_advertised_url,
    parse_client_options,
    read_secret_files,
)
from supplyflow.app.settings_sources import CONFIG_ENV, ClientOptionsSource, TomlSource

__all__ = ["CONFIG_ENV", "ENV_PREFIX", "SECRET_SETTINGS", "Settings", "load_settings"]

ENV_PREFIX = "SUPPLYFLOW_"
# The config file given to load_settings(); falls back to $SUPPLYFLOW_CONFIG.
_config_file: ContextVar[Path | None] = ContextVar("supplyflow_config_file", default=None)
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,100}$")
_APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

_MS = timedelta(milliseconds=1)
#: An API token shorter than this is refused: it could be guessed.
MIN_API_TOKEN_CHARS = 16

Duration = Annotated[timedelta, NoDecode]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN", "OAUTHBEARER"]
SlaMap = Annotated[dict[str, timedelta], NoDecode]
ClientOptions = Annotated[dict[str, int | str], NoDecode]
#: Settings that hold a secret; each can also be read from a file (``<name>_file``).
SECRET_SETTINGS = ("kafka_sasl_password", "kafka_ssl_key_password", "api_token")


#: How a zero duration may be written where zero is allowed.
_ZERO_DURATIONS: Final = ("0", "0ms", "0s")


class Settings(BaseSettings):
    """Every tunable of a supplyflow process. Frozen: build once, pass down."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", validate_default=True
    )

    bootstrap: str = Field(
        default="localhost:9092", description="Kafka bootstrap servers, host:port[,host:port]"
    )
    app_id: str = Field(default="supplyflow", description="consumer group and state prefix")
    data_dir: Path = Field(default=Path(".supplyflow/data"), description="RocksDB state")
    topic_prefix: str = Field(default="", description="prepended to every topic name")
    partitions: int = Field(default=8, ge=1, le=1024, description="partitions per topic")
    replication_factor: int = Field(
        default=1, ge=1, le=16, description="replication of the topics supplyflow creates"
    )
    max_record_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="larger input records are dead-lettered"
    )
    web_host: str = Field(default="127.0.0.1", description="HTTP bind address")
    web_port: int = Field(default=6066, ge=0, le=65535, description="HTTP port (0: any)")
    advertised_url: str | None = Field(
        default=None,
        description="URL the other workers reach this one at (default: from the bind "
        "address, or the host name when it is a wildcard)",
    )
    sla_po_ack: SlaMap = Field(
        default_factory=dict, description="systems that must ack each PO revision, and when"
    )
    sla_order_ack: SlaMap = Field(
        default_factory=dict, description="systems that must ack each placed order, and when"
    )
    sla_invoice: Duration | None = Field(
        default=None, description="every shipment must be invoiced within this"
    )
    receipt_tolerance_pct: Decimal = Field(
        default=Decimal(0), ge=0, le=1000, description="over-receipt tolerance, percent"
    )
    deadline_grace: Duration = Field(
        default=timedelta(seconds=2), description="added to every deadline before it fires"
    )
    broker_session_timeout: Duration = Field(
        default=timedelta(seconds=60),
        description="how long the group waits for a silent worker before rebalancing",
    )
    instance_id: str | None = Field(
        default=None,
        description="this worker's static member id in the consumer group (default: derived "
        "from the host, the data dir, the app id and the web address)",
    )
    leave_group_on_stop: bool = Field(
        default=False,
        description="a stopped worker leaves the group at once (its partitions move now) "
        "instead of keeping them for a restart within the session timeout",
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes one `supplyflow worker` runs under a supervisor, each "
        "a member of the group with its own data dir (DATA_DIR/p<i>) and port (WEB_PORT + i)",
    )
    batch_max: int = Field(
        default=2000, ge=1, le=100_000, description="most records an agent takes per batch"
    )
    batch_window: Duration = Field(
        default=timedelta(milliseconds=25),
        description="longest time a batch stays open after its first record",
    )
    batch_idle: Duration = Field(
        default=timedelta(milliseconds=2),
        description="a batch closes when no record arrived for this long (caught up)",
    )
    stall_after: Duration = Field(
        default=timedelta(seconds=30),
        description="a partition with records to process that has not advanced for this "
        "long is stalled: /health says degraded, supplyflow_partition_stalled is 1",
    )
    test_fail_on_id: str | None = Field(
        default=None,
        description="test only: processing fails for the event with this event_id (proves "
        "that such a record is quarantined); never set it in production",
    )
    apply_order: Literal["arrival", "timestamp"] = Field(
        default="arrival",
        description="the order each partition applies its records in: as read (exact for "
        "producers that partition by key), or by record timestamp across the partitions "
        "one key's records were produced to (round-robin or random producers)",
    )
    apply_lateness: Annotated[timedelta, NoDecode] = Field(
        default=timedelta(seconds=2),
        ge=timedelta(0),
        description="timestamp order: how long after its timestamp a record may still reach "
        "Kafka and be applied in order (records are held back this much longer)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # --- Kafka connection security (every client supplyflow creates uses these) -------
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", description="SASL mechanism for the SASL_* protocols"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="file holding the SASL password (instead of the variable)"
    )
    kafka_sasl_oauth_token_file: Path | None = Field(
        default=None, description="OAUTHBEARER: file holding the token, re-read when it changes"
    )
    kafka_sasl_oauth_token_command: str | None = Field(
        default=None, description="OAUTHBEARER: command printing a token (run without a shell)"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM CA bundle to verify the brokers (default: system CAs)"
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for brokers that require one"
    )
    kafka_ssl_keyfile: Path | None = Field(default=None, description="PEM key of the certificate")
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="password of an encrypted client key"
    )
    kafka_ssl_key_password_file: Path | None = Field(
        default=None, description="file holding the client key's password"
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="check that the broker certificate names the broker host"
    )
    kafka_client: ClientOptions = Field(
        default_factory=dict,
        description="options for every Kafka client (SUPPLYFLOW_KAFKA_CLIENT_<OPTION>=value)",
    )
    create_topics: bool = Field(
        default=True,
        description="create missing topics on start; false: only check they exist as needed",
    )
    # --- HTTP API ------------------------------------------------------------------------
    api_token: SecretStr | None = Field(
        default=None,
        description="when set, the HTTP API needs 'Authorization: Bearer <token>'",
    )
    api_token_file: Path | None = Field(default=None, description="file holding the API token")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        """``SUPPLYFLOW_<SECRET>_FILE`` (a mounted secret) instead of the secret itself."""
        return read_secret_files(data, SECRET_SETTINGS) if isinstance(data, dict) else data

    @field_validator("advertised_url")
    @classmethod
    def _check_advertised_url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else check_advertised_url(value)

    @field_validator("kafka_client", mode="before")
    @classmethod
    def _parse_client_options(cls, value: Any) -> Any:
        return parse_client_options(value)

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        hosts = [part.strip() for part in value.split(",") if part.strip()]
        for host in hosts:
            name, sep, port = host.rpartition(":")
            if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{host!r} is not host:port (e.g. localhost:9092)")
        if not hosts:
            raise ValueError("give at least one host:port")
        return ",".join(hosts)

    @field_validator("app_id", "instance_id")
    @classmethod
    def _check_app_id(cls, value: str | None) -> str | None:
        if value is not None and not _APP_ID.match(value):
            raise ValueError("use 1-100 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            raise ValueError("use at most 100 letters, digits, '.', '_' or '-'")
        return value

    @field_validator(
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "kafka_ssl_key_password",
        "api_token",
        "kafka_sasl_password_file",
        "kafka_ssl_key_password_file",
        "api_token_file",
        "kafka_sasl_oauth_token_file",
        "kafka_sasl_oauth_token_command",
        "instance_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``VAR=`` in a shell or compose file means "not set", not an empty secret."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_sasl_oauth_token_file"
    )
    @classmethod
    def _check_readable(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        try:
            with value.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror}") from exc
        return value

    @field_validator("api_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_TOKEN_CHARS:
            raise ValueError(
                f"use at least {MIN_API_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)"
            )
        return value

    @model_validator(mode="after")
    def _check_kafka_security(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = protocol.startswith("SASL_")
        tls = protocol in ("SSL", "SASL_SSL")
        problems = []
        problems += self._oauth_problems(sasl)
        oauth = self.kafka_sasl_mechanism == "OAUTHBEARER"
        if (
            sasl
            and not oauth
            and (self.kafka_sasl_username is None or self.kafka_sasl_password is None)
        ):
            problems.append(
                f"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "SUPPLYFLOW_KAFKA_SASL_USERNAME and SUPPLYFLOW_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            problems.append(
                "SUPPLYFLOW_KAFKA_SASL_USERNAME/_PASSWORD are set but "
                f"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL is {protocol}: set it to SASL_SSL "
                "(or SASL_PLAINTEXT), or unset the credentials"
            )
        tls_files = [
            name
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
            if getattr(self, f"kafka_{name}") is not None
        ]
        if tls_files and not tls:
            problems.append(
                f"SUPPLYFLOW_KAFKA_{tls_files[0].upper()} is set but "
                f"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL is {protocol}: set it to SSL or "
                "SASL_SSL, or unset the TLS settings"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append(
                "set SUPPLYFLOW_KAFKA_SSL_CERTFILE and SUPPLYFLOW_KAFKA_SSL_KEYFILE together"
            )
        timeout_ms = self.kafka_client.get("request_timeout_ms")
        if isinstance(timeout_ms, int) and timeout_ms < self.broker_session_timeout / _MS:
            problems.append(
                f"SUPPLYFLOW_KAFKA_CLIENT_REQUEST_TIMEOUT_MS={timeout_ms} is shorter than "
                "SUPPLYFLOW_BROKER_SESSION_TIMEOUT: the group's requests would time out before "
                "the session does; raise it or shorten the session timeout"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _oauth_problems(self, sasl: bool) -> list[str]:
        """OAUTHBEARER needs one token source; the other mechanisms need none."""
        sources = [
            name
            for name in ("kafka_sasl_oauth_token_file", "kafka_sasl_oauth_token_command")
            if getattr(self, name) is not None
        ]
        if not (sasl and self.kafka_sasl_mechanism == "OAUTHBEARER"):
            return [
                f"SUPPLYFLOW_{name.upper()} is set but the SASL mechanism is not OAUTHBEARER: "
                "set SUPPLYFLOW_KAFKA_SASL_MECHANISM=OAUTHBEARER with a SASL_* protocol"
                for name in sources
            ]
        if len(sources) != 1:
            return [
                "SUPPLYFLOW_KAFKA_SASL_MECHANISM=OAUTHBEARER needs one token source: SUPPLYFLOW_"
                "KAFKA_SASL_OAUTH_TOKEN_FILE or SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_COMMAND"
            ]
        if self.kafka_sasl_username or self.kafka_sasl_password:
            return [
                "SUPPLYFLOW_KAFKA_SASL_USERNAME/_PASSWORD are set but OAUTHBEARER authenticates "
                "with a token: unset them"
            ]
        return []

    @property
    def web_advertised_url(self) -> str:
        """The URL other workers forward requests to (``SUPPLYFLOW_ADVERTISED_URL`` or derived)."""
        if self.advertised_url is not None:
            return self.advertised_url
        return derive_advertised_url(self.web_host, self.web_port)

    @field_validator("sla_po_ack", "sla_order_ack", mode="before")
    @classmethod
    def _parse_sla(cls, value: Any) -> Any:
        return parse_sla_map(value) if isinstance(value, str) else value

    @field_validator("sla_invoice", mode="before")
    @classmethod
    def _parse_optional_duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return None if value.strip() in ("", "none", "off") else parse_duration(value)
        return value

    @field_validator(
        "deadline_grace",
        "broker_session_timeout",
        "batch_window",
        "batch_idle",
        "stall_after",
        mode="before",
    )
    @classmethod
    def _parse_duration(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value

    @field_serializer(
        "deadline_grace",
        "broker_session_timeout",
        "batch_window",
        "batch_idle",
        "stall_after",
        "sla_invoice",
    )
    def _dump_duration(self, value: timedelta | None) -> str | None:
        return None if value is None else format_duration(value)

    @field_validator("apply_lateness", mode="before")
    @classmethod
    def _parse_lateness(cls, value: Any) -> Any:
        if isinstance(value, str):
            return timedelta(0) if value.strip() in _ZERO_DURATIONS else parse_duration(value)
        return value

    @field_serializer("apply_lateness")
    def _dump_lateness(self, value: timedelta) -> str:
        return format_duration(value) if value else "0"

    @field_serializer("sla_po_ack", "sla_order_ack")
    def _dump_sla(self, value: dict[str, timedelta]) -> str:
        return ",".join(f"{k}={format_duration(v)}" for k, v in value.items())

    def topic(self, name: str) -> str:
        """The full Kafka topic name of a contract topic such as ``po.events``."""
        return f"{self.topic_prefix}{name}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None:
            env_path = os.environ.get(CONFIG_ENV, "").strip()
            path = Path(env_path) if env_path else None
        toml = TomlSource(settings_cls, path)
        return (init_settings, env_settings, ClientOptionsSource(settings_cls), toml)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, turning a bad value into a :class:`SettingsError` naming it."""
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False):
            if error["loc"]:
                field = str(error["loc"][0])
                problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
            else:  # a check across settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
        # from None: pydantic's own message repeats the rejected input, which may be a secret.
        raise SettingsError(
            "bad setting, fix it and start again:\n  " + "\n  ".join(problems)
        ) from None
    finally:
        _config_file.reset(token)
