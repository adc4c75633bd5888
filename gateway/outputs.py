"""What a model (or the fallback rules) must return: the contract's `model.outputs`.

    model:
      outputs:
        fraud_score: {type: float, min: 0, max: 1}
        segment:     {type: string}

`type` is float (the default), int, string or bool; `min`/`max` bound numbers. The same
specs check the constants a fallback rule sets (at load) and the model's answers (per
batch: `OutputSpec.validate` finds NaN, infinities, out-of-range and mistyped values
without a Python loop over the good rows).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from schemas.errors import ContractError, ModelOutputError

if TYPE_CHECKING:
    from schemas.contract import Contract

__all__ = ["OutputCheck", "OutputConfig", "OutputSpec", "check_answer", "outputs_from_contract", "parse_outputs"]

OutputType = Literal["float", "int", "string", "bool"]
_ARROW: dict[str, pa.DataType] = {"float": pa.float32(), "int": pa.int64(), "string": pa.string(),
                                  "bool": pa.bool_()}
# numpy dtype kinds each output type can be read from; object arrays are checked per value
_READABLE_KINDS = {"float": "biuf", "int": "biuf", "string": "UO", "bool": "bO"}


class OutputConfig(BaseModel):
    """One entry of `model.outputs` as written in the contract."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN bound or default checks nothing

    type: OutputType = "float"
    min: float | None = None
    max: float | None = None
    threshold: float = 0.5  # shadow comparison: the decision boundary of a score
    description: str | None = None

    @model_validator(mode="after")
    def _bounds(self) -> OutputConfig:
        if (self.min is not None or self.max is not None) and self.type in ("string", "bool"):
            raise ValueError(f"min/max apply to float and int outputs, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class OutputCheck(NamedTuple):
    """`bad[i]` is true when row i's value is not allowed; `reasons[i]` says why (None when fine)."""

    bad: np.ndarray
    reasons: np.ndarray


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: OutputType = "float"
    min: float | None = None
    max: float | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW[self.type]

    threshold: float = 0.5  # shadow comparison: model and rules agree when on the same side

    @property
    def fixed_width(self) -> int:
        """Bytes this output takes in fixed-width output records."""
        return {"float": 12, "int": 12, "string": 24, "bool": 1}.get(self.type, 12)

    def to_arrow(self, values: Any) -> pa.Array:
        return pa.array(np.asarray(values), self.arrow_type) if self.type in ("float", "int") else \
            pa.array(list(values), self.arrow_type)

    def agree(self, model: np.ndarray, rules: np.ndarray) -> np.ndarray:
        """Per row: does the rule baseline reach the same decision as the model?"""
        if self.type in ("float", "int"):
            return (np.asarray(model, dtype=np.float64) >= self.threshold) == (
                np.asarray(rules, dtype=np.float64) >= self.threshold)
        return np.asarray(model) == np.asarray(rules)

    def coerce(self, value: Any) -> Any:
        """A constant (e.g. a fallback rule's value) as this output's Python type; ValueError
        saying what is wrong when it does not fit."""
        if self.type == "string":
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string, found {value!r}")
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, found {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be a number, found {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{self.name} must be a finite number, found {value!r}")
        if self.type == "int" and value != int(value):
            raise ValueError(f"{self.name} must be a whole number, found {value!r}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{self.name} {value!r} is below its min {self.min:g}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{self.name} {value!r} is above its max {self.max:g}")
        return int(value) if self.type == "int" else float(value)

    def validate(self, values: Any) -> OutputCheck:
        """Checks a whole column of values (numpy array, Arrow array or sequence)."""
        if isinstance(values, pa.Array | pa.ChunkedArray):
            values = values.to_numpy(zero_copy_only=False)
        values = np.asarray(values)
        if self.type in ("string", "bool"):
            return self._validate_objects(values)
        try:
            numbers = values.astype(np.float64)  # None -> NaN
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or values.dtype.kind in "USb":
            bad = np.ones(len(values), dtype=bool)
            return OutputCheck(bad, np.full(len(values), f"{self.name} is not a number", dtype=object))
        reasons = np.full(len(numbers), None, dtype=object)
        nan = np.isnan(numbers)
        reasons[nan] = f"{self.name} is NaN or missing"
        inf = np.isinf(numbers)
        reasons[inf] = f"{self.name} is infinite"
        bad = nan | inf
        finite = ~bad
        checks: list[tuple[np.ndarray, str]] = []
        if self.type == "int":
            checks.append((finite & (numbers != np.trunc(numbers)), "is not a whole number"))
        if self.min is not None:
            checks.append((finite & (numbers < self.min), f"is below its min {self.min:g}"))
        if self.max is not None:
            checks.append((finite & (numbers > self.max), f"is above its max {self.max:g}"))
        for hit, why in checks:
            rows = np.flatnonzero(hit & ~bad)  # only the bad rows are formatted one by one
            reasons[rows] = [f"{self.name} {numbers[i]:g} {why}" for i in rows]
            bad |= hit
        return OutputCheck(bad, reasons)

    def _validate_objects(self, values: np.ndarray) -> OutputCheck:
        if self.type == "bool" and values.dtype == np.bool_:
            return OutputCheck(np.zeros(len(values), dtype=bool), np.full(len(values), None, dtype=object))
        want: type = str if self.type == "string" else bool
        ok = np.frompyfunc(lambda v: isinstance(v, want), 1, 1)(values).astype(bool) if len(values) else \
            np.zeros(0, dtype=bool)
        bad = ~ok
        reasons = np.full(len(values), None, dtype=object)
        reasons[bad] = f"{self.name} is not a {self.type}"
        return OutputCheck(bad, reasons)


def parse_outputs(raw: Any, *, where: str = "model.outputs") -> dict[str, OutputSpec]:
    """`model.outputs` -> OutputSpec per name, in the contract's order."""
    if not isinstance(raw, Mapping) or not raw:
        raise ContractError(f"{where}: expected a mapping of output name -> {{type, min, max}}, "
                            f"e.g. {{fraud_score: {{type: float, min: 0, max: 1}}}}; found {raw!r}")
    specs: dict[str, OutputSpec] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ContractError(f"{where}: output name {name!r} must be an identifier (letters, digits, _)")
        if name in ("rule_id", "reason", "scored_by"):
            raise ContractError(f"{where}.{name}: the name is reserved for the gateway's provenance columns")
        try:
            cfg = OutputConfig.model_validate(body if body is not None else {})
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(x) for x in first["loc"])
            raise ContractError(f"{where}.{name}{'.' + loc if loc else ''}: {first['msg']}") from None
        specs[name] = OutputSpec(name, cfg.type, cfg.min, cfg.max, cfg.threshold)
    return specs


def outputs_from_contract(contract: Contract) -> dict[str, OutputSpec]:
    model = contract.config.model or {}
    if "outputs" not in model:
        raise ContractError(f"{contract.source}: model.outputs is required: it declares what the model "
                            "and the fallback rules return")
    return parse_outputs(model["outputs"], where=f"{contract.source}: model.outputs")


def check_answer(specs: Mapping[str, OutputSpec], answer: Mapping[str, Any], rows: int, *, model: str) -> None:
    """A model's answer as a whole: every declared output, one value per row, in a dtype
    its type can be read from. Anything else is no answer for any of the records: the
    model failing (`ModelOutputError`), never the records' fault. Values that are there
    but not allowed (NaN, out of range) are the per-record `validate` checks."""
    for name, spec in specs.items():
        if name not in answer:
            raise ModelOutputError(f"model {model}: answer has no output {name} (it has {', '.join(answer) or 'none'})")
        values = np.asarray(answer[name])
        if values.shape != (rows,):
            raise ModelOutputError(f"model {model}: output {name} has shape {values.shape}, expected ({rows},)")
        if values.dtype.kind not in _READABLE_KINDS[spec.type]:
            raise ModelOutputError(f"model {model}: output {name} holds {values.dtype} values; "
                                   f"a {spec.type} output cannot be read from them")
