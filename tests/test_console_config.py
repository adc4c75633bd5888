"""`lgw config check` shows the console (on or off and why, its tokens file and how many
tokens, never a digest; the OIDC issuer; sessions), run in process through
`gateway.cli.main`; and the deploy files wire the console's secrets consistently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import EXIT_OK, main
from gateway.console.auth import add_to_tokens_file, token_digest
from tests.console_helpers import gateway_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LGW_CONSOLE_TOKENS_FILE", "LGW_CONSOLE_TOKENS_FILE_FILE", "LGW_CONSOLE_SESSION_KEY",
                 "LGW_CONSOLE_SESSION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


def check(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["config", "check", "--config", str(config), *extra]) == EXIT_OK
    return capsys.readouterr().out


def test_console_off_without_tokens_file_or_issuer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = check(gateway_yaml(tmp_path), capsys).splitlines()
    assert (f"console: off (no tokens file at {tmp_path / 'tokens.yaml'} and no console.oidc; "
            "`lgw console token new --name NAME --role admin` makes one)") in lines
    lines = check(gateway_yaml(tmp_path, enabled=False), capsys).splitlines()
    assert "console: off (console.enabled: false)" in lines


def test_console_on_shows_the_tokens_file_and_count_never_a_digest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = gateway_yaml(tmp_path, session_minutes=60)
    tokens = [add_to_tokens_file(tmp_path / "tokens.yaml", name, [role])
              for name, role in (("ana", "admin"), ("ops", "operator"), ("prometheus", "viewer"))]
    monkeypatch.setenv("LGW_CONSOLE_SESSION_KEY", "a-session-key-not-to-show-0123456789")
    out = check(config, capsys)
    lines = out.splitlines()
    assert "console: on (/api/v1, /console; /metrics needs a token)" in lines
    assert f"  tokens file: {tmp_path / 'tokens.yaml'} (3 tokens)" in lines
    assert "  oidc: none" in lines
    assert "  sessions: 60 minutes, signed with LGW_CONSOLE_SESSION_KEY [set]" in lines
    assert "  failed logins: at most 10 per address in 60 s" in lines
    info = json.loads(check(config, capsys, "--json"))["console"]
    assert info["enabled"] is True and info["tokens_file"]["count"] == 3 and info["session_minutes"] == 60
    for text in (out, json.dumps(info)):
        assert "a-session-key-not-to-show" not in text
        for token in tokens:
            assert token not in text and token_digest(token) not in text


def test_the_environment_names_the_tokens_file_and_oidc_is_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "secrets" / "tokens.yaml"
    add_to_tokens_file(elsewhere, "one", ["viewer"])
    monkeypatch.setenv("LGW_CONSOLE_TOKENS_FILE", str(elsewhere))
    config = gateway_yaml(tmp_path, oidc={"issuer": "https://idp.example/realms/ops", "audience": "lgw",
                                          "role_map": {"ops": "operator"}})
    lines = check(config, capsys).splitlines()
    assert f"  tokens file: {elsewhere} (1 token)" in lines
    assert "  oidc: https://idp.example/realms/ops (audience lgw, roles claim roles)" in lines
    assert "  sessions: 480 minutes, signed with a key file in the data dir" in lines


def test_an_issuer_alone_turns_it_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = gateway_yaml(tmp_path, oidc={"issuer": "https://idp.example", "audience": "lgw"})
    lines = check(config, capsys).splitlines()
    assert "console: on (/api/v1, /console; /metrics needs a token)" in lines
    assert f"  tokens file: {tmp_path / 'tokens.yaml'} (none)" in lines


def test_a_broken_tokens_file_is_shown_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = gateway_yaml(tmp_path)
    add_to_tokens_file(tmp_path / "tokens.yaml", "one", ["viewer"])
    (tmp_path / "tokens.yaml").chmod(0o664)
    lines = check(config, capsys).splitlines()
    broken = [line for line in lines if line.startswith("  tokens file:")]
    assert len(broken) == 1 and "[BROKEN: " in broken[0] and "found mode 0664" in broken[0]


def test_compose_and_prometheus_wire_the_console_secrets() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    gateway, prometheus = compose["services"]["gateway"], compose["services"]["prometheus"]
    secrets = compose["secrets"]
    env = gateway["environment"]
    assert env["LGW_CONSOLE_TOKENS_FILE"] == "/run/secrets/lgw-console-tokens"
    assert env["LGW_CONSOLE_SESSION_KEY_FILE"] == "/run/secrets/lgw-console-session-key"
    assert set(gateway["secrets"]) == {"lgw-console-tokens", "lgw-console-session-key"}
    assert prometheus["secrets"] == ["lgw-metrics-token"]
    for name in (*gateway["secrets"], *prometheus["secrets"]):
        assert secrets[name]["file"].startswith("./secrets/"), name
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    lgw = next(job for job in scrape["scrape_configs"] if job["job_name"] == "lgw")
    assert lgw["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/lgw-metrics-token"}
    assert "/secrets/" in (ROOT / ".gitignore").read_text().split()
    readme = (ROOT / "deploy" / "README-console.md").read_text(encoding="utf-8")
    assert "lgw console token new --name prometheus --role viewer" in readme
