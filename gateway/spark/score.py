"""Scoring on Spark with the same pipeline `lgw score` runs: `mapInArrow` over the records of
`spark.read.format("lgw")` (with `sourceColumns`), on every executor the contract's
features, the model (ONNX in the executor, or a model server over HTTP behind the same
circuit breaker, retries and timeout) and the fallback rules, with the CLI's provenance
columns and pii policy.

    from gateway.spark.score import ScoringJob
    from gateway.spark.source import split
    rows = spark.read.format("lgw").option("contract", C).option("output", "all").load(drop)
    job = ScoringJob(contract=C, config="gateway.yaml")     # config: None = the embedded defaults
    records, rejects, control = split(job.score(rows).persist())

(A `records` read with `sourceColumns=true` can be scored too: it has no decode rejects
or control rows.)

Per Python worker (Spark reuses them across tasks) the pipeline is built once and keeps
one event loop: the breaker's state carries from one partition to the next on that
executor, as it does from one batch to the next in `lgw score`. The kill switch is read
once, in the driver, when the job is set up (`force_fallback` then holds for every
executor; `pause` refuses the job, as `lgw score` does).

`score` yields the scored records (the columns `lgw score` writes, plus `source_file`) and,
for a record the pipeline refused (model output out of its contract, a poison record),
a row whose `lgw_reject` holds the reject as `lgw score --rejects` writes it; decode
rejects and control rows of an `output=all` read pass through as they came. `split`
separates them (the rejects with the data source's reject columns). Not carried over:
review queues, re-scoring (`fallback_and_rescore`) and shadow mode, which need the
gateway's state store next to the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gateway.spark.source import CONTROL_COLUMN, REJECT_COLUMN, SOURCE_FIELDS, side_rows
from schemas.arrow_buffers import one_array

# the data source's columns scoring consumes: not in the scored records
CONSUMED = ("source_offset", "source_raw")


@dataclass(frozen=True)
class ScoringJob:
    """What every executor needs to build the pipeline (plain values: sent to each)."""

    contract: str
    config: str | None = None
    force_fallback: bool = False

    def pipeline(self) -> Any:
        return _runtime(self)[1]

    def output_schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The scored records' columns (from scoring no records) and `lgw_reject`."""
        from gateway.pipeline import Pipeline

        fields = [f for f in input_schema if f.name not in (*CONSUMED, REJECT_COLUMN, CONTROL_COLUMN)]
        empty = pa.Table.from_pylist([], schema=pa.schema(fields))
        pipeline: Pipeline = _fallback_only(self)
        schema = asyncio.run(pipeline.score(empty)).table.schema.append(pa.field(REJECT_COLUMN, pa.string()))
        if CONTROL_COLUMN in input_schema.names:
            schema = schema.append(pa.field(CONTROL_COLUMN, pa.string()))
        return schema

    def score(self, df: Any) -> Any:
        """`df.mapInArrow` with the pipeline: see the module's text."""
        from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

        missing = [f.name for f in SOURCE_FIELDS if f.name not in df.columns]
        if missing:
            raise ValueError(f"lgw scoring on Spark: expected the records of spark.read.format('lgw') with "
                             f"option sourceColumns=true, found no column {', '.join(missing)}")
        job = self.as_the_kill_switch_says()
        schema = job.output_schema(to_arrow_schema(df.schema))

        def score_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from score_partition(job, batches, schema)

        return df.mapInArrow(score_batches, from_arrow_schema(schema))

    def as_the_kill_switch_says(self) -> ScoringJob:
        """The kill switch, read once here: pause refuses the job (as `lgw score` does);
        force_fallback holds for every executor."""
        from gateway.config import load_config
        from gateway.score import ScoringPaused
        from gateway.state import KillSwitchWatcher, StateStore

        cfg = load_config(self.config)
        name = _contract(self.contract).name
        switch = KillSwitchWatcher(StateStore(cfg.state.url), name).current()
        if switch.mode == "pause":
            raise ScoringPaused(switch)
        return dataclasses.replace(self, force_fallback=True) if switch.mode == "force_fallback" else self


def score_partition(job: ScoringJob, batches: Iterator[pa.RecordBatch], schema: pa.Schema
                    ) -> Iterator[pa.RecordBatch]:
    """One task's batches through this worker's pipeline, on its event loop."""
    loop, pipeline = _runtime(job)
    side_columns = [c for c in (REJECT_COLUMN, CONTROL_COLUMN) if c in schema.names]
    for batch in batches:
        if batch.num_rows == 0:
            continue
        table = pa.Table.from_batches([batch])
        side = None
        if side_columns and REJECT_COLUMN in table.column_names:
            is_side = pc.is_valid(table.column(side_columns[0]))
            for c in side_columns[1:]:
                is_side = pc.or_(is_side, pc.is_valid(table.column(c)))
            if pc.any(is_side).as_py():
                side, table = table.filter(is_side), table.filter(pc.invert(is_side))
            table = table.drop_columns([c for c in side_columns if c in table.column_names])
        if table.num_rows:
            where = {name: table.column(name) for name in CONSUMED}
            scored = loop.run_until_complete(pipeline.score(table.drop_columns(list(CONSUMED))))
            out = side_rows(schema, scored.table.num_rows, **{c: one_array(scored.table.column(c))
                                                               for c in scored.table.column_names})
            yield from out.to_batches()
            if scored.rejects:
                yield from _reject_rows(pipeline, table, where, scored.rejects, schema).to_batches()
        if side is not None:  # decode rejects and control rows of output=all: as they came
            yield from side_rows(schema, side.num_rows, **{c: one_array(side.column(c)) for c in (
                "source_record", "source_file", *side_columns)}).to_batches()


def _reject_rows(pipeline: Any, table: pa.Table, where: dict[str, pa.ChunkedArray], rejects: list[Any],
                 schema: pa.Schema) -> pa.Table:
    """A row per refused record: where it came from, and the reject as `lgw score` writes it."""
    from gateway.isolation import pii_names
    from schemas.stream import Reject

    withheld = bool(pii_names(pipeline.contract))
    rows = np.array([r.row for r in rejects], dtype=np.int64)
    numbers = table.column("source_record").take(pa.array(rows)).to_pylist()
    files = table.column("source_file").take(pa.array(rows)).to_pylist()
    offsets = where["source_offset"].take(pa.array(rows)).to_pylist()
    raws = where["source_raw"].take(pa.array(rows)).to_pylist()
    lines = []
    for i, r in enumerate(rejects):
        reject = Reject(int(numbers[i]), int(offsets[i] or 0), r.reason, r.field, None, None,
                        raws[i] or b"", pii=withheld)
        lines.append(json.dumps({"file": files[i], **reject.to_json()}, ensure_ascii=False, default=str))
    return side_rows(schema, len(rejects), source_record=pa.array(numbers, pa.int64()),
                     source_file=pa.array(files, pa.string()), **{REJECT_COLUMN: pa.array(lines, pa.string())})


@functools.lru_cache(maxsize=8)
def _contract(path: str) -> Any:
    from schemas.contract import load_contract

    return load_contract(path)


@functools.lru_cache(maxsize=8)
def _fallback_only(job: ScoringJob) -> Any:
    from gateway.assembly import build_pipeline
    from gateway.config import load_config

    contract = _contract(job.contract)
    return build_pipeline(contract.name, contract, load_config(job.config), model_name=None, force_fallback=True)


@functools.lru_cache(maxsize=8)
def _runtime(job: ScoringJob) -> tuple[asyncio.AbstractEventLoop, Any]:
    """This worker's event loop and pipeline for `job`, built on first use and kept: the
    model session (or HTTP client) and its breaker live as long as the worker."""
    from gateway.assembly import build_pipeline
    from gateway.config import load_config

    contract = _contract(job.contract)
    loop = asyncio.new_event_loop()
    model_name = (contract.config.model or {}).get("name")
    pipeline = build_pipeline(contract.name, contract, load_config(job.config), model_name=model_name,
                              force_fallback=job.force_fallback)
    return loop, pipeline
