"""Deployment settings: advertised URL, secrets from files, client options, OAUTHBEARER."""

from __future__ import annotations

import base64
import os
import socket
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from supplyflow.app.cli import main
from supplyflow.app.exceptions import AppError, SettingsError
from supplyflow.app.kafka_clients import client_options, faust_client_settings
from supplyflow.app.oauth_tokens import TokenSource, jwt_expiry
from supplyflow.app.setting_types import check_advertised_url, derive_advertised_url
from supplyflow.app.settings import SECRET_SETTINGS, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SUPPLYFLOW_"):
            monkeypatch.delenv(name)


def _jwt(exp: float) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'sub': 'supplyflow', 'exp': exp})}."


# -- advertised URL ------------------------------------------------------------------------


def test_advertised_url_defaults_to_the_bind_address_or_the_host_name() -> None:
    assert load_settings().web_advertised_url == "http://127.0.0.1:6066"
    assert load_settings(web_host="10.1.2.3", web_port=7000).web_advertised_url == (
        "http://10.1.2.3:7000"
    )
    for wildcard in ("0.0.0.0", "::"):
        settings = load_settings(web_host=wildcard)
        assert settings.web_advertised_url == f"http://{socket.gethostname()}:6066"
    assert derive_advertised_url("::1", 6066) == "http://[::1]:6066"
    given = load_settings(web_host="0.0.0.0", advertised_url="http://worker-1:6066/")
    assert given.web_advertised_url == "http://worker-1:6066"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://0.0.0.0:6066", "wildcard"),
        ("http://[::]:6066", "wildcard"),
        ("worker-1:6066", "not an http:// URL"),
        ("http://worker-1", "names no port"),
        ("http://worker-1:6066/api", "scheme, host and port only"),
    ],
)
def test_unusable_advertised_urls_are_refused(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        check_advertised_url(url)
    with pytest.raises(SettingsError, match="SUPPLYFLOW_ADVERTISED_URL"):
        load_settings(advertised_url=url)


def test_worker_refuses_to_start_advertising_a_wildcard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("SUPPLYFLOW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUPPLYFLOW_ADVERTISED_URL", "http://0.0.0.0:6066")
    assert main(["worker"]) == 2
    assert "SUPPLYFLOW_ADVERTISED_URL" in capsys.readouterr().err
    # The derived default is refused too when the host has no usable name.
    monkeypatch.delenv("SUPPLYFLOW_ADVERTISED_URL")
    monkeypatch.setenv("SUPPLYFLOW_WEB_HOST", "0.0.0.0")
    monkeypatch.setattr(socket, "gethostname", lambda: "")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert "SUPPLYFLOW_ADVERTISED_URL" in err
    assert "wildcard" in err
    assert not (tmp_path / "data").exists(), "refused before touching anything"


# -- secrets from files --------------------------------------------------------------------


def test_every_secret_setting_can_come_from_a_file() -> None:
    fields = Settings.model_fields.items()
    secrets = {name for name, field in fields if "SecretStr" in str(field.annotation)}
    assert secrets == set(SECRET_SETTINGS)
    for name in secrets:
        assert f"{name}_file" in Settings.model_fields, f"SUPPLYFLOW_{name.upper()}_FILE"


def test_secret_files_are_read_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("an-api-token-from-a-file-0123\n")
    password.write_text("p@ss word\n")
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN_FILE", str(token))
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SASL_PASSWORD_FILE", str(password))
    settings = load_settings()
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "an-api-token-from-a-file-0123"
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "p@ss word"
    assert "p@ss" not in repr(settings)
    assert "p@ss" not in str(settings.model_dump())


def test_secret_file_problems_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="SUPPLYFLOW_API_TOKEN_FILE: cannot read"):
        load_settings()
    (tmp_path / "empty").write_text("\n")
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN_FILE", str(tmp_path / "empty"))
    with pytest.raises(SettingsError, match="is empty"):
        load_settings()
    (tmp_path / "token").write_text("x" * 20)
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN", "y" * 20)
    with pytest.raises(SettingsError, match="not both"):
        load_settings()
    (tmp_path / "short").write_text("short")
    monkeypatch.delenv("SUPPLYFLOW_API_TOKEN")
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN_FILE", str(tmp_path / "short"))
    with pytest.raises(SettingsError, match=r"SUPPLYFLOW_API_TOKEN: .*16 characters"):
        load_settings()


# -- client options --------------------------------------------------------------------------


def test_client_options_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_CLIENT_REQUEST_TIMEOUT_MS", "120000")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_CLIENT_CLIENT_ID", "supplyflow-eu")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_CLIENT_CONNECTIONS_MAX_IDLE_MS", "180000")
    settings = load_settings()
    assert settings.kafka_client == {
        "request_timeout_ms": 120000,
        "client_id": "supplyflow-eu",
        "connections_max_idle_ms": 180000,
    }
    options = client_options(settings)
    assert options["request_timeout_ms"] == 120000
    assert options["client_id"] == "supplyflow-eu"
    assert faust_client_settings(settings) == {
        "broker_request_timeout": 120.0,
        "broker_client_id": "supplyflow-eu",
        "consumer_connections_max_idle_ms": 180000,
        "producer_connections_max_idle_ms": 180000,
    }
    # The TOML form and the environment form agree.
    assert load_settings(kafka_client="client_id=x,metadata_max_age_ms=60000").kafka_client == {
        "client_id": "x",
        "metadata_max_age_ms": 60000,
    }


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SUPPLYFLOW_KAFKA_CLIENT_LINGER_MS", "5", "not an option every Kafka client takes"),
        ("SUPPLYFLOW_KAFKA_CLIENT_SECURITY_PROTOCOL", "SSL", "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL"),
        ("SUPPLYFLOW_KAFKA_CLIENT_REQUEST_TIMEOUT_MS", "soon", "whole number"),
        ("SUPPLYFLOW_KAFKA_CLIENT_REQUEST_TIMEOUT_MS", "30000", "shorter than"),
    ],
)
def test_bad_client_options_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=says):
        load_settings()


# -- OAUTHBEARER -------------------------------------------------------------------------------


def test_oauthbearer_needs_exactly_one_token_source(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(_jwt(2e9))
    base: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "OAUTHBEARER",
    }
    settings = load_settings(**base, kafka_sasl_oauth_token_file=str(token))
    assert client_options(settings)["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(client_options(settings)["sasl_oauth_token_provider"], TokenSource)
    with pytest.raises(SettingsError, match="needs one token source"):
        load_settings(**base)
    with pytest.raises(SettingsError, match="needs one token source"):
        load_settings(
            **base, kafka_sasl_oauth_token_file=str(token), kafka_sasl_oauth_token_command="x"
        )
    with pytest.raises(SettingsError, match="unset them"):
        load_settings(
            **base,
            kafka_sasl_oauth_token_file=str(token),
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    with pytest.raises(SettingsError, match="not OAUTHBEARER"):
        load_settings(kafka_sasl_oauth_token_command="x")


async def test_token_file_is_read_at_every_authentication(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(_jwt(2e9) + "\n")
    source = TokenSource(file=path)
    assert await source.token() == _jwt(2e9)
    path.write_text(_jwt(2.1e9))  # rotated by whatever keeps it fresh
    assert await source.token() == _jwt(2.1e9)
    assert _jwt(2.1e9) not in repr(source)
    path.write_text("")
    with pytest.raises(AppError, match=r"SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE.*empty"):
        await source.token()


async def test_token_command_runs_again_only_near_expiry(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    script = tmp_path / "token.py"
    script.write_text(
        "import pathlib, sys\n"
        f"p = pathlib.Path({str(counter)!r})\n"
        "n = int(p.read_text()) + 1 if p.exists() else 1\n"
        "p.write_text(str(n))\n"
        "print(sys.argv[1])\n"
    )
    fresh = _jwt(4e9)
    source = TokenSource(command=f"{sys.executable} {script} {fresh}")
    assert await source.token() == fresh
    assert await source.token() == fresh
    assert counter.read_text() == "1", "a JWT far from its expiry is reused"
    expiring = _jwt(1.0)  # expired long ago: fetched every time
    source = TokenSource(command=f"{sys.executable} {script} {expiring}")
    await source.token()
    await source.token()
    assert counter.read_text() == "3"
    assert jwt_expiry("not-a-jwt") is None
    failing = TokenSource(command=f"{sys.executable} -c 'import sys; sys.exit(\"no creds\")'")
    with pytest.raises(AppError, match="exited 1 without a token: no creds"):
        await failing.token()
