"""A wrong encoding gets a clear answer instead of a file full of rejects.

When most records of the first chunk fail to decode, the same bytes are tried with the
other family of encodings (EBCDIC <-> ASCII); if they decode cleanly there, the input
is refused with one line naming what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from schemas.codepages import code_page
from schemas.decoder import RecordDecoder
from schemas.errors import InputFormatError
from schemas.records import RecordChunk

_SAMPLE = 1000


def _failing_share(decoder: RecordDecoder, chunk: RecordChunk) -> float:
    n = min(chunk.num_rows, _SAMPLE)
    if n == 0:
        return 0.0
    lengths = None if chunk.lengths is None else chunk.lengths[:n]
    batch = decoder.decode(chunk.matrix[:n], lengths)
    return len(batch.bad_rows()) / n


def check_encoding(decoder: RecordDecoder, chunk: RecordChunk, batch_bad_rows: np.ndarray) -> None:
    """Raises InputFormatError when the chunk plainly is in the other encoding family."""
    n = chunk.num_rows
    # Only a clear picture counts: enough records, nearly all failing, and numeric fields
    # to fail (text alone decodes in any single-byte page).
    if n < 10 or len(batch_bad_rows) < 0.8 * n:
        return
    if all(f.is_text for f in decoder.layout.elementary()):
        return
    page = decoder.page
    alternative = "ascii" if page.ebcdic else "cp037"
    other = RecordDecoder(decoder.layout, code_page(alternative), replace(decoder.options))
    share = _failing_share(other, chunk)
    if share <= 0.1:
        mine = len(batch_bad_rows) / n
        raise InputFormatError(
            f"the records look {'ASCII' if page.ebcdic else 'EBCDIC'}, not {page.name}: "
            f"{mine:.0%} of the first {n} records fail to decode as {page.name}, "
            f"{share:.0%} as {alternative}; use --encoding {alternative} (or the right code page)")
