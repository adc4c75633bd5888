"""A file that does not look like its layout is stopped early instead of filling the disk
with rejects: once `after_records` records were read, a reject rate above `max_rate`
ends the read with one line naming the commonest reasons (the chunk that shows it is
not handed on, so its rejects are never written).

The rate is judged on exactly the first `after_records` records (a read from the top
takes them as its first chunk), then again over every record read so far at the end of
each chunk (a resumed read counts from where it resumed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from schemas.errors import InputFormatError
from schemas.stream import DecodedChunk, Reject

_SHOWN_REASONS = 3


@dataclass(frozen=True)
class RejectLimit:
    max_rate: float = 0.5  # share of rejected records beyond which the read stops; 1 never stops
    after_records: int = 1000  # judged once this many records were read

    def __post_init__(self) -> None:
        if not 0 <= self.max_rate <= 1:
            raise InputFormatError(f"the reject rate limit must be between 0 and 1, found {self.max_rate}")
        if self.after_records < 1:
            raise InputFormatError(f"the reject rate is judged after at least 1 record, found {self.after_records}")

    def first_chunk(self) -> int | None:
        """How many records a read from the top takes first: the verdict on a wrong file
        comes after decoding `after_records` records, not a whole chunk."""
        return self.after_records if self.max_rate < 1 else None


DEFAULT_REJECT_LIMIT = RejectLimit()


def _kind(r: Reject) -> str:
    """The reason without the offending value (`...: 'ABC'`): it may be a pii field's."""
    head = r.reason.split(": ", 1)[0]
    return f"{r.field}: {head}" if r.field else head


def _chunk_records(dc: DecodedChunk) -> np.ndarray:
    """1-based numbers of every record of the chunk in file order, framing rejects included."""
    rows = dc.chunk.row_numbers
    numbers = np.asarray(rows) + 1 if rows is not None else dc.chunk.start_index + 1 + np.arange(dc.chunk.num_rows)
    cut = [r.index + 1 for r in dc.chunk.rejects]
    return np.union1d(numbers, np.asarray(cut, dtype=np.int64)) if cut else numbers


def guard_rejects(chunks: Iterator[DecodedChunk], limit: RejectLimit, what: str) -> Iterator[DecodedChunk]:
    """Passes `chunks` on, or raises InputFormatError when the reject rate says the input
    (`what`, e.g. "DATA.BIN (copybook CARD.cpy)") is not laid out as expected."""
    if limit.max_rate >= 1:
        yield from chunks
        return
    seen = rejected = 0
    reasons: Counter[str] = Counter()
    for dc in chunks:
        numbers = _chunk_records(dc)
        own = [r for r in dc.rejects if not r.other_view]
        bad = np.unique(np.fromiter((r.record for r in own), dtype=np.int64, count=len(own)))
        if seen < limit.after_records <= seen + len(numbers):
            # exactly the first `after_records` records: the verdict does not depend on chunk sizes
            last = numbers[limit.after_records - seen - 1]
            early = int(np.count_nonzero(bad <= last))
            counted = Counter(_kind(r) for r in own if r.record <= last)
            _judge(rejected + early, limit.after_records, limit, what, reasons + counted, first=True)
        seen += len(numbers)
        rejected += len(bad)
        if len(reasons) < 100:  # enough to name the commonest ones
            reasons.update(_kind(r) for r in own[:1000])
        if seen >= limit.after_records:
            _judge(rejected, seen, limit, what, reasons, first=False)
        yield dc


def _judge(rejected: int, seen: int, limit: RejectLimit, what: str, reasons: Counter[str], *, first: bool) -> None:
    rate = rejected / seen
    if rate <= limit.max_rate:
        return
    shown = "; ".join(f"{kind} ({count:,})" for kind, count in reasons.most_common(_SHOWN_REASONS))
    span = f"the first {seen:,}" if first else f"the {seen:,} read so far"
    raise InputFormatError(
        f"{what} does not look like the layout: {rejected:,} of {span} records were rejected ({rate:.0%}, over "
        f"the limit of {limit.max_rate:.0%}: --max-reject-rate, pipeline max_reject_rate); reading stopped. "
        f"Commonest reasons: {shown}")
