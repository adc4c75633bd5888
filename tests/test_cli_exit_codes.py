"""Exit codes and messages: a crash is not "some records were rejected", Ctrl-C says what
happened, `lgw score` under the kill switch `pause`, `lgw killswitch set` on a pipeline
no config defines."""

from __future__ import annotations

import argparse
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from gateway import commands
from gateway.cli import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PAUSED, EXIT_SIGINT, main
from gateway.config import example_dropfolder_config
from gateway.state import StateStore
from schemas.examples import contract_path, generate_card_file

PAN = "4921810001405133"


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory for this test alone (tracebacks are written under it)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def crash_with(monkeypatch: pytest.MonkeyPatch, command: str, exc: BaseException) -> None:
    def boom(_args: argparse.Namespace) -> int:
        raise exc

    monkeypatch.setattr(commands, command, boom)


# ---------------------------------------------------------------- internal errors

def test_an_internal_error_exits_70_with_one_line_and_a_private_traceback_file(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], private_tmp: Path) -> None:
    crash_with(monkeypatch, "contract", RuntimeError(f"record accounting broken for PAN {PAN}"))
    assert main(["contract", "check", "x.yaml"]) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing on stdout, where the records go
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lgw: internal error: RuntimeError at test_cli_exit_codes.py:")
    assert PAN not in err  # the message may quote record data: it stays in the file
    saved = Path(err.rsplit("the traceback is in ", 1)[1].strip())
    assert saved.parent.parent == private_tmp
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    text = saved.read_text()
    assert text.startswith("lgw contract check x.yaml\n") and "Traceback (most recent call last)" in text
    assert "RuntimeError: record accounting broken" in text


def test_a_traceback_is_never_written_through_a_planted_link(tmp_path: Path, private_tmp: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import write_traceback

    target = tmp_path / "victim"
    target.write_text("keep")
    planted = private_tmp / "lgw-crash-planted"
    planted.mkdir()

    def predictable(prefix: str = "") -> str:  # a folder an attacker prepared, with a link at the name
        return str(planted)

    monkeypatch.setattr(tempfile, "mkdtemp", predictable)
    monkeypatch.setattr("time.strftime", lambda *_a: "T")
    (planted / f"traceback-T-{os.getpid()}.txt").symlink_to(target)
    with pytest.raises(OSError):
        write_traceback(RuntimeError("x"), [])
    assert target.read_text() == "keep"


def test_an_unwritable_temp_dir_still_gives_one_line(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    crash_with(monkeypatch, "decode", ValueError("bad"))
    assert main(["decode", "in.dat", "--copybook", "x.cpy"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the traceback could not be saved" in err


# ---------------------------------------------------------------- Ctrl-C

def test_ctrl_c_in_a_plain_command_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    crash_with(monkeypatch, "score", KeyboardInterrupt())
    assert main(["score", "--contract", "c", "--input", "i", "--output", "o"]) == EXIT_SIGINT
    err = capsys.readouterr().err
    assert err == "lgw: interrupted (SIGINT); nothing was published\n"


def test_ctrl_c_in_a_batch_command_exits_like_sigterm(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    crash_with(monkeypatch, "batch", KeyboardInterrupt())
    assert main(["batch", "run", "card_txn"]) == EXIT_INTERRUPTED == 3
    assert capsys.readouterr().err.count("\n") == 1


# ---------------------------------------------------------------- lgw score while paused

def test_score_under_the_pause_kill_switch_exits_75_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("LGW_STATE_URL", url)
    with StateStore(url) as store:
        store.set_kill_switch("card_txn", "pause", "INC-7", "ops")
    data = tmp_path / "CARDTXN.DAT"
    generate_card_file(data, records=2_000, seed=3)
    out, rejects = tmp_path / "out" / "scored.jsonl", tmp_path / "out" / "rejects.jsonl"
    code = main(["score", "--contract", str(contract_path()), "--input", str(data), "--output", str(out),
                 "--rejects", str(rejects)])
    captured = capsys.readouterr()
    assert code == EXIT_PAUSED == 75
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("lgw: paused: pipeline card_txn is paused by its kill switch (INC-7), set by ops")
    assert not out.exists() and not rejects.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no partial file either


def test_score_runs_again_once_the_pause_is_lifted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("LGW_STATE_URL", url)
    with StateStore(url) as store:
        store.set_kill_switch("card_txn", "pause", "", "ops")
        store.set_kill_switch("card_txn", "off", "", "ops")
    data = tmp_path / "CARDTXN.DAT"
    generate_card_file(data, records=500, seed=3)
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--contract", str(contract_path()), "--input", str(data), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["records_in"] == summary["records_out"] == 500 and summary["scored_by"] == {"model": 500}


# ---------------------------------------------------------------- killswitch set on unknown pipelines

def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(example_dropfolder_config(f"sqlite:///{tmp_path}/cfg-state.db")))
    return path


def test_killswitch_set_refuses_a_pipeline_the_config_does_not_define(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["killswitch", "set", "card_tnx", "--mode", "pause", "--reason", "INC-1", "--config",
                 str(config)]) == 2
    err = capsys.readouterr().err
    assert err == f"lgw: error: pipeline 'card_tnx' is not in {config}; its pipelines: card_txn\n"
    with StateStore(f"sqlite:///{tmp_path}/cfg-state.db") as store:
        assert store.list_kill_switches() == []


def test_killswitch_set_with_a_config_writes_to_its_state_store(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["killswitch", "set", "card_txn", "--mode", "force_fallback", "--reason", "INC-2",
                 "--config", str(config)]) == 0
    assert capsys.readouterr().err.count("lgw: ") == 0
    with StateStore(f"sqlite:///{tmp_path}/cfg-state.db") as store:
        assert store.get_kill_switch("card_txn").mode == "force_fallback"


def test_killswitch_set_without_a_config_warns_about_an_unknown_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    assert main(["killswitch", "set", "churn", "--mode", "pause", "--reason", "INC-3", "--state-url", url]) == 0
    err = capsys.readouterr().err
    assert "lgw: warning: no configured pipeline is named 'churn' (embedded defaults: card_txn;" in err
    with StateStore(url) as store:
        assert store.get_kill_switch("churn").mode == "pause"


# ---------------------------------------------------------------- lgw decode --copybook reports its nulls

def test_decode_with_a_copybook_reports_every_undecodable_field(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "CARDTXN.DAT"
    generate_card_file(data, records=1_000, seed=7, bad_every=100)
    copybook = contract_path().parent / "copybooks" / "CARDTXN.cpy"
    by_copybook, by_contract = tmp_path / "copybook.rejects.jsonl", tmp_path / "contract.rejects.jsonl"
    code = main(["decode", str(data), "--copybook", str(copybook), "--rejects", str(by_copybook),
                 "-o", str(tmp_path / "records.jsonl")])
    assert code == 1  # every record was written, and some fields could not be decoded
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 1_002
    main(["decode", str(data), "--contract", str(contract_path()), "--rejects", str(by_contract),
          "-o", str(tmp_path / "valid.jsonl")])
    capsys.readouterr()
    reported = [json.loads(x) for x in by_copybook.read_text().splitlines()]
    decode_errors = [r for r in map(json.loads, by_contract.read_text().splitlines())
                     if r["reason"].startswith("invalid")]
    assert len(decode_errors) == 5
    assert all(r in reported for r in decode_errors)  # the same reject, byte for byte
    assert all({"record", "record_offset", "field", "field_offset", "offset", "length", "raw", "reason"} == set(r)
               for r in reported)


def test_decode_with_a_copybook_reports_to_stderr_without_rejects_file(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "TXN.DAT"
    cpy = tmp_path / "TXN.cpy"
    cpy.write_text("       01  TXN.\n           05  ID      PIC X(4).\n           05  AMOUNT  PIC S9(5)V99 COMP-3.\n")
    good, bad = b"A001" + bytes.fromhex("0012345C"), b"A002" + bytes.fromhex("00123450")
    data.write_bytes(good + bad)
    assert main(["decode", str(data), "--copybook", str(cpy), "--encoding", "ascii"]) == 1
    captured = capsys.readouterr()
    assert [json.loads(x) for x in captured.out.splitlines()] == [{"ID": "A001", "AMOUNT": 123.45},
                                                                  {"ID": "A002", "AMOUNT": None}]
    assert [json.loads(x) for x in captured.err.splitlines()] == [
        {"record": 2, "record_offset": 8, "field": "TXN.AMOUNT", "field_offset": 4, "offset": 12, "length": 4,
         "raw": "00123450", "reason": "invalid packed-decimal sign nibble"}]


def test_score_paused_mid_file_stops_with_75_instead_of_losing_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.drivers import batch as score_module

    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("LGW_STATE_URL", url)
    real_score_rows = score_module.score_rows
    calls = []

    async def pause_after_the_first_chunk(pipeline, *args, **kw):  # type: ignore[no-untyped-def]
        if calls:
            with StateStore(url) as store:
                store.set_kill_switch("card_txn", "pause", "mid-file", "ops")
            pipeline.kill_switch.invalidate()
        calls.append(1)
        return await real_score_rows(pipeline, *args, **kw)

    monkeypatch.setattr(score_module, "score_rows", pause_after_the_first_chunk)
    data = tmp_path / "CARDTXN.DAT"
    generate_card_file(data, records=2_000, seed=3)
    out = tmp_path / "scored.jsonl"
    code = main(["score", "--contract", str(contract_path()), "--input", str(data), "--output", str(out),
                 "--chunk-records", "500"])
    err = capsys.readouterr().err
    assert len(calls) == 2  # the second chunk found the switch at pause
    assert code == EXIT_PAUSED and "paused by its kill switch (mid-file)" in err
    assert not out.exists() and not list(tmp_path.glob(".scored*"))
