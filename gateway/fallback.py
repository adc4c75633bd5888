"""Rule-based fallback scoring: what scores a record when the model cannot.

    fallback:
      - id: R-FOREIGN                        # optional; default R1, R2, ... by position
        when: "TXN_AMOUNT > 5000 and COUNTRY != 'US'"
        then: {fraud_score: 0.9}
        reason: LARGE_FOREIGN                # or inside `then`, as the card example does
      - then: {fraud_score: 0.05, reason: DEFAULT}   # the last rule has no `when`

The first rule whose condition holds scores the row. Everything is checked when the
contract loads (conditions compile and are true/false, every output of `model.outputs` is
set with a value of its type and range, the last rule is the default), so scoring a batch
cannot fail on a rule. Scoring evaluates each condition once per batch and picks each
row's rule with numpy.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from gateway.expressions import Expression, compile_condition, field_types
from gateway.outputs import OutputSpec, outputs_from_contract
from schemas.errors import ContractError

if TYPE_CHECKING:
    from schemas.contract import Contract

__all__ = ["FallbackRule", "FallbackRules", "RuleConfig"]


class RuleConfig(BaseModel):
    """One entry of the contract's `fallback:` list, as written."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    when: str | None = None
    then: dict[str, Any]
    reason: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class FallbackRule:
    id: str
    reason: str
    when: Expression | None  # None: the default rule, always matches
    values: Mapping[str, Any]  # output name -> value, one for every declared output


class FallbackRules:
    """An ordered rule list, validated; `score(table)` gives every row its first match."""

    def __init__(self, rules: Sequence[FallbackRule], outputs: Mapping[str, OutputSpec]) -> None:
        if not rules or rules[-1].when is not None:
            raise ContractError("fallback: a final default rule (no `when`) is required")
        self.rules = list(rules)
        self.outputs = dict(outputs)
        self._conditions: list[Expression] = []
        for r in self.rules[:-1]:
            assert r.when is not None, "only the last rule may have no condition"
            self._conditions.append(r.when)
        self._values = {name: pa.array([r.values[name] for r in self.rules], spec.arrow_type)
                        for name, spec in self.outputs.items()}
        self._ids = pa.array([r.id for r in self.rules], pa.string())
        self._reasons = pa.array([r.reason for r in self.rules], pa.string())

    # ---- construction
    @classmethod
    def from_contract(cls, contract: Contract) -> FallbackRules:
        if not contract.config.fallback:
            raise ContractError(f"{contract.source}: fallback: the contract has no fallback rules; "
                                "a final default rule (no `when`) is required")
        return cls.from_config(contract.config.fallback, outputs_from_contract(contract), field_types(contract),
                               source=contract.source)

    @classmethod
    def from_config(cls, raw: Any, outputs: Mapping[str, OutputSpec], fields: Mapping[str, pa.DataType], *,
                    source: str = "<contract>") -> FallbackRules:
        """Rules from the `fallback:` list; every problem is a ContractError naming the rule."""
        if not isinstance(raw, list) or not raw:
            raise ContractError(f"{source}: fallback: expected a list of rules ending with a default rule "
                                f"(no `when`), found {raw!r}")
        for n, item in enumerate(raw, start=1):
            if not isinstance(item, Mapping):
                raise ContractError(f"{source}: fallback rule {n}: expected a mapping with when/then/reason, "
                                    f"found {item!r}")
        if raw[-1].get("when") is not None:
            raise ContractError(f"{source}: fallback: a final default rule (no `when`) is required; "
                                f"rule {len(raw)} has when: {raw[-1]['when']!r}")
        rules: list[FallbackRule] = []
        for n, item in enumerate(raw, start=1):
            rule = _parse_rule(item, n, last=n == len(raw), outputs=outputs, fields=fields, source=source)
            if any(r.id == rule.id for r in rules):
                raise ContractError(f"{source}: fallback rule {n} ({rule.reason}): id {rule.id} is used by "
                                    "an earlier rule; ids must be unique")
            rules.append(rule)
        return cls(rules, outputs)

    # ---- scoring
    @property
    def fields_used(self) -> frozenset[str]:
        return frozenset().union(*(c.fields_used for c in self._conditions))

    def choose(self, table: pa.Table) -> np.ndarray:
        """Index of the first matching rule for every row (int32)."""
        n = table.num_rows
        default = len(self._conditions)
        if not default:
            return np.zeros(n, dtype=np.int32)
        hits = np.empty((default, n), dtype=bool)
        for i, condition in enumerate(self._conditions):
            hits[i] = condition.mask(table)
        first = hits.argmax(axis=0)  # the first true row of each column; 0 when there is none
        matched = hits[first, np.arange(n)]
        return np.where(matched, first, default).astype(np.int32)

    def score(self, table: pa.Table) -> pa.Table:
        """One column per declared output, then `rule_id` and `reason`, row for row."""
        chosen = pa.array(self.choose(table))
        columns = {name: values.take(chosen) for name, values in self._values.items()}
        columns["rule_id"] = self._ids.take(chosen)
        columns["reason"] = self._reasons.take(chosen)
        return pa.table(columns)


def _parse_rule(raw: Mapping[str, Any], n: int, *, last: bool, outputs: Mapping[str, OutputSpec],
                fields: Mapping[str, pa.DataType], source: str) -> FallbackRule:
    then = raw.get("then")
    label = raw.get("reason") or (then.get("reason") if isinstance(then, Mapping) else None) or raw.get("id")
    where = f"{source}: fallback rule {n}" + (f" ({label})" if isinstance(label, str) else "")
    try:
        cfg = RuleConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ContractError(f"{where}: unknown key {loc!r}; a rule has when, then, reason, id, "
                                "description") from None
        raise ContractError(f"{where}: {loc}: {first['msg']}") from None
    values = dict(cfg.then)
    reason = _reason(cfg.reason, values.pop("reason", None), where)
    if cfg.when is None and not last:
        raise ContractError(f"{where}: only the last rule may leave out `when`; the rules after this one "
                            "could never match")
    when = compile_condition(cfg.when, fields, where=where) if cfg.when is not None else None
    return FallbackRule(cfg.id or f"R{n}", reason, when, _values(values, outputs, where))


def _reason(in_rule: Any, in_then: Any, where: str) -> str:
    if in_rule is not None and in_then is not None and in_rule != in_then:
        raise ContractError(f"{where}: reason given twice ({in_rule!r} and then.reason {in_then!r}); keep one")
    reason = in_rule if in_rule is not None else in_then
    if reason is None:
        raise ContractError(f"{where}: `reason` is required: a code such as LARGE_FOREIGN that says why "
                            "the rule scored the record")
    if not isinstance(reason, str) or not reason.strip():
        raise ContractError(f"{where}: `reason` must be a non-empty string code, found {reason!r}")
    return reason


def _values(then: Mapping[str, Any], outputs: Mapping[str, OutputSpec], where: str) -> dict[str, Any]:
    for name in then:
        if name not in outputs:
            close = difflib.get_close_matches(str(name), list(outputs), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ContractError(f"{where}: `then` sets {name}, which model.outputs does not declare; {hint}"
                                f"declared: {', '.join(outputs)}")
    missing = [name for name in outputs if name not in then]
    if missing:
        raise ContractError(f"{where}: `then` must set every output of model.outputs; missing "
                            f"{', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, spec in outputs.items():
        try:
            values[name] = spec.coerce(then[name])
        except ValueError as exc:
            raise ContractError(f"{where}: then.{exc}") from None
    return values
