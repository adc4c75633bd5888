"""Scored records and rejects as messages, for the message sinks (Kafka, AMQP) when the
scorer has not rendered them already: a batch source (a drop-folder file, a table page)
scored to a topic or an exchange.

A result is the record as JSON (its fields, outputs and provenance: one object) or, in
fixed format, the record's own input bytes with the outputs appended, exactly as a
fixed-width output file holds it. It carries the provenance headers a real-time result
carries, and `lgw-id` = "<pipeline>/<record number>", stable when a batch is written
again after a crash. A reject of a batch source has no message bytes of its own: the
message is the reject's JSON line, as in a rejects file, with the dead-letter headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from adapters.base import ScoredBatch, SourceBatch, message_columns
from adapters.files.writers import FixedWriter
from adapters.headers import (
    H_ID,
    H_MODEL,
    H_MODEL_VERSION,
    H_RULE,
    H_SCORED_BY,
    Headers,
    by_record,
    contract_headers,
    dead_letter_headers,
    with_trace,
)
from schemas.errors import ConfigError
from schemas.jsonl import lines
from schemas.stream import Reject

RecordFormat = Literal["json", "fixed"]
Message = tuple[bytes | None, bytes, Headers]  # key, value, headers
_PROVENANCE = ("scored_by", "model_name", "model_version", "rule_id")
_INTERNAL = ("source_record",)  # the scoring input's own bookkeeping, not part of the record


def default_format(configured: RecordFormat | None, source: Any) -> RecordFormat:
    """A message sink's format: its own, else the real-time source's `result_format`, else
    fixed for copybook payloads and JSON for the rest (what the scorer renders too)."""
    if configured is not None:
        return configured
    fmt = getattr(source, "result_format", None)
    if fmt == "json" or fmt == "fixed":
        return "json" if fmt == "json" else "fixed"
    return "fixed" if getattr(source, "payload", None) == "copybook" else "json"


class MessageRenderer:
    """Build once per sink from its config and the pipeline's contract."""

    def __init__(self, fmt: RecordFormat, *, pipeline: str, contract: Any, key: str | None = None,
                 fixed_columns: dict[str, int] | None = None) -> None:
        self.fmt = fmt
        self.pipeline = pipeline
        self.key = key
        self.contract_headers = contract_headers(contract.name, contract.version)
        self._fixed: FixedWriter | None = None
        if fmt == "fixed":
            if fixed_columns is None:
                raise ConfigError("fixed-format messages append the outputs to the input record: the sink needs "
                                  "the output columns' widths (BuildContext.extras['fixed_columns'])")
            self._fixed = FixedWriter(None, contract.spec.page, fixed_columns)

    # ------------------------------------------------------------------ results
    def keys(self, batch: ScoredBatch) -> list[bytes | None]:
        """Field `key` of each record when the sink names one, else its input message's
        key, else none."""
        n = batch.table.num_rows
        if self.key is not None:
            if self.key not in batch.table.column_names:
                raise ConfigError(f"message key field {self.key!r} is not a column of the results")
            return [None if v is None else str(v).encode() for v in batch.table.column(self.key).to_pylist()]
        if batch.source.messages is not None:
            keys = message_columns(batch.source.messages)[2]
            return [keys[i] for i in batch.rows.tolist()]
        return [None] * n

    def results(self, batch: ScoredBatch) -> list[Message]:
        """Each scored record as a message: what the scorer rendered, or rendered here."""
        keys = self.keys(batch)
        if batch.rendered is not None:
            return [(k, value, headers) for k, (value, headers) in zip(keys, batch.rendered, strict=True)]
        return list(zip(keys, self.values(batch), self.headers(batch), strict=True))

    def values(self, batch: ScoredBatch) -> list[bytes]:
        table = batch.table.drop_columns([c for c in _INTERNAL if c in batch.table.column_names])
        if self._fixed is None:
            return [s.encode() for s in lines(table).to_pylist()]
        raw = batch.raw
        if raw is None:
            raise ConfigError("fixed-format messages need the input records' bytes (a fixed-width source)")
        matrix = self._fixed.rows(table, raw)
        blob, step = matrix.tobytes(), matrix.shape[1]
        return [blob[i * step:(i + 1) * step] for i in range(table.num_rows)]

    def record_numbers(self, batch: ScoredBatch) -> list[int]:
        numbers = batch.source.record_numbers
        if numbers is not None:
            return [int(x) for x in np.asarray(numbers)[batch.rows].tolist()]
        if "source_record" in batch.table.column_names:
            return [int(x) for x in batch.table.column("source_record").to_pylist()]
        return (np.asarray(batch.rows) + 1).tolist()

    def headers(self, batch: ScoredBatch) -> list[Headers]:
        """Provenance headers (made once per kind: most records share one) and lgw-id."""
        table = batch.table
        columns = [table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
                   for c in _PROVENANCE]
        tails: dict[tuple[Any, ...], Headers] = {}
        out: list[Headers] = []
        trace = batch.source.trace(0) if batch.source.trace is not None else []  # a batch run's records share it
        for number, kind in zip(self.record_numbers(batch), zip(*columns, strict=True), strict=True):
            tail = tails.get(kind)
            if tail is None:
                tail = tails[kind] = [*self._provenance(*kind), *trace]
            out.append([(H_ID, f"{self.pipeline}/{number}".encode()), *tail])
        return out

    def _provenance(self, scored_by: str | None, model_name: str | None, model_version: str | None,
                    rule_id: str | None) -> Headers:
        headers: Headers = [(H_SCORED_BY, (scored_by or "").encode())]
        if model_version is not None:
            headers += [(H_MODEL, (model_name or "").encode()), (H_MODEL_VERSION, model_version.encode())]
        if rule_id is not None:
            headers.append((H_RULE, rule_id.encode()))
        return headers + self.contract_headers

    # ------------------------------------------------------------------ dead letters
    def dead_letters(self, rejects: Sequence[Reject], source: SourceBatch) -> list[Message]:
        """A message source's dead letter is the original message (bytes, key, headers)
        with every reason in headers; a batch source's is the reject's JSON line."""
        if source.messages is not None:
            out: list[Message] = []
            for record, reasons in by_record(rejects).items():
                m = source.messages[record - 1]
                own = m.headers if source.trace is None else with_trace(m.headers, source.trace(record - 1))
                out.append((m.key, m.value, [*own, *dead_letter_headers(reasons, m.id), *self.contract_headers]))
            return out
        trace = source.trace(0) if source.trace is not None else []  # a batch's records share its trace
        return [(None, json.dumps(r.to_json(), ensure_ascii=False).encode(),
                 [*dead_letter_headers([r], f"{self.pipeline}/{r.record}"), *self.contract_headers, *trace])
                for r in rejects]

