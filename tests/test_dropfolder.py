"""Drop folders: when a file is complete, and what the outside world cannot make us do."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from adapters.files import dropfolder
from adapters.files.dropfolder import DropFolder, Folders, HashAhead, UnsafePath, content_hash, safe_name
from gateway.config import load_config
from schemas.errors import ConfigError


def folders(root: Path) -> Folders:
    return Folders.prepare({name: root / name for name in ("inbox", "outbox", "done", "failed", "work")})


class Clock:
    """Wall-clock time plus a shift (file times are real; the watcher's clock moves on)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def names(watch: DropFolder) -> tuple[list[str], list[str]]:
    ready, waiting = watch.scan()
    return [a.name for a in ready], waiting


def test_a_file_still_being_written_is_not_taken_until_it_stops_changing(tmp_path: Path) -> None:
    f, clock = folders(tmp_path), Clock()
    watch = DropFolder(f, glob="*.DAT", stable_for_s=5, clock=clock)
    path = f.inbox / "CARDTXN.DAT"
    with open(path, "wb") as fh:
        fh.write(b"H" * 120)
        fh.flush()
        assert names(watch) == ([], ["CARDTXN.DAT"])
        clock.shift = 3
        fh.write(b"D" * 120)  # still arriving: size, mtime and ctime move on
        fh.flush()
        assert names(watch) == ([], ["CARDTXN.DAT"])
    clock.shift = 4  # 4 s of real-and-shifted time since the last write: not yet
    assert names(watch) == ([], ["CARDTXN.DAT"])
    clock.shift = 6
    assert names(watch) == (["CARDTXN.DAT"], [])


def test_with_done_files_a_file_is_taken_only_once_its_done_file_exists(tmp_path: Path) -> None:
    f, clock = folders(tmp_path), Clock()
    watch = DropFolder(f, glob="*", stable_for_s=0, done_file=True, clock=clock)
    (f.inbox / "A.DAT").write_bytes(b"x" * 10)
    clock.shift = 3600  # however old, no done-file, not complete
    assert names(watch) == ([], ["A.DAT"])
    (f.inbox / "A.DAT.done").write_bytes(b"")
    ready, _ = watch.scan()
    assert [a.name for a in ready] == ["A.DAT"] and ready[0].marker == f.inbox / "A.DAT.done"


def test_hidden_files_done_files_folders_and_other_names_are_never_taken(tmp_path: Path) -> None:
    f = folders(tmp_path)
    watch = DropFolder(f, glob="CARD*", stable_for_s=0)
    for name in (".CARDTXN.tmp", "CARDTXN.DAT.done", "OTHER.DAT", "CARDTXN.DAT"):
        (f.inbox / name).write_bytes(b"x")
    (f.inbox / "CARDDIR").mkdir()
    assert names(watch) == (["CARDTXN.DAT"], [])


def test_a_symlink_in_the_inbox_is_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = folders(tmp_path / "drop")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the gateway")
    (f.inbox / "CARDTXN.DAT").symlink_to(secret)
    watch = DropFolder(f, glob="*", stable_for_s=0)
    assert names(watch) == ([], [])
    assert "not followed" in caplog.text
    with pytest.raises(UnsafePath, match="link"):
        content_hash(f.inbox / "CARDTXN.DAT")


def test_a_file_swapped_for_a_link_after_the_scan_is_refused_when_taken(tmp_path: Path) -> None:
    f = folders(tmp_path / "drop")
    (f.inbox / "A.DAT").write_bytes(b"x" * 10)
    watch = DropFolder(f, glob="*", stable_for_s=0)
    hashed = content_hash(f.inbox / "A.DAT")
    os.unlink(f.inbox / "A.DAT")
    (f.inbox / "A.DAT").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePath, match="not a regular file"):
        watch.claim("A.DAT", "run1.A.DAT", hashed)
    assert not (tmp_path / "elsewhere").exists()


def test_a_file_changed_between_hashing_and_taking_is_refused(tmp_path: Path) -> None:
    f = folders(tmp_path)
    (f.inbox / "A.DAT").write_bytes(b"x" * 10)
    hashed = content_hash(f.inbox / "A.DAT")
    with open(f.inbox / "A.DAT", "ab") as fh:
        fh.write(b"more")
    with pytest.raises(UnsafePath, match="changed"):
        DropFolder(f).claim("A.DAT", "run1.A.DAT", hashed)


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/passwd", "a/b", "a\\b", "nul\x00", "tab\tname",
                                  "x" * 256])
def test_names_from_outside_that_could_leave_a_folder_are_refused(name: str) -> None:
    with pytest.raises(UnsafePath):
        safe_name(name)


def test_paths_from_outside_must_name_a_regular_file_directly_in_a_folder(tmp_path: Path) -> None:
    f = folders(tmp_path / "drop")
    (f.done / "A.DAT").write_bytes(b"x")
    (tmp_path / "outside.DAT").write_bytes(b"x")
    (f.done / "link.DAT").symlink_to(tmp_path / "outside.DAT")
    (f.done / "sub").mkdir()
    (f.done / "sub" / "B.DAT").write_bytes(b"x")
    assert f.locate(f.done / "A.DAT") == ("done", "A.DAT")
    assert f.locate(str(f.done / ".." / "done" / "A.DAT")) == ("done", "A.DAT")
    for bad in (tmp_path / "outside.DAT", f.done / ".." / ".." / "outside.DAT", f.done / "link.DAT",
                f.done / "sub" / "B.DAT", f.outbox / "A.DAT"):
        with pytest.raises(UnsafePath):
            f.locate(bad)


def test_a_name_taken_in_done_gets_a_suffix_instead_of_overwriting(tmp_path: Path) -> None:
    f = folders(tmp_path)
    (f.done / "CARDTXN.DAT").write_bytes(b"yesterday")
    (f.done / "CARDTXN.DAT.1").write_bytes(b"the day before")
    assert f.free_name("done", "CARDTXN.DAT") == "CARDTXN.DAT.2"
    assert f.free_name("failed", "CARDTXN.DAT") == "CARDTXN.DAT"


@pytest.mark.parametrize(("source", "message"), [
    ("{inbox: in, outbox: in/out}", "must be separate folders"),
    ("{inbox: in, outbox: in}", "must be separate folders"),
    ("{inbox: in, outbox: out, done: out/done}", "must be separate folders"),
    ("{inbox: in, outbox: out, glob: '../*'}", "file name pattern"),
    ("{inbox: in, outbox: out, glob: 'sub/*.DAT'}", "file name pattern"),
    ("{inbox: in, outbox: out, format: xml}", "source.format"),
])
def test_drop_folder_config_is_checked_before_anything_starts(tmp_path: Path, source: str, message: str) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"pipelines: {{p: {{contract: c.yaml, source: {source}}}}}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_done_failed_and_work_default_to_siblings_of_the_inbox(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("pipelines: {p: {contract: c.yaml, source: {inbox: drop/in, outbox: drop/out}}}\n")
    source = load_config(cfg).pipelines["p"].source
    assert source is not None
    paths = source.folders(tmp_path)
    assert {k: v.relative_to(tmp_path).as_posix() for k, v in paths.items()} == {
        "inbox": "drop/in", "outbox": "drop/out", "done": "drop/done", "failed": "drop/failed", "work": "drop/work"}


def test_a_hash_made_ahead_is_used_while_its_file_is_the_one_hashed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / f"F{i}.DAT" for i in range(3)]
    for i, f in enumerate(files):
        f.write_bytes(bytes([i]) * 300_000)
    ahead = HashAhead()
    ahead.start(files)
    made = {f: ahead.hash(f) for f in files[:1]}  # waits for the first, made ahead
    hashed_now: list[Path] = []
    real = dropfolder.content_hash
    monkeypatch.setattr(dropfolder, "content_hash", lambda p: hashed_now.append(p) or real(p))
    made[files[1]] = ahead.hash(files[1])
    assert hashed_now == []  # made ahead, not again
    assert made == {f: content_hash(f) for f in files[:2]}
    ahead.close()
    assert ahead.hash(files[2]) == content_hash(files[2])  # dropped at close: hashed when asked


def test_a_file_changed_or_replaced_by_a_link_after_its_hash_ahead_is_hashed_again(tmp_path: Path) -> None:
    changed, replaced, linked = (tmp_path / n for n in ("A.DAT", "B.DAT", "C.DAT"))
    for f in (changed, replaced, linked):
        f.write_bytes(b"first" * 1000)
    ahead = HashAhead()
    ahead.start([changed, replaced, linked])
    for f in (changed, replaced, linked):
        ahead._ahead[f].result()  # all three made
    with changed.open("ab") as fh:  # appended to in place: same inode, other size and time
        fh.write(b"more")
    other = tmp_path / "other"
    other.write_bytes(b"second" * 1000)
    os.replace(other, replaced)  # another file under the name
    linked.unlink()
    os.symlink(tmp_path / "A.DAT", linked)  # a link planted in its place
    assert ahead.hash(changed) == content_hash(changed) and ahead.hash(changed).size == 5004
    assert ahead.hash(replaced).sha256 == content_hash(replaced).sha256 != content_hash(changed).sha256
    with pytest.raises(UnsafePath):
        ahead.hash(linked)
    ahead.close()


def test_hashes_ahead_follow_the_inbox(tmp_path: Path) -> None:
    a, b = tmp_path / "A.DAT", tmp_path / "B.DAT"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    ahead = HashAhead()
    ahead.start([a, b])
    ahead.start([b])  # A was claimed elsewhere: its hash is dropped
    assert set(ahead._ahead) == {b}
    ahead.close()


def test_lgw_batch_run_begins_hashing_its_inbox_before_the_run_is_set_up(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.batch import build_runtime
    from gateway.config import example_dropfolder_config
    from gateway.inbox_early import begin_hashing
    from gateway.state import StateStore

    cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}", fmt="csv")
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps(cfg), encoding="utf-8")
    inbox = tmp_path / "drop" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "CARDTXN.DAT").write_bytes(b"D" * 120_000)
    (inbox / "notes.txt").write_bytes(b"not matched by the glob")
    begin_hashing(str(config), "card_txn")
    begun = dropfolder._BEGUN[inbox.resolve()]
    assert set(begun._ahead) == {inbox.resolve() / "CARDTXN.DAT"}  # the files the run will claim, only
    hashed_now: list[Path] = []
    real = dropfolder.content_hash
    monkeypatch.setattr(dropfolder, "content_hash", lambda p: hashed_now.append(p) or real(p))
    loaded = load_config(config)
    with StateStore(loaded.state.url) as state:
        rt = build_runtime("card_txn", loaded, state)
        try:
            assert rt.hashes is begun and inbox.resolve() not in dropfolder._BEGUN  # taken over, once
            made = rt.hashes.hash(inbox.resolve() / "CARDTXN.DAT")
        finally:
            asyncio.run(rt.close())
    assert hashed_now == [] and made == real(inbox / "CARDTXN.DAT")


@pytest.mark.parametrize("config_text", ["pipelines: [", "pipelines: {card_txn: {source: {type: odbc}}}", "{}"])
def test_a_config_the_head_start_cannot_read_is_left_to_the_run(tmp_path: Path, config_text: str) -> None:
    from gateway.inbox_early import begin_hashing

    config = tmp_path / "gateway.yaml"
    config.write_text(config_text, encoding="utf-8")
    before = dict(dropfolder._BEGUN)
    begin_hashing(str(config), "card_txn")  # no error here: the run reads the config and reports it
    begin_hashing(str(tmp_path / "missing.yaml"), "card_txn")
    assert before == dropfolder._BEGUN
