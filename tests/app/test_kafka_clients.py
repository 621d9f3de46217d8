"""Kafka security settings: validation, the options every client gets, secrets kept out."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from supplyflow.app.exceptions import SettingsError
from supplyflow.app.kafka_clients import client_options
from supplyflow.app.settings import Settings, load_settings
from supplyflow.app.worker import broker_credentials

SECRET = "pw-that-must-not-leak-42"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SUPPLYFLOW_"):
            monkeypatch.delenv(name)


def test_plaintext_by_default() -> None:
    settings = load_settings(bootstrap="k1:9092,k2:9092")
    assert client_options(settings) == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert broker_credentials(settings) is None
    assert client_options("h:1") == {"bootstrap_servers": "h:1"}


def test_sasl_ssl_options_carry_the_secret_only_to_the_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN", SECRET + "-token")
    settings = load_settings()
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc"
    assert options["sasl_plain_password"] == SECRET
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    credentials = broker_credentials(settings)
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_SSL"
    for shown in (repr(settings), str(settings), settings.model_dump_json(), repr(credentials)):
        assert SECRET not in shown


def test_ssl_only_and_hostname_check_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SSL_CHECK_HOSTNAME", "false")
    options = client_options(load_settings())
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    assert not options["ssl_context"].check_hostname
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SUPPLYFLOW_KAFKA_SASL_USERNAME",
        ),
        (
            {"SUPPLYFLOW_KAFKA_SASL_USERNAME": "svc", "SUPPLYFLOW_KAFKA_SASL_PASSWORD": SECRET},
            "set it to SASL_SSL",
        ),
        (
            {"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"},
            "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL",
        ),
        (
            {"SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "SUPPLYFLOW_KAFKA_SSL_CAFILE": "/nope"},
            "SUPPLYFLOW_KAFKA_SSL_CAFILE: Value error, cannot read /nope",
        ),
        ({"SUPPLYFLOW_KAFKA_SSL_CAFILE": __file__}, "set it to SSL or SASL_SSL"),
        ({"SUPPLYFLOW_API_TOKEN": "short-" + SECRET[:5]}, "at least 16 characters"),
        (
            {
                "SUPPLYFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "SUPPLYFLOW_KAFKA_SASL_USERNAME": "svc",
                "SUPPLYFLOW_KAFKA_SASL_PASSWORD": SECRET,
                "SUPPLYFLOW_KAFKA_SASL_MECHANISM": "MD5",
            },
            "SUPPLYFLOW_KAFKA_SASL_MECHANISM",
        ),
    ],
)
def test_bad_security_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert says in str(info.value)
    assert SECRET not in str(info.value)
    # pydantic's error repeats the input: a traceback must not print it.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPLYFLOW_API_TOKEN", "")
    monkeypatch.setenv("SUPPLYFLOW_KAFKA_SASL_PASSWORD", " ")
    settings = load_settings()
    assert settings.api_token is None
    assert settings.kafka_sasl_password is None


def test_unreadable_tls_files_say_what_to_fix(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=bogus)
    with pytest.raises(Exception, match="SUPPLYFLOW_KAFKA_SSL_CAFILE must be a PEM CA bundle"):
        client_options(settings)
