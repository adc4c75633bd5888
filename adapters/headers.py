"""The lgw-* headers every message sink writes, in one place for Kafka and AMQP (and for
the real-time scorer, which renders them once per micro-batch).

A result says who scored it and against which contract; a dead letter says what was
wrong, where, and which input it was. Dead-letter headers are rendered from the same
`schemas.stream.Reject` a file's rejects are written from, so a record refused by a
drop-folder run and a message refused on a topic tell the same story.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.stream import PII_WITHHELD, Reject, quoted_raw

Headers = list[tuple[str, bytes]]

# headers every result carries: who scored it and against which contract
H_ID = "lgw-id"
H_SCORED_BY = "lgw-scored-by"
H_MODEL = "lgw-model"
H_MODEL_VERSION = "lgw-model-version"
H_RULE = "lgw-rule-id"
H_CONTRACT = "lgw-contract"
H_CONTRACT_VERSION = "lgw-contract-version"
# headers of a dead letter: what was wrong, where, and where the message came from
H_ERROR = "lgw-error"
H_FIELD = "lgw-field"
H_REASON = "lgw-reason"
H_OFFSET = "lgw-field-offset"
H_RAW = "lgw-field-raw"  # hex of at most RAW_QUOTE_BYTES, as in file rejects
H_RAW_LENGTH = "lgw-field-raw-length"  # only when lgw-field-raw was cut: the field's full byte count
H_SOURCE = "lgw-source"

# W3C trace context (gateway.tracing reads and writes them; adapters only carry them)
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})

REASON_LIMIT = 2000  # a header, not a document: brokers cap a message's headers


def contract_headers(name: str, version: int | str) -> Headers:
    return [(H_CONTRACT, name.encode()), (H_CONTRACT_VERSION, str(version).encode())]


def shown_reason(r: Reject) -> str:
    """A reason without the offending value when the field is pii (the contract says its
    values are never written in clear outside the gateway)."""
    if r.pii and r.field and not r.reason.endswith(PII_WITHHELD):  # validation withholds it already
        return r.reason.split(": ", 1)[0] + f" {PII_WITHHELD}"
    return r.reason


def kind_of(r: Reject) -> str:
    """lgw-error: the real-time scorer says it; a file's reject is a decode error when it
    points at bytes (a field's, or a record the framing could not cut), else the pipeline
    refused a decoded record (validation)."""
    if r.kind:
        return r.kind
    return "decode" if r.field_offset is not None or r.field is None else "validation"


def dead_letter_headers(reasons: Sequence[Reject], source_id: str) -> Headers:
    """The headers of one dead letter: every reason its record was refused (the first
    one names the error kind, field and bytes)."""
    first = reasons[0]
    reason = "; ".join(f"{r.field}: {shown_reason(r)}" if r.field else r.reason for r in reasons)
    headers: Headers = [(H_ERROR, kind_of(first).encode()), (H_REASON, reason[:REASON_LIMIT].encode()),
                        (H_SOURCE, source_id.encode())]
    if first.field:
        headers.append((H_FIELD, first.field.encode()))
    if first.field_offset is not None:
        headers.append((H_OFFSET, str(first.field_offset).encode()))
        if not first.pii:
            quoted = quoted_raw(first.raw, first.raw_length)  # a 16 MB field must not make a 32 MB header
            headers.append((H_RAW, quoted["raw"].encode()))
            if quoted.get("raw_truncated"):
                headers.append((H_RAW_LENGTH, str(quoted["raw_length"]).encode()))
    return headers


def with_trace(headers: Sequence[tuple[str, bytes]], trace: Headers) -> Headers:
    """`headers` with their trace context replaced by `trace` (a dead letter is its input
    message with headers added: it carries the gateway's trace, not its input's twice)."""
    if not trace:
        return list(headers)
    return [*(h for h in headers if h[0] not in TRACE_HEADERS), *trace]


def by_record(rejects: Sequence[Reject]) -> dict[int, list[Reject]]:
    """Every reason a record is refused, by record number, in record order."""
    out: dict[int, list[Reject]] = {}
    for r in rejects:
        out.setdefault(r.record, []).append(r)
    return dict(sorted(out.items()))
