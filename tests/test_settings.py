"""gateway.settings: every LGW_* override in one place, each also from a `_FILE`; the state
store's one place per config (beside gateway.yaml, or in the data directory), whatever
directory a command starts from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.cli import EXIT_ERROR, EXIT_OK, main
from gateway.config import embedded_defaults, example_dropfolder_config, load_config
from gateway.settings import (
    DEFAULT_OPS_ADDRESS,
    data_dir,
    default_state_url,
    load_settings,
    model_url,
    resolve_state_url,
)
from gateway.state import StateStore
from schemas.errors import ConfigError

SECRET = "s3cr3t-Pw"
KSERVE = "models: {risk: {endpoint: {backend: kserve, url: 'http://svc:8080', model_name: risk}}}\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LGW_") and name != "LGW_DATA_DIR":
            monkeypatch.delenv(name)


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")  # a secret mount's trailing newline is not part of it
    return path


# ---------------------------------------------------------------- the settings themselves

@pytest.mark.parametrize(("variable", "field", "value"), [
    ("LGW_STATE_URL", "state_url", f"postgresql+psycopg://gw:{SECRET}@db/state"),
    ("LGW_AMQP_URL", "amqp_url", f"amqp://gw:{SECRET}@mq:5672/"),
    ("LGW_KAFKA_BOOTSTRAP", "kafka_bootstrap", "broker1:9093,broker2:9093"),
    ("LGW_LOG_FORMAT", "log_format", "json"),
    ("LGW_OPS_ADDRESS", "ops_address", "0.0.0.0:9464"),
])
@pytest.mark.parametrize("from_file", [False, True])
def test_every_setting_comes_from_its_variable_or_its_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, field: str, value: str,
        from_file: bool) -> None:
    if from_file:
        monkeypatch.setenv(f"{variable}_FILE", str(secret_file(tmp_path, "secret", value)))
    else:
        monkeypatch.setenv(variable, value)
    got = getattr(load_settings(), field)
    assert (got.get_secret_value() if hasattr(got, "get_secret_value") else got) == value


def test_secrets_stay_out_of_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_STATE_URL", f"postgresql+psycopg://gw:{SECRET}@db/state")
    monkeypatch.setenv("LGW_AMQP_URL", f"amqp://gw:{SECRET}@mq:5672/")
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_a_variable_and_its_file_both_set_is_one_line_without_the_value(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_STATE_URL", f"postgresql://gw:{SECRET}@db/state")
    monkeypatch.setenv("LGW_STATE_URL_FILE", str(secret_file(tmp_path, "url", f"postgresql://x:{SECRET}@db/s")))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == "both LGW_STATE_URL and LGW_STATE_URL_FILE are set: set one of them"


def test_an_unreadable_secret_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope"
    monkeypatch.setenv("LGW_AMQP_URL_FILE", str(missing))
    with pytest.raises(ConfigError, match=f"^LGW_AMQP_URL_FILE names {missing}, which cannot be read"):
        load_settings()


@pytest.mark.parametrize("address", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":9464"])
def test_a_bad_ops_address_is_one_line_naming_what_was_expected_and_found(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], address: str) -> None:
    monkeypatch.setenv("LGW_OPS_ADDRESS", address)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == ("LGW_OPS_ADDRESS: expected HOST:PORT such as 127.0.0.1:9464 (port 0 for a free one), "
                               f"found {address!r}")
    assert main(["batch", "status"]) == EXIT_ERROR  # a command says it once, before doing anything
    assert capsys.readouterr().err == f"lgw: error: {info.value}\n"
    assert main(["config", "check"]) == EXIT_ERROR  # listed with every other problem
    assert capsys.readouterr().err == f"{info.value}\n"


def test_the_ops_address_is_loopback_by_default_and_parses_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.config import GatewayConfig
    from gateway.ops_http import ops_address

    assert load_settings().ops_address is None  # not set: gateway.yaml's ops.address, else the default
    assert ops_address(GatewayConfig(), None) == ("127.0.0.1", 9464) and DEFAULT_OPS_ADDRESS == "127.0.0.1:9464"
    monkeypatch.setenv("LGW_OPS_ADDRESS", "[::1]:9000")
    assert ops_address(GatewayConfig(), None) == ("::1", 9000)
    monkeypatch.setenv("LGW_OPS_ADDRESS", "127.0.0.1:0")  # a free port
    assert ops_address(GatewayConfig(), None) == ("127.0.0.1", 0)


def test_a_dotenv_file_in_the_working_directory_changes_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("LGW_STATE_URL=sqlite:///planted.db\nLGW_OPS_ADDRESS=0.0.0.0:1\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.state_url is None and settings.ops_address is None


def test_model_urls_come_from_their_variable_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gateway.yaml").write_text(KSERVE)
    assert model_url("risk") is None
    monkeypatch.setenv("LGW_MODEL_RISK_URL_FILE", str(secret_file(tmp_path, "u", f"http://m:{SECRET}@risk:80")))
    assert model_url("risk") == f"http://m:{SECRET}@risk:80"
    assert load_config(tmp_path / "gateway.yaml").models["risk"].endpoint.url == \
        f"http://m:{SECRET}@risk:80"  # type: ignore[union-attr]


def test_the_overrides_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_KAFKA_BOOTSTRAP_FILE", str(secret_file(tmp_path, "k", "kafka-1:9093")))
    monkeypatch.setenv("LGW_AMQP_URL", f"amqps://gw:{SECRET}@mq:5671/")
    monkeypatch.setenv("LGW_STATE_URL", "postgresql+psycopg://gw@db/state")
    cfg = embedded_defaults()
    assert cfg.kafka.bootstrap_servers == "kafka-1:9093"
    assert cfg.amqp.url == f"amqps://gw:{SECRET}@mq:5671/"
    assert cfg.state.url == "postgresql+psycopg://gw@db/state"


def test_lgw_log_format_json_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LGW_LOG_FORMAT_FILE", str(secret_file(tmp_path, "fmt", "json")))
    assert main(["config", "check", "--config", str(tmp_path / "missing.yaml")]) == EXIT_ERROR
    line = json.loads(capsys.readouterr().err)
    assert line["message"].startswith("error: cannot read config")


# ---------------------------------------------------------------- the data directory

def test_the_data_dir_is_lgw_data_dir_then_xdg_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_DATA_DIR", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data"
    monkeypatch.delenv("LGW_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "lgw"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/xdg")  # invalid by the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / ".local" / "share" / "lgw"


def test_a_relative_lgw_data_dir_is_fixed_when_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LGW_DATA_DIR", "data")
    assert data_dir() == tmp_path / "data"


def test_the_embedded_defaults_live_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    cfg = embedded_defaults()
    assert cfg.state.url == f"sqlite:///{tmp_path}/data/lgw-state.db"
    folders = cfg.pipelines["card_txn"].source.folders(cfg.base_dir)  # type: ignore[union-attr]
    assert folders["inbox"] == tmp_path / "data" / "drop" / "inbox"
    assert all(tmp_path / "data" in path.parents for path in folders.values())


# ---------------------------------------------------------------- the state store's place

def write_config(folder: Path, state: str | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = example_dropfolder_config(state or "unused")
    if state is None:
        del data["state"]
    path = folder / "gateway.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("state", [None, "sqlite:///var/lgw-state.db"])
def test_the_state_store_of_a_config_is_beside_it_from_any_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str | None) -> None:
    config = write_config(tmp_path / "etc", state)
    expected = f"sqlite:///{tmp_path}/etc/var/lgw-state.db"
    for cwd in (tmp_path, tmp_path / "etc", Path("/")):
        monkeypatch.chdir(cwd)
        assert load_config(config).state.url == expected
        assert load_config(Path(os.path.relpath(config, cwd))).state.url == expected


def test_an_absolute_or_server_state_url_is_kept(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, f"sqlite:///{tmp_path}/s.db")).state.url == f"sqlite:///{tmp_path}/s.db"
    assert load_config(write_config(tmp_path, "postgresql://u@h/db")).state.url == "postgresql://u@h/db"
    assert resolve_state_url("sqlite:///:memory:", tmp_path) == "sqlite:///:memory:"
    assert resolve_state_url("sqlite:///s.db?timeout=5", tmp_path) == f"sqlite:///{tmp_path}/s.db?timeout=5"
    assert default_state_url(tmp_path) == f"sqlite:///{tmp_path}/var/lgw-state.db"


def test_killswitch_and_batch_share_the_configs_store_from_any_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "etc", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["killswitch", "set", "card_txn", "--mode", "pause", "--reason", "drill",
                 "--config", str(config)]) == EXIT_OK
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["killswitch", "status", "--config", str(config)]) == EXIT_OK
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["pipeline"], r["mode"]) for r in rows] == [("card_txn", "pause")]
    with StateStore(f"sqlite:///{tmp_path}/etc/var/lgw-state.db") as store:
        assert store.get_kill_switch("card_txn").mode == "pause"
    assert not (elsewhere / "var").exists() and list(elsewhere.iterdir()) == []
    # batch status of the same config opens the same store: none appears in the working directory
    assert main(["batch", "status", "--config", str(config), "--json"]) == EXIT_OK
    assert not (tmp_path / "var").exists()


def test_killswitch_without_a_config_uses_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LGW_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert main(["killswitch", "set", "card_txn", "--mode", "force_fallback", "--reason", "drill"]) == EXIT_OK
    with StateStore(f"sqlite:///{tmp_path}/data/lgw-state.db") as store:
        assert store.get_kill_switch("card_txn").mode == "force_fallback"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_symlink_planted_at_the_state_db_is_refused_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "etc", None)
    (tmp_path / "etc" / "var").mkdir()
    target = tmp_path / "victim"
    (tmp_path / "etc" / "var" / "lgw-state.db").symlink_to(target)
    assert main(["killswitch", "status", "--config", str(config)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lgw: error: ") and "lgw-state.db" in err
    assert not target.exists()
