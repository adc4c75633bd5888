"""Secrets from the environment or from files (`NAME_FILE`, as Kubernetes secret mounts
and the official database images have it), for every place a password, token or URL
with credentials is taken: ODBC `${NAME}` placeholders and the `LGW_*` overrides.

A value is never echoed: errors name the variable and the file, not what they hold."""

from __future__ import annotations

import os
from collections.abc import Mapping

from schemas.errors import ConfigError

MAX_SECRET_BYTES = 64 * 1024  # a secret file larger than this is not a secret file


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of `name` from the environment, or the content of the file `NAME_FILE`
    names (one trailing newline dropped); None when neither is set."""
    env = os.environ if environ is None else environ
    path = env.get(f"{name}_FILE")
    if path is None:
        return env.get(name)
    if name in env:
        raise ConfigError(f"both {name} and {name}_FILE are set: set one of them")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}_FILE names {path}, which cannot be read: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{name}_FILE names {path}, which is larger than {MAX_SECRET_BYTES} bytes: "
                          "expected a file holding one secret")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{name}_FILE names {path}, which is not UTF-8 text") from None
    return text[:-1] if text.endswith("\n") else text


__all__ = ["MAX_SECRET_BYTES", "env_value"]


def required_env(name: str, field: str, expected: str) -> str:
    """`env_value(name)`, which a config field (`field`, e.g. kafka.sasl.password_env)
    says must be set: otherwise one ConfigError naming the field, both variables and what
    the value is for (`expected`)."""
    value = env_value(name)
    if not value:
        raise ConfigError(f"{field}: {name} is not set (nor {name}_FILE): expected {expected}")
    return value
