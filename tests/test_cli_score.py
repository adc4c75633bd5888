"""`lgw score`: one file end to end, its summary line, output formats and rejects."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gateway.cli import main
from schemas.examples import contract_path, generate_card_file


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=3_000, seed=5, bad_every=500)
    return path


def score(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(["score", "--contract", str(contract_path()), *argv])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1])


def test_summary_counts_add_up_and_rejects_name_their_records(card_file: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out, rej = tmp_path / "scored.jsonl", tmp_path / "rejects.jsonl"
    code, summary = score(capsys, "--input", str(card_file), "--output", str(out), "--rejects", str(rej))
    assert code == 1  # some records were rejected
    assert set(summary) >= {"records_in", "records_out", "rejected", "scored_by", "seconds"}
    assert summary["records_in"] == 3_000 == summary["records_out"] + summary["rejected"]
    assert summary["rejected"] == 6 and summary["scored_by"] == {"model": 2_994}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2_994 and all(0.0 <= r["fraud_score"] <= 1.0 for r in rows)
    rejects = [json.loads(x) for x in rej.read_text().splitlines()]
    assert {r["record"] for r in rejects} == {1 + 500 * k for k in range(1, 7)}  # the header is record 1
    assert all({"field", "raw", "reason"} <= set(r) for r in rejects)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "fixed", "jsonl"])
def test_every_output_format_holds_scores_and_provenance(card_file: Path, tmp_path: Path, capsys, fmt: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / f"scored.{fmt}"
    code, summary = score(capsys, "--input", str(card_file), "--output", str(out), "--format", fmt,
                          "--rejects", str(tmp_path / "r.jsonl"), "--force-fallback")
    assert code == 1  # the generated file has damaged records
    assert summary["scored_by"] == {"fallback": summary["records_out"]}
    if fmt == "csv":
        table = pacsv.read_csv(out)
        assert table.num_rows == summary["records_out"]
        assert set(table.column("reason").to_pylist()) <= {"LARGE_FOREIGN", "LARGE_ECOM", "DEFAULT"}
    elif fmt == "parquet":
        table = pq.read_table(out)
        assert table.num_rows == summary["records_out"] and "rule_id" in table.column_names
    elif fmt == "fixed":
        data = out.read_bytes()
        width = 120 + 12 + 8 + 12 + 12 + 24  # the input record + the appended output fields
        assert len(data) == summary["records_out"] * width
        first = data[:width]
        assert first[:1] == "D".encode("cp037")  # the input record's own bytes come first
        assert "fallback".encode("cp037") in first[120:]
    else:
        first = json.loads(out.read_text().splitlines()[0])
        assert first["scored_by"] == "fallback" and first["rule_id"] in {"R1", "R2", "R3"}


def test_control_total_mismatch_rejects_the_whole_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=100, seed=1)
    data = bytearray(path.read_bytes())
    trailer = len(data) - 120
    data[trailer + 1: trailer + 10] = "000000099".encode("cp037")  # TRL-COUNT says 99
    path.write_bytes(bytes(data))
    out = tmp_path / "scored.jsonl"
    code, summary = score(capsys, "--input", str(path), "--output", str(out), "--rejects", str(tmp_path / "r"))
    assert code == 1 and summary["file_rejected"] and summary["output"] is None
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    assert "record count" in summary["control"]["problems"][0]


def test_a_bad_pan_is_rejected_without_its_value_or_bytes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """TXN-PAN is pii in the card contract: its reject names the field, offset and rule, but
    neither the reason nor `raw` holds the PAN, in clear or as hex."""
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=5, seed=5)
    data = bytearray(path.read_bytes())
    pan = "4532X10001460201"
    record_3 = 2 * 120  # the header is record 1; TXN-PAN is bytes 13-28 of a detail record
    data[record_3 + 13: record_3 + 29] = pan.encode("cp037")
    path.write_bytes(bytes(data))
    rej = tmp_path / "rejects.jsonl"
    code, summary = score(capsys, "--input", str(path), "--output", str(tmp_path / "out.jsonl"),
                          "--rejects", str(rej), "--force-fallback")
    assert code == 1 and summary["rejected"] == 1
    text = rej.read_text()
    assert pan not in text and pan.encode("cp037").hex().upper() not in text and "4532" not in text
    [reject] = [json.loads(line) for line in text.splitlines()]
    assert reject["record"] == 3 and reject["field"] == "CARD_TXN.TXN_PAN" and reject["field_offset"] == 13
    assert reject["reason"] == "does not match the pattern ^[0-9]{16}$ (value withheld, pii field)"
    assert reject["raw"] is None and reject["raw_withheld"] == "pii"


def test_a_record_level_reject_withholds_the_bytes_of_a_record_with_pii_fields(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A short last record cannot be cut into fields; its bytes hold the PAN all the same."""
    path = tmp_path / "CARDTXN.DAT"
    generate_card_file(path, records=5, seed=5)
    data = path.read_bytes()
    pan = data[2 * 120 + 13: 2 * 120 + 29]
    path.write_bytes(data + data[2 * 120: 2 * 120 + 50])  # half a detail record after the trailer
    rej = tmp_path / "rejects.jsonl"
    code, summary = score(capsys, "--input", str(path), "--output", str(tmp_path / "out.jsonl"),
                          "--rejects", str(rej), "--force-fallback")
    text = rej.read_text()
    assert code == 1 and summary["rejected"] == 1 and pan.hex().upper() not in text
    [reject] = [json.loads(line) for line in text.splitlines()]
    assert "field" not in reject and reject["raw"] is None and reject["raw_withheld"] == "pii"
