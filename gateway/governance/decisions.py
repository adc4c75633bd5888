"""The audit trail's decision records: one per scored record, built column-wise from the
batch as it is written (gateway.governance.audit stores them).

A record is named by its run and position (`record_id` = RUN:RECORD for a batch run,
the message id for a stream) and by `input_hash`, a keyed 128-bit fingerprint of the
record as read: its bytes where the source has them (a fixed-width file), else its
decoded values. The fingerprint is computed with numpy over the whole batch (a
multiply-xorshift over 8-byte words, two lanes, keyed with the pii key): SHA-256 per
record costs 1.2-1.4 s per million records in a Python loop, a third of a whole run.
It names a record; it is not what makes the log tamper-evident: the audit log's
per-batch SHA-256 chain does that.
"""

from __future__ import annotations

import binascii
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.governance.audit_model import DECISION_SCHEMA, as_shared, shared
from schemas.arrow_buffers import one_array, value_buffers

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline


_P1 = np.uint64(0x9E3779B97F4A7C15)


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def fingerprints(matrix: np.ndarray, key: bytes, lengths: np.ndarray | None = None) -> pa.Array:
    """A keyed 128-bit fingerprint (32 hex characters) of each row of `matrix` (uint8,
    one record per row; `lengths`: each record's own length where rows are padded).

    Two lanes of NH, the universal hash under UMAC (RFC 4418): the row as 32-bit words,
    each added to a key word, multiplied pairwise into 64 bits and summed; two rows
    collide in a lane with probability 2^-32 over the key, so 2^-64 in both. Whole
    blocks at a time, no loop per record or per word."""
    n, width = matrix.shape
    if n == 0:
        return pa.array([], pa.string())
    words = 2 * -(-width // 8)  # 32-bit words, an even number
    stream = hashlib.shake_256(b"lgw-input-hash" + key).digest(8 * words + 32)
    keys = np.frombuffer(stream[: 8 * words], dtype="<u4").reshape(2, words)
    final = np.frombuffer(stream[8 * words:], dtype="<u8")
    size = np.asarray(lengths if lengths is not None else np.full(n, width), dtype=np.uint64)
    digest = np.empty((2, n), dtype=np.uint64)
    # A block's words are laid out word by word (a row per word position, a column per
    # record), so that each step is one long vector operation and the last one adds 15 rows
    # (summing 15 words within each record cost 40 % more). The buffers are reused block
    # after block: fresh arrays this size would cost more in page faults than the arithmetic.
    in_place = width == 4 * words and matrix.flags.c_contiguous  # rows already whole words
    padded = None if in_place else np.zeros((_BLOCK, words * 4), dtype=np.uint8)
    columns = np.empty((words, _BLOCK), dtype=np.uint32)
    summed = np.empty((words, _BLOCK), dtype=np.uint64)
    product = np.empty((words // 2, _BLOCK), dtype=np.uint64)
    lane_keys = keys[:, :, None]
    for lo in range(0, n, _BLOCK):
        hi = min(n, lo + _BLOCK)
        b = hi - lo
        if padded is None:
            rows = matrix[lo:hi]
        else:
            padded[:b, :width] = matrix[lo:hi]
            rows = padded[:b]
        columns[:, :b] = rows.view("<u4").T
        for lane in (0, 1):
            # a uint32 add (wraps mod 2^32, as NH's), kept as uint64 for the products
            np.add(columns[:, :b], lane_keys[lane], out=summed[:, :b], casting="unsafe")
            np.multiply(summed[0::2, :b], summed[1::2, :b], out=product[:, :b])
            np.add.reduce(product[:, :b], axis=0, out=digest[lane, lo:hi])
    both = np.empty((n, 2), dtype=">u8")
    with np.errstate(over="ignore"):
        both[:, 0] = _fmix(digest[0] ^ size ^ final[0])
        both[:, 1] = _fmix(digest[1] + (size * _P1) + final[1])
    text = binascii.hexlify(both.tobytes())  # 32 hex characters a row, back to back
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


_BLOCK = 2048  # records a block: its buffers stay in a core's cache (4096: 10 % slower)


def value_rows(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Records without bytes of their own (table rows, JSON messages) as padded byte rows:
    their values' text joined with a separator no value holds, column-wise."""
    if table.num_columns == 0 or table.num_rows == 0:
        return np.zeros((table.num_rows, 1), dtype=np.uint8), np.zeros(table.num_rows, dtype=np.int64)
    parts = [pc.fill_null(pc.cast(table.column(i), pa.string()), "\x00") for i in range(table.num_columns)]
    joined = pc.binary_join_element_wise(*parts, "\x1f")
    return byte_rows(one_array(joined))


def byte_rows(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Records of different lengths (message payloads: a binary array) as zero-padded rows."""
    values = values.cast(pa.binary())
    lengths = np.asarray(pc.binary_length(values).fill_null(0), dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    matrix = np.zeros((len(lengths), max(width, 1)), dtype=np.uint8)
    if width:
        offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset: values.offset + len(values) + 1]
        data = np.frombuffer(values.buffers()[2], dtype=np.uint8)
        index = offsets[:-1, None].astype(np.int64) + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < lengths[:, None]
        matrix[valid] = data[index[valid]]
    return matrix, lengths


def decision_table(pipeline: Pipeline, scored: pa.Table, *, run: str, source: str, fingerprint: pa.Array,
                   record_ids: pa.Array | None = None, breaker_state: str | None = None,
                   decided_at: datetime | None = None) -> pa.Table:
    """The decision records of one scored batch (rows as `scored`'s), DECISION_SCHEMA's
    columns; what the batch's records share as one-entry dictionaries (`shared`)."""
    n = scored.num_rows
    at = decided_at or datetime.now(UTC)

    def text(value: str | None) -> pa.Array:
        return shared(value, n) if value is not None else pa.nulls(n, pa.string())

    def column(name: str, kind: pa.DataType) -> Any:
        return scored.column(name).cast(kind) if name in scored.column_names else pa.nulls(n, kind)

    records = column("source_record", pa.int64())
    if record_ids is None:
        record_ids = run_record_ids(run, records)
    first = next(iter(pipeline.outputs), None)
    score = column(first, pa.float64()) if first is not None and pipeline.outputs[first].type in (
        "float", "int", "bool") else pa.nulls(n, pa.float64())
    scored_by = as_shared(column("scored_by", pa.string()))
    model_sha = _model_sha256(pipeline)
    if model_sha is None:
        model_sha256: Any = pa.nulls(n, pa.string())
    elif pa.types.is_dictionary(scored_by.type) and n and scored_by[0].as_py() == "model":
        model_sha256 = shared(model_sha, n)  # every record scored by the model
    else:
        model_sha256 = pc.if_else(pc.equal(scored_by.cast(pa.string()), "model"), model_sha, None)
    columns = {
        "run": text(run), "pipeline": text(pipeline.name), "source": text(source), "record": records,
        "record_id": record_ids, "input_hash": fingerprint,
        "model_name": as_shared(column("model_name", pa.string())),
        "model_version": as_shared(column("model_version", pa.string())), "model_sha256": model_sha256,
        "contract": as_shared(column("contract", pa.string())),
        "contract_version": column("contract_version", pa.int32()), "scored_by": scored_by,
        "rule_id": column("rule_id", pa.string()), "score": score, "reason": column("reason", pa.string()),
        "breaker_state": text(breaker_state), "review": column("review", pa.string()),
        "decided_at": pa.repeat(pa.scalar(at, pa.timestamp("us", tz="UTC")), n),
    }
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


def run_record_ids(run: str, records: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`RUN:RECORD` for each record number: a batch run's record ids. A batch's record
    numbers mostly have as many digits each; then the ids are fixed-width rows, the run's
    prefix copied into all of them at once (pyarrow's element-wise join took twice as long)."""
    digits = one_array(pc.cast(records, pa.string()))
    head = np.frombuffer(f"{run}:".encode(), dtype=np.uint8)
    n = len(digits)
    if n and not digits.null_count:
        offsets, data = value_buffers(digits)
        width = int(offsets[1] - offsets[0])
        size = len(head) + width
        if n * size < 2**31 and bool((np.diff(offsets) == width).all()):
            rows = np.empty((n, size), dtype=np.uint8)
            rows[:, :len(head)] = head
            rows[:, len(head):] = data[offsets[0]:offsets[-1]].reshape(n, width)
            starts = np.arange(0, n * size + 1, size, dtype=np.int32)
            return pa.StringArray.from_buffers(n, pa.py_buffer(starts), pa.py_buffer(rows))
    return pc.binary_join_element_wise(run, digits, ":")


def _model_sha256(pipeline: Pipeline) -> str | None:
    model = pipeline.model
    backend = getattr(model, "backend", None)
    sha = getattr(backend, "sha256", None)
    return sha if isinstance(sha, str) else None


__all__ = ["DECISION_SCHEMA", "byte_rows", "decision_table", "fingerprints", "run_record_ids", "value_rows"]
