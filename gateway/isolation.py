"""Finding the record that makes a batch raise, for every driver (batch chunks, real-time
micro-batches): the batch is split in halves until the record that raises alone is
found; it is rejected with the reason and the rest goes on. Errors that are not the
records' fault (`not_the_records`: the model, the broker, the state store, the config)
are raised at once, for the driver to retry or stop. A piece of `SYSTEMIC_RECORDS` or
more in which every record raises alone is no poison record but a broken pipeline: the
error is raised too, rather than rejecting everything.

The reason names the error; values of the record's fields the contract marks `pii` are
withheld from it (an error message may quote the value it choked on)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import pyarrow as pa

from schemas.errors import ConfigError, InfrastructureError

if TYPE_CHECKING:
    from schemas.contract import Contract

T = TypeVar("T")

SYSTEMIC_RECORDS = 8
NOT_THE_RECORDS: tuple[type[BaseException], ...] = (InfrastructureError, ConfigError)


async def isolating(run: Callable[[int, int], Awaitable[T]], lo: int, hi: int, *,
                    alone: Callable[[int, Exception], T], is_alone: Callable[[T], bool],
                    not_the_records: tuple[type[BaseException], ...] = NOT_THE_RECORDS,
                    on_split: Callable[[int, int, Exception], None] | None = None) -> list[T]:
    """`run(lo, hi)` for rows [lo, hi), as pieces in row order: its result, or, where it
    raised, the results of its halves, down to `alone(row, exc)` for a row that raises
    by itself (`is_alone` recognises those). `on_split(lo, hi, exc)` before each split."""
    try:
        return [await run(lo, hi)]
    except not_the_records:
        raise
    except Exception as exc:
        if hi - lo == 1:
            return [alone(lo, exc)]
        if on_split is not None:
            on_split(lo, hi, exc)
        pieces: list[T] = []
        for part_lo, part_hi in ((lo, (lo + hi) // 2), ((lo + hi) // 2, hi)):
            pieces += await isolating(run, part_lo, part_hi, alone=alone, is_alone=is_alone,
                                      not_the_records=not_the_records, on_split=on_split)
        if hi - lo >= SYSTEMIC_RECORDS and all(is_alone(p) for p in pieces):
            raise exc  # every record fails alone: the pipeline is broken, not a record
        return pieces


def pii_names(contract: Contract) -> set[str]:
    """The names (paths and keys) of the fields the contract marks pii."""
    return {name for node, rules in contract.rules.values() if rules.pii for name in (node.path, node.key)}


def crash_reason(exc: Exception, pii: set[str], record: pa.Table | None) -> str:
    """Why a record that raised alone is rejected. `record`: the record as decoded (one
    row), or None when it could not be read, in which case a contract with pii fields
    gets the error's type only."""
    detail = f"{type(exc).__name__}: {exc}"
    if pii and record is None:
        detail = f"{type(exc).__name__} (message withheld: the contract has pii fields)"
    elif record is not None:
        values = {str(v) for name in pii & set(record.column_names) for v in record.column(name).to_pylist()}
        for value in sorted(values - {"", "None"}, key=len, reverse=True):
            detail = detail.replace(value, "<pii withheld>")
    return f"record crashed the pipeline: {detail}"


__all__ = ["NOT_THE_RECORDS", "SYSTEMIC_RECORDS", "crash_reason", "isolating", "pii_names"]
