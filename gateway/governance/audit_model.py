"""What the audit log holds and how its tamper evidence is computed; the stores
(audit_parquet, audit_sql) and the façade (audit) build on this floor.

Tamper evidence is a hash chain per writer and day: every appended batch gets
`digest = sha256(prev || content)`, where `content` is a digest of the batch's records
computed column by column from Arrow buffers (validity, lengths and bytes of every
column, in DECISION_SCHEMA order). It depends only on the values and their order, not on
how a store chunks or encodes them, and needs no Python loop per record. A chain per
writer (a process, or a run) lets several replicas append at once without coordinating;
verification walks every chain of a day.

A chain without a secret or an outside anchor shows what was changed by anything that
did not also rewrite the chain after it: a modified, deleted or added record, a batch
file deleted, added or replaced. Someone able to rewrite a whole chain consistently is
only stopped by the database's triggers (the table store) or by publishing the chain
heads elsewhere (`AuditLog.heads`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.arrow_buffers import one_array
from schemas.errors import ConfigError

DECISION_SCHEMA = pa.schema([
    pa.field("run", pa.string()),
    pa.field("pipeline", pa.string()),
    pa.field("source", pa.string()),  # file name or topic
    pa.field("record", pa.int64()),  # position in the source
    pa.field("record_id", pa.string()),  # unique key: "RUN:RECORD", "topic/partition/offset"
    pa.field("input_hash", pa.string()),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("contract", pa.string()),
    pa.field("contract_version", pa.int32()),
    pa.field("scored_by", pa.string()),  # model | fallback
    pa.field("rule_id", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("reason", pa.string()),
    pa.field("breaker_state", pa.string()),
    pa.field("review", pa.string()),  # null or "pending"
    pa.field("decided_at", pa.timestamp("us", tz="UTC")),
])

GENESIS = "0" * 64  # the `prev` of a chain's first link


class AuditSchemaError(ConfigError):
    """A decision table whose columns are not DECISION_SCHEMA's: a bug of its caller."""


class AuditStoreError(ConfigError):
    """The audit store cannot be used as configured (a folder that is a file, ...)."""


class OperatorAction(BaseModel):
    """Something an operator did to a pipeline: who, what, from what to what, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str
    action: str  # killswitch.set, review.decide, drift.action, audit.prune, ...
    pipeline: str = ""
    target: str | None = None  # a record id, a review item id
    old: str | None = None
    new: str | None = None
    reason: str

    @field_validator("reason", "actor", "action")
    @classmethod
    def _not_blank(cls, value: str, info: Any) -> str:
        if not value.strip():
            raise ValueError(f"an operator action needs a non-empty {info.field_name}"
                             + (": say why (an incident, a ticket)" if info.field_name == "reason" else ""))
        return value

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def as_json(self) -> dict[str, str | None]:
        """One JSON object (`lgw killswitch history`, `lgw audit show`)."""
        data = self.model_dump()
        data["at"] = self.at.isoformat()
        return data

    def content_digest(self) -> str:
        """sha256 of the action's canonical JSON: what its chain link covers."""
        data = self.model_dump()
        data["at"] = self.at.isoformat(timespec="microseconds")
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class VerifyReport(BaseModel):
    """What `verify` checked and every problem found (one readable line each)."""

    days: list[str] = Field(default_factory=list)
    batches: int = 0
    records: int = 0
    actions: int = 0
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def merge(self, other: VerifyReport) -> VerifyReport:
        return VerifyReport(days=sorted(set(self.days) | set(other.days)), batches=self.batches + other.batches,
                            records=self.records + other.records, actions=self.actions + other.actions,
                            problems=self.problems + other.problems)


def conform(table: pa.Table) -> pa.Table:
    """`table` with DECISION_SCHEMA's columns in its order, or AuditSchemaError naming
    what was expected and what was found. Nullability and metadata are not compared; a
    string column may be dictionary-encoded (a batch's shared values, `shared`), and stays so."""
    found = {f.name: _logical(f.type) for f in table.schema}
    expected = {f.name: f.type for f in DECISION_SCHEMA}
    if found != expected:
        missing = [n for n in expected if n not in found]
        extra = [n for n in found if n not in expected]
        wrong = [f"{n}: expected {expected[n]}, found {found[n]}" for n in expected
                 if n in found and found[n] != expected[n]]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unexpected {', '.join(extra)}"] if extra else []) + wrong
        raise AuditSchemaError(
            f"decision table does not match DECISION_SCHEMA ({'; '.join(parts)}); expected "
            f"{', '.join(f'{f.name}: {f.type}' for f in DECISION_SCHEMA)}; found "
            f"{', '.join(f'{f.name}: {f.type}' for f in table.schema)}")
    table = table.select(DECISION_SCHEMA.names)
    if table.column("decided_at").null_count or table.column("record_id").null_count:
        raise AuditSchemaError("decision table: decided_at and record_id must be set on every row")
    if table.schema == DECISION_SCHEMA:
        return table
    return pa.Table.from_arrays([column if column.type == f.type or pa.types.is_dictionary(column.type)
                                 else column.cast(f.type) for column, f in zip(table.columns, DECISION_SCHEMA,
                                                                               strict=True)],
                                names=DECISION_SCHEMA.names)


def _logical(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def shared(value: str, n: int) -> pa.Array:
    """`n` rows of one string, as a one-entry dictionary: how a decision table holds what a
    batch's records share (run, pipeline, source, model, contract, breaker state). Nothing
    repeats the string a million times, Parquet writes the entry's index per row without
    hashing the rows to find it, and the content digest takes the value once."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], pa.string()))


def as_shared(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A string column holding one value in every row as `shared`; any other as it is."""
    if len(column) < 2 or column.null_count or not _is_text(column.type):
        return column
    values = one_array(column)
    if not holds_one_value(values):
        return column
    return shared(values[0].as_py(), len(values))


def holds_one_value(values: pa.Array) -> bool:
    """Every row of `values` (two or more, no nulls) equals the first. A column that varies
    (record ids, scores, fingerprints) usually shows it in its second or last row: compared
    there first, it is not compared row by row (50,000 record ids: 0.14 ms, then 0.001 ms)."""
    first = values[0].as_py()
    if values[1].as_py() != first or values[-1].as_py() != first:
        return False
    return bool(pc.all(pc.equal(values, values[0])).as_py())


def split_by_day(table: pa.Table) -> list[tuple[date, pa.Table]]:
    """The table's rows per UTC day of `decided_at` (order kept): one part for a batch
    scored within a day, two around midnight."""
    if table.num_rows:  # the usual batch, within one day: found from its first and last moments
        bounds = pc.min_max(table.column("decided_at"))
        first, last = (bounds[k].cast(pa.date32()).as_py() for k in ("min", "max"))
        if first == last:
            return [(first, table)]
    days = table.column("decided_at").cast(pa.date32())
    unique = pc.unique(days).to_pylist()
    return [(day, table.filter(pc.equal(days, pa.scalar(day, pa.date32())))) for day in sorted(unique)]


def content_digest(table: pa.Table) -> str:
    """A digest of a decision table's values and order, column by column (see module)."""
    outer = hashlib.sha256(str(table.num_rows).encode())
    for field in DECISION_SCHEMA:
        outer.update(field.name.encode() + b"\0" + _column_digest(table.column(field.name)))
    return outer.hexdigest()


def _column_digest(column: pa.ChunkedArray) -> bytes:
    h = hashlib.sha256()
    if len(column) == 0:
        return h.digest()
    same: pa.Scalar | None = None  # one value in every row (a batch's run, model, time)
    if pa.types.is_dictionary(column.type):  # a batch's shared values (`shared`)
        entries = one_array(column).dictionary
        if len(column) > 1 and len(entries) == 1 and column.null_count == 0:
            same = entries[0]  # known without comparing the rows
        else:
            column = column.cast(column.type.value_type)
    if column.null_count:
        flags = one_array(pc.is_null(column)).cast(pa.uint8()).to_numpy(zero_copy_only=False)
        h.update(np.ascontiguousarray(flags).data)
        column = pc.fill_null(column, "" if _is_text(column.type) else pa.scalar(0, column.type))
    else:
        h.update(b"no nulls")  # what n zero flags would say, without making them
    values = one_array(column)
    if same is None and len(values) > 1 and holds_one_value(values):
        same = values[0]
    if same is not None:  # the value once, not a million times
        h.update(b"same:" + str(same.as_py()).encode())
        return h.digest()
    if _is_text(values.type):
        wide = pa.types.is_large_string(values.type)
        offsets = np.frombuffer(values.buffers()[1], dtype="<i8" if wide else "<i4")
        offsets = offsets[values.offset: values.offset + len(values) + 1]
        h.update(np.diff(offsets).astype("<i8").data)  # lengths: no separator to forge
        data = values.buffers()[2]
        if data is not None:
            h.update(memoryview(data)[int(offsets[0]):int(offsets[-1])])
    else:
        # fixed width: the little-endian values, nulls as zero (their flags are hashed above)
        if pa.types.is_timestamp(values.type):
            values = values.cast(pa.int64())
        dtype = {8: "<f8" if pa.types.is_floating(values.type) else "<i8", 4: "<i4"}[values.type.bit_width // 8]
        h.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False), dtype=dtype).data)
    return h.digest()


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def chain_digest(prev: str, content: str) -> str:
    """The link of a batch: sha256(prev digest || content digest), both as bytes."""
    return hashlib.sha256(bytes.fromhex(prev) + bytes.fromhex(content)).hexdigest()


def utc(value: datetime) -> datetime:
    """A database's datetime in UTC: SQLite keeps no zone (we always write UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = [
    "DECISION_SCHEMA", "GENESIS", "AuditSchemaError", "AuditStoreError", "OperatorAction", "VerifyReport",
    "as_shared", "chain_digest", "conform", "content_digest", "shared", "split_by_day", "utc",
]
