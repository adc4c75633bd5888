"""Rejects and dead letters into a table over ODBC (a `RejectSink`).

One row per problem: the pipeline, where the record came from (`ref`: the run and record
number of a batch source, the message id of a real-time one), the record number, field,
offsets, the raw bytes as hex (at most RAW_QUOTE_BYTES; withheld when the contract marks
fields pii, as in every other rejects artefact) and the reason. The rows are upserted by
(pipeline, ref, record, field) through the results table's own writer (`OdbcSink`):
a batch redelivered after a crash leaves each problem once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from adapters.base import SourceBatch
from adapters.odbc.config import OdbcRejectsConfig
from adapters.odbc.sink import OdbcSink
from schemas.stream import Reject

if TYPE_CHECKING:
    from adapters.registry import BuildContext

_SCHEMA = pa.schema([("pipeline", pa.string()), ("ref", pa.string()), ("record", pa.int64()),
                     ("field", pa.string()), ("record_offset", pa.int64()), ("field_offset", pa.int64()),
                     ("length", pa.int64()), ("raw", pa.string()), ("raw_length", pa.int64()),
                     ("reason", pa.string())])
KEY = ["pipeline", "ref", "record", "field"]


class OdbcRejects:
    def __init__(self, config: OdbcRejectsConfig, *, pipeline: str, run_name: str | None) -> None:
        self.pipeline = pipeline
        self.run_name = run_name
        self.writer = OdbcSink(config.connection, config.table, KEY,
                               column_types={"reason": "VARCHAR(2000)", "raw": "VARCHAR(200)", "ref": "VARCHAR(300)",
                                             "field": "VARCHAR(300)", "pipeline": "VARCHAR(200)"})
        self.records = 0

    def rows(self, rejects: Sequence[Reject], source: SourceBatch | None) -> pa.Table:
        messages = source.messages if source is not None else None

        def ref(r: Reject) -> str:
            if messages is not None and 0 < r.record <= len(messages):
                return messages[r.record - 1].id  # a message's stable id (topic/partition/offset)
            return f"{self.run_name or self.pipeline}/{r.record}"

        shown = [r.to_json() for r in rejects]
        return pa.Table.from_pylist([{
            "pipeline": self.pipeline, "ref": ref(r), "record": r.record, "field": r.field or "",
            "record_offset": r.record_offset, "field_offset": r.field_offset, "length": r.length,
            "raw": j.get("raw"), "raw_length": j.get("raw_length", r.raw_length), "reason": r.reason,
        } for r, j in zip(rejects, shown, strict=True)], schema=_SCHEMA)

    async def open(self, state: dict[str, Any] | None = None) -> None:
        await self.writer.connect()

    async def write(self, rejects: Sequence[Reject], source: SourceBatch | None = None) -> None:
        if not rejects:
            return
        await self.writer.write([(self.rows(rejects, source), {})])
        self.records += len({r.record for r in rejects})

    def state(self) -> dict[str, Any]:
        return {}

    async def finish(self) -> dict[str, Any]:
        return {"format": "odbc", "target": self.writer.table, "records": self.records}

    async def publish(self) -> None:
        return None

    async def discard(self) -> None:
        return None

    async def close(self) -> None:
        await self.writer.close()


def build_rejects(config: OdbcRejectsConfig, context: BuildContext) -> OdbcRejects:
    """The `odbc` reject sink of the registry."""
    return OdbcRejects(config, pipeline=context.pipeline, run_name=context.run_name)
