"""`lgw config check`, `lgw --version` and the one-line error of a missing extra, run
in process through `gateway.cli.main`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gateway.cli import EXIT_ERROR, EXIT_OK, main
from gateway.config_check import mask_url
from schemas.examples import contract_path

SECRET = "s3cr3t-Pw"
CONTRACT = str(contract_path("card_txn"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    return path


VALID = f"""
models:
  fraud: {{endpoint: {{backend: kserve, url: 'http://svc:{SECRET}@models:8080', model_name: fraud}}}}
pipelines:
  files:
    contract: {CONTRACT}
    model: fraud
    batch_size: 1000
    source: {{inbox: drop/inbox, outbox: drop/outbox}}
  table:
    contract: {CONTRACT}
    policy: pause
    source:
      type: odbc
      table: card_txn
      connection: {{driver: PostgreSQL Unicode, server: db, database: lgw, user: lgw, password: {SECRET}}}
    sink:
      type: odbc
      table: card_scored
      key: [txn_id]
      connection: {{dsn: warehouse, user: lgw, password: {SECRET}}}
    rejects:
      type: odbc
      table: card_rejects
      connection: {{connection_string: 'Driver=x;Server=db;PWD={SECRET}'}}
  stream:
    contract: {CONTRACT}
    source: {{type: kafka, topics: [cards.in], group_id: lgw, result_topic: cards.scored, dlq_topic: cards.dlq}}
  queue:
    contract: {CONTRACT}
    source: {{type: amqp, queue: cards.requests}}
state: {{url: 'postgresql+psycopg://lgw:{SECRET}@127.0.0.1:5432/lgw'}}
amqp: {{url: 'amqp://lgw:{SECRET}@rabbit:5672/'}}
kafka: {{bootstrap_servers: 'broker1:9092,broker2:9092'}}
"""


def test_version_prints_the_installed_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"lgw {version('legacy-gateway')}\n"


def test_every_problem_is_reported_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f"""
models:
  m: {{endpoint: {{backend: grpc}}}}
  n: {{endpoint: {{backend: onnx, path: x.onnx}}, timeout_s: -1}}
pipelines:
  p: {{contract: {CONTRACT}, batch_size: 0}}
  q: {{contract: {CONTRACT}, source: {{type: carrier-pigeon}}}}
state: {{url: 1, colour: blue}}
""")
    assert main(["config", "check", "--config", str(path)]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    for fragment in ("models.m.endpoint", "models.n.timeout_s", "pipelines.p.batch_size",
                     "pipelines.q.source: type: expected one of", "state.url", "state.colour"):
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    assert not any(".source.carrier-pigeon" in line or ".dropfolder." in line for line in lines)


def test_unknown_model_names_are_all_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f"pipelines: {{a: {{contract: {CONTRACT}, model: nope}}, "
                           f"b: {{contract: {CONTRACT}, model: gone}}}}")
    assert main(["config", "check", "--config", str(path)]) == EXIT_ERROR
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"{path}: pipelines.a.model: no model named 'nope' (models: none)",
                     f"{path}: pipelines.b.model: no model named 'gone' (models: none)"]


def test_the_other_commands_still_stop_at_the_first_problem(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, f"pipelines: {{a: {{contract: {CONTRACT}, model: nope}}, "
                           f"b: {{contract: {CONTRACT}, model: gone}}}}")
    assert main(["batch", "status", "--config", str(path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err == f"lgw: error: {path}: pipelines.a.model: no model named 'nope' (models: none)\n"


def test_a_valid_config_names_each_pipelines_sink_and_rejects_without_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID)
    assert main(["config", "check", "--config", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert SECRET not in out
    lines = out.splitlines()
    assert "  fraud: kserve http://svc:***@models:8080" in lines
    assert "    sink:    file drop/outbox" in lines and "    rejects: file drop/outbox" in lines
    assert "    source:  odbc card_txn [driver=PostgreSQL Unicode server=db database=lgw]" in lines
    assert "    sink:    odbc card_scored [dsn=warehouse]" in lines
    assert any(line.startswith("    rejects: odbc card_rejects [connection_string (not shown") for line in lines)
    assert "    sink:    kafka cards.scored" in lines and "    rejects: kafka cards.dlq" in lines
    assert "    sink:    amqp reply_to of each request" in lines
    assert "    rejects: amqp exchange lgw.dlx routing key cards.requests" in lines
    assert any("table: contract" in line and "policy pause" in line for line in lines)
    assert "state: postgresql+psycopg://lgw:***@127.0.0.1:5432/lgw" in lines
    assert "amqp: amqp://lgw:***@rabbit:5672/" in lines
    assert "kafka: broker1:9092,broker2:9092" in lines


def test_the_json_summary_is_one_object_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_AMQP_URL", f"amqps://ops:{SECRET}@rabbit.prod:5671/vh")
    path = write(tmp_path, VALID)
    assert main(["config", "check", "--config", str(path), "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    assert SECRET not in out and out.count("\n") == 1
    info = json.loads(out)
    assert info["amqp"]["url"] == "amqps://ops:***@rabbit.prod:5671/vh"  # the environment's, as used
    files = info["pipelines"]["files"]
    assert files["sink"] == {"type": "file", "target": "drop/outbox"} and files["batch_size"] == 1000
    assert files["policy"] == "fallback" and files["model"] == "fraud"
    assert info["pipelines"]["table"]["sink"]["target"] == "card_scored"
    assert info["pipelines"]["table"]["rejects"]["target"] == "card_rejects"
    assert info["models"]["fraud"] == {"backend": "kserve", "endpoint": "http://svc:***@models:8080"}


@pytest.mark.parametrize(("url", "masked"), [
    ("sqlite:///var/lgw-state.db", "sqlite:///var/lgw-state.db"),
    ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ("mysql+pymysql://root@127.0.0.1:3306/lgw", "mysql+pymysql://root@127.0.0.1:3306/lgw"),
    ("amqp://guest:guest@localhost:5672/", "amqp://guest:***@localhost:5672/"),
    ("http://[broken", "***"),
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


# ---------------------------------------------------------------- missing extras

REALTIME = f"""
pipelines:
  stream:
    contract: {CONTRACT}
    source: {{type: kafka, topics: [in], group_id: g, result_topic: out, dlq_topic: dlq}}
  queue:
    contract: {CONTRACT}
    source: {{type: amqp, queue: requests}}
"""


@pytest.mark.parametrize(("missing", "argv", "extra"), [
    ("faststream", ["serve", "--pipeline", "stream"], "kafka"),
    ("aiokafka", ["serve", "--pipeline", "stream"], "kafka"),
    ("aio_pika", ["serve", "--pipeline", "queue"], "rabbit"),
    ("faststream", ["asyncapi", "--pipeline", "queue"], "rabbit"),
    ("aiokafka", ["asyncapi"], "kafka"),
])
def test_serve_without_its_extra_says_which_to_install(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        missing: str, argv: list[str], extra: str) -> None:
    path = write(tmp_path, REALTIME)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    assert main([*argv, "--config", str(path)]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"lgw: error: lgw {argv[0]} needs the {extra} extra: " \
                           f"pip install 'legacy-gateway[{extra}]'\n"


@pytest.mark.parametrize("missing", ["pyodbc", "arrow_odbc"])
def test_an_odbc_batch_run_without_the_odbc_extra_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    path = write(tmp_path, VALID)
    monkeypatch.setitem(sys.modules, missing, None)
    assert main(["batch", "run", "table", "--config", str(path)]) == EXIT_ERROR
    assert capsys.readouterr().err == ("lgw: error: lgw batch run needs the odbc extra: "
                                       "pip install 'legacy-gateway[odbc]'\n")


def test_a_drop_folder_batch_run_into_an_odbc_table_without_the_odbc_extra_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, f"""
pipelines:
  files:
    contract: {CONTRACT}
    source: {{inbox: drop/inbox, outbox: drop/outbox}}
    sink: {{type: odbc, table: scored, key: [txn_id], connection: {{dsn: warehouse}}}}
state: {{url: 'sqlite:///{tmp_path}/state.db'}}
""")
    monkeypatch.setitem(sys.modules, "pyodbc", None)
    assert main(["batch", "run", "files", "--config", str(path)]) == EXIT_ERROR
    assert capsys.readouterr().err == ("lgw: error: lgw batch run needs the odbc extra: "
                                       "pip install 'legacy-gateway[odbc]'\n")


# ---------------------------------------------------------------- the environment, listed with the file

def test_environment_and_file_problems_are_listed_together_without_secrets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_AMQP_URL", f"amqp://gw:{SECRET}@mq:5672/")
    monkeypatch.setenv("LGW_AMQP_URL_FILE", str(tmp_path / "amqp-url"))
    monkeypatch.setenv("LGW_OPS_ADDRESS", "everywhere")
    monkeypatch.setenv("LGW_MODEL_RISK_URL_FILE", str(tmp_path / "missing"))
    path = write(tmp_path, f"""
models:
  risk: {{endpoint: {{backend: kserve, url: 'http://svc:{SECRET}@models:8080', model_name: risk}}, timeout_s: 0}}
  local: {{endpoint: {{backend: onnx, path: models/local.onnx}}}}
pipelines:
  a: {{contract: {CONTRACT}, model: nope}}
  b: {{contract: contracts/missing.yaml, batch_size: 0}}
""")
    assert main(["config", "check", "--config", str(path)]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and SECRET not in captured.err
    assert captured.err.splitlines() == [
        "both LGW_AMQP_URL and LGW_AMQP_URL_FILE are set: set one of them",
        "LGW_OPS_ADDRESS: expected HOST:PORT such as 127.0.0.1:9464 (port 0 for a free one), found 'everywhere'",
        f"LGW_MODEL_RISK_URL_FILE names {tmp_path / 'missing'}, which cannot be read: No such file or directory",
        f"{path}: models.risk.timeout_s: Input should be greater than 0",
        f"{path}: pipelines.b.batch_size: Input should be greater than or equal to 1",
        f"{path}: pipelines.a.model: no model named 'nope' (models: risk, local)",
        f"{path}: pipelines.b.contract: expected a file, found nothing at {tmp_path}/contracts/missing.yaml",
        f"{path}: models.local.endpoint.path: expected a file, found nothing at {tmp_path}/models/local.onnx",
    ]


def test_a_valid_config_says_which_secrets_are_set_never_what_they_hold(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "state-url").write_text(f"postgresql+psycopg://lgw:{SECRET}@db/lgw\n")
    monkeypatch.setenv("LGW_STATE_URL_FILE", str(tmp_path / "state-url"))
    monkeypatch.setenv("LGW_ODBC_PASSWORD", SECRET)
    monkeypatch.delenv("LGW_ODBC_USER", raising=False)
    monkeypatch.delenv("LGW_MODEL_FRAUD_URL", raising=False)
    monkeypatch.delenv("LGW_OPS_ADDRESS", raising=False)  # the suite's free-port setting
    path = write(tmp_path, f"""
models:
  fraud: {{endpoint: {{backend: kserve, url: 'http://models:8080', model_name: fraud}}}}
pipelines:
  table:
    contract: {CONTRACT}
    source:
      type: odbc
      table: card_txn
      connection: {{driver: PostgreSQL Unicode, server: db, database: lgw, user: '${{LGW_ODBC_USER:-lgw}}',
                    password: '${{LGW_ODBC_PASSWORD}}'}}
    sink: {{type: file, folder: out}}
pushgateway: {{url: 'http://pushgateway:9091', username: lgw, password_env: LGW_TEST_PUSH_PASSWORD}}
""")
    monkeypatch.delenv("LGW_TEST_PUSH_PASSWORD", raising=False)
    assert main(["config", "check", "--config", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert SECRET not in out
    lines = out.splitlines()
    assert "    source:  odbc card_txn [driver=PostgreSQL Unicode server=db database=lgw; " \
           "LGW_ODBC_USER [NOT SET] (has a default); LGW_ODBC_PASSWORD [set]]" in lines
    assert "state: postgresql+psycopg://lgw:***@db/lgw" in lines
    assert "pushgateway: http://pushgateway:9091 (job lgw_batch, password [NOT SET])" in lines
    assert "ops address: 127.0.0.1:9464 (/healthz, /readyz, /metrics of lgw serve and lgw run)" in lines
    environment = lines[lines.index("environment:") + 1:]
    assert "  LGW_STATE_URL: [set] (from LGW_STATE_URL_FILE)" in environment
    assert "  LGW_MODEL_FRAUD_URL: [NOT SET]" in environment
    assert "  LGW_KAFKA_BOOTSTRAP: [NOT SET]" in environment
    info_json = main(["config", "check", "--config", str(path), "--json"])
    assert info_json == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    assert info["environment"]["LGW_STATE_URL"] == "[set] (from LGW_STATE_URL_FILE)"
    assert info["data_dir"] and info["ops_address"] == "127.0.0.1:9464"


def test_check_shows_each_pipelines_governance_and_the_audit_trail(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.config import example_dropfolder_config

    cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}")
    cfg["pipelines"]["card_txn"].update(pii={"TXN-PAN": "hash"}, review={"band": [0.4, 0.6], "hold": True},
                                        drift={"reference": "ref.profile.json", "action": "review",
                                               "segments": ["COUNTRY"]})
    cfg["audit"] = {"store": "table", "retention_days": 30}
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    assert main(["config", "check", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "    pii:     TXN-PAN hash (over the contract's)" in text
    assert "    drift:   reference ref.profile.json [NOT READABLE], action review, segments COUNTRY" in text
    assert "    review:  band [0.4, 0.6], held, max 10000" in text
    assert "audit: table sqlite:///" in text and "(retention 30 days)" in text
