"""Reference profiles of a record stream and the Population Stability Index against them.

A profile holds, per column, what drift is measured on and nothing a record could be
recovered from: for a numeric column the interior cut points of its reference deciles
and the share of values in each bin, for a categorical one the share of each category
(only for columns with few categories: an id or a free-text column keeps its null rate
only), and the null rate, count, min and max. Columns a contract marks pii are never
profiled beyond their null rate: a category share would carry the value itself.

PSI = sum over bins of (a - e) * ln(a / e), with e and a the reference and current
shares (floored at PSI_FLOOR so an empty bin does not make it infinite). Common reading:
below 0.1 stable, 0.1 to 0.25 a shift worth watching, above 0.25 a shift. numpy is
enough for it: the bins are computed once per column with searchsorted and bincount.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import ConfigError

PROFILE_VERSION = 1
DEFAULT_BINS = 10
MAX_CATEGORIES = 50  # more distinct values than this: an id or free text, not a category
PSI_FLOOR = 1e-4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NumericProfile(_Strict):
    kind: Literal["numeric"] = "numeric"
    count: int
    null_rate: float
    min: float | None = None
    max: float | None = None
    edges: list[float] = Field(default_factory=list)  # interior cut points: len(shares) == len(edges) + 1
    shares: list[float] = Field(default_factory=list)


class CategoricalProfile(_Strict):
    kind: Literal["categorical"] = "categorical"
    count: int
    null_rate: float
    shares: dict[str, float] | None = None  # None: too many categories (or pii) to profile values


class Profile(_Strict):
    """The reference profile of a record stream (`lgw profile build` stores it as JSON)."""

    version: int = PROFILE_VERSION
    records: int
    columns: dict[str, NumericProfile | CategoricalProfile]
    contract: dict[str, str | int] | None = None  # {name, version} of the records profiled
    source: dict[str, str | int] | None = None  # {name, sha256} of the reference input
    # decision rates of the reference per segment (field -> value -> share of scores at or
    # above `decision_threshold`), for the decision-rate shift by segment
    decision_threshold: float | None = None
    segments: dict[str, dict[str, float]] | None = None


class ColumnDrift(_Strict):
    """One column of a batch or run against the reference."""

    psi: float | None  # None: nothing to compare (no values on one side, or values not profiled)
    null_rate: float
    reference_null_rate: float
    out_of_range: float = 0.0  # share of numeric values outside the reference's [min, max]


def numeric_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    """The non-null values of a numeric column as float64 (decimals, integers, dates and
    times by their numbers); None for a column that is not numeric."""
    kind = column.type
    if pa.types.is_boolean(kind) or not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                         or pa.types.is_decimal(kind) or pa.types.is_temporal(kind)):
        return None
    values = pc.drop_null(column)
    if pa.types.is_temporal(kind):
        values = values.cast(pa.int64()) if not pa.types.is_date32(kind) else values.cast(pa.int32())
    return np.asarray(values.cast(pa.float64()), dtype=np.float64)


def _null_rate(column: pa.ChunkedArray | pa.Array) -> float:
    return column.null_count / len(column) if len(column) else 0.0


def _numeric(column: pa.ChunkedArray | pa.Array, values: np.ndarray, bins: int) -> NumericProfile:
    if not len(values):
        return NumericProfile(count=len(column), null_rate=_null_rate(column))
    cuts = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(cuts)
    return NumericProfile(count=len(column), null_rate=_null_rate(column), min=float(values.min()),
                          max=float(values.max()), edges=edges.tolist(), shares=_bin_shares(values, edges).tolist())


def _bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def _categorical(column: pa.ChunkedArray | pa.Array, profile_values: bool) -> CategoricalProfile:
    shares = None
    present = len(column) - column.null_count
    if profile_values and present:
        counts = pc.value_counts(pc.drop_null(column))
        if len(counts) <= MAX_CATEGORIES:
            shares = {str(v): c / present for v, c in zip(counts.field("values").to_pylist(),
                                                          counts.field("counts").to_pylist(), strict=True)}
    return CategoricalProfile(count=len(column), null_rate=_null_rate(column), shares=shares)


def build_profile(table: pa.Table, *, pii: Iterable[str] = (), bins: int = DEFAULT_BINS) -> Profile:
    """The profile of every column of `table`; the `pii` columns by their null rate only."""
    if bins < 2:
        raise ConfigError(f"profile bins: expected 2 or more, found {bins}")
    hidden = set(pii)
    columns: dict[str, NumericProfile | CategoricalProfile] = {}
    for name in table.column_names:
        column = table.column(name)
        values = None if name in hidden else numeric_values(column)
        columns[name] = (_numeric(column, values, bins) if values is not None
                         else _categorical(column, name not in hidden))
    return Profile(records=table.num_rows, columns=columns)


def psi(expected: Iterable[float], actual: Iterable[float]) -> float:
    """The Population Stability Index of two share vectors over the same bins."""
    e = np.maximum(np.asarray(list(expected), dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(list(actual), dtype=np.float64), PSI_FLOOR)
    if e.shape != a.shape:
        raise ValueError(f"psi: expected share vectors of one length, found {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def compare(reference: Profile, table: pa.Table) -> dict[str, ColumnDrift]:
    """Each column of `table` that the reference profiles, against it."""
    out: dict[str, ColumnDrift] = {}
    for name, ref in reference.columns.items():
        if name not in table.column_names:
            continue
        column = table.column(name)
        null_rate = _null_rate(column)
        if isinstance(ref, NumericProfile):
            values = numeric_values(column)
            if values is None or not len(values) or not ref.shares:
                out[name] = ColumnDrift(psi=None, null_rate=null_rate, reference_null_rate=ref.null_rate)
                continue
            edges = np.asarray(ref.edges, dtype=np.float64)
            assert ref.min is not None and ref.max is not None
            outside = float(np.count_nonzero((values < ref.min) | (values > ref.max))) / len(values)
            out[name] = ColumnDrift(psi=psi(ref.shares, _bin_shares(values, edges)), null_rate=null_rate,
                                    reference_null_rate=ref.null_rate, out_of_range=outside)
        else:
            out[name] = ColumnDrift(psi=_category_psi(ref, column), null_rate=null_rate,
                                    reference_null_rate=ref.null_rate)
    return out


def _category_psi(ref: CategoricalProfile, column: pa.ChunkedArray | pa.Array) -> float | None:
    present = len(column) - column.null_count
    if ref.shares is None or not present:
        return None
    counts = pc.value_counts(pc.drop_null(column))
    current = {str(v): c / present for v, c in zip(counts.field("values").to_pylist(),
                                                   counts.field("counts").to_pylist(), strict=True)}
    # categories never seen in the reference share one bin: a new category is drift too
    known = list(ref.shares)
    expected = [ref.shares[k] for k in known] + [0.0]
    actual = [current.get(k, 0.0) for k in known] + [sum(v for k, v in current.items() if k not in ref.shares)]
    value = psi(expected, actual)
    return value if math.isfinite(value) else None


__all__ = [
    "CategoricalProfile",
    "ColumnDrift",
    "NumericProfile",
    "Profile",
    "build_profile",
    "compare",
    "numeric_values",
    "psi",
]
