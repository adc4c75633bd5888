"""Messages -> records: a micro-batch of real-time payloads (copybook record bytes, or
JSON objects) decoded and validated against the contract in one pass.

Copybook payloads go through the same column-wise codecs and validation as batch files:
the messages are stacked into one N x L byte matrix.

JSON payloads are judged by the contract's pydantic model. Running it per message costs
~11 us a record (measured), more than the rest of the pipeline together, so a flat
record layout takes a column-wise fast path first: Arrow's JSON reader parses the batch
against the contract's Arrow schema (unknown keys, wrong JSON types, lost decimal digits
and embedded newlines all fail the parse), and the pydantic model's constraints are
checked column-wise (required, min/max, the field's own range and length, pattern,
allowed values). Messages the fast path accepts are exactly the ones the model accepts;
any message it doubts, and every message of a batch it cannot parse, goes to the
pydantic model, which has the last word and names the field. Every message ends up
either as a row of `table` or in `rejects`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic import TypeAdapter, ValidationError

from schemas.arrow_buffers import one_array
from schemas.contract import Contract
from schemas.layout import Elementary, Group
from schemas.records import RecordChunk
from schemas.stream import RAW_QUOTE_BYTES, DecodedChunk, field_rejects, quoted_raw

PayloadFormat = Literal["json", "copybook"]
# Below this many messages the pydantic model beats the column-wise JSON path, whose cost
# is mostly per batch rather than per message. Measured on a whole real-time micro-batch
# (decode, score, results): crossover at ~75 messages; at 200 the column-wise path
# takes 2.8 ms, the model 4.1 ms.
FAST_JSON_MIN_MESSAGES = 96
ErrorKind = Literal["decode", "validation", "crash"]  # crash: the message made the pipeline raise


@dataclass
class MessageReject:
    """Why message `index` (0-based, in the micro-batch) is refused. `field_offset` and
    `raw` locate the bad bytes inside a copybook payload: at most RAW_QUOTE_BYTES of
    them, `raw_length` says how many there were (as in a file's `Reject`)."""

    index: int
    kind: ErrorKind
    reason: str
    field: str | None = None
    field_offset: int | None = None
    length: int | None = None
    raw: bytes = b""
    raw_length: int | None = None

    def __post_init__(self) -> None:
        if self.raw_length is None:
            self.raw_length = len(self.raw)
        self.raw = bytes(self.raw[:RAW_QUOTE_BYTES])

    def quoted_raw(self) -> dict[str, Any]:
        return quoted_raw(self.raw, self.raw_length)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "reason": self.reason}
        if self.field is not None:
            out["field"] = self.field
        if self.field_offset is not None:
            out.update(offset=self.field_offset, length=self.length, **self.quoted_raw())
        return out


@dataclass
class DecodedMessages:
    table: pa.Table  # the records that decoded and validated, in message order
    index: np.ndarray  # message index of every table row
    rejects: list[MessageReject] = field(default_factory=list)  # sorted by message index
    # JSON: each table row as a JSON object: the message itself where the fast path took
    # it as it was, pydantic's serialisation where the model coerced it ("12" -> 12)
    record_json: list[bytes] | None = None


def by_message(rejects: Sequence[MessageReject]) -> dict[int, list[MessageReject]]:
    """Every reason a message is refused, by message index."""
    out: dict[int, list[MessageReject]] = {}
    for r in rejects:
        out.setdefault(r.index, []).append(r)
    return out


class MessageCodec:
    """Decodes micro-batches of one contract's payloads. Build once per pipeline."""

    def __init__(self, contract: Contract, payload: PayloadFormat, *, fast_json: bool = True) -> None:
        self.contract = contract
        self.payload = payload
        spec = contract.spec
        self.decoder = spec.decoder()
        self.record_length = spec.layout.record_length
        # OCCURS DEPENDING ON makes records shorter than the layout's maximum
        self.variable = any(getattr(n, "depending_on", None) for n in spec.layout.walk())
        self.schema = self.decoder.decode(np.zeros((0, self.record_length), dtype=np.uint8)).table.schema
        if payload == "json":
            self.model = contract.pydantic_model()
            self._many: TypeAdapter[list[Any]] = TypeAdapter(list[self.model])  # type: ignore[name-defined]
            self._fields = _flat_fields(contract)
            self.fast_json = fast_json and self._fields is not None
            self._parse = pajson.ParseOptions(explicit_schema=self.schema, unexpected_field_behavior="error")
            self._checks = self._fast_checks()
            decimals = [f.key for f in self._fields or [] if pa.types.is_decimal(self.schema.field(f.key).type)]
            self._decimal_keys = (None if not decimals else
                                  '"(' + "|".join(re.escape(k) for k in decimals) + r')":"(-?[0-9]+(?:\.[0-9]+)?)"')

    def _fast_checks(self) -> list[tuple[Elementary, tuple[Any, Any] | None, Any]]:
        """Per flat field: its natural range (numbers) and its contract rules."""
        from schemas.docs import natural_range

        rules = {node.path: r for node, r in self.contract.rules.values()}
        return [(f, None if f.is_text else natural_range(f), rules.get(f.path)) for f in self._fields or []]

    def decode(self, payloads: Sequence[bytes]) -> DecodedMessages:
        if not payloads:
            return DecodedMessages(self.schema.empty_table(), np.zeros(0, dtype=np.int64))
        if self.payload == "json":
            return self._json(payloads)
        return self._copybook(payloads)

    # ------------------------------------------------------------------ copybook
    def _copybook(self, payloads: Sequence[bytes]) -> DecodedMessages:
        width = self.record_length
        sizes = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        fits = (sizes <= width) & (sizes > 0) if self.variable else sizes == width
        rejects = [MessageReject(int(i), "decode", f"message is {sizes[i]} bytes; the record layout "
                                 f"{self.contract.layout.name} is {width}")
                   for i in np.flatnonzero(~fits)]
        good = np.flatnonzero(fits)
        if len(good) == len(payloads) and not self.variable:
            matrix = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(payloads), width)
            lengths = None
        else:
            pad = bytes([self.contract.spec.page.space]) * width
            joined = b"".join((payloads[i] + pad)[:width] for i in good.tolist())
            matrix = np.frombuffer(joined, dtype=np.uint8).reshape(len(good), width)
            lengths = sizes[good] if self.variable else None
        chunk = RecordChunk(matrix, lengths, 0, np.zeros(len(good), dtype=np.int64), row_numbers=good)
        dc = DecodedChunk(chunk, self.decoder.decode(matrix, lengths))
        dc.rejects = field_rejects(chunk, dc.batch, good + 1)
        from schemas.validate import validate_chunk

        # validate_chunk appends the rule violations and sorts: note the decode errors first
        kinds = {id(r): "decode" for r in dc.rejects}
        validate_chunk(self.contract, dc)
        for r in dc.rejects:
            rejects.append(MessageReject(r.record - 1, kinds.get(id(r), "validation"), r.reason,  # type: ignore[arg-type]
                                         r.field, r.field_offset, r.length, r.raw, r.raw_length))
        rejects.sort(key=lambda r: (r.index, r.field_offset or 0))
        index = good[dc.batch.chunk_rows()]
        return DecodedMessages(dc.batch.table, index, rejects)

    # ------------------------------------------------------------------ JSON
    def _json(self, payloads: Sequence[bytes]) -> DecodedMessages:
        if self.fast_json and len(payloads) >= FAST_JSON_MIN_MESSAGES:
            fast = self._json_columnar(payloads)
            if fast is not None:
                return fast
        return self._json_pydantic(payloads, np.arange(len(payloads)))

    def _json_pydantic(self, payloads: Sequence[bytes], index: np.ndarray) -> DecodedMessages:
        """The pydantic model on `payloads` (message numbers `index`): one call for the
        batch, one per message only when the batch holds a bad one."""
        try:
            records: list[Any] | None = self._many.validate_json(b"[" + b",".join(payloads) + b"]")
        except ValidationError:
            records = None
        if records is not None and len(records) == len(payloads):
            kept = index
            rejects: list[MessageReject] = []
        else:  # a bad message, or one holding several objects ('{...},{...}')
            records, kept_pos, rejects = self._json_one_by_one(payloads)
            kept = index[kept_pos]
            for r in rejects:
                r.index = int(index[r.index])
        dumped = self._many.dump_python(records, by_alias=True)
        table = pa.Table.from_pylist(dumped, schema=self.schema)
        return DecodedMessages(table, kept, rejects, self._record_json(records))

    def _record_json(self, records: list[Any]) -> list[bytes] | None:
        """The validated records as JSON text. Pydantic writes decimals as strings; they are
        turned back into the exact numbers the input had, all records in one regex pass.
        None for nested layouts (the caller encodes the table instead)."""
        if self._fields is None:
            return None
        serializer = self.model.__pydantic_serializer__
        texts = [serializer.to_json(r, by_alias=True) for r in records]
        if self._decimal_keys is None or not texts:
            return texts
        fixed = pc.replace_substring_regex(pa.array(texts, pa.binary()).cast(pa.string()),
                                           self._decimal_keys, r'"\1":\2')
        return fixed.cast(pa.binary()).to_pylist()

    def _json_columnar(self, payloads: Sequence[bytes]) -> DecodedMessages | None:
        """None when Arrow cannot parse the batch as one record a line."""
        joined = b"\n".join(payloads)
        if joined.count(b"\n") != len(payloads) - 1:
            return None  # a message spans lines: Arrow would split it
        if not _all_objects(payloads, joined):
            # only objects: Arrow skips a blank message (a '{...} {...}' elsewhere would fill
            # its row) and crashes on a leading top-level null (apache/arrow#47409)
            return None
        try:
            joined.decode("utf-8")
        except UnicodeDecodeError:
            return None  # Arrow takes invalid UTF-8 into its strings; the model refuses it
        try:
            # one block, parsed on this thread: the batch is one block anyway, and waking
            # Arrow's pool cost a micro-batch ~0.1 ms more (measured)
            table = pajson.read_json(pa.BufferReader(joined), parse_options=self._parse,
                                     read_options=pajson.ReadOptions(block_size=len(joined) + 1, use_threads=False))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        if table.num_rows != len(payloads):
            return None  # an empty message is skipped by Arrow's reader
        doubtful = self._doubtful(table)
        if not doubtful.any():
            return DecodedMessages(table.combine_chunks(), np.arange(len(payloads)), record_json=list(payloads))
        bad = np.flatnonzero(doubtful)
        judged = self._json_pydantic([payloads[i] for i in bad.tolist()], bad)
        keep = np.flatnonzero(~doubtful)
        merged = pa.concat_tables([table.take(pa.array(keep)), judged.table]).combine_chunks()
        index = np.concatenate([keep, judged.index])
        order = np.argsort(index, kind="stable")
        texts = [payloads[i] for i in keep.tolist()] + (judged.record_json or [])
        return DecodedMessages(merged.take(pa.array(order)), index[order], judged.rejects,
                               [texts[i] for i in order.tolist()])

    def _doubtful(self, table: pa.Table) -> np.ndarray:
        """Rows that may break a constraint of the pydantic model, column-wise. The field's
        own range and length are checked on the column's min/max first: a per-row mask
        is only built for a column that breaks them."""
        from schemas.validate import byte_lengths, extremes, violations

        doubt = np.zeros(table.num_rows, dtype=bool)
        for f, bounds, rule in self._checks:
            col = one_array(table.column(f.key))
            if f.is_text:
                if len(col) and byte_lengths(col).max() > f.size:  # characters <= bytes
                    doubt |= _mask(pc.greater(pc.utf8_length(col), f.size))
            elif bounds is not None:
                least, most = extremes(col)
                lo, hi = bounds
                if least is not None and (least < lo or most > hi):
                    doubt |= _mask(pc.or_(pc.less(col, pa.scalar(lo).cast(col.type)),
                                          pc.greater(col, pa.scalar(hi).cast(col.type))))
            if rule is not None:
                for bad, _why in violations(f, rule, col):
                    doubt |= bad
        return doubt

    def _json_one_by_one(self, payloads: Sequence[bytes]) -> tuple[list[Any], np.ndarray, list[MessageReject]]:
        """The error path: which messages are bad, and the first thing wrong with each."""
        records: list[Any] = []
        kept: list[int] = []
        rejects: list[MessageReject] = []
        for i, payload in enumerate(payloads):
            try:
                records.append(self.model.model_validate_json(payload))
                kept.append(i)
            except ValidationError as exc:
                rejects.append(_json_reject(i, exc))
        return records, np.array(kept, dtype=np.int64), rejects


def _all_objects(payloads: Sequence[bytes], joined: bytes) -> bool:
    """Does every message start with '{' (after blanks)? The first bytes are read from the
    newline-joined batch at once; only a message that starts otherwise is looked at alone."""
    sizes = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
    starts = np.concatenate(([0], np.cumsum(sizes[:-1] + 1)))
    data = np.frombuffer(joined, dtype=np.uint8)
    first = data[np.minimum(starts, max(len(data) - 1, 0))] if len(data) else np.zeros(len(sizes), np.uint8)
    odd = np.flatnonzero((first != ord("{")) | (sizes == 0))
    return all(payloads[i].lstrip().startswith(b"{") for i in odd.tolist())


def _mask(expr: pa.Array) -> np.ndarray:
    return np.asarray(expr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _flat_fields(contract: Contract) -> list[Elementary] | None:
    """The record's fields when it is flat (no groups, no OCCURS): the layouts the
    column-wise JSON path handles; None otherwise."""
    from schemas.docs import output_children

    record = contract.layout.single_record()
    fields: list[Elementary] = []
    for child in output_children(record):
        if isinstance(child, Group) or child.occurs or not isinstance(child, Elementary):
            return None
        fields.append(child)
    return fields


def _json_reject(index: int, exc: ValidationError) -> MessageReject:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind: ErrorKind = "decode" if first["type"] in ("json_invalid", "json_type", "model_type") else "validation"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    value = first.get("input")
    shown = "" if kind == "decode" or isinstance(value, dict) else f": {value!r}"
    return MessageReject(index, kind, f"{first['msg']}{shown}{more}", loc or None)
