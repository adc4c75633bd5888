"""`lgw decode` end to end: output shape, rejects, exit status and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.helpers import copybook

CPY = copybook(
    "01  TXN.",
    "    05  ID        PIC 9(4).",
    "    05  NAME-1    PIC X(6).",
    "    05  AMOUNT    PIC S9(5)V99 COMP-3.",
    "    05  ITEMS     OCCURS 2.",
    "        10  CODE  PIC X(2).",
    "    05  FILLER    PIC X(2).",
)


def record(i: int, name: str, packed: bytes, codes: str = "AABB", enc: str = "cp037") -> bytes:
    return f"{i:04d}{name:<6}".encode(enc) + packed + f"{codes}  ".encode(enc)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    cpy = tmp_path / "TXN.cpy"
    cpy.write_text(CPY)
    good = tmp_path / "good.dat"
    good.write_bytes(record(1, "ALICE", b"\x00\x12\x34\x5c") + record(2, "BOB", b"\x00\x01\x00\x0d"))
    return {"cpy": cpy, "good": good, "dir": tmp_path}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(x) for x in out.splitlines() if x.strip()], err


def test_records_come_out_as_nested_json_with_exact_numbers(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    code, recs, err = run(capsys, "decode", str(files["good"]), "--copybook", str(files["cpy"]))
    assert code == 0 and err == ""
    assert recs == [
        {"ID": 1, "NAME_1": "ALICE", "AMOUNT": 123.45, "ITEMS": [{"CODE": "AA"}, {"CODE": "BB"}]},
        {"ID": 2, "NAME_1": "BOB", "AMOUNT": -10.0, "ITEMS": [{"CODE": "AA"}, {"CODE": "BB"}]},
    ]
    raw = files["good"].read_bytes()
    text = Path(files["dir"] / "o.jsonl")
    main(["decode", str(files["good"]), "--copybook", str(files["cpy"]), "--output", str(text)])
    assert '"AMOUNT":-10.00' in text.read_text()  # the decimal keeps its scale: no float detour
    assert len(raw) == 2 * 20


def test_bad_fields_are_null_and_reported_with_offset_and_raw_bytes(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    bad = files["dir"] / "bad.dat"
    bad.write_bytes(record(1, "ALICE", b"\x00\x12\x34\x5c") + record(2, "BOB", b"\x00\x00\x1a\x0d"))
    rej = files["dir"] / "rejects.jsonl"
    code, recs, _ = run(capsys, "decode", str(bad), "--copybook", str(files["cpy"]), "--rejects", str(rej))
    assert code == 1
    assert len(recs) == 2 and recs[1]["AMOUNT"] is None
    (reject,) = [json.loads(x) for x in rej.read_text().splitlines()]
    assert reject == {"record": 2, "record_offset": 20, "field": "TXN.AMOUNT", "field_offset": 10,
                      "offset": 30, "length": 4, "raw": "00001A0D",
                      "reason": "invalid packed-decimal digit nibble"}


def test_trailing_partial_record_is_a_reject_not_a_crash(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    cut = files["dir"] / "cut.dat"
    cut.write_bytes(files["good"].read_bytes()[:-7])
    code, recs, err = run(capsys, "decode", str(cut), "--copybook", str(files["cpy"]))
    assert code == 1 and len(recs) == 1
    assert "truncated record: 13 of 20 bytes" in err


def test_ascii_data_read_as_ebcdic_is_refused_with_one_line(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    cpy = files["dir"] / "Z.cpy"
    cpy.write_text(copybook("01  R.", "    05  ID PIC 9(6).", "    05  AMT PIC S9(5)V99.", "    05  NM PIC X(5)."))
    data = files["dir"] / "ascii.dat"
    data.write_bytes(b"".join(f"{i:06d}{i * 7:06d}{'{'}NAME{i % 10}".encode("ascii") for i in range(50)))
    code, recs, err = run(capsys, "decode", str(data), "--copybook", str(cpy))
    assert code == 2 and recs == []
    assert err.count("\n") == 1 and "look ASCII, not cp037" in err and "--encoding ascii" in err
    code, recs, _ = run(capsys, "decode", str(data), "--copybook", str(cpy), "--encoding", "ascii")
    assert code == 0 and recs[3] == {"ID": 3, "AMT": 2.10, "NM": "NAME3"}


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--encoding", "cp9999"], "unknown encoding 'cp9999'"),
    (["--record-format", "V"], "no RDW reading walks the file"),
    (["--record-format", "Q"], "invalid choice"),
])
def test_wrong_options_get_one_error_line(files: dict[str, Path], capsys, argv: list[str], fragment: str) -> None:  # type: ignore[no-untyped-def]
    code = None
    try:
        code = main(["decode", str(files["good"]), "--copybook", str(files["cpy"]), *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err
    assert "Traceback" not in err


def test_copybook_syntax_error_names_the_file_and_line(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    broken = files["dir"] / "broken.cpy"
    broken.write_text(copybook("01  R.", "    05  A PIC X(2)", "    05  B PIC X."))
    code, _, err = run(capsys, "decode", str(files["good"]), "--copybook", str(broken))
    assert code == 2
    assert err.strip().startswith("lgw: error: ") and f"{broken}:3:" in err and err.count("\n") == 1


def test_missing_input_is_a_clear_error(files: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "decode", str(files["dir"] / "nope.dat"), "--copybook", str(files["cpy"]))
    assert code == 2 and "nope.dat" in err
