"""Secrets from files (`NAME_FILE`) wherever a secret is taken from the environment: ODBC
`${NAME}` placeholders and the LGW_* overrides; a value is never echoed in an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.odbc.connection import resolve_placeholders
from adapters.secrets import MAX_SECRET_BYTES, env_value
from gateway.config import load_config
from schemas.errors import ConfigError

SECRET = "s3cr3t;with{braces}"


def _secret_file(tmp_path: Path, text: str = SECRET + "\n") -> Path:
    path = tmp_path / "odbc-password"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_placeholder_takes_the_file_that_name_file_names(tmp_path: Path) -> None:
    env = {"DB_PASSWORD_FILE": str(_secret_file(tmp_path))}
    resolved = resolve_placeholders("Driver={PostgreSQL Unicode};Uid=gw;Pwd=${DB_PASSWORD};", env)
    assert resolved == "Driver={PostgreSQL Unicode};Uid=gw;Pwd={s3cr3t;with{braces}}};"  # braced as the grammar wants
    assert resolve_placeholders("Pwd=${DB_PASSWORD};", {"DB_PASSWORD": "plain"}) == "Pwd=plain;"


def test_the_variable_and_its_file_together_are_refused(tmp_path: Path) -> None:
    env = {"DB_PASSWORD": "a", "DB_PASSWORD_FILE": str(_secret_file(tmp_path))}
    with pytest.raises(ConfigError, match=r"^both DB_PASSWORD and DB_PASSWORD_FILE are set: set one of them$"):
        env_value("DB_PASSWORD", env)


@pytest.mark.parametrize("problem", ["missing", "too_big", "binary"])
def test_an_unusable_secret_file_is_one_line_that_never_quotes_it(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "secret"
    if problem == "too_big":
        path.write_text(SECRET * (MAX_SECRET_BYTES // len(SECRET) + 1), encoding="utf-8")
    elif problem == "binary":
        path.write_bytes(SECRET.encode() + b"\xff\xfe")
    with pytest.raises(ConfigError) as info:
        env_value("DB_PASSWORD", {"DB_PASSWORD_FILE": str(path)})
    message = str(info.value)
    assert message.startswith(f"DB_PASSWORD_FILE names {path}, which ") and "\n" not in message
    assert SECRET not in message


def test_a_missing_secret_names_the_variable_and_its_file_form() -> None:
    with pytest.raises(ConfigError, match=r"environment variable DB_PASSWORD \(or DB_PASSWORD_FILE\)"):
        resolve_placeholders("Pwd=${DB_PASSWORD};", {})


def test_lgw_overrides_come_from_files_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"models": {"risk": {"endpoint": {"backend": "kserve", "url": "http://x:1",
                                                                     "model_name": "risk"}}}}))
    for name, value in {"LGW_STATE_URL": "postgresql+psycopg://gw:pw@db/state",
                        "LGW_AMQP_URL": "amqp://gw:pw@mq:5672/",
                        "LGW_MODEL_RISK_URL": "http://model:8080"}.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        monkeypatch.setenv(f"{name}_FILE", str(path))
    cfg = load_config(config)
    assert cfg.state.url == "postgresql+psycopg://gw:pw@db/state"
    assert cfg.amqp.url == "amqp://gw:pw@mq:5672/"
    assert cfg.models["risk"].endpoint.url == "http://model:8080"  # type: ignore[union-attr]
