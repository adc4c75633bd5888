"""Batch mode: drop folder -> pipeline -> outbox, idempotent, restartable, isolating."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from adapters.files.dropfolder import DropFolder, content_hash
from adapters.files.sink import csv_parts, rendered_pieces
from adapters.files.source import FileSource
from gateway.batch import INTERRUPTED, BatchDriver, BatchRuntime, JobResult, build_runtime
from gateway.cli import main
from gateway.config import example_dropfolder_config, load_config
from gateway.runs import DONE, DUPLICATE, FAILED, RUNNING, RunStore
from gateway.state import StateStore
from schemas.contract import ControlReport, load_contract
from schemas.examples import contract_path, generate_card_file
from schemas.records import Framing, ReadPosition, read_records

RECORDS = 3_000
CHUNK = 500  # 7 chunks (3,000 details + header + trailer)


# --------------------------------------------------------------------------- helpers
def write_config(root: Path, fmt: str = "jsonl", chunk: int = CHUNK, **source: Any) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", fmt=fmt, batch_size=chunk, **source)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def runtime(config: Path) -> BatchRuntime:
    cfg = load_config(config)
    return build_runtime("card_txn", cfg, StateStore(cfg.state.url))


def run_once(rt: BatchRuntime, stop: asyncio.Event | None = None) -> list[JobResult]:
    async def go() -> list[JobResult]:
        return await BatchDriver(rt, stop=stop).run_once()

    return asyncio.run(go())


def drop(root: Path, name: str = "CARDTXN.DAT", *, records: int = RECORDS, seed: int = 5, bad_every: int = 500,
         data: bytes | None = None) -> bytes:
    path = root / "drop" / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        generate_card_file(path, records=records, seed=seed, bad_every=bad_every)
        return path.read_bytes()
    path.write_bytes(data)
    return data


def folder(root: Path, name: str) -> dict[str, bytes]:
    d = root / "drop" / name
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.is_dir() else {}


def manifest_of(root: Path, name: str = "CARDTXN.DAT") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "drop" / "outbox" / f"{name}.manifest.json").read_text())
    return data


def same_outputs(a: Path, b: Path) -> None:
    """Byte-identical records and rejects; manifests equal but for their timings (and
    so their HTML reports, which show them)."""
    want, got = folder(a, "outbox"), folder(b, "outbox")
    assert sorted(got) == sorted(want)
    for name in want:
        if name.endswith(".report.html"):
            continue
        if name.endswith(".manifest.json"):
            w, g = json.loads(want[name]), json.loads(got[name])
            w.pop("timings"), g.pop("timings")
            assert g == w
        else:
            assert got[name] == want[name], name


@pytest.fixture
def clean(tmp_path: Path) -> Iterator[Any]:
    """A clean, uninterrupted run of the standard file in the given format."""
    def make(fmt: str = "jsonl") -> Path:
        root = tmp_path / f"clean-{fmt}"
        rt = runtime(write_config(root, fmt))
        drop(root)
        assert [r.status for r in run_once(rt)] == [DONE]
        return root

    yield make


class Crash(Exception):
    """Stands in for the process dying at this point."""


# --------------------------------------------------------------------------- reading from a position
def _rows(chunks: Iterator[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for c in chunks:
        numbers = getattr(c, "row_numbers", None)
        for i in range(c.num_rows):
            n = c.matrix.shape[1] if c.lengths is None else int(c.lengths[i])
            out.append((int(c.start_index + i if numbers is None else numbers[i]), int(c.offsets[i]),
                        bytes(c.matrix[i, :n])))
        out += [("reject", r.index, r.offset, r.reason) for r in c.rejects]
    return out


def _files(tmp_path: Path) -> dict[str, tuple[Path, Framing]]:
    rng = np.random.default_rng(3)
    recs = [bytes([i % 250 + 1]) * int(rng.integers(1, 40)) for i in range(400)]
    rdw = [struct.pack(">HH", len(r) + 4, 0) + r for r in recs]
    blocks = [b"".join(rdw[k:k + 13]) for k in range(0, len(rdw), 13)]
    files = {
        "F": (b"".join(bytes([i % 256]) * 7 for i in range(400)) + b"xx", Framing("F", 7)),
        "F-lines": (b"\n".join(bytes([65 + i % 20]) * 7 for i in range(400)), Framing("F", 7)),
        "D": (b"\n".join(b"L%05d" % i + (b"" if i % 7 else b"X" * 16) for i in range(400)) + b"\n\n\nend",
              Framing("D", 10)),
        "V": (b"".join(rdw), Framing("V", 40)),
        "VB": (b"".join(struct.pack(">HH", len(b) + 4, 0) + b for b in blocks) + b"\x00\x30\x00\x00\x00\x20",
               Framing("VB", 40)),
    }
    out = {}
    for name, (data, framing) in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = (tmp_path / name, framing)
    return out


@pytest.mark.parametrize("fmt", ["F", "F-lines", "D", "V", "VB"])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_a_resumed_read_continues_exactly_where_the_chunk_ended(tmp_path: Path, fmt: str, chunk: int) -> None:
    path, framing = _files(tmp_path)[fmt]
    whole = _rows(read_records(path, framing, chunk))
    pieced, position = [], None
    while True:  # every chunk read by a fresh reader started at the previous chunk's end
        first = next(read_records(path, framing, chunk, position), None)
        if first is None:
            break
        pieced += _rows(iter([first]))
        assert first.end != position
        position = first.end
    assert pieced == whole
    assert position is not None and position.offset == path.stat().st_size


def test_control_totals_resume_from_the_checkpointed_running_sums(tmp_path: Path) -> None:
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=2_000, seed=3)
    whole, whole_report = load_contract(contract_path()), ControlReport()
    list(whole.decode_file(path, batch_size=300, report=whole_report))
    contract, report = load_contract(contract_path()), ControlReport()
    chunks = contract.decode_file(path, batch_size=300, report=report)
    for _ in range(3):
        dc = next(chunks)
    totals = json.loads(json.dumps(report.running_totals(), default=str))  # as stored
    resumed, resumed_report = load_contract(contract_path()), ControlReport.resumed(totals)
    list(resumed.decode_file(path, batch_size=300, start=ReadPosition(**vars(dc.chunk.end)),
                             report=resumed_report))
    assert resumed_report.ok and resumed_report.checked == whole_report.checked
    assert resumed_report.sums == whole_report.sums
    assert resumed_report.details == whole_report.details == 2_000


# --------------------------------------------------------------------------- one file end to end
def test_a_dropped_file_is_scored_into_the_outbox_with_rejects_and_a_manifest(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    data = drop(tmp_path)
    [result] = run_once(rt)
    assert result.status == DONE
    out = folder(tmp_path, "outbox")
    assert sorted(out) == ["CARDTXN.DAT.manifest.json", "CARDTXN.DAT.rejects.jsonl", "CARDTXN.DAT.report.html",
                           "CARDTXN.DAT.scored.jsonl"]
    rows = [json.loads(x) for x in out["CARDTXN.DAT.scored.jsonl"].splitlines()]
    rejects = [json.loads(x) for x in out["CARDTXN.DAT.rejects.jsonl"].splitlines()]
    assert len(rows) == RECORDS - 6 and {r["scored_by"] for r in rows} == {"model"}
    assert {r["record"] for r in rejects} == {1 + 500 * k for k in range(1, 7)}
    m = manifest_of(tmp_path)
    assert m["status"] == "done" and m["counts"] == {"records_in": 3000, "records_out": 2994, "rejected": 6}
    assert m["scored_by"] == {"model": 2994} and m["control"]["ok"] and m["control"]["checked"]
    assert m["contract"] == {"name": "card_txn", "version": 1} and m["model"] == {"name": "fraud", "version": "1"}
    import hashlib

    assert m["input"]["sha256"] == hashlib.sha256(data).hexdigest() and m["input"]["moved_to"] == "done/CARDTXN.DAT"
    for key, name in (("scored", "CARDTXN.DAT.scored.jsonl"), ("rejects", "CARDTXN.DAT.rejects.jsonl")):
        assert m["outputs"][key]["sha256"] == hashlib.sha256(out[name]).hexdigest()
    assert set(m["timings"]) >= {"started_at", "finished_at", "elapsed_s", "attempts"}
    assert folder(tmp_path, "done") == {"CARDTXN.DAT": data}
    assert not folder(tmp_path, "inbox") and not folder(tmp_path, "work")


def test_a_duplicate_drop_is_processed_once(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    data = drop(tmp_path)
    [first] = run_once(rt)
    outputs = folder(tmp_path, "outbox")
    drop(tmp_path, "CARDTXN.DAT", data=data)  # the same file again, same name
    drop(tmp_path, "RESENT.DAT", data=data)  # and under another name
    results = run_once(rt)
    assert [r.status for r in results] == [DUPLICATE, DUPLICATE]
    assert all(r.summary["duplicate_of"] == first.run_id for r in results)
    assert folder(tmp_path, "outbox") == outputs  # nothing processed, nothing overwritten
    assert sorted(folder(tmp_path, "done")) == ["CARDTXN.DAT", "CARDTXN.DAT.1", "RESENT.DAT"]
    runs = RunStore(rt.runs.store).recent("card_txn")
    assert sorted(r.status for r in runs) == [DONE, DUPLICATE, DUPLICATE]


def test_a_new_file_under_yesterdays_name_gets_outputs_of_its_own(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path, seed=1)
    run_once(rt)
    drop(tmp_path, seed=2)  # the next night's file, same name, other content
    [second] = run_once(rt)
    assert second.status == DONE
    names = sorted(folder(tmp_path, "outbox"))
    sha = manifest_of(tmp_path, f"CARDTXN.DAT.{second.run_id.split('.')[1][:12]}")["input"]["sha256"]
    assert f"CARDTXN.DAT.{sha[:12]}.scored.jsonl" in names and "CARDTXN.DAT.scored.jsonl" in names
    assert sorted(folder(tmp_path, "done")) == ["CARDTXN.DAT", "CARDTXN.DAT.1"]


def test_a_control_total_mismatch_sends_the_whole_file_to_failed_with_a_report(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    path = tmp_path / "drop" / "inbox" / "CARDTXN.DAT"
    drop(tmp_path)
    data = bytearray(path.read_bytes())
    data[-120 + 1: -120 + 10] = "000002999".encode("cp037")  # the trailer's record count is one short
    path.write_bytes(bytes(data))
    [result] = run_once(rt)
    assert result.status == FAILED and "record count" in result.summary["reason"]
    assert folder(tmp_path, "outbox") == {}  # nothing published, no temporary file left
    failed = folder(tmp_path, "failed")
    assert sorted(failed) == ["CARDTXN.DAT", "CARDTXN.DAT.rejects.jsonl", "CARDTXN.DAT.report.html",
                              "CARDTXN.DAT.report.json"]
    report = json.loads(failed["CARDTXN.DAT.report.json"])
    assert report["status"] == "failed" and report["control"]["ok"] is False
    assert "TRL-COUNT says 2999" in report["control"]["problems"][0] and report["outputs"].get("scored") is None
    assert report["input"]["moved_to"] == "failed/CARDTXN.DAT"
    # the same content dropped again is not run again (replay it to insist)
    drop(tmp_path, data=bytes(data))
    assert [r.status for r in run_once(rt)] == [DUPLICATE]
    assert "CARDTXN.DAT.1" in folder(tmp_path, "failed")  # where the first one went


def test_a_partial_file_is_not_taken_until_it_is_complete(tmp_path: Path, clean: Any) -> None:
    rt = runtime(write_config(tmp_path, stable_for_s=30))
    shift = [0.0]
    rt.dropfolder = DropFolder(rt.folders, glob="*.DAT", stable_for_s=30, clock=lambda: time.time() + shift[0])
    full = drop(tmp_path / "scratch")
    inbox = tmp_path / "drop" / "inbox" / "CARDTXN.DAT"
    with open(inbox, "wb") as fh:
        fh.write(full[: len(full) // 2])  # the transfer is half way
        fh.flush()
        assert run_once(rt) == [] and inbox.exists()
        shift[0] = 20
        fh.write(full[len(full) // 2:])
    assert run_once(rt) == [] and inbox.exists()  # written to 20 s ago (shifted): not quiet for 30 s yet
    shift[0] = 60
    assert [r.status for r in run_once(rt)] == [DONE]
    same_outputs(clean(), tmp_path)


# --------------------------------------------------------------------------- restartable
def test_a_crash_between_claim_and_move_is_picked_up_on_restart(tmp_path: Path, clean: Any) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)
    hashed = content_hash(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    assert rt.runs.claim("card_txn", hashed.sha256, "CARDTXN.DAT", hashed.size).run is not None  # then it died
    assert [r.status for r in run_once(rt)] == [DONE]  # resumed once, not taken a second time
    same_outputs(clean(), tmp_path)


def test_a_file_that_vanished_before_it_was_taken_is_not_marked_processed(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    data = drop(tmp_path)
    hashed = content_hash(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    rt.runs.claim("card_txn", hashed.sha256, "CARDTXN.DAT", hashed.size)
    (tmp_path / "drop" / "inbox" / "CARDTXN.DAT").unlink()  # its producer took it back
    [result] = run_once(rt)
    assert result.status == FAILED and "vanished" in result.summary["reason"]
    drop(tmp_path, data=data)  # dropped again: it was never processed, so it runs
    assert [r.status for r in run_once(rt)] == [DONE]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "fixed", "parquet"])
@pytest.mark.parametrize("where", ["before_checkpoint", "between_records_and_rejects"])
def test_a_crash_anywhere_in_a_chunk_resumes_byte_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               clean: Any, fmt: str, where: str) -> None:
    root = tmp_path / "crashed"
    config = write_config(root, fmt)
    drop(root)
    calls = [0]

    def crash_on_the_fourth(original: Any) -> Any:
        def wrapper(*args: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] == 4:
                if where == "between_records_and_rejects":
                    args[0].file.write(b"half a line of rejects wri")  # a torn write
                raise Crash(where)
            return original(*args, **kw)
        return wrapper

    from adapters.files.sink import RejectsFile

    target = (RunStore, "save_checkpoint") if where == "before_checkpoint" else (RejectsFile, "write")
    original = getattr(*target)
    monkeypatch.setattr(*target, crash_on_the_fourth(original))
    with pytest.raises(Crash):
        run_once(runtime(config))
    rt = runtime(config)
    [run] = rt.runs.unfinished("card_txn")
    assert run.status == RUNNING and (rt.runs.checkpoint(run.run_id) or {}).get("seq") == 3
    monkeypatch.setattr(*target, original)
    assert [r.status for r in run_once(rt)] == [DONE]
    same_outputs(clean(fmt), root)
    assert manifest_of(root)["timings"]["attempts"] == 2
    if fmt == "parquet":
        table = pq.read_table(root / "drop" / "outbox" / "CARDTXN.DAT.scored.parquet")
        assert table.num_rows == RECORDS - 6 and "fraud_score" in table.column_names


def test_a_failed_checkpoint_stops_the_run_within_a_chunk_or_two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  clean: Any) -> None:
    # the run does not write on past an ack that failed (a lost lease, the state store gone)
    from adapters.files.sink import OutboxSink

    config = write_config(tmp_path)
    drop(tmp_path)
    written: list[int] = []
    original_write, original_save = OutboxSink.write_rendered, RunStore.save_checkpoint

    def count(self: OutboxSink, parts: Any, rows: int) -> None:
        written.append(rows)
        original_write(self, parts, rows)

    def fail_the_second(self: RunStore, run_id: str, seq: int, state: dict[str, Any]) -> None:
        if seq == 2:
            raise Crash("the state store went away")
        original_save(self, run_id, seq, state)

    monkeypatch.setattr(OutboxSink, "write_rendered", count)
    monkeypatch.setattr(RunStore, "save_checkpoint", fail_the_second)
    with pytest.raises(Crash):
        run_once(runtime(config))
    assert 2 <= len(written) <= 4 < 7  # of 7 chunks
    monkeypatch.setattr(RunStore, "save_checkpoint", original_save)
    assert [r.status for r in run_once(runtime(config))] == [DONE]
    same_outputs(clean(), tmp_path)


def test_a_fallback_scored_batch_is_held_for_rescoring_once(tmp_path: Path) -> None:
    import pyarrow as pa

    from gateway.drivers.batch import BatchLoop, Delivery
    from gateway.pipeline import PipelineStats

    class Nowhere:  # a sink and a reject sink that keep nothing
        async def write(self, *_args: Any) -> None:
            return None

        def state(self) -> dict[str, Any]:
            return {}

    rt = runtime(write_config(tmp_path))
    held: list[pa.Table] = []
    acked: list[str] = []
    table = pa.table({"TXN_ID": ["T1", "T2"]})

    class Batch:
        async def ack(self) -> None:
            acked.append("acked")

    loop = BatchLoop(rt.pipeline, Nowhere(), Nowhere(), label="test")  # type: ignore[arg-type]
    loop.on_rescore = held.append
    delivery = Delivery([], 2, [], {}, PipelineStats(), rescore=[table])
    asyncio.run(loop._make_durable(Batch(), delivery))  # type: ignore[arg-type]
    assert held == [table] and acked == ["acked"] and loop.durable is delivery


def test_a_crash_while_publishing_is_finished_on_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         clean: Any) -> None:
    config = write_config(tmp_path)
    drop(tmp_path)
    original = DropFolder.settle

    def crash(*_args: Any, **_kw: Any) -> Any:
        raise Crash("while moving the input to done/")

    monkeypatch.setattr(DropFolder, "settle", crash)
    with pytest.raises(Crash):
        run_once(runtime(config))
    assert (tmp_path / "drop" / "outbox" / "CARDTXN.DAT.scored.jsonl").exists()  # published already
    monkeypatch.setattr(DropFolder, "settle", original)
    assert [r.status for r in run_once(runtime(config))] == [DONE]
    same_outputs(clean(), tmp_path)
    assert sorted(folder(tmp_path, "done")) == ["CARDTXN.DAT"]


def test_stopping_finishes_the_current_chunk_and_the_run_resumes_later(tmp_path: Path, clean: Any) -> None:
    config = write_config(tmp_path)
    drop(tmp_path)
    rt = runtime(config)
    original = rt.runs.save_checkpoint

    async def go() -> list[JobResult]:
        stop, loop = asyncio.Event(), asyncio.get_running_loop()

        def stop_after_two(run_id: str, seq: int, state: dict[str, Any]) -> None:  # runs in a worker thread
            original(run_id, seq, state)
            if seq == 2:
                loop.call_soon_threadsafe(stop.set)  # as the SIGTERM handler does

        rt.runs.save_checkpoint = stop_after_two  # type: ignore[method-assign]
        return await BatchDriver(rt, stop=stop).run_once()

    [result] = asyncio.run(go())
    assert result.status == INTERRUPTED
    # the chunk in hand (scored while the second one was being written) is finished too
    assert result.summary["records_in"] in (2 * CHUNK - 1, 3 * CHUNK - 1)  # the header is no detail
    [run] = rt.runs.unfinished("card_txn")
    assert (rt.runs.checkpoint(run.run_id) or {})["counts"]["records_in"] == result.summary["records_in"]
    assert not (tmp_path / "drop" / "outbox" / "CARDTXN.DAT.scored.jsonl").exists()
    assert [r.status for r in run_once(runtime(config))] == [DONE]
    same_outputs(clean(), tmp_path)


def test_a_run_owned_by_a_live_process_is_left_alone(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    claim = rt.runs.claim("card_txn", "ab" * 32, "X.DAT", 10)
    assert claim.run is not None
    other = RunStore(rt.runs.store, owner=f"{os.uname().nodename}:1:?")  # pid 1 is alive
    assert not other.take_over(claim.run)
    assert rt.runs.take_over(claim.run)  # its own owner may


# --------------------------------------------------------------------------- poison records
def test_a_record_that_crashes_the_pipeline_is_isolated_and_rejected(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)
    score = rt.pipeline.score

    async def poisoned(table: pa.Table) -> Any:
        if "TX0000001234" in table.column("TXN_ID").to_pylist():
            raise ValueError("cannot score TX0000001234")
        return await score(table)

    rt.pipeline.score = poisoned  # type: ignore[method-assign]
    [result] = run_once(rt)
    assert result.status == DONE
    m = manifest_of(tmp_path)
    assert m["counts"] == {"records_in": 3000, "records_out": 2993, "rejected": 7}
    rejects = [json.loads(x) for x in folder(tmp_path, "outbox")["CARDTXN.DAT.rejects.jsonl"].splitlines()]
    [poison] = [r for r in rejects if "crashed" in r["reason"]]
    assert poison["record"] == 1235 and "ValueError: cannot score TX0000001234" in poison["reason"]
    # the record's own bytes hold its PAN (pii in the card contract): withheld, as the field's would be
    assert poison["raw"] is None and poison["raw_withheld"] == "pii" and poison["record_offset"] == 1234 * 120
    rows = folder(tmp_path, "outbox")["CARDTXN.DAT.scored.jsonl"].decode()
    assert "TX0000001234" not in rows and "TX0000001233" in rows and "TX0000001235" in rows


def test_a_crash_reason_withholds_the_records_pii_values(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)
    score = rt.pipeline.score
    pans = rt.pipeline.contract.decode_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT")
    pan = next(iter(pans)).table.column("TXN_PAN")[40].as_py()

    async def chokes_on_the_pan(table: pa.Table) -> Any:
        if pan in table.column("TXN_PAN").to_pylist():
            raise ValueError(f"no issuer for card {pan}")
        return await score(table)

    rt.pipeline.score = chokes_on_the_pan  # type: ignore[method-assign]
    [result] = run_once(rt)
    assert result.status == DONE
    rejects = folder(tmp_path, "outbox")["CARDTXN.DAT.rejects.jsonl"].decode()
    [poison] = [json.loads(r) for r in rejects.splitlines() if "crashed" in r]
    assert poison["reason"] == "record crashed the pipeline: ValueError: no issuer for card <pii withheld>"
    assert pan not in poison["reason"]
    assert pan.encode("cp037").hex().upper() not in rejects and poison["raw"] is None


def test_a_pipeline_that_fails_on_every_record_stops_the_run_instead(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)

    async def broken(table: pa.Table) -> Any:
        raise ValueError("feature store misconfigured")

    rt.pipeline.score = broken  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="misconfigured"):
        run_once(rt)
    [run] = rt.runs.unfinished("card_txn")  # resumable once fixed; nothing was rejected
    assert not (tmp_path / "drop" / "outbox" / "CARDTXN.DAT.rejects.jsonl").exists()
    assert run.status == RUNNING


# --------------------------------------------------------------------------- replay
def test_replay_runs_a_processed_file_again_by_run_id_or_by_path(tmp_path: Path) -> None:
    rt = runtime(write_config(tmp_path))
    drop(tmp_path)
    [first] = run_once(rt)
    before = folder(tmp_path, "outbox")

    async def replay(target: str) -> JobResult:
        return await BatchDriver(rt).replay(target)

    again = asyncio.run(replay(first.run_id))
    assert again.status == DONE and again.run_id == f"{first.run_id}.2"
    m = manifest_of(tmp_path)
    assert m["replay_of"] == first.run_id and m["run_id"] == again.run_id
    after = folder(tmp_path, "outbox")
    assert after["CARDTXN.DAT.scored.jsonl"] == before["CARDTXN.DAT.scored.jsonl"]
    third = asyncio.run(replay(str(tmp_path / "drop" / "done" / "CARDTXN.DAT")))
    assert third.status == DONE and manifest_of(tmp_path)["replay_of"] == again.run_id
    assert sorted(folder(tmp_path, "done")) == ["CARDTXN.DAT"]
    from adapters.files.dropfolder import UnsafePath

    (tmp_path / "elsewhere.DAT").write_bytes(b"x")
    with pytest.raises(UnsafePath):
        asyncio.run(replay(str(tmp_path / "elsewhere.DAT")))
    with pytest.raises(UnsafePath):
        asyncio.run(replay(str(tmp_path / "drop" / "done" / ".." / ".." / "elsewhere.DAT")))


# --------------------------------------------------------------------------- kill switch
def test_a_paused_pipeline_holds_the_run_until_the_switch_is_lifted(tmp_path: Path, clean: Any) -> None:
    config = write_config(tmp_path)
    drop(tmp_path)
    rt = runtime(config)
    rt.runs.store.set_kill_switch("card_txn", "pause", reason="model retraining")

    async def go() -> list[JobResult]:
        task = asyncio.create_task(BatchDriver(rt).run_once())
        await asyncio.sleep(2.0)
        [run] = rt.runs.unfinished("card_txn")
        assert rt.runs.checkpoint(run.run_id) is None  # not one chunk went through
        await asyncio.to_thread(rt.runs.store.set_kill_switch, "card_txn", "off")
        return await task

    assert [r.status for r in asyncio.run(go())] == [DONE]
    same_outputs(clean(), tmp_path)


# --------------------------------------------------------------------------- command line
def test_batch_run_status_and_replay_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path))
    drop(tmp_path)
    assert main(["batch", "run", "card_txn", "--config", config]) == 1  # done, with rejected records
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["records_in"] == RECORDS and summary["rejected"] == 6
    assert main(["batch", "status", "--config", config, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in status["runs"]] == ["done"] and status["inboxes"]["card_txn"]["complete"] == []
    assert main(["batch", "status", "--config", config]) == 0
    assert summary["run"] in capsys.readouterr().out
    assert main(["batch", "replay", summary["run"], "--config", config]) == 1
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "done"
    assert main(["batch", "replay", "/etc/passwd", "--config", config]) == 2
    assert "neither a run id nor a file" in capsys.readouterr().err
    assert main(["batch", "run", "nope", "--config", config]) == 2


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_finishes_the_chunk_exits_cleanly_and_the_run_resumes(tmp_path: Path, lgw_cmd: list[str]) -> None:
    config = write_config(tmp_path, chunk=1_000)
    drop(tmp_path, records=100_000, bad_every=0)
    db = tmp_path / "state.db"
    proc = subprocess.Popen([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    rs = RunStore(StateStore(f"sqlite:///{db}"))

    def some_progress() -> bool:
        runs = rs.unfinished("card_txn") if db.exists() else []
        return bool(runs) and (rs.checkpoint(runs[0].run_id) or {}).get("seq", 0) >= 3

    _wait_for(some_progress)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err.decode()[-2000:]  # stopped before the work was done
    assert b"finishing the current chunk" in err and json.loads(out)["status"] == "interrupted"
    done = subprocess.run([*lgw_cmd, "batch", "run", "card_txn", "--config", str(config)], capture_output=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout)["records_out"] == 100_000


@pytest.mark.slow
def test_lgw_run_watches_the_inbox_until_sigterm(tmp_path: Path, lgw_cmd: list[str]) -> None:
    config = write_config(tmp_path, stable_for_s=0.5)
    (tmp_path / "drop" / "inbox").mkdir(parents=True)
    proc = subprocess.Popen([*lgw_cmd, "run", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        time.sleep(1.0)
        staged = tmp_path / "staged.DAT"
        generate_card_file(staged, records=2_000, seed=9)
        os.rename(staged, tmp_path / "drop" / "inbox" / "NIGHT1.DAT")  # dropped whole, as producers should
        _wait_for(lambda: (tmp_path / "drop" / "outbox" / "NIGHT1.DAT.manifest.json").exists())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.splitlines()[0])["records_out"] == 2_000
    assert sys.executable  # the same interpreter runs the gateway (lgw_cmd)


@pytest.mark.parametrize("rows", [0, 1, 8_191, 8_192, 3 * 8_192 + 7, 100_001])
def test_a_large_chunk_written_as_csv_in_slices_side_by_side_is_the_same_bytes(rows: int) -> None:
    rng = np.random.default_rng(rows)
    text = np.array(["plain", 'with "quotes"', "comma, inside", "line\nbreak", ""], dtype=object)
    table = pa.table({
        "id": pa.array(np.arange(rows)),
        "name": pa.array(text[rng.integers(0, len(text), rows)].tolist(), pa.string()),
        "amount": pa.array([Decimal(int(c)).scaleb(-2) for c in rng.integers(-10**9, 10**9, rows)],
                           pa.decimal128(11, 2)),
        "score": pa.array(rng.random(rows).astype(np.float32)),
        "maybe": pa.array([None if i % 7 == 0 else i for i in range(rows)], pa.int64()),
    })
    whole = pa.BufferOutputStream()
    if rows:
        pacsv.write_csv(table, whole, pacsv.WriteOptions(include_header=False))
    assert b"".join(bytes(part) for part in rendered_pieces(csv_parts(table))) == whole.getvalue().to_pybytes()


def test_a_file_batch_carries_each_records_own_bytes_a_view_where_the_chunk_is_one_run(tmp_path: Path) -> None:
    path = tmp_path / "CARD.DAT"
    generate_card_file(path, records=350, seed=3, bad_every=300)
    data = path.read_bytes()

    async def batches() -> list[Any]:
        source = FileSource(load_contract(contract_path()), path, batch_size=100)
        await source.connect()
        out = []
        while (batch := await source.read_batch()) is not None:
            out.append(batch)
            await batch.ack()
        await source.close()
        return out

    found = asyncio.run(batches())
    width = found[0].raw.shape[1]
    views = 0
    for batch in found:
        assert batch.raw.shape[0] == batch.table.num_rows == len(batch.record_offsets) == len(batch.record_numbers)
        for row, offset in enumerate(batch.record_offsets):
            assert bytes(batch.raw[row]) == data[int(offset): int(offset) + width]
        views += batch.raw.base is not None and not batch.raw.flags.owndata
    assert sum(b.table.num_rows for b in found) + sum(len({r.record for r in b.rejects}) for b in found) == 350
    assert views >= 1  # a chunk of details only: its bytes are not copied


def test_a_batch_without_rejects_does_not_fsync_the_rejects_file_again(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.files.sink import RejectsFile
    from schemas.stream import Reject

    rejects = RejectsFile(tmp_path / "out.rejects.jsonl")
    rejects.open_file()
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    rejects.append([])
    assert len(synced) == 1  # the new file made durable once, before its first checkpoint
    rejects.append([])
    assert len(synced) == 1  # nothing new: no fsync in this batch's durable step
    rejects.append([Reject(7, 840, "bad digit", "MCC", 40, 4, b"\xf1\xc1\xf3\xf4")])
    assert len(synced) == 2 and rejects.records == 1 and rejects.file.length > 0
    rejects.file.close()
