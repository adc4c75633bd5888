"""A command whose extra is not installed stops with one line naming the pip install,
never a traceback: every command path, run as a child process in which an import hook
makes the extra's modules missing (as in an install without that extra), so that
imports done at start-up are covered too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from schemas.examples import contract_path

CONTRACT = str(contract_path("card_txn"))
ALL_EXTRAS = "aiokafka,aio_pika,faststream,pyodbc,arrow_odbc,psycopg"

BLOCKER = '''
import os, sys
from importlib.abc import MetaPathFinder

MISSING = tuple(n for n in os.environ.get("LGW_TEST_MISSING", "").split(",") if n)


class Missing(MetaPathFinder):
    """Imports of MISSING modules fail as they do where the package is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing())
'''

CONFIGS = {
    "realtime.yaml": f"""
pipelines:
  stream: {{contract: {CONTRACT}, source: {{type: kafka, topics: [in], group_id: g, result_topic: out,
           dlq_topic: dlq}}}}
  queue: {{contract: {CONTRACT}, source: {{type: amqp, queue: requests}}}}
""",
    "files.yaml": f"""
pipelines:
  tokafka: {{contract: {CONTRACT}, source: {{inbox: a/inbox, outbox: a/outbox}}, sink: {{type: kafka, topic: out}}}}
  toamqp: {{contract: {CONTRACT}, source: {{inbox: b/inbox, outbox: b/outbox}},
           sink: {{type: amqp, exchange: x, routing_key: k}}}}
  toodbc: {{contract: {CONTRACT}, source: {{inbox: c/inbox, outbox: c/outbox}},
           sink: {{type: odbc, table: t, key: [txn_id], connection: {{dsn: w}}}}}}
  table: {{contract: {CONTRACT}, source: {{type: odbc, table: t, connection: {{dsn: w}}}},
          sink: {{type: file, folder: out}}}}
""",
    "pg.yaml": f"""
pipelines:
  files: {{contract: {CONTRACT}, source: {{inbox: a/inbox, outbox: a/outbox}}}}
state: {{url: "postgresql://lgw@127.0.0.1:5432/lgw"}}
""",
}


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    for name, text in CONFIGS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def lgw_without(lgw_cmd: list[str], sandbox: Path, missing: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(sandbox / "hook"), "LGW_TEST_MISSING": missing,
           "LGW_DATA_DIR": str(sandbox / "data")}
    return subprocess.run([*lgw_cmd, *argv], cwd=sandbox, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def pip_line(command: str, extra: str) -> str:
    return f"lgw: error: {command} needs the {extra} extra: pip install 'legacy-gateway[{extra}]'\n"


@pytest.mark.parametrize(("missing", "argv", "command", "extra"), [
    ("faststream", ["serve", "--config", "realtime.yaml", "--pipeline", "stream"], "lgw serve", "kafka"),
    ("aiokafka", ["serve", "--config", "realtime.yaml", "--pipeline", "stream"], "lgw serve", "kafka"),
    ("aio_pika", ["serve", "--config", "realtime.yaml", "--pipeline", "queue"], "lgw serve", "rabbit"),
    ("faststream", ["serve", "--config", "realtime.yaml", "--pipeline", "queue"], "lgw serve", "rabbit"),
    ("aiokafka", ["asyncapi", "--config", "realtime.yaml", "--pipeline", "stream"], "lgw asyncapi", "kafka"),
    ("aiokafka", ["batch", "run", "tokafka", "--config", "files.yaml"], "lgw batch run", "kafka"),
    ("aio_pika", ["batch", "run", "toamqp", "--config", "files.yaml"], "lgw batch run", "rabbit"),
    ("pyodbc", ["batch", "run", "toodbc", "--config", "files.yaml"], "lgw batch run", "odbc"),
    ("arrow_odbc", ["batch", "run", "table", "--config", "files.yaml"], "lgw batch run", "odbc"),
    ("aiokafka", ["batch", "replay", "x.DAT", "--pipeline", "tokafka", "--config", "files.yaml"],
     "lgw batch replay", "kafka"),
    ("aiokafka", ["run", "--config", "files.yaml"], "lgw run", "kafka"),
    ("pyodbc", ["run", "--config", "files.yaml"], "lgw run", "odbc"),
    ("psycopg", ["batch", "status", "--config", "pg.yaml"], "a PostgreSQL state store", "postgres"),
    ("psycopg", ["killswitch", "status", "--config", "pg.yaml"], "a PostgreSQL state store", "postgres"),
    ("psycopg", ["run", "--config", "pg.yaml"], "a PostgreSQL state store", "postgres"),
])
def test_a_missing_extra_is_one_line_naming_the_pip_install(
        lgw_cmd: list[str], sandbox: Path, missing: str, argv: list[str], command: str, extra: str) -> None:
    done = lgw_without(lgw_cmd, sandbox, missing, *argv)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", pip_line(command, extra))


def test_the_base_install_runs_its_commands_without_any_extra(lgw_cmd: list[str], sandbox: Path) -> None:
    """Loading a config that names Kafka, AMQP and ODBC parts needs none of their extras."""
    version = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "--version")
    assert version.returncode == 0 and version.stdout.startswith("lgw ")
    check = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "config", "check", "--config", "files.yaml")
    assert check.returncode == 0, check.stderr
    assert "    sink:    kafka out" in check.stdout.splitlines()
    listing = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "components", "--json")
    assert listing.returncode == 0, listing.stderr
    assert {"kafka", "amqp", "odbc"} <= {line.split('"type": "')[1].split('"')[0]
                                         for line in listing.stdout.splitlines() if '"type": "' in line}
    data = sandbox / "CARDTXN.DAT"
    assert lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "examples", "generate", "--records", "50",
                       "-o", str(data)).returncode == 0
    score = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "score", "--contract", CONTRACT, "--input", str(data),
                        "--output", str(sandbox / "scored.jsonl"))
    assert score.returncode == 0, score.stderr
    assert len((sandbox / "scored.jsonl").read_text().splitlines()) == 50
    # the embedded defaults' store is in the data dir; `lgw score` only reads its pipeline's
    # kill switch there (read-only: no store is made for that), which `lgw killswitch` sets
    store = sandbox / "data" / "lgw-state.db"
    assert not store.exists()
    switch = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "killswitch", "set", "card_txn", "--mode", "pause",
                         "--reason", "INC-1")
    assert switch.returncode == 0, switch.stderr
    assert store.is_file()
    paused = lgw_without(lgw_cmd, sandbox, ALL_EXTRAS, "score", "--contract", CONTRACT, "--input", str(data),
                         "--output", str(sandbox / "again.jsonl"))
    assert paused.returncode == 75 and "paused by its kill switch (INC-1)" in paused.stderr, paused.stderr
    assert not (sandbox / "again.jsonl").exists()
