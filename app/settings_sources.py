"""Where settings come from besides the environment: a TOML file, and the Kafka client
options collected from ``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>`` variables."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from supplyflow.app.exceptions import SettingsError
from supplyflow.app.setting_types import client_options_from_env

__all__ = ["CONFIG_ENV", "ClientOptionsSource", "TomlSource"]

CONFIG_ENV = "SUPPLYFLOW_CONFIG"


class TomlSource(PydanticBaseSettingsSource):
    """Values from a flat TOML file whose keys are the setting names without the prefix."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if path is None:
            return
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except OSError as exc:
            raise SettingsError(
                f"{CONFIG_ENV}: cannot read config file {path}: {exc.strerror}"
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{CONFIG_ENV}: {path} is not valid TOML: {exc}") from exc
        fields = settings_cls.model_fields
        for key, value in raw.items():
            name = key.lower().removeprefix("supplyflow_")
            if name not in fields:
                raise SettingsError(
                    f"{CONFIG_ENV}: {path} sets unknown setting {key!r}; "
                    f"known: {', '.join(sorted(fields))}"
                )
            self._values[name] = value

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


class ClientOptionsSource(PydanticBaseSettingsSource):
    """``SUPPLYFLOW_KAFKA_CLIENT_<OPTION>`` variables, collected into ``kafka_client``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        options = client_options_from_env()
        return {"kafka_client": options} if options else {}
