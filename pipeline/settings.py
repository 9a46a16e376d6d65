"""Read a TOML config into a typed pydantic-settings schema; ``VESTWATCH_*`` variables override it.

>>> settings = load_settings(MySchema, Path("config.toml"))  # VESTWATCH_DETECTOR__CONF=0.4 wins over the file

Errors come back as one ``ConfigError`` line naming the file, the field and the reason.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any, TypeVar

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "VESTWATCH_"


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line naming the culprit."""


class EnvOverridesFile(BaseSettings):
    """Base for config schemas: the environment beats the file, nested keys joined by ``__``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


Schema = TypeVar("Schema", bound=EnvOverridesFile)


def load_settings(schema: type[Schema], path: Path | None) -> Schema:
    """The schema filled from ``path`` (or from defaults and environment alone when None)."""
    values: dict[str, Any] = {}
    origin = str(path) if path else "defaults"
    if path is not None:
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except OSError as error:  # a service user the file was not made readable for, a folder, a bad disk
            raise ConfigError(f"{path}: cannot read it as user {_user()} ({error.strerror})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
    try:
        return schema(**values)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ConfigError(f"{origin}: {field}: {first['msg']}{more}") from None


def _user() -> str:
    """Who this process reads files as: the name systemd's ``User=`` gave it, else the numeric id."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
