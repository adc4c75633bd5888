"""Hostile inputs: layouts and files that ask for more memory or disk than their data
justifies get one line and exit 2 before anything that size is allocated or written;
memory follows the data present; a file that is not laid out as its contract says
stops early; an input without records says so."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.batch import BatchDriver, JobResult, build_runtime
from gateway.config import example_dropfolder_config, load_config
from gateway.runs import DONE, FAILED
from gateway.state import StateStore
from schemas import records
from schemas.copybook import parse_copybook
from schemas.examples import contract_path, generate_card_file
from schemas.layout import Usage
from tests.helpers import copybook, decode_rows

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 2 << 30  # a child that tried to allocate by the declared sizes would fail under this cap


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def lgw(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`lgw` from this checkout in a child whose address space is capped at 2 GB."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, preexec_fn=_capped, env=env, cwd=cwd or ROOT)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lgw: error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return lines[0]


# --------------------------------------------------------------------------- layout limits
def test_a_huge_pic_is_refused_by_name_before_it_is_expanded(tmp_path: Path) -> None:
    cpy = tmp_path / "BIG.cpy"
    cpy.write_text(copybook("01  REC.", "    05  ID    PIC X(2).", "    05  BLOB  PIC X(400000000)."))
    data = tmp_path / "two.bin"
    data.write_bytes(b"AB")
    line = one_error_line(lgw("decode", data, "--copybook", cpy))
    assert f"{cpy}:3: BLOB: PIC X(400000000) is 400,000,000 characters" in line
    assert "field limit of 16,777,216" in line and "--max-field-bytes" in line


def test_nested_occurs_are_refused_by_their_expansion(tmp_path: Path) -> None:
    cpy = tmp_path / "NEST.cpy"
    cpy.write_text(copybook("01  REC.", "    05  A  OCCURS 100000.", "        10  B  OCCURS 100000.",
                            "            15  C  OCCURS 100000.", "                20  D  PIC X(1000)."))
    data = tmp_path / "two.bin"
    data.write_bytes(b"AB")
    line = one_error_line(lgw("decode", data, "--copybook", cpy))
    assert f"{cpy}:3: B occurs 10,000,000,000 times in a record" in line and "--max-occurs" in line


def test_a_record_over_the_record_limit_names_the_innermost_entry(tmp_path: Path) -> None:
    cpy = tmp_path / "REC.cpy"
    cpy.write_text(copybook("01  REC.", "    05  ID  PIC X(4).", "    05  ITEMS  OCCURS 30.",
                            "        10  CODE  PIC X(10)."))
    data = tmp_path / "rec.bin"
    data.write_bytes(b"A" * 304)
    line = one_error_line(lgw("decode", data, "--copybook", cpy, "--max-record-bytes", "200"))
    assert f"{cpy}:3: ITEMS takes 300 bytes (30 x 10), over the record limit of 200 bytes" in line
    assert lgw("decode", data, "--copybook", cpy, "--encoding", "ascii").returncode == 0


def test_a_number_wider_than_an_exact_decimal_is_refused_not_a_traceback(tmp_path: Path) -> None:
    cpy = tmp_path / "WIDE.cpy"
    cpy.write_text(copybook("01  REC.", "    05  N  PIC 9(100000)."))
    data = tmp_path / "n.bin"
    data.write_bytes(b"1" * 100000)
    line = one_error_line(lgw("decode", data, "--copybook", cpy, "--encoding", "ascii"))
    assert f"{cpy}:2: N: PIC 9(100000) has 100,000 digit positions; a number holds at most 76" in line


def test_the_contract_sets_its_limits_under_record_limits(tmp_path: Path) -> None:
    (tmp_path / "T.cpy").write_text(copybook("01  REC.", "    05  NAME  PIC X(20)."))
    contract = tmp_path / "t.yaml"
    contract.write_text("contract: t\nversion: 1\nrecord:\n  copybook: T.cpy\n  encoding: ascii\n"
                        "  limits: {field_bytes: 10}\n")
    data = tmp_path / "t.bin"
    data.write_bytes(b"X" * 20)
    line = one_error_line(lgw("decode", data, "--contract", contract))
    assert "T.cpy:2: NAME: PIC X(20) is 20 characters, over the field limit of 10" in line
    # the command line overrides the contract
    assert lgw("decode", data, "--contract", contract, "--max-field-bytes", "20").returncode == 0


# --------------------------------------------------------------------------- memory follows the data
def test_occurs_depending_on_allocates_for_the_counts_present_not_the_declared_maximum(tmp_path: Path) -> None:
    cpy = tmp_path / "ODO.cpy"
    cpy.write_text(copybook("01  REC.", "    05  CNT  PIC 9(5).", "    05  ITEMS  OCCURS 1 TO 20000 DEPENDING ON CNT.",
                            "        10  ITEM-ID   PIC X(10).", "        10  ITEM-AMT  PIC 9(5)."))
    data = tmp_path / "odo.txt"
    data.write_bytes(b"".join(b"00002" + b"ABCDEFGHIJ00012KLMNOPQRST00034\n" for _ in range(3000)))  # 111 KB
    result = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--record-format", "D")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(records) == 3000
    assert records[-1]["ITEMS"] == [{"ITEM_ID": "ABCDEFGHIJ", "ITEM_AMT": 12},
                                    {"ITEM_ID": "KLMNOPQRST", "ITEM_AMT": 34}]


def test_a_short_file_of_long_records_reads_only_the_bytes_it_has(tmp_path: Path) -> None:
    cpy = tmp_path / "LONG.cpy"
    cpy.write_text(copybook("01  REC.", "    05  BODY  PIC X(1000000)."))
    data = tmp_path / "short.bin"
    data.write_bytes(b"AB")
    result = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii")
    assert result.returncode == 1, result.stderr[-2000:]
    reject = json.loads(result.stderr.splitlines()[0])
    assert reject["reason"].startswith("truncated record: 2 of 1000000 bytes") and reject["raw"] == "4142"


def test_the_commands_read_files_in_chunks_of_the_decoders_default_size() -> None:
    from gateway.cli import CHUNK_RECORDS, build_parser

    assert CHUNK_RECORDS == records.DEFAULT_BATCH_SIZE
    for argv in (["decode", "--copybook", "x.cpy", "x.dat"],
                 ["score", "--contract", "c.yaml", "--input", "x.dat", "--output", "o.csv"]):
        assert build_parser().parse_args(argv).chunk_records == records.DEFAULT_BATCH_SIZE


def test_chunks_of_long_records_stay_within_the_chunk_byte_budget(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "CHUNK_BYTES", 1000)
    data = tmp_path / "long.bin"
    data.write_bytes(bytes(100 * 25))
    sizes = [c.num_rows for c in records.read_records(data, records.Framing("F", 100), batch_size=50_000)]
    assert sizes == [10, 10, 5]


def test_a_line_longer_than_the_line_limit_stops_the_read_with_one_line(tmp_path: Path) -> None:
    cpy = tmp_path / "TXT.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(20)."))
    data = tmp_path / "lines.txt"
    data.write_bytes(b"ALICE\n" + b"B" * (3 << 20) + b"\nCAROL\n")
    line = one_error_line(lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--record-format", "D"))
    assert f"{data}: line 2 (at byte 6) is longer than 1,048,576 bytes, the line limit" in line
    assert "--max-line-bytes" in line
    raised = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--record-format", "D",
                 "--max-line-bytes", str(4 << 20))
    assert raised.returncode == 1 and [json.loads(x)["NAME"] for x in raised.stdout.splitlines()] == \
        ["ALICE", "B" * 20, "CAROL"]


def test_a_reject_quotes_at_most_64_bytes_and_says_how_many_there_were(tmp_path: Path) -> None:
    cpy = tmp_path / "TXT.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(20)."))
    data = tmp_path / "lines.txt"
    data.write_bytes(b"C" * 5000 + b"\n")
    result = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--record-format", "D")
    reject = json.loads(result.stderr.splitlines()[0])
    assert reject["raw"] == "43" * 64 and reject["raw_truncated"] is True and reject["raw_length"] == 5000


# --------------------------------------------------------------------------- wrong layout: stop early
def card_contract() -> Path:
    return Path(contract_path())


def test_a_file_that_is_not_the_layout_stops_after_the_first_records_without_writing_rejects(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(120 * 5000))
    rejects, out = tmp_path / "rejects.jsonl", tmp_path / "out.jsonl"
    line = one_error_line(lgw("decode", zeros, "--contract", card_contract(), "--rejects", rejects, "-o", out))
    assert f"{zeros} (contract card_txn v1) does not look like the layout: 1,000 of the first 1,000 records" in line
    assert "CARD_TXN.TXN_ID: required value is missing" in line
    assert not rejects.exists() and not out.exists()  # nothing is published from a file stopped early
    allowed = lgw("decode", zeros, "--contract", card_contract(), "--rejects", rejects, "-o", out,
                  "--max-reject-rate", "1")
    assert allowed.returncode == 1 and len({json.loads(x)["record"] for x in rejects.read_text().splitlines()}) == 5000


def test_lgw_score_stops_a_wrong_layout_with_one_line_and_no_output(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(120 * 2000))
    output = tmp_path / "scored.jsonl"
    line = one_error_line(lgw("score", "--contract", card_contract(), "--input", zeros, "--output", output,
                              "--rejects", tmp_path / "rej.jsonl", "--force-fallback",
                              "--config", write_config(tmp_path)))
    assert "does not look like the layout" in line and not output.exists()


# --------------------------------------------------------------------------- no records
def test_an_empty_input_says_so_and_can_be_required_to_hold_records(tmp_path: Path) -> None:
    cpy = tmp_path / "TXT.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(20)."))
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    said = lgw("decode", empty, "--copybook", cpy)
    assert said.returncode == 0
    assert said.stderr == f"lgw: warning: {empty}: no records in its 0 bytes (the file is empty)\n"
    line = one_error_line(lgw("decode", empty, "--copybook", cpy, "--require-records"))
    assert "no records" in line and "--require-records" in line


def test_a_vb_file_of_zeros_is_a_bad_block_and_no_records_not_silence(tmp_path: Path) -> None:
    cpy = tmp_path / "TXT.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(20)."))
    zeros = tmp_path / "zeros.vb"
    zeros.write_bytes(bytes(4096))
    result = lgw("decode", zeros, "--copybook", cpy, "--record-format", "VB")
    assert result.returncode == 1
    reject, warning = result.stderr.splitlines()
    assert json.loads(reject)["reason"] == "invalid BDW length 0: a block is at least 8 bytes"
    assert warning == f"lgw: warning: {zeros}: no records in its 4,096 bytes"


# --------------------------------------------------------------------------- drop folder
def without_trailer(root: Path) -> Path:
    """The card contract without header and trailer (whose missing trailer fails any empty file)."""
    source = card_contract()
    spec = yaml.safe_load(source.read_text())
    spec["record"].pop("header"), spec["record"].pop("trailer")
    spec["record"]["copybook"] = str(source.parent / spec["record"]["copybook"])
    root.mkdir(parents=True, exist_ok=True)
    path = root / "card_txn_plain.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def write_config(root: Path, **pipeline: object) -> Path:
    cfg = example_dropfolder_config(f"sqlite:///{root / 'state.db'}", batch_size=500)
    cfg["pipelines"]["card_txn"].update(pipeline)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gateway.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


def run_dropfolder(root: Path, data: bytes, name: str = "CARDTXN.DAT", **pipeline: object) -> dict[str, object]:
    cfg = load_config(write_config(root, **pipeline))
    inbox = root / "drop" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / name).write_bytes(data)
    rt = build_runtime("card_txn", cfg, StateStore(cfg.state.url))

    async def go() -> list[JobResult]:
        try:
            return await BatchDriver(rt).run_once()
        finally:
            await rt.close()

    [result] = asyncio.run(go())
    return {"status": result.status, **result.summary}


def test_a_dropped_file_of_the_wrong_layout_goes_to_failed_naming_the_first_reasons(tmp_path: Path) -> None:
    result = run_dropfolder(tmp_path, bytes(120 * 3000), max_reject_rate=0.2)
    assert result["status"] == FAILED
    report = json.loads((tmp_path / "drop" / "failed" / "CARDTXN.DAT.report.json").read_text())
    assert report["reason"].startswith("CARDTXN.DAT (contract card_txn v1) does not look like the layout: ")
    assert "over the limit of 20%" in report["reason"] and "required value is missing" in report["reason"]
    assert (tmp_path / "drop" / "failed" / "CARDTXN.DAT").exists()


def test_an_empty_dropped_file_is_noted_in_the_manifest_or_failed_when_records_are_required(tmp_path: Path) -> None:
    done = run_dropfolder(tmp_path / "a", b"", contract=str(without_trailer(tmp_path / "a")))
    assert done["status"] == DONE
    manifest = json.loads((tmp_path / "a" / "drop" / "outbox" / "CARDTXN.DAT.manifest.json").read_text())
    assert manifest["warnings"] == ["CARDTXN.DAT: no records in its 0 bytes (the file is empty)"]
    failed = run_dropfolder(tmp_path / "b", b"", require_records=True, contract=str(without_trailer(tmp_path / "b")))
    assert failed["status"] == FAILED
    report = json.loads((tmp_path / "b" / "drop" / "failed" / "CARDTXN.DAT.report.json").read_text())
    assert report["reason"] == "CARDTXN.DAT: no records in its 0 bytes (the file is empty) " \
                               "(the pipeline has require_records)"


def test_a_good_file_passes_the_reject_rate_check(tmp_path: Path) -> None:
    data = tmp_path / "good.dat"
    generate_card_file(data, records=2000, seed=3, bad_every=50)
    result = run_dropfolder(tmp_path / "run", data.read_bytes())
    assert result["status"] == DONE and result["rejected"] == 40


# --------------------------------------------------------------------------- decoder conformance
def test_comp_0_is_binary_like_comp_4() -> None:
    layout = parse_copybook(copybook("01  REC.", "    05  A  PIC S9(4) COMP-0.", "    05  B  PIC 9(8) COMPUTATIONAL-0.",
                                     "    05  C  PIC S9(4) COMP-4."))
    a, b, c = layout.elementary()
    assert a.usage == b.usage == c.usage == Usage.BINARY and (a.size, b.size) == (2, 4)
    rows, _ = decode_rows(copybook("01  REC.", "    05  A  PIC S9(4) COMP-0."), [b"\xff\xfe", b"\x01\x00"])
    assert rows == [{"A": -2}, {"A": 256}]


def test_control_bytes_in_utf8_text_are_dropped_as_cobrix_does_or_kept_on_request(tmp_path: Path) -> None:
    cpy = tmp_path / "U.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(8).", "    05  CITY  PIC X(4)."))
    data = tmp_path / "u.bin"
    data.write_bytes("A\x00B\x01é\x1fC".encode() + b"\x00\x00\x00\x00" + b"Z\x00\x00\x00\x00\x00\x00\x00"
                     + b"\x02\x03\x04\x05")
    dropped = lgw("decode", data, "--copybook", cpy, "--encoding", "utf-8")
    assert [json.loads(x) for x in dropped.stdout.splitlines()] == [
        {"NAME": "ABéC", "CITY": None}, {"NAME": "Z", "CITY": ""}]
    kept = lgw("decode", data, "--copybook", cpy, "--encoding", "utf-8", "--control-chars", "keep", "--trim", "none")
    assert json.loads(kept.stdout.splitlines()[0])["NAME"] == "A\x00B\x01é\x1fC"


def test_control_bytes_in_ascii_text_can_be_kept(tmp_path: Path) -> None:
    rows, _ = decode_rows(copybook("01  REC.", "    05  NAME  PIC X(4)."), [b"A\x00B\x01"], encoding="ascii",
                          trim="none")
    assert rows == [{"NAME": "AB"}]
    cpy = tmp_path / "A.cpy"
    cpy.write_text(copybook("01  REC.", "    05  NAME  PIC X(4)."))
    data = tmp_path / "a.bin"
    data.write_bytes(b"A\x00B\x01")
    kept = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--control-chars", "keep", "--trim", "none")
    assert json.loads(kept.stdout)["NAME"] == "A\x00B\x01"


def test_decode_of_a_matrix_without_odo_counts_present_has_empty_arrays() -> None:
    cpy = copybook("01  REC.", "    05  CNT  PIC 9(2).", "    05  ITEMS  OCCURS 0 TO 50 DEPENDING ON CNT.",
                   "        10  CODE  PIC X(2).")
    rows, _ = decode_rows(cpy, [b"00" + b" " * 100, b"00" + b" " * 100], encoding="ascii")
    assert rows == [{"CNT": 0, "ITEMS": []}, {"CNT": 0, "ITEMS": []}]


def _eight_byte_records(data: Path, body: list[bytes], fmt: str) -> records.Framing:
    """`body` (records of 8 bytes) written to `data` as format `fmt`: F, D or V (RDW)."""
    if fmt == "F":
        data.write_bytes(b"".join(body))
    elif fmt == "D":
        data.write_bytes(b"\n".join(body) + b"\n")
    else:
        data.write_bytes(b"".join(len(r).to_bytes(2, "big") + b"\0\0" + r for r in body))
    return records.Framing(fmt, 8, rdw_includes_header=False if fmt == "V" else None)


@pytest.mark.parametrize("fmt", ["F", "D", "V"])
def test_a_read_from_the_top_can_look_at_the_head_first(tmp_path: Path, fmt: str) -> None:
    """The reject-rate verdict needs only the first records: they come as a chunk of their own."""
    data = tmp_path / "recs"
    body = [b"%08d" % i for i in range(2500)]
    framing = _eight_byte_records(data, body, fmt)
    chunks = list(records.read_records(data, framing, batch_size=700, first_chunk_records=100))
    assert [c.num_rows for c in chunks] == [100, 700, 700, 700, 300]
    assert b"".join(c.matrix.tobytes() for c in chunks) == b"".join(body)


@pytest.mark.parametrize("fmt", ["F", "D", "V"])
def test_after_the_head_chunks_grow_to_the_batch_size_and_a_resumed_read_grows_again(tmp_path: Path,
                                                                                      fmt: str) -> None:
    """A batch run's stages overlap only once each has a chunk: chunks start at an eighth of
    the batch size and double (none under 1,000 records); every record is read once, in
    order, from the top and from a chunk's end alike."""
    data = tmp_path / "recs"
    body = [b"%08d" % i for i in range(40_000)]
    framing = _eight_byte_records(data, body, fmt)
    chunks = list(records.read_records(data, framing, batch_size=16_000, first_chunk_records=1_000))
    assert [c.num_rows for c in chunks] == [1_000, 2_000, 4_000, 8_000, 16_000, 9_000]
    assert b"".join(c.matrix.tobytes() for c in chunks) == b"".join(body)
    resumed = list(records.read_records(data, framing, batch_size=16_000, start=chunks[2].end))
    assert [c.num_rows for c in resumed] == [2_000, 4_000, 8_000, 16_000, 3_000]
    assert b"".join(c.matrix.tobytes() for c in resumed) == b"".join(body[7_000:])


def test_the_line_terminator_probe_reads_only_the_bytes_the_file_has(tmp_path: Path) -> None:
    """A file of one long newline-terminated record: the probe for a terminator after
    every record used to ask for 64 records' worth of bytes (here 2.2 GB)."""
    cpy = tmp_path / "WIDE.cpy"
    cpy.write_text(copybook("01  REC.", "    05  A  PIC X(17000000).", "    05  B  PIC X(17000000)."))
    data = tmp_path / "one.txt"
    data.write_bytes(b"A" * 17_000_000 + b"B" * 17_000_000 + b"\n")
    result = lgw("decode", data, "--copybook", cpy, "--encoding", "ascii", "--max-field-bytes", "17000000",
                 "-o", tmp_path / "out.jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert record["A"] == "A" * 17_000_000 and record["B"] == "B" * 17_000_000
