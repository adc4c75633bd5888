"""The small interface every source and sink adapter implements (files, ODBC, Kafka, AMQP).

The acknowledgement travels with the batch (as in Redpanda Connect): a source hands out
a `SourceBatch` holding its records and an `ack`; the driver calls `ack()` only after
the sink's write and the rejects/DLQ writes are durable, and `nack(reason)` when it
gives up on the batch. What an ack means is the source's business: a file records the
checkpoint and finally moves to done/, Kafka commits offsets, AMQP sends basic.ack, an
ODBC source advances its watermark. A source never decides on its own that something was
delivered. Adapters move data and nothing else: no model, no rules, no contract
validation beyond decoding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from schemas.stream import Reject


async def _nothing(*_args: Any) -> None:
    return None


@dataclass
class SourceBatch:
    """One batch of decoded records from a source, with how to acknowledge it.

    `table` holds the records that decoded and validated; `rejects` the ones that did not
    (with field, offsets, raw bytes, reason); `raw` the records' own bytes where the
    source has them (fixed-width output copies them); `position` is the source's resume
    token after this batch (file offset, Kafka offsets, watermark), opaque to the driver
    but stored in the checkpoint.
    """

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    raw: np.ndarray | None = None
    record_numbers: np.ndarray | None = None
    position: dict[str, Any] = field(default_factory=dict)
    ack: Callable[[], Awaitable[None]] = _nothing
    nack: Callable[[str], Awaitable[None]] = _nothing

    @property
    def records_in(self) -> int:
        return self.table.num_rows + len({r.record for r in self.rejects})


@runtime_checkable
class Source(Protocol):
    async def connect(self) -> None:
        """Open (again, after a lost connection: the driver retries with backoff)."""

    async def read_batch(self) -> SourceBatch | None:
        """The next batch, or None when the source is exhausted (batch) or idle."""

    async def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    async def connect(self) -> None: ...

    async def write_batch(self, table: pa.Table, raw: np.ndarray | None = None) -> None:
        """Writes durably before returning (fsync, commit, broker ack)."""

    async def close(self) -> None: ...
