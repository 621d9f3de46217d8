"""SASL OAUTHBEARER tokens for every Kafka client: from a file or from a command.

Managed clusters hand out short-lived tokens (Confluent Cloud and other OIDC set-ups a JWT,
Amazon MSK IAM a signed URL). aiokafka asks for a token each time a connection
authenticates; :class:`TokenSource` answers:

- ``SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE``: the file is read at every authentication, so
  whatever keeps it fresh (a Kubernetes projected token, a sidecar, a cron job) is followed
  without a restart;
- ``SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_COMMAND``: the command (split like a shell would, run
  without one) prints the token on stdout. A JWT is kept until a minute before its ``exp``;
  any other token is fetched again at every authentication.

The token is a secret: it never appears in a message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import shlex
import subprocess
import time
from pathlib import Path
from typing import Final

import orjson
from aiokafka.abc import AbstractTokenProvider

from supplyflow.app.exceptions import AppError

__all__ = ["TokenSource", "jwt_expiry"]

#: A token is fetched again this long before the expiry its JWT states.
REFRESH_MARGIN_S: Final = 60.0
#: The longest a token command may run.
COMMAND_TIMEOUT_S: Final = 30.0
_FILE_SETTING: Final = "SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_FILE"
_COMMAND_SETTING: Final = "SUPPLYFLOW_KAFKA_SASL_OAUTH_TOKEN_COMMAND"
#: command -> (JWT, when to fetch a new one): shared by every client of the process, so
#: the worker's consumers, producers and admin clients run the command once per token.
_COMMAND_TOKENS: dict[tuple[str, ...], tuple[str, float]] = {}


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, or None for a token that is not one."""
    parts = token.split(".")
    if len(parts) != 3:  # header.payload.signature
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    return float(expiry) if isinstance(expiry, int | float) else None


class TokenSource(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no types
    """An OAUTHBEARER token provider reading a file or running a command."""

    def __init__(self, *, file: Path | None = None, command: str | None = None) -> None:
        if (file is None) == (command is None):
            raise AppError(
                f"OAUTHBEARER needs one token source: {_FILE_SETTING} or {_COMMAND_SETTING}"
            )
        self.file = file
        self.argv = tuple(shlex.split(command)) if command is not None else ()

    def __repr__(self) -> str:  # never the token
        source = f"file {self.file}" if self.file is not None else f"command {self.argv[0]!r}"
        return f"<TokenSource from {source}>"

    async def token(self) -> str:
        if self.file is not None:
            return await asyncio.to_thread(self._read_file, self.file)
        cached = _COMMAND_TOKENS.get(self.argv)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        token = await asyncio.to_thread(self._run_command)
        expiry = jwt_expiry(token)
        if expiry is not None:
            _COMMAND_TOKENS[self.argv] = (token, expiry - REFRESH_MARGIN_S)
        return token

    @staticmethod
    def _read_file(path: Path) -> str:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise AppError(f"{_FILE_SETTING}: cannot read the token from {path}: {exc}") from exc
        if not token:
            raise AppError(f"{_FILE_SETTING}: {path} is empty: whatever writes the token failed")
        return token

    def _run_command(self) -> str:
        name = self.argv[0] if self.argv else "(empty)"
        try:
            done = subprocess.run(
                self.argv,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AppError(f"{_COMMAND_SETTING}: cannot run {name}: {exc}") from exc
        token = done.stdout.strip()
        if done.returncode != 0 or not token:
            # stderr may explain; stdout may hold a token, so it is never shown.
            reason = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise AppError(
                f"{_COMMAND_SETTING}: {name} exited {done.returncode} without a token: {reason[0]}"
            )
        return token
