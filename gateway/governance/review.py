"""The human review queue (issue 13): records a person should look at before their score
is acted on.

    pipelines:
      card_txn:
        review:
          band: [0.4, 0.6]          # scores in [lo, hi] are uncertain (inclusive)
          score: fraud_score        # the output judged (default: the contract's first output)
          when: "TXN_AMOUNT > 20000 and COUNTRY != 'US'"   # high-risk records (safe expression)
          hold: false               # false: output with review "pending"; true: held until decided
          max_pending: 10000        # the queue's size per pipeline; past it records pass unreviewed

A driver asks `select_for_review` (or `review_reasons`, which also says why) for a
boolean mask over a scored batch, computed column-wise with pyarrow.compute; with
`hold: false` it writes the batch with `mark_review` (a `review` column, "pending" or
null), with `hold: true` it writes only the rows `hold_back` leaves out (in = out +
rejects + held). The selected rows go into the `ReviewQueue`
(gateway.governance.review_queue: `enqueue`, one bulk insert per batch), a table of the
shared state store (gateway.state: SQLite or PostgreSQL, created on first use, values
always bound parameters). A reviewer lists,
shows and decides items (`lgw review`); `decide` is atomic (`UPDATE ... WHERE status =
'pending'`: of two reviewers deciding one item at once exactly one wins) and records who
decided, when, what and why. The decision is then published as a correction record
through the pipeline's sink (gateway.governance.review_corrections).

The record stored with an item (`data`) is taken as given: the caller masks the
contract's pii fields before enqueueing (the queue never sees what it must not keep).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.expressions import Expression, compile_condition, field_types, schema_field_types
from gateway.outputs import OutputSpec, outputs_from_contract
from schemas.errors import ConfigError, ContractError

if TYPE_CHECKING:
    from schemas.contract import Contract

log = logging.getLogger("lgw.review")

ReviewStatus = Literal["pending", "approved", "overridden"]
REVIEW_STATUSES: tuple[str, ...] = get_args(ReviewStatus)
PENDING, APPROVED, OVERRIDDEN = REVIEW_STATUSES
WHY_BAND, WHY_RULE = "band", "rule"
REVIEW_COLUMN = "review"
# the provenance columns of a scored record (gateway.pipeline.PROVENANCE), kept apart from its data
PROVENANCE_COLUMNS = ("scored_by", "model_name", "model_version", "contract", "contract_version", "rule_id", "reason")



class ReviewError(ConfigError):
    """A review item that is not there, or a decision that cannot be taken as given."""


# --------------------------------------------------------------------------- config
class ReviewConfig(BaseModel):
    """`review:` of a pipeline: which scored records go to a person (see the module doc)."""

    model_config = ConfigDict(extra="forbid")

    band: tuple[float, float] | None = None
    score: str | None = None
    when: str | None = None
    hold: bool = False
    max_pending: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _something_selects(self) -> ReviewConfig:
        if self.band is None and self.when is None:
            raise ValueError("review needs a `band` (uncertain scores), a `when` rule (high-risk records), or both")
        if self.band is not None:
            lo, hi = self.band
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"review.band: bounds must be finite numbers, found [{lo}, {hi}]")
            if lo > hi:
                raise ValueError(f"review.band: [{lo:g}, {hi:g}] is not ordered: the low bound comes first")
        return self


def score_output(cfg: ReviewConfig, outputs: Mapping[str, OutputSpec]) -> OutputSpec:
    """The output judged: `score`, else the contract's first output."""
    if not outputs:
        raise ContractError("review: the contract declares no model.outputs to judge")
    name = cfg.score or next(iter(outputs))
    if name not in outputs:
        raise ContractError(f"review.score: {name!r} is not an output of the contract's model "
                            f"(outputs: {', '.join(outputs)})")
    return outputs[name]


def check_review(cfg: ReviewConfig, contract: Contract) -> ReviewConfig:
    """`cfg` checked against the pipeline's contract (the band within the output's min/max,
    `when` compiled on the record's fields, outputs and provenance); returns it with
    `score` filled in. Every problem is one ContractError line starting with `review`."""
    outputs = outputs_from_contract(contract)
    spec = score_output(cfg, outputs)
    if cfg.band is not None:
        if spec.type not in ("float", "int"):
            raise ContractError(f"review.band: output {spec.name} is a {spec.type}; a band needs a number output")
        lo, hi = cfg.band
        if spec.min is not None and lo < spec.min:
            raise ContractError(f"review.band: {lo:g} is below {spec.name}'s min {spec.min:g}")
        if spec.max is not None and hi > spec.max:
            raise ContractError(f"review.band: {hi:g} is above {spec.name}'s max {spec.max:g}")
    if cfg.when is not None:
        compile_condition(cfg.when, rule_fields(contract, outputs), where="review.when")
    return cfg.model_copy(update={"score": spec.name})


def rule_fields(contract: Contract, outputs: Mapping[str, OutputSpec] | None = None) -> dict[str, pa.DataType]:
    """What a review rule may name: the record's fields, the outputs and the provenance."""
    fields = dict(field_types(contract))
    for name, spec in (outputs if outputs is not None else outputs_from_contract(contract)).items():
        fields[name] = spec.arrow_type
    for name in ("scored_by", "model_name", "model_version", "rule_id", "reason"):
        fields.setdefault(name, pa.string())
    return fields


# --------------------------------------------------------------------------- selection
@functools.lru_cache(maxsize=64)
def _compiled(text: str, schema: pa.Schema) -> Expression:
    return compile_condition(text, schema_field_types(schema), where="review.when")


def review_reasons(table: pa.Table, cfg: ReviewConfig, *, score: str | None = None) -> pa.Array:
    """Per row: why it goes to review ("band", "rule", "band,rule") or null. `score`: the
    output judged when `cfg.score` is unset (a config loaded by gateway.config has it)."""
    n = table.num_rows
    band = np.zeros(n, dtype=bool)
    rule = np.zeros(n, dtype=bool)
    if cfg.band is not None and n:
        name = cfg.score or score
        if name is None:
            raise ConfigError("review.band: which output to judge? set review.score")
        if name not in table.column_names:
            raise ConfigError(f"review.score: the scored records have no column {name!r}")
        lo, hi = cfg.band
        col = table.column(name)
        # bounds in the column's own float type: a float32 score of 0.6 is inside [0.4, 0.6]
        typ = col.type if pa.types.is_floating(col.type) else pa.float64()
        hit = pc.and_(pc.greater_equal(col, pa.scalar(lo, typ)), pc.less_equal(col, pa.scalar(hi, typ)))
        band = np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    if cfg.when is not None and n:
        rule = _compiled(cfg.when, table.schema).mask(table)
    labels = np.array([None, WHY_BAND, WHY_RULE, f"{WHY_BAND},{WHY_RULE}"], dtype=object)
    return pa.array(labels[band.astype(np.int8) + 2 * rule.astype(np.int8)], pa.string())


def select_for_review(table: pa.Table, cfg: ReviewConfig, *, score: str | None = None) -> pa.Array:
    """A boolean mask (no nulls): the rows of a scored table that go to review."""
    return pc.is_valid(review_reasons(table, cfg, score=score))


def mark_review(table: pa.Table, mask: pa.Array | np.ndarray) -> pa.Table:
    """`table` with a `review` column: "pending" where `mask`, else null."""
    flags = pa.array(np.asarray(mask, dtype=bool)) if isinstance(mask, np.ndarray) else mask.fill_null(False)
    column = pc.if_else(flags, pa.scalar(PENDING), pa.scalar(None, pa.string()))
    if REVIEW_COLUMN in table.column_names:
        table = table.drop_columns([REVIEW_COLUMN])
    return table.append_column(REVIEW_COLUMN, column)


def hold_back(table: pa.Table, mask: pa.Array | np.ndarray) -> tuple[pa.Table, pa.Table]:
    """`hold: true`: (the rows the sink gets now, the rows held until a reviewer decides)."""
    flags = pa.array(np.asarray(mask, dtype=bool)) if isinstance(mask, np.ndarray) else mask.fill_null(False)
    return table.filter(pc.invert(flags)), table.filter(flags)


def cap_mask(mask: pa.Array | np.ndarray, room: int) -> pa.Array:
    """The mask with only its first `room` true rows kept (what still fits the queue)."""
    flags = np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array)
                       else mask, dtype=bool).copy()
    if room <= 0:
        flags[:] = False
    else:
        flags[np.flatnonzero(flags)[room:]] = False
    return pa.array(flags)


__all__ = [
    "APPROVED", "OVERRIDDEN", "PENDING", "PROVENANCE_COLUMNS", "REVIEW_COLUMN", "REVIEW_STATUSES", "ReviewConfig",
    "ReviewError", "ReviewStatus", "cap_mask", "check_review", "hold_back", "mark_review", "review_reasons",
    "rule_fields", "score_output", "select_for_review",
]
