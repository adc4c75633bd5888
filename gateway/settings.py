"""Every `LGW_*` environment override in one place (pydantic-settings).

Each setting may come from the variable itself or from the file its `_FILE` variable
names (`LGW_STATE_URL_FILE=/run/secrets/state-url`, a Kubernetes secret mount), read by
adapters.secrets.env_value, the one implementation of that rule. Values that may carry
credentials are SecretStr, so a repr or a log line never shows them; errors name the
variable, never its value.

    LGW_STATE_URL          state store URL (default: see default_state_url)
    LGW_KAFKA_BOOTSTRAP    Kafka bootstrap servers, over gateway.yaml's kafka.bootstrap_servers
    LGW_AMQP_URL           AMQP URL, over gateway.yaml's amqp.url
    LGW_MODEL_<NAME>_URL   URL of the HTTP model NAME (see model_url)
    LGW_LOG_FORMAT         auto | text | json (gateway.logs checks the value)
    LGW_DATA_DIR           where state and drop folders live without a gateway.yaml
    LGW_OPS_ADDRESS        HOST:PORT of the /healthz, /readyz, /metrics server
    LGW_INSTANCE           this replica's name as the owner of batch runs (default: the host
                           name; see gateway.runs)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters.secrets import env_value
from schemas.errors import ConfigError

ENV_PREFIX = "LGW_"
# 9464: the port OpenTelemetry's Prometheus exporter registered; loopback so that a
# process started by hand exposes nothing beyond the host.
DEFAULT_OPS_ADDRESS = "127.0.0.1:9464"
STATE_FILE = "lgw-state.db"


class _EnvOrFile(PydanticBaseSettingsSource):
    """`LGW_NAME` or the content of the file `LGW_NAME_FILE` names; an empty variable
    counts as unset (compose files write `LGW_STATE_URL: ${X:-}`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return env_value(env_name(field_name)), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value:
                values[key] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid")

    state_url: SecretStr | None = None
    kafka_bootstrap: str | None = None
    amqp_url: SecretStr | None = None
    log_format: str | None = None
    data_dir: Path | None = None
    instance: str | None = None  # owner name of batch runs (gateway.runs.this_process), else the host name
    ops_address: str | None = None  # None: `ops.address` of gateway.yaml, else DEFAULT_OPS_ADDRESS
    pii_key: SecretStr | None = None  # HMAC key of `pii: hash` fields (else a key file in the data directory)
    console_session_key: SecretStr | None = None  # signs console sessions (else a key file in the data dir)
    console_tokens_file: Path | None = None  # hashed API tokens (else `console.tokens_file`, else the data dir)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # only our source: pydantic's env source knows no `_FILE` variables, and a .env
        # file in whatever directory the command starts from must not change the gateway
        return init_settings, _EnvOrFile(settings_cls)

    @field_validator("ops_address")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            ops_host_port(value)
        return value


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def ops_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6) as (host, port); port 0 takes a free port."""
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{env_name('ops_address')}: expected HOST:PORT such as {DEFAULT_OPS_ADDRESS} "
                         "(port 0 for a free one), "
                         f"found {address!r}")
    return host, int(port)


def load_settings() -> Settings:
    """The settings of this process, read now (cheap: a few variables). A bad value is a
    ConfigError with one line naming the variable, what was expected and what was found."""
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        # pydantic's own wording would quote the value, which may be a secret
        raise ConfigError(message if message.startswith(ENV_PREFIX)
                          else f"{env_name(field)}: {message}") from None


def env_setting(field_name: str) -> str | None:
    """One setting's raw text (`log_format` reads LGW_LOG_FORMAT or its _FILE), for a
    caller that needs that one only and must not fail on another's mistake."""
    if field_name not in Settings.model_fields:
        raise KeyError(field_name)
    return env_value(env_name(field_name)) or None


def settings_problems(model_names: Iterable[str] = ()) -> list[str]:
    """Every problem of the environment at once (`lgw config check`), one line each:
    a variable set twice (itself and its _FILE), an unreadable file, a bad value; the
    `LGW_MODEL_<NAME>_URL` of each of `model_names` too. Values are never quoted
    except where harmless (an address)."""
    problems: list[str] = []
    for name in Settings.model_fields:
        try:
            value = env_value(env_name(name))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if value and name == "ops_address":
            try:
                ops_host_port(value)
            except ValueError as exc:
                problems.append(str(exc))
    for model in model_names:
        try:
            model_url(model)
        except ConfigError as exc:
            problems.append(str(exc))
    if not problems:
        try:
            load_settings()
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def env_status(name: str) -> str:
    """Whether the variable `name` (or its `_FILE`) is set, never its value: `[set]`,
    `[set] (from NAME_FILE)` or `[NOT SET]`."""
    if os.environ.get(f"{name}_FILE"):
        return f"[set] (from {name}_FILE)"
    return "[set]" if os.environ.get(name) else "[NOT SET]"


def environment_status(model_names: Iterable[str] = ()) -> dict[str, str]:
    """Every LGW_* override this process would read, as env_status says it."""
    names = [env_name(field) for field in Settings.model_fields]
    names += [f"{ENV_PREFIX}MODEL_{model.upper()}_URL" for model in model_names]
    return {name: env_status(name) for name in names}


def secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def model_url(name: str) -> str | None:
    """`LGW_MODEL_<NAME>_URL` (or its `_FILE`): the URL of the HTTP model `name`. Model
    names come from gateway.yaml, so this one is not a fixed field."""
    return env_value(f"{ENV_PREFIX}MODEL_{name.upper()}_URL") or None


def data_dir(settings: Settings | None = None) -> Path:
    """LGW_DATA_DIR, else $XDG_DATA_HOME/lgw, else ~/.local/share/lgw (the XDG Base
    Directory default); absolute, so a later chdir does not move it."""
    if settings is not None:
        chosen = settings.data_dir
    else:  # this setting only: a mistake in another one is reported where that one is used
        text = env_setting("data_dir")
        chosen = Path(text) if text else None
    if chosen is None:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        # the XDG spec: a relative XDG_DATA_HOME is invalid and ignored
        chosen = Path(xdg) / "lgw" if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share" / "lgw"
    return chosen.expanduser().absolute()


def default_state_url(config_dir: Path | None, settings: Settings | None = None) -> str:
    """SQLite beside the config (`<config dir>/var/lgw-state.db`), or in the data
    directory without one: one store per config wherever the command starts."""
    folder = config_dir.absolute() / "var" if config_dir is not None else data_dir(settings)
    return f"sqlite:///{folder / STATE_FILE}"


def resolve_state_url(url: str, config_dir: Path) -> str:
    """A relative SQLite path in gateway.yaml is relative to the file, as its folders are."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix):].partition("?")
    if not path or path == ":memory:" or path.startswith(("/", "file:")):
        return url
    return f"{prefix}{os.path.normpath(config_dir.absolute() / path)}{sep}{query}"


__all__ = ["DEFAULT_OPS_ADDRESS", "Settings", "data_dir", "default_state_url", "env_setting", "env_status",
           "environment_status", "load_settings",
           "model_url", "ops_host_port", "resolve_state_url", "secret", "settings_problems"]
