"""A reviewer's decision, published as a correction record through the pipeline's sink.

A correction is the reviewed record as the queue holds it (its data, pii masked when it
was queued, and its provenance) with:

    review          "approved" | "overridden"
    <score>         the final score: the original on approve, the override value on override
    original_score  the score the pipeline gave
    corrects        "review"
    review_id       the queue item; record_id: the output it corrects (its lgw-id)
    reviewer        the authenticated identity that decided
    review_reason   why (named apart from `reason`, the provenance's rule reason code)
    decided_at      when (UTC, ISO 8601)

Where it goes follows the pipeline's sink (gateway.yaml): a file sink gets a new file in
its folder, `<stem>.review-corrections-<UTC timestamp>.jsonl` (created exclusively under
a temporary name and renamed into place, like every output), stem the run's name; a
Kafka topic, an AMQP exchange or an ODBC table get the record through the sink itself
(built from the registry as a run builds it), as JSON, with the result headers plus
`lgw-corrects: review`, `lgw-review` and `lgw-corrects-id` (the lgw-id it corrects); its
own `lgw-id` is "<pipeline>/review/<item id>", so a consumer that drops repeated ids
does not drop the correction. An ODBC table is upserted by its key: the correction
replaces the row (its columns must be in the table, or `columns:` restrict them).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from adapters.base import ScoredBatch, SourceBatch
from adapters.headers import H_ID, H_MODEL, H_MODEL_VERSION, H_RULE, H_SCORED_BY, Headers, contract_headers
from gateway.governance.review import ReviewError
from gateway.governance.review_queue import ReviewDecision, ReviewItem

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.state import StateStore

H_CORRECTS = "lgw-corrects"
H_REVIEW = "lgw-review"
H_CORRECTS_ID = "lgw-corrects-id"
CORRECTS_REVIEW = "review"
_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def correction_fields(decision: ReviewDecision) -> dict[str, Any]:
    """What a correction adds to the reviewed record's data."""
    item = decision.item
    return {**item.provenance, (item.score_name or "score"): decision.final_score, "review": decision.status,
            "original_score": item.score, "corrects": CORRECTS_REVIEW, "review_id": item.id,
            "record_id": item.record_id, "source_record": item.source_record, "reviewer": decision.actor,
            "review_reason": decision.reason, "decided_at": decision.decided_at.isoformat()}


def correction_line(decision: ReviewDecision) -> bytes:
    """The correction as one JSON object: the stored data text as it is (decimals keep
    their digits), then the correction's fields."""
    data = decision.item.data_text.strip()
    extra = json.dumps(correction_fields(decision), ensure_ascii=False, allow_nan=False)
    if not (data.startswith("{") and data.endswith("}")):
        raise ReviewError(f"review item {decision.item.id}: its stored record is not a JSON object")
    body = extra if data == "{}" else data[:-1] + "," + extra[1:]
    return body.encode("utf-8")


def correction_headers(pipeline: str, decision: ReviewDecision) -> Headers:
    item, prov = decision.item, decision.item.provenance
    headers: Headers = [(H_ID, f"{pipeline}/review/{item.id}".encode()),
                        (H_SCORED_BY, str(prov.get("scored_by") or "").encode())]
    if prov.get("model_version") is not None:
        headers += [(H_MODEL, str(prov.get("model_name") or "").encode()),
                    (H_MODEL_VERSION, str(prov["model_version"]).encode())]
    if prov.get("rule_id") is not None:
        headers.append((H_RULE, str(prov["rule_id"]).encode()))
    if prov.get("contract") is not None:
        headers += contract_headers(str(prov["contract"]), prov.get("contract_version") or "")
    headers += [(H_CORRECTS, CORRECTS_REVIEW.encode()), (H_REVIEW, decision.status.encode()),
                (H_CORRECTS_ID, corrected_id(item).encode())]
    return headers


def corrected_id(item: ReviewItem) -> str:
    """The lgw-id of the output a correction corrects: a stream's record is named by its
    message id already; a batch run's (`RUN:RECORD`, as the audit trail names it) left as
    `<pipeline>/<record>`."""
    run, sep, number = item.record_id.rpartition(":")
    if sep and number.isdigit() and run.startswith(f"{item.pipeline}."):
        return f"{item.pipeline}/{number}"
    return item.record_id


def corrections_file_name(decisions: Sequence[ReviewDecision], now: datetime | None = None) -> str:
    """`<stem>.review-corrections-<UTC timestamp>.jsonl`; stem: the items' run (the name
    its output was written under), else the pipeline's."""
    runs = {d.item.run for d in decisions}
    stem = runs.pop() if len(runs) == 1 and "" not in runs else decisions[0].item.pipeline
    stem = _STEM.sub("_", stem).strip("._") or "review"
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stem}.review-corrections-{stamp}.jsonl"


async def publish_corrections(cfg: GatewayConfig, pipeline: str, decisions: Sequence[ReviewDecision], *,
                              state: StateStore | None = None) -> dict[str, Any]:
    """Publishes the decisions of one pipeline through its sink; returns what was written
    (`path` for a file, else the sink's own account: `topic`, `target`, ...)."""
    from adapters.files.config import FileSinkConfig

    if not decisions:
        return {"records": 0}
    if any(d.item.pipeline != pipeline for d in decisions):
        raise ReviewError(f"corrections of pipeline {pipeline} hold items of another pipeline")
    pipe = cfg.pipelines.get(pipeline)
    if pipe is None:
        raise ReviewError(f"no pipeline {pipeline!r} in the config (pipelines: {', '.join(cfg.pipelines) or 'none'})"
                          ": the correction has no sink to go to; pass the --config that runs it")
    try:
        out = pipe.output
    except ValueError as exc:
        raise ReviewError(f"pipeline {pipeline}: {exc}: the correction has no sink to go to") from None
    if isinstance(out, FileSinkConfig):
        folder = cfg.resolve(out.folder)
        return await asyncio.to_thread(_write_file, folder, decisions)
    return await _through_sink(cfg, pipeline, decisions, state)


def _write_file(folder: Path, decisions: Sequence[ReviewDecision]) -> dict[str, Any]:
    from adapters.files.sink import OutboxSink

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / corrections_file_name(decisions)
    sink = OutboxSink(final, "jsonl")
    sink.start()  # a new hidden file, created exclusively, never through a link
    try:
        sink.write_rendered([b"".join(correction_line(d) + b"\n" for d in decisions)], len(decisions))
        done = sink.complete()
        sink.publish_file()
    except BaseException:
        sink.discard_file()
        raise
    return {**done, "path": str(final)}


async def _through_sink(cfg: GatewayConfig, pipeline: str, decisions: Sequence[ReviewDecision],
                        state: StateStore | None) -> dict[str, Any]:
    from adapters import registry
    from adapters.registry import BuildContext
    from gateway.contract_scoring import load_scoring_contract
    from gateway.pipeline import Pipeline, fixed_columns

    pipe = cfg.pipelines[pipeline]
    out = pipe.output
    assert pipe.source is not None  # a pipeline without one has no `output` (refused above)
    contract = load_scoring_contract(cfg.resolve(pipe.contract))
    context = BuildContext(pipeline=pipeline, contract=contract, base_dir=cfg.base_dir, source=pipe.source,
                           batch_size=pipe.batch_size, kafka=cfg.kafka, amqp=cfg.amqp, state=state,
                           run_name=f"{pipeline}.review",
                           extras={"fixed_columns": fixed_columns(Pipeline(contract, name=pipeline))})
    values = [correction_line(d) for d in decisions]
    table = _as_table(values)
    rendered = [(v, correction_headers(pipeline, d)) for v, d in zip(values, decisions, strict=True)]
    batch = ScoredBatch(table, np.arange(len(values)), SourceBatch(pa.table({})), rendered=rendered)
    sink: Any = registry.component("sink", out.type).build(out, context)
    try:
        await sink.open()
        try:
            prepared = sink.prepare(batch)
        except ValueError as exc:  # an AMQP reply sink: nobody asked for this record
            raise ReviewError(f"pipeline {pipeline}: its {out.type} sink cannot take a correction: {exc}") from None
        await sink.write([prepared])
        done: dict[str, Any] = await sink.finish()
        await sink.publish()
    finally:
        await sink.close()
    return done


def _as_table(values: Sequence[bytes]) -> pa.Table:
    """The corrections as a table (an ODBC sink upserts its columns; a message sink reads
    its key field); a column that is null in every correction is text."""
    table = pajson.read_json(io.BytesIO(b"\n".join(values) + b"\n"))
    for i, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            table = table.set_column(i, field.name, pa.nulls(table.num_rows, pa.string()))
    return table


__all__ = ["CORRECTS_REVIEW", "H_CORRECTS", "H_CORRECTS_ID", "H_REVIEW", "correction_fields", "correction_headers",
           "correction_line", "corrections_file_name", "publish_corrections"]
