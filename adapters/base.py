"""The small interface every source and sink implements (files, ODBC, Kafka, AMQP).

    source ──SourceBatch──▶ pipeline ──ScoredBatch──▶ sink          (scored records)
                                 └──────rejects──────▶ reject sink   (rejects / dead letters)

The acknowledgement travels with the batch (as in Redpanda Connect): a source hands out
a `SourceBatch` holding its records and an `ack`; a driver calls `ack()` only after the
sink's write and the reject sink's write are durable, and `nack(reason)` when it gives
up on the batch. What an ack means is the source's business: a file records the
checkpoint, Kafka commits offsets, AMQP sends basic.ack, an ODBC source advances its
watermark. A source never decides on its own that something was delivered.

A sink turns a scored batch into what its system takes (`prepare`: rendered bytes, rows,
messages; pure CPU, so a record that cannot be rendered is found by the driver's poison
isolation like one that crashes the model), then `write`s what was prepared durably:
it returns only once the data survives a crash (fsync, commit, broker ack). `state()` is
what a checkpoint keeps to resume the sink after a crash, and a batch run ends with
`finish()` then `publish()` (a file is renamed into place) or `discard()`.
Two optional class attributes tell a driver what a sink is: `publishes_at_end` (a file,
visible only once published: a source whose acks cannot wait for a resumable checkpoint
acks after the publish) and `publishes_messages` (a topic or queue, which takes the
payloads a real-time scorer already rendered).

Adapters move data and nothing else: no model, no rules, no contract validation beyond
decoding. Each one is a module implementing one of these protocols with one config
class, registered in `adapters.registry`; the drivers (`gateway.drivers`) know only
these protocols.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from schemas.stream import Reject


async def _nothing(*_args: Any) -> None:
    return None


@dataclass(slots=True)
class InMessage:
    """One message of a real-time source, as it came: what a sink needs to answer it
    (the key to publish results under, the requester's reply queue and correlation id)."""

    value: bytes
    id: str  # stable across redeliveries: topic/partition/offset, or the message id
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    reply_to: str | None = None
    correlation_id: str | None = None


class Messages(Sequence[InMessage]):
    """A real-time batch's messages kept as the transport delivered them, with the columns
    the hot path reads (payloads, ids, keys) as plain lists: an `InMessage` is made only for
    a message that is asked for (a dead letter, a reply), not for each of 500 records."""

    values: list[bytes]
    ids: list[str]
    keys: list[bytes | None]

    def header_lists(self) -> Sequence[Sequence[tuple[str, bytes]]]:
        """Each message's headers as the transport holds them (tracing reads its context
        from them without making an `InMessage` per message)."""
        return [m.headers for m in self]

    def trace_attributes(self) -> dict[str, str | int]:
        """OpenTelemetry messaging attributes of the batch (system, destination, offsets):
        where the messages came from, never what they hold."""
        return {}


def message_columns(messages: Sequence[InMessage]) -> tuple[list[bytes], list[str], list[bytes | None]]:
    """Payloads, ids and keys of a batch's messages, whichever sequence holds them."""
    if isinstance(messages, Messages):
        return messages.values, messages.ids, messages.keys
    return [m.value for m in messages], [m.id for m in messages], [m.key for m in messages]


@dataclass
class SourceBatch:
    """One batch of decoded records from a source, with how to acknowledge it.

    `table` holds the records that decoded and validated; `rejects` the ones that did not
    (with field, offsets, raw bytes, reason); `raw` the records' own bytes where the
    source has them (fixed-width output copies them); `position` is the source's resume
    token after this batch (file offset, Kafka offsets, watermark), opaque to the driver
    but stored in the checkpoint. A real-time source leaves `table` to the driver (the
    payloads are decoded per micro-batch by the contract's message codec) and fills
    `messages`.
    """

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    raw: np.ndarray | None = None
    record_numbers: np.ndarray | None = None
    position: dict[str, Any] = field(default_factory=dict)
    ack: Callable[[], Awaitable[None]] = _nothing
    nack: Callable[[str], Awaitable[None]] = _nothing
    messages: Sequence[InMessage] | None = None
    # with tracing on: the trace headers (traceparent, tracestate) an output of message i
    # carries (gateway.tracing); a reject sink puts them on that message's dead letter
    trace: Callable[[int], list[tuple[str, bytes]]] | None = None

    @property
    def records_in(self) -> int:
        if self.messages is not None:
            return len(self.messages)
        return self.table.num_rows + len({r.record for r in self.rejects})


@dataclass
class ScoredBatch:
    """What the pipeline made of (part of) one source batch, for a sink.

    `table`: the scored records (input fields, outputs, provenance), in input order;
    `rows`: for each, its row in `source.table` (or its message in `source.messages`),
    which gives its input bytes, record number, key or reply address. `rendered`: message
    payloads and headers a real-time scorer already made (one per scored record, same
    order), which message sinks publish as they are."""

    table: pa.Table
    rows: np.ndarray
    source: SourceBatch
    rendered: Sequence[tuple[bytes, list[tuple[str, bytes]]]] | None = None
    # the pipeline's pii policy on record bytes (gateway.governance.pii): what `raw` gives
    redact: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def raw(self) -> np.ndarray | None:
        """The scored records' own input bytes (fixed-width output appends to them), with
        their pii fields as the pipeline's policy leaves them."""
        if self.source.raw is None:
            return None
        raw = self.source.raw[self.rows]
        return self.redact(raw) if self.redact is not None else raw


@runtime_checkable
class Source(Protocol):
    async def connect(self) -> None:
        """Open (again, after a lost connection: the driver retries with backoff)."""

    async def read_batch(self) -> SourceBatch | None:
        """The next batch, or None when the source is exhausted (batch) or idle."""

    async def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Where scored records go: a file, a table, a topic, an exchange, a reply queue."""

    async def open(self, state: dict[str, Any] | None = None) -> None:
        """Connect; with `state` (a checkpoint's `state()`), carry on from there."""

    def prepare(self, batch: ScoredBatch) -> Any:
        """The batch as this sink writes it (bytes, rows, messages); may raise for a record
        that cannot be written, which the driver then isolates and rejects."""

    async def write(self, prepared: Sequence[Any]) -> None:
        """Writes what `prepare` made, durably, before returning."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume this sink after a crash."""

    async def finish(self) -> dict[str, Any]:
        """End of a batch run: completes what was written; says what (for the manifest)."""

    async def publish(self) -> None:
        """After `finish` and the run's checkpoint: makes the output visible (idempotent)."""

    async def discard(self) -> None:
        """The run failed: removes what is not yet visible (what was sent stays sent)."""

    async def close(self) -> None: ...


@runtime_checkable
class RejectSink(Protocol):
    """Where rejects and dead letters go: a file, a table, a topic, an exchange. Same life
    as a `Sink`; it takes the rejects of a batch with the batch they came from (a dead
    letter carries the original message's bytes, key and headers)."""

    async def open(self, state: dict[str, Any] | None = None) -> None: ...

    async def write(self, rejects: Sequence[Reject], source: SourceBatch) -> None: ...

    def state(self) -> dict[str, Any]: ...

    async def finish(self) -> dict[str, Any]: ...

    async def publish(self) -> None: ...

    async def discard(self) -> None: ...

    async def close(self) -> None: ...
