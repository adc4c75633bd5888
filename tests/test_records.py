"""Record framing: fixed, newline-terminated, line sequential, RDW and blocked files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import InputFormatError
from schemas.records import Framing, read_records


def frame(path: Path, framing: Framing, chunk: int = 3) -> tuple[list[bytes], list, list[int]]:
    rows, rejects, lengths = [], [], []
    for c in read_records(path, framing, batch_size=chunk):
        for i in range(c.num_rows):
            n = c.matrix.shape[1] if c.lengths is None else int(c.lengths[i])
            lengths.append(n)
            rows.append(bytes(c.matrix[i, :n]))
        rejects.extend(c.rejects)
    return rows, rejects, lengths


def test_fixed_records_stream_in_chunks(tmp_path: Path) -> None:
    p = tmp_path / "f.dat"
    p.write_bytes(b"".join(bytes([i]) * 4 for i in range(10)))
    rows, rejects, _ = frame(p, Framing("F", 4))
    assert rows == [bytes([i]) * 4 for i in range(10)] and rejects == []


@pytest.mark.parametrize("term", [b"\n", b"\r\n"])
def test_fixed_records_with_line_terminators_are_detected(tmp_path: Path, term: bytes) -> None:
    p = tmp_path / "f.txt"
    p.write_bytes(term.join([b"ABCD", b"EFGH", b"IJKL"]) + term)
    rows, rejects, _ = frame(p, Framing("F", 4))
    assert rows == [b"ABCD", b"EFGH", b"IJKL"] and rejects == []


def test_a_truncated_last_record_is_rejected_with_its_bytes(tmp_path: Path) -> None:
    p = tmp_path / "f.dat"
    p.write_bytes(b"AAAABBBBCC")
    rows, rejects, _ = frame(p, Framing("F", 4))
    assert rows == [b"AAAA", b"BBBB"]
    assert (rejects[0].index, rejects[0].offset, rejects[0].raw) == (2, 8, b"CC")
    assert "truncated record: 2 of 4 bytes" in rejects[0].reason


def test_line_sequential_lines_are_records_of_their_own_length(tmp_path: Path) -> None:
    p = tmp_path / "d.txt"
    p.write_bytes(b"AB\r\nABCDE\n\nABCDEFG\nXY")
    rows, rejects, lengths = frame(p, Framing("D", 5))
    # stripped trailing blanks: the record is short; an empty line is no record;
    # bytes past the record length are ignored and reported; the last line needs no newline
    assert rows == [b"AB", b"ABCDE", b"ABCDE", b"XY"] and lengths == [2, 5, 5, 2]
    assert rejects[0].index == 3 and "longer than the 5-byte record" in rejects[0].reason


def rdw(payload: bytes, endian: str, includes: bool) -> bytes:
    n = len(payload) + (4 if includes else 0)
    head = struct.pack(">HH", n, 0) if endian == "big" else struct.pack("<HH", 0, n)
    return head + payload


@pytest.mark.parametrize("endian", ["big", "little"])
@pytest.mark.parametrize("includes", [True, False])
def test_rdw_files_are_read_whatever_their_convention(tmp_path: Path, endian: str, includes: bool) -> None:
    payloads = [b"A" * 5, b"BB" * 7, b"C", b"D" * 20]
    p = tmp_path / "v.dat"
    p.write_bytes(b"".join(rdw(x, endian, includes) for x in payloads))
    rows, rejects, lengths = frame(p, Framing("V", 20))  # detected
    assert rows == payloads and lengths == [5, 14, 1, 20] and rejects == []
    forced = frame(p, Framing("V", 20, rdw_endian=endian, rdw_includes_header=includes))[0]
    assert forced == payloads


def test_a_file_that_is_not_rdw_gets_one_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "x.dat"
    p.write_bytes(b"\xff" * 37)
    with pytest.raises(InputFormatError, match="no RDW reading walks the file"):
        frame(p, Framing("V", 10))


def test_vb_blocks_hold_several_rdw_records(tmp_path: Path) -> None:
    recs = [b"ONE", b"TWO22", b"3"]
    block1 = b"".join(rdw(r, "big", True) for r in recs[:2])
    block2 = rdw(recs[2], "big", True)
    data = b""
    for blk in (block1, block2):
        data += struct.pack(">HH", len(blk) + 4, 0) + blk
    p = tmp_path / "vb.dat"
    p.write_bytes(data)
    assert frame(p, Framing("VB", 10))[0] == recs


def test_large_rdw_files_keep_record_order_across_read_buffers(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    payloads = [bytes(rng.integers(65, 90, int(k)).astype(np.uint8)) for k in rng.integers(1, 200, 60_000)]
    p = tmp_path / "big.dat"
    p.write_bytes(b"".join(rdw(x, "big", True) for x in payloads))
    rows, rejects, _ = frame(p, Framing("V", 200), chunk=7_000)
    assert rows == payloads and rejects == []
