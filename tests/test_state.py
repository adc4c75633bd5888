from __future__ import annotations

import argparse
import io
import json
import os
import pwd
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from gateway import killswitch_cli
from gateway.kill_switch import KillSwitch, SqliteKillSwitches, kill_switches_at
from gateway.state import KillSwitchWatcher, StateStore, StateStoreError, kill_switch_table, normalize_url
from schemas.errors import ConfigError, InfrastructureError
from tests.helpers import unavailable

POSTGRES_URL = os.environ.get("LGW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _postgres_or_skip() -> str:
    url = POSTGRES_URL + ("&" if "?" in POSTGRES_URL else "?") + "connect_timeout=3"
    store = StateStore(url)
    try:
        store.list_kill_switches()
    except InfrastructureError as exc:
        unavailable(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    finally:
        store.close()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/nested/dir/state.db"
        return
    yield _postgres_or_skip()


@pytest.fixture
def pipeline(state_url: str) -> Iterator[str]:
    """A pipeline name no concurrent test run uses; its rows are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    with StateStore(state_url) as store, store.engine.begin() as conn:
        conn.execute(delete(kill_switch_table).where(kill_switch_table.c.pipeline.like(f"{name}%")))


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    with StateStore(state_url) as s:
        yield s


def test_an_unknown_pipeline_is_off(store: StateStore, pipeline: str) -> None:
    switch = store.get_kill_switch(pipeline)
    assert (switch.pipeline, switch.mode, switch.set_at) == (pipeline, "off", None)


def test_set_then_get_round_trips(store: StateStore, pipeline: str) -> None:
    before = datetime.now(UTC)
    store.set_kill_switch(pipeline, "force_fallback", reason="model drift, INC-4711", set_by="ops@host")
    switch = store.get_kill_switch(pipeline)
    assert (switch.mode, switch.reason, switch.set_by) == ("force_fallback", "model drift, INC-4711", "ops@host")
    assert switch.set_at is not None and switch.set_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= switch.set_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert switch.set_at.utcoffset() == timedelta(0)


def test_setting_again_overwrites(store: StateStore, pipeline: str) -> None:
    store.set_kill_switch(pipeline, "pause", reason="maintenance")
    store.set_kill_switch(pipeline, "off", reason="done")
    assert store.get_kill_switch(pipeline).mode == "off"
    assert [s.reason for s in store.list_kill_switches() if s.pipeline == pipeline] == ["done"]


def test_list_returns_every_switch_sorted(store: StateStore, pipeline: str) -> None:
    store.set_kill_switch(f"{pipeline}-b", "pause")
    store.set_kill_switch(f"{pipeline}-a", "force_fallback")
    mine = [(s.pipeline, s.mode) for s in store.list_kill_switches() if s.pipeline.startswith(pipeline)]
    assert mine == [(f"{pipeline}-a", "force_fallback"), (f"{pipeline}-b", "pause")]


def test_values_travel_as_bound_parameters(store: StateStore, pipeline: str) -> None:
    hostile = "x'); DROP TABLE kill_switch; --"
    store.set_kill_switch(pipeline, "pause", reason=hostile, set_by="o'brien")
    switch = store.get_kill_switch(pipeline)
    assert (switch.reason, switch.set_by) == (hostile, "o'brien")


def test_an_unknown_mode_is_refused(store: StateStore, pipeline: str) -> None:
    with pytest.raises(ConfigError, match="off, force_fallback, pause"):
        store.set_kill_switch(pipeline, "panic")
    assert store.get_kill_switch(pipeline).mode == "off"


def test_a_flip_is_seen_by_a_second_store_within_the_ttl(state_url: str, pipeline: str) -> None:
    clock = FakeClock()
    with StateStore(state_url) as replica_a, StateStore(state_url) as replica_b:
        watcher = KillSwitchWatcher(replica_b, pipeline, ttl_s=1.0, clock=clock)
        assert watcher.current().mode == "off"
        replica_a.set_kill_switch(pipeline, "force_fallback", reason="model down")
        clock.now = 0.5
        assert watcher.current().mode == "off"  # cached: at most one read per TTL
        clock.now = 1.0
        assert watcher.current().mode == "force_fallback"


def test_sqlite_file_and_its_directory_are_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "deep" / "lgw-state.db"
    with StateStore(f"sqlite:///{path}") as store:
        store.set_kill_switch("card_txn", "pause")
    assert path.is_file()
    with StateStore(f"sqlite:///{path}") as again:
        assert again.get_kill_switch("card_txn").mode == "pause"


def test_in_memory_sqlite_is_shared_across_threads() -> None:
    import threading

    with StateStore("sqlite://") as store:
        store.set_kill_switch("card_txn", "pause")
        seen: list[str] = []
        t = threading.Thread(target=lambda: seen.append(store.get_kill_switch("card_txn").mode))
        t.start()
        t.join()
        assert seen == ["pause"]


def test_plain_postgres_urls_select_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"
    with pytest.raises(ConfigError):
        normalize_url("not a url")


def test_an_unreachable_store_is_an_infrastructure_error() -> None:
    with (
        StateStore("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1") as store,
        pytest.raises(StateStoreError, match=r"127\.0\.0\.1:1"),
    ):
        store.get_kill_switch("card_txn")


# ---- watcher ------------------------------------------------------------------------------


def test_watcher_keeps_the_last_value_while_the_store_is_unreachable(tmp_path: Path) -> None:
    clock = FakeClock()
    with StateStore(f"sqlite:///{tmp_path}/s.db") as store:
        store.set_kill_switch("card_txn", "force_fallback")
        watcher = KillSwitchWatcher(store, "card_txn", ttl_s=1.0, clock=clock)
        assert watcher.current().mode == "force_fallback"
        reads = 0

        def broken(pipeline: str) -> None:
            nonlocal reads
            reads += 1
            raise StateStoreError("connection refused")

        store.get_kill_switch = broken  # type: ignore[method-assign,assignment]
        clock.now = 5.0
        assert watcher.current().mode == "force_fallback"
        assert watcher.current().mode == "force_fallback"
        assert reads == 1  # a failed read is not retried before another TTL


def test_watcher_without_a_value_yet_raises_rather_than_guess_off() -> None:
    with (
        StateStore("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1") as store,
        pytest.raises(InfrastructureError),
    ):
        KillSwitchWatcher(store, "card_txn").current()


@pytest.mark.asyncio
async def test_async_watcher_reads_in_a_thread_and_caches(tmp_path: Path) -> None:
    clock = FakeClock()
    with StateStore(f"sqlite:///{tmp_path}/s.db") as store:
        watcher = KillSwitchWatcher(store, "card_txn", ttl_s=1.0, clock=clock)
        assert (await watcher.acurrent()).mode == "off"
        store.set_kill_switch("card_txn", "pause")
        assert (await watcher.acurrent()).mode == "off"
        watcher.invalidate()
        assert (await watcher.acurrent()).mode == "pause"


# ---- CLI functions ------------------------------------------------------------------------


def test_cli_set_then_status_as_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    args = argparse.Namespace(pipeline="card_txn", mode="force_fallback", reason="INC-1", state_url=url)
    assert killswitch_cli.set_command(args) == 0
    assert killswitch_cli.set_command(argparse.Namespace(pipeline="churn", mode="pause", reason="INC-2",
                                                         state_url=url)) == 0
    capsys.readouterr()
    assert killswitch_cli.status_command(argparse.Namespace(state_url=url)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["pipeline"], r["mode"], r["reason"]) for r in rows] == [("card_txn", "force_fallback", "INC-1"),
                                                                      ("churn", "pause", "INC-2")]
    assert rows[0]["set_by"].startswith(f"unix:{pwd.getpwuid(os.getuid()).pw_name}(uid={os.getuid()})@")


def test_cli_uses_lgw_state_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    monkeypatch.setenv("LGW_STATE_URL", url)
    assert killswitch_cli.set_command(argparse.Namespace(pipeline="card_txn", mode="pause", reason="INC-3")) == 0
    with StateStore(url) as store:
        assert store.get_kill_switch("card_txn").mode == "pause"


def test_cli_status_table_on_a_terminal(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    url = f"sqlite:///{tmp_path}/tty.db"
    out = Tty()
    assert killswitch_cli.status_command(argparse.Namespace(state_url=url), out=out) == 0
    assert "no kill switch set" in out.getvalue()
    killswitch_cli.set_command(argparse.Namespace(pipeline="card_txn", mode="pause", reason="[red]x", state_url=url))
    out = Tty()
    killswitch_cli.status_command(argparse.Namespace(state_url=url), out=out)
    assert "card_txn" in out.getvalue() and "[red]x" in out.getvalue()


def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(pipeline="card_txn", mode="panic", reason="INC-4", state_url=f"sqlite:///{tmp_path}/e.db")
    assert killswitch_cli.set_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lgw: error: kill switch mode 'panic'") and err.count("\n") == 1


def test_cli_parser_helper_builds_both_commands() -> None:
    parser = argparse.ArgumentParser(prog="lgw")
    killswitch_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["killswitch", "set", "card_txn", "--mode", "force_fallback", "--reason", "drift"])
    assert (args.killswitch_command, args.pipeline, args.mode, args.reason) == ("set", "card_txn", "force_fallback",
                                                                               "drift")
    assert parser.parse_args(["killswitch", "status"]).state_url is None
    history = parser.parse_args(["killswitch", "history", "card_txn", "--limit", "5"])
    assert (history.killswitch_command, history.pipeline, history.limit) == ("history", "card_txn", 5)
    with pytest.raises(SystemExit):
        parser.parse_args(["killswitch", "set", "card_txn", "--mode", "pause"])  # --reason is required


@pytest.mark.parametrize("reason", [None, "", "  "])
def test_cli_set_refuses_a_blank_reason(tmp_path: Path, reason: str | None,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    assert killswitch_cli.set_command(argparse.Namespace(pipeline="card_txn", mode="pause", reason=reason,
                                                         state_url=url)) == 2
    assert capsys.readouterr().err.startswith("lgw: error: killswitch set needs --reason TEXT")
    with StateStore(url) as store:
        assert store.get_kill_switch("card_txn").mode == "off"


def test_cli_every_set_is_in_the_history_with_old_and_new_mode(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    for mode, reason in (("pause", "INC-5"), ("force_fallback", "INC-5 model back, rules only"), ("off", "done")):
        assert killswitch_cli.set_command(argparse.Namespace(pipeline="card_txn", mode=mode, reason=reason,
                                                             state_url=url)) == 0
    killswitch_cli.set_command(argparse.Namespace(pipeline="churn", mode="pause", reason="other", state_url=url))
    capsys.readouterr()
    assert killswitch_cli.history_command(argparse.Namespace(pipeline="card_txn", limit=2, state_url=url)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["old"], r["new"], r["reason"]) for r in rows] == [
        ("killswitch.set", "force_fallback", "off", "done"),
        ("killswitch.set", "pause", "force_fallback", "INC-5 model back, rules only")]


# ---- the read-only SQLite reader of one-shot commands (gateway.kill_switch)
@pytest.mark.parametrize("mode", ["off", "force_fallback", "pause"])
def test_the_sqlite_reader_reads_what_the_store_wrote(tmp_path: Path, mode: str) -> None:
    url = f"sqlite:///{tmp_path / 'lgw-state.db'}"
    with StateStore(url) as store:
        store.set_kill_switch("card_txn", "pause", reason="INC-1 'quoted'", set_by="ops")
        written = store.set_kill_switch("card_txn", mode, reason="INC-2", set_by="o'brien")
        assert store.get_kill_switch("card_txn") == written
    reader = kill_switches_at(url)
    assert isinstance(reader, SqliteKillSwitches)
    assert reader.get_kill_switch("card_txn") == written  # mode, reason, who, when (UTC)
    assert reader.get_kill_switch("other") == KillSwitch(pipeline="other")


def test_the_sqlite_reader_creates_nothing_and_a_store_not_made_yet_holds_no_switch(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lgw-state.db"
    assert kill_switches_at(f"sqlite:///{path}").get_kill_switch("card_txn").mode == "off"
    assert not path.parent.exists()
    path.parent.mkdir()
    sqlite3.connect(path).close()  # a store file without the table yet
    assert kill_switches_at(f"sqlite:///{path}").get_kill_switch("card_txn").mode == "off"


def test_the_sqlite_reader_fails_like_the_store_on_a_file_that_is_no_database(tmp_path: Path) -> None:
    path = tmp_path / "lgw-state.db"
    path.write_bytes(b"not a database, " * 100)
    with pytest.raises(StateStoreError, match=r"state store sqlite:///.*lgw-state\.db: file is not a database"):
        kill_switches_at(f"sqlite:///{path}").get_kill_switch("card_txn")
    assert issubclass(StateStoreError, InfrastructureError)  # what the watcher keeps its last value on


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true",
                                 "sqlite:///{tmp}/a%20b.db", "postgresql://nobody@127.0.0.1:9/none"])
def test_other_stores_are_read_through_the_state_store(url: str, tmp_path: Path) -> None:
    reader = kill_switches_at(url.format(tmp=tmp_path))
    assert isinstance(reader, StateStore)
    reader.close()
