"""Nothing written where it must not be: links planted at the names the gateway writes
(its old fixed temporary names and the final names) never redirect or truncate another
file; an output that is the input, or cannot be written, is refused before any work."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.files.dropfolder import content_hash
from gateway.batch import BatchDriver
from gateway.cli import main
from gateway.runs import DONE, FAILED
from gateway.state import StateStore
from schemas.examples import contract_path, generate_card_file
from schemas.safefiles import (
    NewFile,
    UnsafePath,
    atomic_write,
    create_new,
    create_unique,
    ensure_file,
    open_existing,
    publish,
    remove_stale_temps,
    rename_new,
    temp_name,
)
from tests.test_batch import drop, folder, run_once, runtime, write_config
from tests.test_config_realtime import KAFKA, realtime_config, write_yaml

ROOT = Path(__file__).resolve().parents[1]
VICTIM_TEXT = b"precious: must never change\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the gateway's account can write, somewhere else."""
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_bytes(VICTIM_TEXT)
    return path


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "CARDTXN.DAT"
    path.parent.mkdir()
    generate_card_file(path, records=300, seed=5, bad_every=100)
    return path


def plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def hidden(folder_path: Path) -> list[str]:
    return sorted(p.name for p in folder_path.iterdir() if p.name.startswith("."))


def score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["score", "--contract", str(contract_path()), "--force-fallback", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lgw: error: "), err
    assert "Traceback" not in err and all(f in lines[0] for f in fragments), lines[0]


# --------------------------------------------------------------------------- the module
def test_a_new_file_is_never_created_through_a_link_or_over_a_file(tmp_path: Path, victim: Path) -> None:
    plant(tmp_path / "link", victim)
    with pytest.raises(UnsafePath, match="found a symbolic link"):
        create_new(tmp_path / "link")
    (tmp_path / "there").write_bytes(b"x")
    with pytest.raises(UnsafePath, match="found a file already there"):
        create_new(tmp_path / "there")
    assert victim.read_bytes() == VICTIM_TEXT and (tmp_path / "there").read_bytes() == b"x"


def test_temporary_names_are_unpredictable_and_stay_in_the_target_folder(tmp_path: Path) -> None:
    final = tmp_path / ("N" * 250)
    names = {temp_name(final, ".partial") for _ in range(50)}
    assert len(names) == 50
    assert all(n.parent == tmp_path and n.name.startswith(".N") and n.name.endswith(".partial")
               and len(os.fsencode(n.name)) <= 255 for n in names)


def test_publish_refuses_to_rename_over_a_link_or_a_folder(tmp_path: Path, victim: Path) -> None:
    plant(tmp_path / "out.jsonl", victim)
    (tmp_path / "dir.jsonl").mkdir()
    for final in (tmp_path / "out.jsonl", tmp_path / "dir.jsonl"):
        tmp = temp_name(final)
        tmp.write_bytes(b"new")
        with pytest.raises(UnsafePath, match="refusing to replace it"):
            publish(tmp, final)
    assert os.path.islink(tmp_path / "out.jsonl") and victim.read_bytes() == VICTIM_TEXT
    with pytest.raises(UnsafePath, match="found a symbolic link"):
        NewFile(tmp_path / "out.jsonl")


def test_publish_replaces_a_regular_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    final = tmp_path / "manifest.json"
    final.write_bytes(b"old")
    atomic_write(final, b"new")
    assert final.read_bytes() == b"new" and hidden(tmp_path) == []


def test_a_move_never_replaces_what_is_at_its_destination(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    with pytest.raises(FileExistsError):
        rename_new(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"a" and (tmp_path / "b").read_bytes() == b"b"
    rename_new(tmp_path / "a", tmp_path / "c")
    assert not (tmp_path / "a").exists() and (tmp_path / "c").read_bytes() == b"a"


def test_a_unique_file_never_opens_a_name_that_is_taken(tmp_path: Path, victim: Path) -> None:
    plant(tmp_path / "t.rejects.jsonl", victim)
    path, fh = create_unique(tmp_path / "t.rejects.jsonl")
    with fh:
        fh.write(b"r\n")
    assert path.name == "t.rejects.jsonl.1" and victim.read_bytes() == VICTIM_TEXT


def test_the_sqlite_state_file_is_never_a_link(tmp_path: Path, victim: Path) -> None:
    dangling = tmp_path / "elsewhere" / "created-by-sqlite.db"
    plant(tmp_path / "state.db", dangling)
    with pytest.raises(UnsafePath, match="found a symbolic link"):
        StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    assert not dangling.exists()
    ensure_file(tmp_path / "fresh.db")
    assert (tmp_path / "fresh.db").is_file() and not (tmp_path / "fresh.db").is_symlink()


# --------------------------------------------------------------------------- lgw score / decode / encode
@pytest.mark.parametrize("planted", [".scored.jsonl.partial", ".rejects.jsonl.partial", "rejects.jsonl"])
def test_score_never_writes_through_a_link_planted_at_its_temp_or_final_names(
        tmp_path: Path, card_file: Path, victim: Path, capsys: pytest.CaptureFixture[str], planted: str) -> None:
    out_dir = tmp_path / "out"
    plant(out_dir / planted, victim)
    code, out, err = score(capsys, "--input", str(card_file), "--output", str(out_dir / "scored.jsonl"),
                           "--rejects", str(out_dir / "rejects.jsonl"))
    assert victim.read_bytes() == VICTIM_TEXT
    if code == 2:  # refused before any work, with one line
        one_error_line(err, "rejects.jsonl", "symbolic link")
        assert not (out_dir / "scored.jsonl").exists()
    else:  # or written to fresh regular files, the planted link left alone
        assert code == 1 and json.loads(out.splitlines()[-1])["records_in"] == 300
        for name in ("scored.jsonl", "rejects.jsonl"):
            assert (out_dir / name).is_file() and not (out_dir / name).is_symlink()
        assert os.path.islink(out_dir / planted)
    assert sorted(hidden(out_dir)) == ([planted] if planted.startswith(".") else [])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_score_refuses_an_output_that_is_a_link_and_leaves_nothing_behind(
        tmp_path: Path, card_file: Path, victim: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    plant(tmp_path / "out" / f"scored.{fmt}", victim)
    code, _out, err = score(capsys, "--input", str(card_file), "--output", str(tmp_path / "out" / f"scored.{fmt}"),
                            "--format", fmt)
    assert code == 2
    one_error_line(err, "--output", "symbolic link")
    assert victim.read_bytes() == VICTIM_TEXT and hidden(tmp_path / "out") == []


@pytest.mark.parametrize("which", ["output", "rejects", "hard link", "rejects = output", "via a link"])
def test_score_refuses_an_output_that_is_the_input_or_another_output(
        tmp_path: Path, card_file: Path, capsys: pytest.CaptureFixture[str], which: str) -> None:
    data = card_file.read_bytes()
    out, rej = tmp_path / "scored.jsonl", tmp_path / "rejects.jsonl"
    if which == "output":
        out = card_file
    elif which == "rejects":
        rej = card_file
    elif which == "hard link":
        os.link(card_file, tmp_path / "same.dat")
        out = tmp_path / "same.dat"
    elif which == "via a link":
        out = tmp_path / "in" / ".." / "in" / "CARDTXN.DAT"
    else:
        rej = out
    code, _out, err = score(capsys, "--input", str(card_file), "--output", str(out), "--rejects", str(rej))
    assert code == 2
    one_error_line(err, "is the same file as", "refusing to overwrite")
    assert card_file.read_bytes() == data
    assert not (tmp_path / "scored.jsonl").exists() and hidden(tmp_path) == [] and hidden(card_file.parent) == []


def test_decode_and_encode_refuse_to_overwrite_their_input(tmp_path: Path, card_file: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = card_file.read_bytes()
    contract = str(contract_path())
    for argv in (["decode", str(card_file), "--contract", contract, "--output", str(card_file)],
                 ["decode", str(card_file), "--contract", contract, "--rejects", str(card_file)],
                 ["decode", str(card_file), "--contract", contract, "--output", str(tmp_path / "o.jsonl"),
                  "--rejects", str(tmp_path / "o.jsonl")],
                 ["encode", str(card_file), "--contract", contract, "--output", str(card_file)]):
        assert main(argv) == 2, argv
        one_error_line(capsys.readouterr().err, "is the same file as")
    assert card_file.read_bytes() == data and not (tmp_path / "o.jsonl").exists()


def test_decode_rejects_never_go_through_a_planted_link(tmp_path: Path, card_file: Path, victim: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    plant(tmp_path / "r.jsonl", victim)
    code = main(["decode", str(card_file), "--contract", str(contract_path()), "--output", str(tmp_path / "o.jsonl"),
                 "--rejects", str(tmp_path / "r.jsonl")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--rejects", "symbolic link")
    assert victim.read_bytes() == VICTIM_TEXT and not (tmp_path / "o.jsonl").exists() and hidden(tmp_path) == []
    os.unlink(tmp_path / "r.jsonl")
    assert main(["decode", str(card_file), "--contract", str(contract_path()), "--output",
                 str(tmp_path / "o.jsonl"), "--rejects", str(tmp_path / "r.jsonl")]) == 1
    assert (tmp_path / "o.jsonl").read_bytes() and (tmp_path / "r.jsonl").read_bytes()


@pytest.mark.parametrize("where", ["a directory", "parent is a file"])
def test_an_unwritable_output_is_one_line_before_any_work(tmp_path: Path, card_file: Path, where: str) -> None:
    (tmp_path / "file").write_bytes(b"not a folder")
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" if where == "a directory" else tmp_path / "file" / "scored.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever is installed
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "score", "--contract", str(contract_path()),
                           "--input", str(card_file), "--output", str(output), "--force-fallback"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    one_error_line(proc.stderr, "--output", "directory" if where == "a directory" else "not a folder")
    assert hidden(tmp_path) == [] and list((tmp_path / "out").iterdir()) == []


def test_examples_generate_and_asyncapi_never_write_through_a_link(tmp_path: Path, victim: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plant(tmp_path / "sample.dat", victim)
    assert main(["examples", "generate", "--records", "10", "--output", str(tmp_path / "sample.dat")]) == 2
    one_error_line(capsys.readouterr().err, "--output", "symbolic link")
    config = write_yaml(tmp_path, realtime_config(stream={"source": KAFKA}))
    plant(tmp_path / "asyncapi.json", victim)
    assert main(["asyncapi", "--config", str(config), "-o", str(tmp_path / "asyncapi.json")]) == 2
    one_error_line(capsys.readouterr().err, "-o", "symbolic link")
    assert victim.read_bytes() == VICTIM_TEXT and hidden(tmp_path) == []


# --------------------------------------------------------------------------- the drop folder
OLD_TEMP_NAMES = {  # the fixed names the outbox and failed/ used, folder -> names
    "outbox": [".CARDTXN.DAT.scored.jsonl.partial", ".CARDTXN.DAT.rejects.jsonl.partial",
               ".CARDTXN.DAT.manifest.json.tmp"],
    "failed": [".CARDTXN.DAT.report.json.tmp", ".CARDTXN.DAT.rejects.jsonl.moving"],
}


def test_links_at_the_old_temporary_names_redirect_nothing_in_the_outbox(tmp_path: Path, victim: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)
    for folder_name, names in OLD_TEMP_NAMES.items():
        for name in names:
            plant(tmp_path / "drop" / folder_name / name, victim)
    [result] = run_once(rt)
    assert result.status == DONE and victim.read_bytes() == VICTIM_TEXT
    outbox = tmp_path / "drop" / "outbox"
    for name in ("CARDTXN.DAT.scored.jsonl", "CARDTXN.DAT.rejects.jsonl", "CARDTXN.DAT.manifest.json"):
        assert (outbox / name).is_file() and not (outbox / name).is_symlink()
    assert hidden(outbox) == sorted(OLD_TEMP_NAMES["outbox"])  # the planted links, left alone
    manifest = json.loads((outbox / "CARDTXN.DAT.manifest.json").read_bytes())
    assert manifest["counts"]["records_in"] == 3_000


def test_a_failed_report_is_never_written_through_a_link(tmp_path: Path, victim: Path) -> None:
    rt = runtime(write_config(tmp_path))
    path = tmp_path / "drop" / "inbox" / "CARDTXN.DAT"
    drop(tmp_path)
    data = bytearray(path.read_bytes())
    data[-120 + 1: -120 + 10] = "000002999".encode("cp037")  # the trailer's record count is one short
    path.write_bytes(bytes(data))
    for name in OLD_TEMP_NAMES["failed"]:
        plant(tmp_path / "drop" / "failed" / name, victim)
    [result] = run_once(rt)
    assert result.status == FAILED and victim.read_bytes() == VICTIM_TEXT
    failed = tmp_path / "drop" / "failed"
    assert (failed / "CARDTXN.DAT.report.json").is_file() and not (failed / "CARDTXN.DAT.report.json").is_symlink()
    assert json.loads((failed / "CARDTXN.DAT.report.json").read_bytes())["status"] == "failed"


def test_a_link_at_a_final_outbox_name_stops_the_publish_until_it_is_gone(tmp_path: Path, victim: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    drop(tmp_path)
    outbox = tmp_path / "drop" / "outbox"
    plant(outbox / "CARDTXN.DAT.scored.jsonl", victim)
    assert main(["batch", "run", "card_txn", "--config", str(config), "--no-progress"]) == 2
    one_error_line(capsys.readouterr().err, "CARDTXN.DAT.scored.jsonl", "symbolic link", "refusing to replace")
    assert victim.read_bytes() == VICTIM_TEXT and folder(tmp_path, "done") == {}
    os.unlink(outbox / "CARDTXN.DAT.scored.jsonl")  # the operator removes it; the run resumes its publish step
    assert main(["batch", "run", "card_txn", "--config", str(config), "--no-progress"]) == 1  # (rejects)
    assert (outbox / "CARDTXN.DAT.scored.jsonl").is_file() and not (outbox / "CARDTXN.DAT.scored.jsonl").is_symlink()
    assert "CARDTXN.DAT" in folder(tmp_path, "done") and hidden(outbox) == []


def test_lgw_run_logs_a_link_at_an_output_name_and_publishes_once_it_is_gone(
        tmp_path: Path, victim: Path, caplog: pytest.LogCaptureFixture) -> None:
    rt = runtime(write_config(tmp_path, poll_s=0.05))
    drop(tmp_path)
    outbox = tmp_path / "drop" / "outbox"
    plant(outbox / "CARDTXN.DAT.manifest.json", victim)

    async def watch() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(BatchDriver(rt, stop=stop).watch())
        await until(lambda: "refusing to replace it" in caplog.text)
        assert not watcher.done()  # still watching: the error is logged and retried
        os.unlink(outbox / "CARDTXN.DAT.manifest.json")
        await until(lambda: (outbox / "CARDTXN.DAT.manifest.json").is_file())
        stop.set()
        await watcher

    asyncio.run(watch())
    assert victim.read_bytes() == VICTIM_TEXT and "CARDTXN.DAT" in folder(tmp_path, "done")
    assert not (outbox / "CARDTXN.DAT.manifest.json").is_symlink()


async def until(condition: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Waits for `condition` (a bound on the wait, not a timing assertion)."""
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never came true")


def test_a_fifo_planted_where_a_file_is_resumed_is_refused_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "staged.partial")
    with pytest.raises(UnsafePath, match="found a FIFO"):
        open_existing(tmp_path / "staged.partial")
    with pytest.raises(UnsafePath, match="found a FIFO"):
        content_hash(tmp_path / "staged.partial")


def test_stale_temporary_files_of_a_target_go_and_nothing_else(tmp_path: Path, victim: Path) -> None:
    final = tmp_path / "X.scored.jsonl"
    stale, planted = temp_name(final, ".partial"), temp_name(final, ".partial")
    stale.write_bytes(b"left by a killed attempt")
    plant(planted, victim)
    others = [temp_name(final, ".ipc.partial"), temp_name(tmp_path / "Y.scored.jsonl", ".partial"),
              tmp_path / ".X.scored.jsonl.partial"]
    for other in others:
        other.write_bytes(b"not ours")
    assert sorted(remove_stale_temps(final, ".partial")) == sorted([stale, planted])
    assert victim.read_bytes() == VICTIM_TEXT and all(o.read_bytes() == b"not ours" for o in others)
