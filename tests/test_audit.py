"""The audit log (gateway.governance.audit): bulk, durable, append-only, hash-chained,
and every kind of tampering found by `verify` with a line naming the day and batch.
Stores: Parquet files, and the state store's tables on SQLite and on the real local
PostgreSQL (a schema of its own per test; under CI a missing server fails)."""

from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from gateway import killswitch_cli
from gateway.cli import main
from gateway.config import load_config
from gateway.governance import audit_cli
from gateway.governance.audit import (
    DECISION_SCHEMA,
    AuditConfig,
    AuditLog,
    AuditSchemaError,
    OperatorAction,
    audit_path,
    open_audit,
)
from gateway.governance.audit_model import content_digest
from gateway.governance.audit_parquet import constants_encoded
from gateway.governance.identity import operator_identity
from gateway.state import StateStore, StateStoreError
from schemas.errors import ConfigError
from schemas.safefiles import UnsafePath
from tests.helpers import postgres_schema

NOON = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
DAY = NOON.date()


def decisions(n: int, *, run: str = "R1", start: datetime = NOON, step_us: int = 1, score: float | None = None,
              review: str | None = None) -> pa.Table:
    """`n` scored records of one run, built column-wise (record ids RUN:0, RUN:1, ...)."""
    idx = np.arange(n, dtype=np.int64)

    def same(value: object, kind: pa.DataType | None = None) -> pa.Array:
        return pa.repeat(pa.scalar(value, kind or pa.string()), n)

    scores = np.full(n, score) if score is not None else np.random.default_rng(7).random(n)
    return pa.table({
        "run": same(run), "pipeline": same("card_txn"), "source": same("CARDS.D1204.dat"),
        "record": pa.array(idx), "record_id": pc.binary_join_element_wise(same(run), pa.array(idx).cast(pa.string()),
                                                                         ":"),
        "input_hash": same("ab" * 32), "model_name": same("fraud"), "model_version": same("3"),
        "model_sha256": same("cd" * 32), "contract": same("card_txn"), "contract_version": same(1, pa.int32()),
        "scored_by": same("model"), "rule_id": pa.nulls(n, pa.string()), "score": pa.array(scores),
        "reason": same(""), "breaker_state": same("closed"), "review": same(review),
        "decided_at": pa.array(int(start.timestamp() * 1_000_000) + idx * step_us, pa.timestamp("us", tz="UTC")),
    }, schema=DECISION_SCHEMA)


# ---- stores --------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema("audit") as url:
        yield url


def _state_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture(params=["parquet", "sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    """An audit log of every store: Parquet files (actions in SQLite), or the tables."""
    kind = request.param
    store = "parquet" if kind == "parquet" else "table"
    state = StateStore(_state_url("sqlite" if kind == "parquet" else kind, tmp_path, request))
    with AuditLog(AuditConfig(store=store, retention_days=30), state, tmp_path / "audit", writer="w1",
                  owns_state=True) as audit:
        yield audit


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def table_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditLog]:
    state = StateStore(_state_url(request.param, tmp_path, request))
    with AuditLog(AuditConfig(store="table", retention_days=30), state, writer="w1", owns_state=True) as audit:
        yield audit


@pytest.fixture
def parquet_log(tmp_path: Path) -> Iterator[AuditLog]:
    state = StateStore(f"sqlite:///{tmp_path}/state.db")
    with AuditLog(AuditConfig(), state, tmp_path / "audit", writer="w1", owns_state=True) as audit:
        yield audit


def _raw(audit: AuditLog, *statements: str) -> None:
    """SQL as someone with database access would run it, around the gateway."""
    with audit.state.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


def _drop_trigger(audit: AuditLog, table: str, op: str) -> str:
    name = f"{table}_no_{op}"
    if audit.state.engine.dialect.name == "postgresql":
        return f"DROP TRIGGER {name} ON {table}"
    return f"DROP TRIGGER {name}"


def _problems(audit: AuditLog, day: date | None = None) -> list[str]:
    report = audit.verify(day)
    assert not report.ok
    return report.problems


def test_the_decision_table_is_indexed_by_day_brin_on_postgresql(table_log: AuditLog) -> None:
    with table_log.state.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            found = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'audit_decision_day' "
                                      "AND schemaname = current_schema()"))
            [definition] = found.scalars()
            assert "USING brin (day)" in definition
        else:
            found = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'audit_decision_day'"))
            assert found.scalar_one() == "CREATE INDEX audit_decision_day ON audit_decision (day)"


# ---- appending ------------------------------------------------------------------------------


def test_a_million_decisions_are_written_as_one_read_only_parquet_file(parquet_log: AuditLog, tmp_path: Path) -> None:
    parquet_log.append_decisions(decisions(1_000_000))
    files = sorted((tmp_path / "audit").rglob("*.parquet"))
    assert [f.relative_to(tmp_path / "audit").as_posix() for f in files] == ["day=2026-12-04/w1-000001.parquet"]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o440
    assert pq.read_metadata(files[0]).num_rows == 1_000_000
    report = parquet_log.verify()
    assert (report.ok, report.days, report.batches, report.records) == (True, ["2026-12-04"], 1, 1_000_000)


def test_a_batchs_shared_values_are_stored_once_and_read_back_as_the_decision_schema(parquet_log: AuditLog,
                                                                                   tmp_path: Path) -> None:
    written = decisions(5000, review="pending")
    parquet_log.append_decisions(written)
    [path] = sorted((tmp_path / "audit").rglob("*.parquet"))
    meta = pq.read_metadata(path)
    columns = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
    encodings = {name: meta.row_group(0).column(i).encodings for name, i in columns.items()}
    for shared in ("run", "pipeline", "source", "model_sha256", "breaker_state", "review"):
        assert "RLE_DICTIONARY" in encodings[shared], shared
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == DECISION_SCHEMA  # plain strings, not dictionaries
    assert table.schema.metadata[b"lgw.audit.seq"] == b"1" and table.schema.metadata[b"lgw.audit.writer"] == b"w1"
    assert table.equals(written)
    assert parquet_log.verify().ok
    # as files were written before (the Arrow schema stored, its metadata in it): they verify too
    _rewrite(path, table)
    os.chmod(path, 0o440)
    assert b"ARROW:schema" in pq.read_metadata(path).metadata
    assert parquet_log.verify().ok


def test_a_dictionary_encoded_column_has_the_content_digest_of_its_values() -> None:
    plain = decisions(300)
    encoded = constants_encoded(plain)
    assert pa.types.is_dictionary(encoded.schema.field("run").type)
    assert not pa.types.is_dictionary(encoded.schema.field("record_id").type)  # one value a row: left as it is
    assert content_digest(encoded) == content_digest(plain)
    other = plain.set_column(0, "run", pa.repeat(pa.scalar("R2"), 300))
    assert content_digest(constants_encoded(other)) != content_digest(plain)


def test_batches_chain_per_day_and_verify(log: AuditLog) -> None:
    log.append_decisions(decisions(1000, run="R1"))
    log.append_decisions(decisions(10, run="R2"))
    # a batch scored across midnight is split into its two days
    log.append_decisions(decisions(100, run="R3", start=datetime(2026, 12, 4, 23, 59, 59, tzinfo=UTC),
                                   step_us=20_000))
    report = log.verify()
    assert report.problems == []
    assert (report.days, report.batches, report.records) == (["2026-12-04", "2026-12-05"], 4, 1110)
    assert set(log.heads()) == {"2026-12-04/w1", "2026-12-05/w1"}


def test_the_chain_resumes_in_a_new_process_with_the_same_writer(log: AuditLog) -> None:
    log.append_decisions(decisions(5, run="R1"))
    again = AuditLog(log.config, log.state, getattr(log.decisions, "root", None), writer="w1")
    again.append_decisions(decisions(5, run="R2"))
    report = log.verify()
    assert (report.problems, report.batches) == ([], 2)


def test_replicas_append_at_once_each_on_its_own_chain(log: AuditLog) -> None:
    root = getattr(log.decisions, "root", None)
    replicas = [AuditLog(log.config, log.state, root, writer=f"replica-{i}") for i in range(3)]
    threads = [threading.Thread(target=lambda r=r, i=i: [r.append_decisions(decisions(500, run=f"R{i}-{k}"))
                                                         for k in range(3)]) for i, r in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert (report.problems, report.batches, report.records) == ([], 9, 4500)


_REPLICA = """
import sys
from pathlib import Path
from gateway.governance.audit import AuditConfig, AuditLog
from gateway.state import StateStore
from tests.test_audit import decisions
store, root, url = sys.argv[1:4]
with AuditLog(AuditConfig(store=store), StateStore(url), Path(root), owns_state=True) as log:
    for k in range(5):
        log.append_decisions(decisions(200, run=f"P{k}"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("store", ["parquet", "table"])
def test_replica_processes_append_at_once_with_their_default_writer_ids(store: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"  # the processes race to create its schema too
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", _REPLICA, store, str(tmp_path / "audit"), url], env=env)
             for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    with AuditLog(AuditConfig(store=store), StateStore(url), tmp_path / "audit", owns_state=True) as log:
        report = log.verify()
        assert (report.problems, report.batches, report.records) == ([], 15, 3000)
        assert len(log.heads()) == 3  # one chain per process (host-pid)


def test_two_logs_of_one_writer_in_a_process_extend_one_chain(log: AuditLog) -> None:
    root = getattr(log.decisions, "root", None)
    twins = [log, AuditLog(log.config, log.state, root, writer="w1")]
    threads = [threading.Thread(target=lambda r=r, i=i: [r.append_decisions(decisions(100, run=f"T{i}-{k}"))
                                                         for k in range(4)]) for i, r in enumerate(twins)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = log.verify()
    assert (report.problems, report.batches, list(log.heads())) == ([], 8, ["2026-12-04/w1"])


def test_a_table_of_another_schema_is_refused_naming_expected_and_found(log: AuditLog) -> None:
    wrong = decisions(3).drop_columns(["review"]).set_column(13, "score", pa.array(["0.1", "0.2", "0.3"]))
    with pytest.raises(AuditSchemaError) as err:
        log.append_decisions(wrong)
    message = str(err.value)
    assert "missing review" in message and "score: expected double, found string" in message
    assert "expected run: string" in message and "found run: string" in message
    assert log.verify().batches == 0


def test_show_finds_every_decision_of_a_record(log: AuditLog) -> None:
    log.append_decisions(decisions(100, run="R1", score=0.2))
    log.append_decisions(decisions(3, run="R1", score=0.9, review="pending", start=NOON + timedelta(hours=1)))
    rows = log.decisions_for("R1:2").to_pylist()
    assert [(r["score"], r["review"]) for r in rows] == [(0.2, None), (0.9, "pending")]
    assert rows[0]["decided_at"] == NOON + timedelta(microseconds=2)


# ---- tampering: Parquet ------------------------------------------------------------------------


def _rewrite(path: Path, table: pa.Table) -> None:
    os.chmod(path, 0o640)
    pq.write_table(table, path)


@pytest.fixture
def three_batches(parquet_log: AuditLog, tmp_path: Path) -> Path:
    for run in ("R1", "R2", "R3"):
        parquet_log.append_decisions(decisions(50, run=run))
    assert parquet_log.verify().ok
    return tmp_path / "audit" / "day=2026-12-04"


def test_a_modified_record_in_a_file_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    path = three_batches / "w1-000002.parquet"
    table = pq.read_table(path)
    scores = table.column("score").to_numpy().copy()
    scores[7] = 0.0
    _rewrite(path, table.set_column(13, "score", pa.array(scores)))
    problems = _problems(parquet_log, DAY)
    assert any(p.startswith("day 2026-12-04, writer w1, batch 2 (w1-000002.parquet): its records differ")
               for p in problems), problems
    assert any("writable" in p for p in problems)


def test_a_deleted_record_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    path = three_batches / "w1-000001.parquet"
    _rewrite(path, pq.read_table(path).slice(1))
    assert any("batch 1 (w1-000001.parquet): its file holds 49 records, the chain recorded 50" in p
               for p in _problems(parquet_log))


def test_a_deleted_file_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    (three_batches / "w1-000002.parquet").unlink()
    assert _problems(parquet_log) == ["day 2026-12-04, writer w1, batch 2 (w1-000002.parquet): "
                                      "its file is missing (deleted)"]


def test_an_added_file_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    shutil.copy(three_batches / "w1-000003.parquet", three_batches / "w1-000004.parquet")
    assert _problems(parquet_log) == ["day 2026-12-04: w1-000004.parquet is not recorded in any chain: added to "
                                      "the folder, or left by an append that was cut short"]


def test_a_replaced_file_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    target = three_batches / "w1-000002.parquet"
    os.chmod(target, 0o640)
    target.unlink()
    shutil.copy(three_batches / "w1-000001.parquet", target)  # another batch's genuine file
    os.chmod(target, 0o440)
    problems = _problems(parquet_log)
    assert any("batch 2 (w1-000002.parquet): its file was written as another batch" in p for p in problems)
    assert any("batch 2 (w1-000002.parquet): its records differ" in p for p in problems)


def test_a_batch_cut_out_of_the_chain_is_found(parquet_log: AuditLog, three_batches: Path) -> None:
    chain = three_batches / "w1.chain"
    lines = chain.read_text().splitlines(keepends=True)
    chain.write_text(lines[0] + lines[2])
    (three_batches / "w1-000002.parquet").unlink()
    problems = _problems(parquet_log)
    assert problems == ["day 2026-12-04, writer w1, batch 3 (w1-000003.parquet): chain broken: its prev digest is "
                        "not the digest of the batch before it (a batch was removed from the chain, or the chain "
                        "was edited)"]


def test_a_link_planted_as_a_day_folder_is_refused(parquet_log: AuditLog, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "day=2026-12-04").symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="expected the audit day's folder"):
        parquet_log.append_decisions(decisions(3))
    assert list(elsewhere.iterdir()) == []


# ---- tampering: tables ----------------------------------------------------------------------------


def test_the_database_refuses_update_and_delete(table_log: AuditLog) -> None:
    table_log.append_decisions(decisions(10))
    table_log.append_action(OperatorAction(actor="ops", action="review.decide", pipeline="card_txn",
                                           target="R1:1", reason="checked"))
    for statement in ("UPDATE audit_decision SET score = 0", "DELETE FROM audit_decision",
                      "UPDATE audit_batch SET records = 9", "DELETE FROM audit_batch",
                      "UPDATE audit_action SET reason = 'x'", "DELETE FROM audit_action",
                      "UPDATE audit_horizon SET day = '0000-01-01'", "DELETE FROM audit_horizon"):
        with pytest.raises(Exception, match=r"append-only|only moves forward"):
            _raw(table_log, statement)
    if table_log.state.engine.dialect.name == "postgresql":
        with pytest.raises(Exception, match="append-only"):
            _raw(table_log, "TRUNCATE audit_decision")
    assert table_log.verify().ok


def test_an_updated_row_is_found_once_the_trigger_is_dropped(table_log: AuditLog) -> None:
    table_log.append_decisions(decisions(10, run="R1"))
    table_log.append_decisions(decisions(10, run="R2"))
    _raw(table_log, _drop_trigger(table_log, "audit_decision", "update"),
         "UPDATE audit_decision SET score = 0.5 WHERE record_id = 'R2:3'")
    problems = _problems(table_log, DAY)
    assert "day 2026-12-04, writer w1, batch 2: its records differ from those chained (a record was modified)" \
        in problems
    assert "audit_decision: trigger audit_decision_no_update is missing (dropped: the table is no longer " \
           "append-only)" in problems


def test_a_deleted_row_is_found(table_log: AuditLog) -> None:
    table_log.append_decisions(decisions(10, run="R1"))
    _raw(table_log, _drop_trigger(table_log, "audit_decision", "delete"),
         "DELETE FROM audit_decision WHERE record_id = 'R1:3'")
    assert "day 2026-12-04, writer w1, batch 1: holds 9 records, the chain recorded 10 (records deleted or " \
           "added)" in _problems(table_log)


def test_a_deleted_batch_is_found(table_log: AuditLog) -> None:
    for run in ("R1", "R2", "R3"):
        table_log.append_decisions(decisions(5, run=run))
    _raw(table_log, _drop_trigger(table_log, "audit_batch", "delete"),
         _drop_trigger(table_log, "audit_decision", "delete"),
         "DELETE FROM audit_batch WHERE seq = 2", "DELETE FROM audit_decision WHERE seq = 2")
    assert "day 2026-12-04, writer w1, batch 3: batches 2..2 are missing (deleted)" in _problems(table_log)


def test_added_rows_are_found(table_log: AuditLog) -> None:
    table_log.append_decisions(decisions(5))
    _raw(table_log, "INSERT INTO audit_decision (day, writer, seq, pos, record_id, decided_at) "
                    "VALUES ('2026-12-04', 'w9', 1, 0, 'R9:0', '2026-12-04 12:00:00')")
    assert _problems(table_log) == ["day 2026-12-04: 1 decision rows belong to no chained batch (added)"]


def test_a_modified_operator_action_is_found(table_log: AuditLog) -> None:
    for reason in ("INC-1", "INC-2", "INC-3"):
        table_log.append_action(OperatorAction(actor="ops", action="killswitch.set", pipeline="card_txn",
                                               old="off", new="pause", reason=reason))
    _raw(table_log, _drop_trigger(table_log, "audit_action", "update"),
         "UPDATE audit_action SET reason = 'routine' WHERE seq = 2")
    problems = _problems(table_log)
    assert any(p.startswith("operator action 2 (killswitch.set at ") and p.endswith(
        "its content differs from what was chained (modified)") for p in problems), problems


# ---- retention -------------------------------------------------------------------------------


def test_prune_deletes_whole_days_past_retention_and_is_recorded(log: AuditLog) -> None:
    now = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
    for days_ago in (45, 31, 30, 1):
        log.append_decisions(decisions(20, run=f"D{days_ago}", start=NOON - timedelta(days=days_ago)))
    assert log.prune(now, reason="retention", actor="ops") == [date(2026, 10, 20), date(2026, 11, 3)]
    report = log.verify()
    assert (report.problems, report.days) == ([], ["2026-11-04", "2026-12-03"])
    (action,) = log.actions(action_prefix="audit.")
    assert (action.action, action.actor, action.new, action.reason) == ("audit.prune", "ops", "2026-11-04",
                                                                        "retention")
    assert "2 days (2026-10-20..2026-11-03)" in (action.old or "")
    assert log.decisions_for("D45:1").num_rows == 0 and log.decisions_for("D30:1").num_rows == 1


def test_retention_may_delete_only_before_the_horizon(table_log: AuditLog) -> None:
    table_log.append_decisions(decisions(5, start=NOON - timedelta(days=40)))
    table_log.append_decisions(decisions(5, start=NOON))
    with pytest.raises(Exception, match="append-only"):  # before any prune, nothing may go
        _raw(table_log, "DELETE FROM audit_decision WHERE day = '2026-10-25'")
    table_log.prune(NOON, reason="retention")
    with pytest.raises(Exception, match="append-only"):
        _raw(table_log, "DELETE FROM audit_decision WHERE day = '2026-12-04'")
    with pytest.raises(Exception, match="only moves forward"):
        _raw(table_log, "UPDATE audit_horizon SET day = '2026-01-01'")
    assert table_log.verify().ok


# ---- operator actions and identity ---------------------------------------------------------------


@pytest.mark.parametrize("reason", ["", "   "])
def test_an_operator_action_needs_a_reason(reason: str) -> None:
    with pytest.raises(ValidationError, match="an operator action needs a non-empty reason"):
        OperatorAction(actor="ops", action="review.decide", reason=reason)


def test_actions_filter_by_pipeline_and_prefix_newest_first(log: AuditLog) -> None:
    for action, pipeline in (("killswitch.set", "a"), ("review.decide", "a"), ("killswitch.set", "b")):
        log.append_action(OperatorAction(actor="ops", action=action, pipeline=pipeline, reason="x"))
    assert [(a.action, a.pipeline) for a in log.actions(action_prefix="killswitch.")] == [
        ("killswitch.set", "b"), ("killswitch.set", "a")]
    assert [a.action for a in log.actions(pipeline="a", limit=1)] == ["review.decide"]
    assert log.verify().actions == 3


def test_operator_identity_is_the_kernel_uid_not_logname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setenv("USER", "mallory")
    name = pwd.getpwuid(os.getuid()).pw_name
    assert operator_identity().startswith(f"unix:{name}(uid={os.getuid()})@")
    assert operator_identity("token:alice") == "token:alice"


# ---- the command line -------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text("audit:\n  retention_days: 30\n")
    return path


def test_audit_path_defaults_beside_the_config(config: Path) -> None:
    assert audit_path(load_config(config)) == config.parent.absolute() / "var" / "audit"


def test_killswitch_set_requires_a_reason_and_history_names_the_uid(config: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOGNAME", "mallory")
    url = f"sqlite:///{config.parent}/var/lgw-state.db"
    with pytest.raises(SystemExit) as exit_:
        main(["killswitch", "set", "churn", "--mode", "pause", "--state-url", url])
    assert exit_.value.code == 2
    assert main(["killswitch", "set", "churn", "--mode", "pause", "--reason", " ", "--state-url", url]) == 2
    assert "needs --reason" in capsys.readouterr().err
    assert main(["killswitch", "set", "churn", "--mode", "pause", "--reason", "INC-7", "--state-url", url]) == 0
    assert main(["killswitch", "set", "churn", "--mode", "off", "--reason", "INC-7 fixed", "--state-url", url]) == 0
    capsys.readouterr()
    assert main(["killswitch", "history", "churn", "--state-url", url]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    who = f"unix:{pwd.getpwuid(os.getuid()).pw_name}(uid={os.getuid()})@"
    assert [(r["old"], r["new"], r["reason"], r["actor"].startswith(who)) for r in rows] == [
        ("pause", "off", "INC-7 fixed", True), ("off", "pause", "INC-7", True)]
    with StateStore(url) as store:
        assert store.get_kill_switch("churn").set_by.startswith(who)


def test_a_failed_audit_record_leaves_the_switch_unchanged(tmp_path: Path) -> None:
    with StateStore(f"sqlite:///{tmp_path}/s.db") as store:
        def refuse(*_: object) -> None:
            raise RuntimeError("audit write failed")

        with pytest.raises(RuntimeError):
            store.set_kill_switch("card_txn", "pause", "INC-1", "ops", on_change=refuse)
        assert store.get_kill_switch("card_txn").mode == "off"


def test_audit_show_answers_who_decided_a_record(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(config)
    audit = open_audit(cfg)
    assert audit is not None
    with audit:
        audit.append_decisions(decisions(10, run="R1", score=0.97))
        audit.append_decisions(decisions(2, run="R1", score=0.1, start=NOON + timedelta(hours=2)))
        audit.append_action(OperatorAction(actor="unix:ana(uid=1001)@ops", action="review.decide",
                                           pipeline="card_txn", target="R1:1", old="pending", new="legit",
                                           reason="customer confirmed"))
    assert main(["audit", "show", "--record", "R1:1", "--config", str(config)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["kind"], r.get("scored_by"), r.get("model_name"), r.get("score"), r.get("actor")) for r in rows] == [
        ("decision", "model", "fraud", 0.97, None), ("decision", "model", "fraud", 0.1, None),
        ("action", None, None, None, "unix:ana(uid=1001)@ops")]
    assert rows[0]["decided_at"] == "2026-12-04T12:00:00.000001+00:00"
    assert main(["audit", "show", "--record", "R1:404", "--config", str(config)]) == 1


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_audit_show_and_killswitch_history_print_tables_on_a_terminal(config: Path) -> None:
    audit = open_audit(load_config(config))
    assert audit is not None
    with audit:
        audit.append_decisions(decisions(3, run="R1", score=0.97))
        audit.append_action(OperatorAction(actor="ops", action="review.decide", pipeline="card_txn",
                                           target="R1:1", old="pending", new="[red]fraud", reason="chargeback"))
    out = Tty()
    args = argparse.Namespace(audit_command="show", record="R1:1", config=str(config))
    assert audit_cli.run(args, out) == 0
    text_ = out.getvalue()
    assert "decisions on R1:1" in text_ and "0.97" in text_ and "[red]fraud" in text_ and "chargeback" in text_
    url = f"sqlite:///{config.parent}/var/lgw-state.db"
    assert main(["killswitch", "set", "card_txn", "--mode", "pause", "--reason", "INC-9", "--state-url", url]) == 0
    out = Tty()
    args = argparse.Namespace(pipeline=None, limit=10, state_url=url)
    assert killswitch_cli.history_command(args, out) == 0
    assert "INC-9" in out.getvalue() and "pause" in out.getvalue()


def test_audit_verify_and_prune_commands(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audit = open_audit(load_config(config))
    assert audit is not None
    with audit:
        audit.append_decisions(decisions(10, start=datetime.now(UTC) - timedelta(days=60)))
        audit.append_decisions(decisions(10, run="R2", start=datetime.now(UTC)))
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("audit log intact: 2 days, 2 batches, 20 records")
    with pytest.raises(SystemExit):
        main(["audit", "prune", "--config", str(config)])  # no --reason
    assert main(["audit", "prune", "--reason", "retention", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("pruned 1 days")
    (batch,) = (config.parent / "var" / "audit").rglob("*.parquet")
    batch.unlink()
    assert main(["audit", "verify", "--config", str(config)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("its file is missing (deleted)")


def test_audit_verify_refuses_a_bad_day(config: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "verify", "--day", "2026-13-01", "--config", str(config)])
    assert exit_.value.code == 2


def test_the_table_store_through_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("audit:\n  store: table\n")
    cfg = load_config(path)
    with StateStore(cfg.state.url) as state:
        audit = open_audit(cfg, writer="run-42", state=state)
        assert audit is not None
        audit.append_decisions(decisions(100))
        audit.close()  # the caller's store stays open
        assert audit.decisions_for("R1:7").num_rows == 1
    assert main(["audit", "verify", "--config", str(path)]) == 0
    assert capsys.readouterr().out == "audit log intact: 1 days, 1 batches, 100 records, 0 operator actions\n"
    assert not (tmp_path / "var" / "audit").exists()


def test_an_unknown_audit_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("audit:\n  retention: 30\n")
    with pytest.raises(ConfigError, match=r"audit\.retention"):
        load_config(path)


def test_a_disabled_audit_log_is_none(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("audit:\n  enabled: false\n")
    assert open_audit(load_config(path)) is None
    assert main(["audit", "verify", "--config", str(path)]) == 2


def test_an_unreachable_state_store_is_an_infrastructure_error() -> None:
    with pytest.raises(StateStoreError, match=r"state store .*audit tables"):
        AuditLog(AuditConfig(store="table"), StateStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"))
