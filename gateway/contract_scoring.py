"""The check of a contract's scoring sections (`model:` features and outputs, `fallback:`
rules). Every contract the gateway loads goes through `load_scoring_contract`, so `lgw
contract check`, `lgw score` and the pipelines agree by construction on which contracts
score. It lives here, not in `schemas.contract`, because the expressions are the
gateway's engine and schemas never imports the gateway."""

from __future__ import annotations

import os

from gateway.fallback import FallbackRules
from gateway.features import FeatureMap
from gateway.outputs import outputs_from_contract
from schemas.contract import Contract, load_contract


def load_scoring_contract(path: str | os.PathLike[str], *, limits: dict[str, int] | None = None) -> Contract:
    """The contract at `path` (`schemas.contract.load_contract`), scoring sections included:
    its features, outputs and fallback rules are compiled and run once on the fields' types,
    as the pipeline does, so a contract that loads also scores (`lgw contract check` passes
    exactly these). `limits`: entries of `record.limits` to override (command-line options)."""
    contract = load_contract(path, limits=limits)
    check_scoring(contract)
    return contract


def check_scoring(contract: Contract) -> None:
    """Builds what `lgw score` builds from the contract's `model:` and `fallback:` sections,
    with the same constructors (features and rule conditions compiled, type-checked and run
    once on the fields' types; outputs and rule values checked). Every problem is a
    ContractError. A contract without scoring sections (decode only) passes."""
    if contract.config.model is None and contract.config.fallback is None:
        return
    FeatureMap.from_contract(contract)
    outputs_from_contract(contract)
    FallbackRules.from_contract(contract)


def scoring_summary(contract: Contract) -> str | None:
    """One line saying what `check_scoring` compiled, for a contract that passed it (read
    from the sections it checked, not built again); None for a decode-only contract."""
    model, rules = contract.config.model, contract.config.fallback
    if model is None and rules is None:
        return None
    features, outputs = list((model or {}).get("features", {})), list((model or {}).get("outputs", {}))
    return (f"scoring: {len(features)} features ({', '.join(features)}), outputs {', '.join(outputs)}, "
            f"{len(rules or [])} fallback rules: compiled and run on the fields' types")
