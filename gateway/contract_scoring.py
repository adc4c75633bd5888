"""The check of a contract's scoring sections (`model:` features and outputs, `fallback:`
rules) that every loaded contract passes: `schemas.contract.load_contract` runs it, so
`lgw contract check`, `lgw score` and the pipelines agree by construction on which
contracts score."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.fallback import FallbackRules
from gateway.features import FeatureMap
from gateway.outputs import outputs_from_contract

if TYPE_CHECKING:
    from schemas.contract import Contract


def check_scoring(contract: Contract) -> str | None:
    """Builds what `lgw score` builds from the contract's `model:` and `fallback:` sections,
    with the same constructors (features and rule conditions compiled, type-checked and run
    once on the fields' types; outputs and rule values checked). Every problem is a
    ContractError. None when the contract has no scoring sections (a decode-only
    contract); else one line saying what was checked."""
    if contract.config.model is None and contract.config.fallback is None:
        return None
    features = FeatureMap.from_contract(contract)
    outputs = outputs_from_contract(contract)
    rules = FallbackRules.from_contract(contract)
    return (f"scoring: {len(features.names)} features ({', '.join(features.names)}), outputs "
            f"{', '.join(outputs)}, {len(rules.rules)} fallback rules: compiled and run on the fields' types")
