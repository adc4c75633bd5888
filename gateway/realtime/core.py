"""One micro-batch of real-time messages through the pipeline, whatever carried them.

decode + validate (schemas.messages) -> score (the shared Pipeline) -> result payloads
with provenance headers, and dead letters for the data errors. The transports (Kafka,
AMQP) only move the bytes and acknowledge; they call `MicroBatchScorer.process` and act
on the `Outcome`: publish results and dead letters, then commit. Infrastructure trouble
(the model, the broker) never becomes a dead letter: the pipeline's policy applies to a
model that is away, and a failed publish is retried by the transport. A message that
makes the pipeline raise is found as in batch mode (`gateway.isolation`) and dead-lettered
with the reason (lgw-error `crash`), so its batch is not redelivered forever.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.files.writers import FixedWriter
from adapters.headers import (  # the header names, also for the scorer's callers
    H_CONTRACT,
    H_CONTRACT_VERSION,
    H_ERROR,
    H_FIELD,
    H_ID,
    H_MODEL,
    H_MODEL_VERSION,
    H_OFFSET,
    H_RAW,
    H_RAW_LENGTH,
    H_REASON,
    H_RULE,
    H_SCORED_BY,
    H_SOURCE,
    contract_headers,
    dead_letter_headers,
)
from gateway import tracing
from gateway.isolation import NOT_THE_RECORDS, crash_reason, isolating, pii_names
from gateway.pipeline import Pipeline
from schemas.arrow_buffers import one_array, value_buffers
from schemas.errors import ConfigError
from schemas.jsonl import member_parts
from schemas.messages import MessageCodec, MessageReject, PayloadFormat, by_message
from schemas.stream import Reject

log = logging.getLogger("lgw.realtime")

__all__ = ["H_CONTRACT", "H_CONTRACT_VERSION", "H_ERROR", "H_FIELD", "H_ID", "H_MODEL", "H_MODEL_VERSION", "H_OFFSET",
           "H_RAW", "H_RAW_LENGTH", "H_REASON", "H_RULE", "H_SCORED_BY", "H_SOURCE", "NOT_THE_MESSAGES", "DeadLetter",
           "MicroBatchScorer", "Outcome", "RealtimeStats", "Result", "ResultFormat"]

ResultFormat = Literal["json", "fixed"]
Headers = list[tuple[str, bytes]]

# the provenance columns that differ between records (name and contract do not)
_VARYING = ("scored_by", "model_version", "rule_id", "reason")


# not the message's fault: the batch is retried (the transport rewinds or requeues it)
NOT_THE_MESSAGES = (*NOT_THE_RECORDS, OSError, TimeoutError)


@dataclass(slots=True)
class Result:
    index: int  # the input message it answers
    value: bytes
    headers: Headers


@dataclass(slots=True)
class DeadLetter:
    index: int  # the input message (its original bytes go to the dead-letter topic)
    reasons: list[MessageReject]
    headers: Headers
    # the same reasons in the one reject shape every reject sink takes (record = index + 1)
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class Outcome:
    results: list[Result] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    paused: bool = False  # policy pause (or kill switch): nothing scored, redeliver later
    scored_by: Counter[str] = field(default_factory=Counter)  # of the results
    # the scored records (input fields, outputs, provenance) and the message index of each,
    # in the order of `results`: what a table sink writes, decoded once
    table: pa.Table | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def rejects(self) -> list[Reject]:
        return [r for d in self.dead_letters for r in d.rejects]

    @property
    def handled(self) -> int:
        return len(self.results) + len(self.dead_letters)


@dataclass
class RealtimeStats:
    messages: int = 0
    results: int = 0
    dead_letters: int = 0
    paused_batches: int = 0
    scored_by: Counter[str] = field(default_factory=Counter)


_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _json_members(table: pa.Table) -> list[str | pa.Array]:
    """Each row as the members of a JSON object, without the braces: '"a":1,"b":"x"'."""
    return member_parts([(name, one_array(table.column(name))) for name in table.column_names])


def _compact_objects(raw: pa.Array) -> bool:
    """Does every text start with '{"' and end with '}'? (No blanks to trim, no empty object.)"""
    offsets, data = value_buffers(raw)
    starts, ends = offsets[:-1], offsets[1:]
    if not ((ends - starts) > 2).all():
        return False
    return bool((data[starts] == ord("{")).all() and (data[starts + 1] == ord('"')).all()
                and (data[ends - 1] == ord("}")).all())


def _merged(pieces: Sequence[Outcome]) -> Outcome:
    """The pieces a poison search split a micro-batch into, as one outcome in message order."""
    outcome = Outcome()
    tables: list[pa.Table] = []
    rows: list[np.ndarray] = []
    for p in pieces:
        outcome.results += p.results
        outcome.dead_letters += p.dead_letters
        outcome.scored_by.update(p.scored_by)
        if p.table is not None and p.table.num_rows:
            tables.append(p.table)
            rows.append(p.rows)
    if tables:
        outcome.table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
        outcome.rows = np.concatenate(rows)
    return outcome


def _is_crash(outcome: Outcome) -> bool:
    return any(r.kind == "crash" for d in outcome.dead_letters for r in d.reasons)


class MicroBatchScorer:
    """Build once per pipeline; `process` one micro-batch at a time."""

    def __init__(self, pipeline: Pipeline, payload: PayloadFormat, result_format: ResultFormat | None = None, *,
                 render: bool = True) -> None:
        self.pipeline = pipeline
        # False: the sink takes the scored table (a database), not message payloads, so
        # none are made (results then carry only their message index)
        self.render = render
        self.codec = MessageCodec(pipeline.contract, payload)
        self.payload = payload
        self.result_format: ResultFormat = result_format or ("fixed" if payload == "copybook" else "json")
        if self.result_format == "fixed" and payload != "copybook":
            raise ConfigError("fixed-width results append the scores to the input record: they need "
                              "payload copybook, found payload json")
        self._fixed: FixedWriter | None = None
        if self.result_format == "fixed":
            from gateway.pipeline import fixed_columns

            self._fixed = FixedWriter(None, pipeline.contract.spec.page, fixed_columns(pipeline))
        contract = pipeline.contract
        self._input_columns = list(self.codec.schema.names)
        self._pii = pii_names(pipeline.contract)
        self._contract_headers: Headers = contract_headers(contract.name, contract.version)
        self.stats = RealtimeStats()

    async def process(self, payloads: Sequence[bytes], ids: Sequence[str]) -> Outcome:
        """`ids`: a stable id per message (Kafka: topic-partition-offset), carried by its
        result so consumers can drop the duplicates an at-least-once redelivery makes.
        Raises only what is not the messages' fault (`NOT_THE_MESSAGES`)."""
        pieces = await isolating(lambda lo, hi: self._process(payloads, ids, lo, hi), 0, len(payloads),
                                 alone=lambda i, exc: self._crashed(i, payloads, ids, exc), is_alone=_is_crash,
                                 not_the_records=NOT_THE_MESSAGES, on_split=self._log_split)
        if any(p.paused for p in pieces):
            self.stats.paused_batches += 1
            return Outcome(paused=True)
        outcome = pieces[0] if len(pieces) == 1 else _merged(pieces)
        self.stats.messages += len(payloads)
        self.stats.results += len(outcome.results)
        self.stats.dead_letters += len(outcome.dead_letters)
        self.stats.scored_by.update(outcome.scored_by)
        if outcome.handled != len(payloads):  # in = out + rejects, or the batch is not acknowledged
            raise AssertionError(f"{len(payloads)} messages in, {len(outcome.results)} results and "
                                 f"{len(outcome.dead_letters)} dead letters out")
        return outcome

    async def _process(self, payloads: Sequence[bytes], ids: Sequence[str], lo: int, hi: int) -> Outcome:
        """Messages [lo, hi) of the micro-batch; indices in the outcome count from 0 of the whole."""
        part = payloads if (lo, hi) == (0, len(payloads)) else payloads[lo:hi]
        with tracing.span("lgw.decode") as span:
            decoded = self.codec.decode(part)
            if span.is_recording():
                span.set_attributes({"lgw.records": len(part), "lgw.rejected": len(by_message(decoded.rejects))})
        with tracing.span("lgw.score") as span:
            scored = await self.pipeline.score(decoded.table)
            if span.is_recording():
                tracing.describe_score(span, self.pipeline, decoded.table.num_rows, scored)
        if scored.paused:
            return Outcome(paused=True)
        rejects = [replace(r, index=lo + r.index) for r in decoded.rejects]
        for r in scored.rejects:  # the model refused the record, or its output broke the contract
            rejects.append(MessageReject(lo + int(decoded.index[r.row]), "validation", r.reason, r.field))
        index = lo + decoded.index[scored.rows] if len(scored.rows) else np.zeros(0, dtype=np.int64)
        texts = ([decoded.record_json[i] for i in scored.rows.tolist()]
                 if decoded.record_json is not None else None)
        return Outcome(results=self._results(scored.table, index, payloads, ids, texts),
                       dead_letters=self._dead_letters(rejects, ids), scored_by=Counter(scored.counts()),
                       table=scored.table, rows=np.asarray(index, dtype=np.int64))

    def _crashed(self, i: int, payloads: Sequence[bytes], ids: Sequence[str], exc: Exception) -> Outcome:
        try:
            record: pa.Table | None = self.codec.decode([payloads[i]]).table
        except Exception:  # the crash was in reading it: nothing to tell pii values by
            record = None
        reason = crash_reason(exc, self._pii, record)
        log.warning("%s: message %s isolated and dead-lettered: %s", self.pipeline.name, ids[i], reason)
        return Outcome(dead_letters=self._dead_letters([MessageReject(i, "crash", reason)], ids))

    def _log_split(self, lo: int, hi: int, exc: Exception) -> None:
        # the error's type only: its message may quote a value of any of these messages
        log.warning("%s: %d messages made the pipeline raise (%s); splitting them to find the message",
                    self.pipeline.name, hi - lo, type(exc).__name__)

    def retry_after_s(self) -> float:
        """How long a transport holds back after a paused batch: until the model's breaker
        would let a call through (at least 0.1 s), or a second when it is not open."""
        model = self.pipeline.model
        if model is not None:
            snap = model.breaker.snapshot()
            if snap["state"] == "open":
                return max(0.1, float(snap.get("retry_after_s") or 0.0))
        return 1.0

    # ------------------------------------------------------------------ results
    def _results(self, table: pa.Table, index: np.ndarray, payloads: Sequence[bytes], ids: Sequence[str],
                 record_json: list[bytes] | None) -> list[Result]:
        n = table.num_rows
        if n == 0:
            return []
        rows = index.tolist()
        if not self.render:
            return [Result(r, b"", []) for r in rows]
        id_list = [ids[i] for i in rows]
        provenance = list(zip(*(table.column(c).to_pylist() for c in _VARYING), strict=True))
        if self._fixed is not None:
            values = self._fixed_values(table, rows, payloads)
        else:
            values = self._json_values(table, id_list, provenance, record_json)
        out: list[Result] = []
        tails: dict[tuple[Any, ...], Headers] = {}
        for i in range(n):
            key = provenance[i]
            tail = tails.get(key)
            if tail is None:
                tail = tails[key] = self._provenance_headers(*key)
            out.append(Result(rows[i], values[i], [(H_ID, id_list[i].encode()), *tail]))
        return out

    def _provenance_headers(self, scored_by: str, model_version: str | None, rule_id: str | None,
                            _reason: str | None) -> Headers:
        headers: Headers = [(H_SCORED_BY, scored_by.encode())]
        if model_version is not None:
            headers += [(H_MODEL, self.pipeline.model_name.encode()), (H_MODEL_VERSION, model_version.encode())]
        if rule_id is not None:
            headers.append((H_RULE, rule_id.encode()))
        return headers + self._contract_headers

    def _fixed_values(self, table: pa.Table, rows: list[int], payloads: Sequence[bytes]) -> list[bytes]:
        """The input record's bytes with the scored fields appended, in its code page."""
        assert self._fixed is not None
        width = self.codec.record_length
        pad = bytes([self.pipeline.contract.spec.page.space]) * width
        raw = np.frombuffer(b"".join((payloads[i] + pad)[:width] for i in rows), dtype=np.uint8)
        matrix = self._fixed.rows(table, self.pipeline.pii.redact_raw(raw.reshape(len(rows), width)))
        blob, step = matrix.tobytes(), matrix.shape[1]
        return [blob[i * step:(i + 1) * step] for i in range(len(rows))]

    def _json_values(self, table: pa.Table, id_list: list[str], provenance: list[tuple[Any, ...]],
                     record_json: list[bytes] | None) -> list[bytes]:
        """{"id", the outputs, the provenance, the input fields} per record, joined
        column-wise. The input fields are copied from the record's JSON text when the
        codec has it (JSON payloads), not encoded again."""
        n = len(id_list)
        ids = pa.array(id_list, pa.string())
        if pc.any(pc.match_substring_regex(ids, _NEEDS_ESCAPE)).as_py():
            ids = pa.array([json.dumps(i)[1:-1] for i in id_list], pa.string())
        review = [",", *_json_members(table.select(["review"]))] if "review" in table.column_names else []
        parts: list[Any] = ['{"id":"', ids, '",', *_json_members(table.select(list(self.pipeline.outputs))),
                            ",", self._provenance_members(table, provenance), *review,
                            *self._input_members(table, record_json), "}", ""]
        joined = pc.binary_join_element_wise(*parts)
        values: list[bytes] = pc.cast(joined, pa.binary()).to_pylist()
        assert len(values) == n
        return values

    def _provenance_members(self, table: pa.Table, provenance: list[tuple[Any, ...]]) -> pa.Array:
        """Most records share one provenance: its JSON is made once per kind and taken."""
        kinds: dict[tuple[Any, ...], int] = {}
        codes = [kinds.setdefault(key, len(kinds)) for key in provenance]
        fragments = pa.array([self._provenance_json(*key).decode() for key in kinds], pa.string())
        return fragments.take(pa.array(codes, pa.int32()))

    def _input_members(self, table: pa.Table, record_json: list[bytes] | None) -> list[str | pa.Array]:
        """',' + the input record's members, as join parts; none when it has none."""
        columns = [c for c in self._input_columns if c in table.column_names]  # a dropped pii field is not
        if not columns:
            return []
        if record_json is None or self.pipeline.pii.active:  # the text holds pii fields as they came
            return [",", *_json_members(table.select(columns))]
        raw = pa.array(record_json, pa.binary())
        if _compact_objects(raw):  # '{"...}': the members are the bytes between the braces
            return [",", pc.binary_slice(raw, 1, -1).cast(pa.string())]
        body = pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(raw.cast(pa.string())), 1, -1)
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(body)), 0)
        return [pc.if_else(empty, "", pc.binary_join_element_wise(",", body, ""))]

    def _provenance_json(self, scored_by: str, model_version: str | None, rule_id: str | None,
                         reason: str | None) -> bytes:
        c = self.pipeline.contract
        doc = {"scored_by": scored_by,
               "model_name": self.pipeline.model_name if model_version is not None else None,
               "model_version": model_version, "contract": c.name, "contract_version": c.version,
               "rule_id": rule_id, "reason": reason}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))[1:-1].encode()

    # ------------------------------------------------------------------ dead letters
    def _dead_letters(self, rejects: list[MessageReject], ids: Sequence[str]) -> list[DeadLetter]:
        grouped = by_message(rejects)
        out: list[DeadLetter] = []
        for i in sorted(grouped):
            reasons = grouped[i]
            shaped = [self._reject(r) for r in reasons]
            out.append(DeadLetter(i, reasons, dead_letter_headers(shaped, ids[i]) + self._contract_headers, shaped))
        return out

    def _reject(self, r: MessageReject) -> Reject:
        """A message's reason as the one reject shape (its record number counts from 1)."""
        return Reject(r.index + 1, 0, r.reason, r.field, r.field_offset, r.length, r.raw, r.raw_length,
                      pii=r.field is not None and r.field in self._pii, kind=r.kind)
