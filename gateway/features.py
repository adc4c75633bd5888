"""The model's input: the contract's `model.features`, as a float32 matrix per batch.

    model:
      features:
        amount: TXN_AMOUNT                         # a field (TXN-AMOUNT works too)
        foreign: "COUNTRY != 'US'"                 # a condition: 1.0 / 0.0
        cashback: {expr: CASHBACK_AMOUNT, default: 0}   # nulls become 0 instead of NaN

Each feature is a safe expression (`gateway.expressions`) that must give a number or a
condition. `FeatureMap.matrix(table)` evaluates each once over the whole batch with Arrow
kernels and writes it into one (rows, features) float32 array: booleans as 0/1, nulls as
NaN unless the feature has a `default`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.expressions import Expression, compile_expression, field_types
from schemas.errors import ContractError

if TYPE_CHECKING:
    from schemas.contract import Contract

__all__ = ["Feature", "FeatureConfig", "FeatureMap"]


class FeatureConfig(BaseModel):
    """The long form of one feature; the short form is the expression string alone."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN bound or default checks nothing

    expr: str
    default: float | bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class Feature:
    name: str
    expression: Expression
    default: float | None = None  # what a null becomes; None keeps NaN


class FeatureMap:
    def __init__(self, features: Sequence[Feature]) -> None:
        if not features:
            raise ContractError("model.features: at least one feature is required")
        self.features = list(features)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def fields_used(self) -> frozenset[str]:
        return frozenset().union(*(f.expression.fields_used for f in self.features))

    # ---- construction
    @classmethod
    def from_contract(cls, contract: Contract) -> FeatureMap:
        model = contract.config.model or {}
        if "features" not in model:
            raise ContractError(f"{contract.source}: model.features is required: it maps each model input "
                                "to a field or an expression")
        return cls.from_config(model["features"], field_types(contract), source=contract.source)

    @classmethod
    def from_config(cls, raw: Any, fields: Mapping[str, pa.DataType], *, source: str = "<contract>") -> FeatureMap:
        if not isinstance(raw, Mapping) or not raw:
            raise ContractError(f"{source}: model.features: expected a mapping of feature name -> expression, "
                                f"e.g. {{amount: TXN_AMOUNT, foreign: \"COUNTRY != 'US'\"}}; found {raw!r}")
        return cls([_feature(name, body, fields, source) for name, body in raw.items()])

    # ---- per batch
    def matrix(self, table: pa.Table) -> np.ndarray:
        """float32 (rows, features), C-contiguous, in `names` order."""
        out = np.empty((table.num_rows, len(self.features)), dtype=np.float32)
        for j, feature in enumerate(self.features):
            values = feature.expression.evaluate(table, keep_nulls=True)
            # decimals and int64 go through float64 so they are rounded once, to the nearest float32
            if not pa.types.is_boolean(values.type):
                values = pc.cast(values, pa.float64(), safe=False)
            values = pc.cast(values, pa.float32(), safe=False)
            if feature.default is not None and values.null_count:
                values = values.fill_null(feature.default)
            out[:, j] = values.to_numpy(zero_copy_only=False)  # nulls left become NaN
        return out


def _feature(name: Any, body: Any, fields: Mapping[str, pa.DataType], source: str) -> Feature:
    where = f"{source}: model.features.{name}"
    if not isinstance(name, str) or not name:
        raise ContractError(f"{source}: model.features: feature name {name!r} must be a string")
    if isinstance(body, str):
        cfg = FeatureConfig(expr=body)
    elif isinstance(body, Mapping):
        try:
            cfg = FeatureConfig.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ContractError(f"{where}: {loc}: {first['msg']} (write a field, an expression, or "
                                "{expr: ..., default: ...})") from None
    else:
        raise ContractError(f"{where}: expected a field, an expression or {{expr: ..., default: ...}}, "
                            f"found {body!r}")
    expr = compile_expression(cfg.expr, fields, where=where)
    if not (expr.is_condition or pa.types.is_integer(expr.result_type) or pa.types.is_floating(expr.result_type)
            or pa.types.is_decimal(expr.result_type)):
        raise ContractError(f"{where}: a model input must be a number or a condition, but {cfg.expr!r} is "
                            f"{expr.result_type}; compare it instead, e.g. CHANNEL == 'E'")
    default = None if cfg.default is None else float(cfg.default)
    return Feature(name, expr, default)
