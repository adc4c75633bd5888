"""Record framing: split a file into records and hand them out as byte matrices in chunks.

Formats (Cobrix's names): F fixed length (optionally newline-terminated), D line
sequential text (a line is a record of its own length: trailing blanks may have been
stripped, so fields past its end read as missing),
V variable length with a 4-byte RDW per record, VB blocks with a 4-byte BDW holding
RDW records. Memory stays flat: only one chunk is held at a time.

Every chunk says where reading stands after it (`RecordChunk.end`, a `ReadPosition`);
`read_records(..., start=position)` resumes there without re-reading what came before
(F: the byte offset of a record boundary; D: of a line start; V: of an RDW; VB: of an
RDW or BDW, with the end of the current block).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from schemas.errors import InputFormatError, LimitError
from schemas.layout import DEFAULT_LIMITS

FORMATS = ("F", "V", "VB", "D")
# Records a chunk of a file: decoded, scored and written as one. 75,000 rather than 50,000
# since the CLI's malloc keeps one arena per core (gateway.startup): a batch run of 1M and
# of 4M records was 6-8 % quicker (fewer hand-offs between the threads and fewer fsyncs per
# record) and peaked lower than 50,000 did before (373-424 MB against 398-473 MB).
DEFAULT_BATCH_SIZE = 75_000
# A chunk's byte matrix stays under this size whatever the record length (a chunk of long
# records holds fewer of them), so memory is bounded by it and not by the layout.
CHUNK_BYTES = 64 << 20
_READ_BYTES = 8 << 20


@dataclass(frozen=True)
class Framing:
    format: str = "F"
    record_length: int = 0  # F: bytes per record; others: the layout's length
    rdw_endian: str | None = None  # big | little | None (detect)
    rdw_includes_header: bool | None = None  # IBM: True; Cobrix's test files: False; None: detect
    pad_byte: int = 0x20  # D: pads lines whose trailing blanks were stripped
    max_line_bytes: int | None = None  # D: a longer line stops the read (None: the default limit)

    @property
    def line_limit(self) -> int:
        return self.max_line_bytes or DEFAULT_LIMITS.line_limit(self.record_length)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputFormatError(f"unknown record format {self.format!r}: expected one of {', '.join(FORMATS)}")
        if self.rdw_endian not in (None, "big", "little"):
            raise InputFormatError(f"--rdw-endian must be big or little, found {self.rdw_endian!r}")


@dataclass(frozen=True)
class ReadPosition:
    """Where reading stands between two chunks; a resumed read starts here."""

    offset: int = 0  # byte offset of the next record (V/VB: of its RDW or BDW)
    record: int = 0  # 0-based index of the next record (D: of the next line)
    block_end: int = -1  # VB: where the current block ends (-1: at a block boundary)


@dataclass
class FramingReject:
    """A record the framing could not cut out: truncated tail, bad RDW, overlong line."""

    index: int
    offset: int
    raw: bytes
    reason: str


@dataclass
class RecordChunk:
    matrix: np.ndarray  # uint8 (n, width)
    lengths: np.ndarray | None  # bytes present per record, None when all are full
    start_index: int  # record number (0-based, in file order) of row 0
    offsets: np.ndarray  # byte offset in the file where each record's data starts
    rejects: list[FramingReject] = field(default_factory=list)
    end: ReadPosition = field(default_factory=ReadPosition)  # where the next chunk starts
    # 0-based file record number of every row when rows were skipped (empty text lines);
    # None: start_index + row
    row_numbers: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])


def read_records(path: str | os.PathLike[str], framing: Framing, batch_size: int = DEFAULT_BATCH_SIZE,
                 start: ReadPosition | None = None, *, first_chunk_records: int | None = None,
                 records: int | None = None) -> Iterator[RecordChunk]:
    """Chunks of records from `start` (a chunk's `end` from an earlier read) or the top;
    a chunk holds at most `batch_size` records and about CHUNK_BYTES bytes, the first
    one at most `first_chunk_records` (a look at the head of a file before going on).
    `records`: stop after this many (a byte range of a fixed-length file: gateway.spark)."""
    size = os.path.getsize(path)
    start = start or ReadPosition()
    most = CHUNK_BYTES // max(framing.record_length, 1)
    batch_size = max(1, min(batch_size, most))
    sizes = chunk_sizes(batch_size, first_chunk_records)
    if records is not None:
        sizes = _capped(sizes, records)
    with open(path, "rb") as fh:
        if framing.format == "F":
            yield from _fixed(fh, size, framing, sizes, start)
        elif framing.format == "D":
            yield from _lines(fh, framing, sizes, start, str(path))
        else:
            yield from _variable(fh, size, framing, sizes, start)


RAMP_SMALLEST = 1000  # records: a smaller chunk costs more in per-chunk work than it saves


def chunk_sizes(batch_size: int, first: int | None = None) -> Iterator[int]:
    """How many records each chunk of a read takes: `first` (a look at the head), then
    batch_size/8, /4 and /2, then batch_size on. A batch run's stages (decoding the next
    chunk, scoring this one, writing the one before) overlap only once each has a chunk; a
    whole first chunk kept the other core idle while it was decoded alone. Starting small
    fills them sooner: a 1M-record `lgw batch run` took 0.13 s less wall time and 0.11 s less
    CPU (10 interleaved rounds), at the same peak memory (418 MB)."""
    head = [max(1, min(first, batch_size))] if first else []
    ramp = [n for n in (batch_size // 8, batch_size // 4, batch_size // 2)
            if n >= RAMP_SMALLEST and n > (first or 0)]
    return itertools.chain(head, ramp, itertools.repeat(batch_size))


def _capped(sizes: Iterator[int], records: int) -> Iterator[int]:
    """The chunk sizes up to `records` in all, then 0 (a read of 0 records ends the file)."""
    for n in sizes:
        n = min(n, records)
        records -= n
        yield n


# --------------------------------------------------------------------------- F
def fixed_stride(fh: BinaryIO, size: int, length: int) -> tuple[int, bytes]:
    """(bytes per record including any line terminator, the terminator)."""
    if length <= 0:
        raise InputFormatError("record length must be positive")
    probe_n = 64
    for term in (b"\r\n", b"\n", b"\x25", b"\x15"):
        stride = length + len(term)
        if size == 0 or size % stride not in (0, length):
            continue
        fh.seek(0)
        head = fh.read(min(stride * probe_n, size))  # read(n) allocates n bytes up front
        n = len(head) // stride
        if n and all(head[i * stride + length: (i + 1) * stride] == term for i in range(n)):
            if size % length == 0 and term in (b"\x25", b"\x15"):
                continue  # an EBCDIC byte that happens to sit there; plain fixed fits too
            return stride, term
    return length, b""


def _fixed(fh: BinaryIO, size: int, framing: Framing, sizes: Iterator[int],
           start: ReadPosition) -> Iterator[RecordChunk]:
    length = framing.record_length
    stride, term = fixed_stride(fh, size, length)
    fh.seek(start.offset)
    index = start.record
    offset = start.offset
    while True:
        # never ask for more than the file holds: read(n) allocates n bytes up front
        data = fh.read(min(stride * next(sizes), max(size - offset, 0)))
        if not data:
            return
        read_bytes = len(data)
        n = len(data) // stride
        tail = data[n * stride:]
        if term and len(tail) == length:  # last line without its terminator
            n += 1
            data = data + term
            tail = b""
        arr = np.frombuffer(data, dtype=np.uint8, count=n * stride).reshape(n, stride)
        matrix = arr[:, :length] if term else arr
        offsets = offset + np.arange(n, dtype=np.int64) * stride
        rejects = []
        if tail:
            rejects.append(FramingReject(
                index + n, offset + n * stride, bytes(tail),
                f"truncated record: {len(tail)} of {length} bytes at the end of the file "
                f"(file size {size} is not a multiple of the record length {stride})"))
        yield RecordChunk(matrix, None, index, offsets, rejects, ReadPosition(offset + read_bytes, index + n))
        index += n
        offset += len(data)
        if tail:
            return


# --------------------------------------------------------------------------- D
def _lines(fh: BinaryIO, framing: Framing, sizes: Iterator[int], start: ReadPosition,
           path: str) -> Iterator[RecordChunk]:
    width = framing.record_length
    limit = framing.line_limit
    fh.seek(start.offset)
    index = start.record
    base = start.offset  # file offset of buf[0]
    carry = b""
    while True:
        block = fh.read(_READ_BYTES)
        buf = carry + block
        if not buf:
            return
        arr = np.frombuffer(buf, dtype=np.uint8)
        # the carried part holds no newline: look at the new bytes only
        ends = np.flatnonzero(arr[len(carry):] == 0x0A) + len(carry)
        if not block and len(buf) and (ends.size == 0 or ends[-1] != len(buf) - 1):
            ends = np.append(ends, len(buf))  # end of file: the last line may lack its newline
        starts = np.concatenate([[0], ends[:-1] + 1]) if ends.size else np.zeros(0, dtype=np.int64)
        tail = len(buf) - (int(ends[-1]) + 1 if ends.size else 0)
        too_long = np.flatnonzero(ends - starts > limit)
        if too_long.size or tail > limit:
            line = int(too_long[0]) if too_long.size else len(starts)
            at = base + (int(starts[line]) if too_long.size else len(buf) - tail)
            raise LimitError(
                f"{path}: line {index + line + 1:,} (at byte {at:,}) is longer than {limit:,} bytes, the line "
                f"limit for {width:,}-byte records (record.limits.line_bytes, --max-line-bytes): "
                "is this a text file of these records?")
        if ends.size == 0:
            carry = buf
            continue
        consumed = int(ends[-1]) + 1
        lo = 0
        while lo < len(starts):
            n = next(sizes)
            if n == 0:  # the `records` cap is reached
                return
            hi = lo + n
            s, e = starts[lo:hi], ends[lo:hi]
            chunk = _line_chunk(arr, s, e, width, framing.pad_byte, index, base)
            chunk.end = ReadPosition(base + min(int(e[-1]) + 1, len(buf)), index + len(s))
            yield chunk
            index += len(s)
            lo = hi
        carry = buf[consumed:]
        base += consumed
        if not block:
            return


def _gather(arr: np.ndarray, starts: np.ndarray, lens: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Rows of `width` bytes from `arr` at `starts`, bytes past each row's length set to
    `pad`: one uint8 gather through a sliding window (no per-byte index array)."""
    if len(starts) == 0:
        return np.zeros((0, width), dtype=np.uint8)
    lo, hi = int(starts.min()), int(starts.max()) + width
    window = arr[lo:hi]
    if len(window) < hi - lo:  # the last rows reach past the buffer: pad it (their bytes are masked below)
        window = np.concatenate([window, np.full(hi - lo - len(window), pad, dtype=np.uint8)])
    rows = np.lib.stride_tricks.sliding_window_view(window, width)[starts - lo]
    np.copyto(rows, np.uint8(pad), where=np.arange(width, dtype=np.int64)[None, :] >= lens[:, None])
    return rows


def _line_chunk(arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, pad: int,
                index: int, base: int) -> RecordChunk:
    """Lines [starts, ends) of `arr` as records of their own length (as Cobrix reads text
    files): a short line is a short record, bytes past the record length are ignored and
    reported. Record numbers stay line numbers; empty lines carry no record."""
    stops = ends.copy()
    cr = (stops > starts) & (arr[np.maximum(stops - 1, 0)] == 0x0D)
    stops[cr] -= 1
    lens = stops - starts
    rejects = [
        FramingReject(index + int(i), base + int(starts[i]), bytes(arr[starts[i]: stops[i]]),
                      f"line is {int(lens[i])} bytes, longer than the {width}-byte record: "
                      f"bytes after {width} ignored")
        for i in np.flatnonzero(lens > width)
    ]
    keep = lens > 0
    starts, lens = starts[keep], np.minimum(lens[keep], width)
    matrix = _gather(arr, starts, lens, width, pad)
    chunk = RecordChunk(matrix, lens, index, base + starts, rejects)
    chunk.row_numbers = index + np.flatnonzero(keep)
    return chunk


# --------------------------------------------------------------------------- V / VB
def _rdw_length(h: bytes, endian: str) -> tuple[int, bool]:
    """(length field, whether the other two bytes are zero as they must be)."""
    if endian == "big":
        return (h[0] << 8) | h[1], h[2] == 0 and h[3] == 0
    return (h[3] << 8) | h[2], h[0] == 0 and h[1] == 0


def _walks_exactly(fh: BinaryIO, size: int, endian: str, includes: bool, blocked: bool) -> bool:
    fh.seek(0)
    pos = 0
    buf = b""
    buf_at = 0
    while pos < size:
        if pos + 4 > buf_at + len(buf):
            fh.seek(pos)
            buf = fh.read(_READ_BYTES)
            buf_at = pos
        h = buf[pos - buf_at: pos - buf_at + 4]
        if len(h) < 4:
            return False
        n, clean = _rdw_length(h, endian) if not blocked else ((h[0] << 8) | h[1], True)
        if not clean:
            return False
        step = n if (includes or blocked) else n + 4
        if step < 4 or (step == 4 and not blocked and includes):
            return False
        pos += step
    return pos == size


def _detect_rdw(fh: BinaryIO, size: int, framing: Framing) -> tuple[str, bool]:
    endians = [framing.rdw_endian] if framing.rdw_endian else ["big", "little"]
    includes = [framing.rdw_includes_header] if framing.rdw_includes_header is not None else [True, False]
    for endian in endians:
        for inc in includes:
            if _walks_exactly(fh, size, endian, inc, blocked=False):
                return endian, inc
    tried = ", ".join(f"{e}-endian {'with' if i else 'without'} the header in the length"
                      for e in endians for i in includes)
    raise InputFormatError(
        f"record format V: no RDW reading walks the file to its end ({size} bytes); tried {tried}. "
        "Is this a variable-length file? (use --record-format F for fixed length)")


def rdw_reading(path: str | os.PathLike[str], framing: Framing) -> Framing:
    """`framing` with the RDW's byte order and header counting settled (V: detected by
    walking the file, as a read from the top does); other formats as they are. A read that
    starts mid-file with both settled does not walk the file again."""
    if framing.format == "VB":
        return dataclasses.replace(framing, rdw_endian=framing.rdw_endian or "big",
                                   rdw_includes_header=True if framing.rdw_includes_header is None
                                   else framing.rdw_includes_header)
    if framing.format != "V":
        return framing
    with open(path, "rb") as fh:
        endian, includes = _detect_rdw(fh, os.path.getsize(path), framing)
    return dataclasses.replace(framing, rdw_endian=endian, rdw_includes_header=includes)


def _variable(fh: BinaryIO, size: int, framing: Framing, sizes: Iterator[int],
              start: ReadPosition) -> Iterator[RecordChunk]:
    blocked = framing.format == "VB"
    if blocked:
        endian = framing.rdw_endian or "big"
        includes = True if framing.rdw_includes_header is None else framing.rdw_includes_header
    elif start.offset and framing.rdw_endian and framing.rdw_includes_header is not None:
        endian, includes = framing.rdw_endian, framing.rdw_includes_header  # settled by the read that began it
    else:
        endian, includes = _detect_rdw(fh, size, framing)
    width = framing.record_length
    starts: list[int] = []
    lens: list[int] = []
    index = start.record
    fh.seek(start.offset)
    buf = fh.read(_READ_BYTES)
    base = start.offset
    pos = start.offset
    rejects: list[FramingReject] = []
    block_end = start.block_end
    batch_size = next(sizes)

    def flush(last: bool = False) -> RecordChunk:
        """The records collected so far; `last`: reading stops after them (end of file)."""
        nonlocal starts, lens, rejects, index, batch_size
        batch_size = next(sizes)
        arr = np.frombuffer(buf, dtype=np.uint8)
        s = np.asarray(starts, dtype=np.int64) - base
        ln = np.asarray(lens, dtype=np.int64)
        matrix = _gather(arr, s, ln, width, 0)
        chunk = RecordChunk(matrix, ln, index, s + base, rejects)
        index += len(s)
        chunk.end = ReadPosition(size, index) if last else ReadPosition(pos, index, block_end if blocked else -1)
        starts, lens, rejects = [], [], []
        return chunk

    while True:
        if batch_size == 0:  # the `records` cap is reached
            if starts:
                yield flush()
            return
        local = pos - base
        if local + 4 > len(buf):
            if starts:
                yield flush()
            rest = buf[local:]
            more = fh.read(_READ_BYTES)
            if not more:
                if rest:
                    rejects.append(FramingReject(index, pos, rest, f"truncated RDW: {len(rest)} bytes at the end"))
                    yield flush(last=True)
                return
            buf = rest + more
            base = pos
            continue
        h = buf[local: local + 4]
        if blocked and pos >= block_end:
            bdw = (h[0] << 8) | h[1] if endian == "big" else (h[3] << 8) | h[2]
            if bdw < 8:  # IBM: the BDW counts its own 4 bytes, and a block holds at least one RDW
                rejects.append(FramingReject(index + len(starts), pos, bytes(h),
                                             f"invalid BDW length {bdw}: a block is at least 8 bytes"))
                yield flush(last=True)
                return
            block_end = pos + bdw
            pos += 4
            continue
        n, _clean = _rdw_length(h, endian)
        payload = n - 4 if includes else n
        if payload < 0:
            rejects.append(FramingReject(index + len(starts), pos, bytes(h), f"invalid RDW length {n}"))
            if starts or rejects:
                yield flush(last=True)
            return
        if local + 4 + payload > len(buf):
            if starts:
                yield flush()
            more = fh.read(max(_READ_BYTES, payload + 4))
            if not more:
                rejects.append(FramingReject(
                    index, pos, bytes(buf[local:]),
                    f"truncated record: RDW says {payload} bytes, {len(buf) - local - 4} present"))
                yield flush(last=True)
                return
            buf = buf[local:] + more
            base = pos
            continue
        starts.append(pos + 4)
        lens.append(payload)
        pos += 4 + payload
        if len(starts) >= batch_size:
            yield flush()
