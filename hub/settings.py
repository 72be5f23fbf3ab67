"""Typed settings, loaded from ``amihub.toml`` and ``AMIHUB_*`` environment variables.

Precedence: explicit arguments > environment > TOML file > defaults. Nested
sections use a double underscore in the environment, e.g.
``AMIHUB_LIMITS__MAX_MESSAGE_BYTES=1048576``. ``AMIHUB_CONFIG`` names the TOML file.
Nothing here connects to anything; :func:`load_settings` only reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hub.security import UserSettings

DEFAULT_CONFIG_FILE = "amihub.toml"


class LimitSettings(BaseModel):
    #: Largest message any adapter accepts (bytes). Larger input is refused while it is read.
    max_message_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: Messages up to this size are parsed as a tree (exact xpaths in schema errors);
    #: larger ones (files) are streamed with bounded memory.
    tree_limit_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    #: Largest file `amihub import` or an SFTP inbox accepts (bytes).
    max_file_bytes: int = Field(default=16 * 1024 * 1024 * 1024, gt=0)
    #: Largest IntervalBlock (readings of one meter and ReadingType in one block).
    max_block_readings: int = Field(default=200_000, gt=0)
    #: Readings held in memory between flushes to the store while ingesting.
    ingest_batch_rows: int = Field(default=50_000, gt=0)


class SoapSettings(BaseModel):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080


class AmqpSettings(BaseModel):
    enabled: bool = False
    url: str = "memory://"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AMIHUB_",
        env_nested_delimiter="__",
        extra="forbid",
        toml_file=DEFAULT_CONFIG_FILE,
    )

    #: SQLAlchemy URL of the meter data store. SQLite is the embedded default.
    database_url: str = "sqlite:///amihub.db"
    #: The utility used when neither the adapter nor the message names one.
    default_utility: str = "DEFAULT"
    default_utility_name: str = "Default utility"
    log_level: str = "INFO"
    limits: LimitSettings = LimitSettings()
    #: principals for every adapter (see hub/security.py)
    users: list[UserSettings] = Field(default_factory=list)
    soap: SoapSettings = SoapSettings()
    amqp: AmqpSettings = AmqpSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("AMIHUB_CONFIG", DEFAULT_CONFIG_FILE))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read settings now (TOML file, environment), with explicit overrides on top."""
    from pydantic import ValidationError

    from hub.errors import ConfigurationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
