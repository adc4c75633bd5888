"""Fallback rules (first match wins, checked at load) and model output specs."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from gateway.fallback import FallbackRules
from gateway.outputs import OutputSpec, outputs_from_contract, parse_outputs
from schemas.contract import Contract, load_contract, parse_contract
from schemas.errors import ContractError
from schemas.examples import contract_path, generate_card_file

D = Decimal
CARD = contract_path("card_txn")


def card_raw() -> dict[str, Any]:
    return yaml.safe_load(CARD.read_text(encoding="utf-8"))


def card_with(fallback: Any = None, outputs: Any = None) -> Contract:
    raw = card_raw()
    if fallback is not None:
        raw["fallback"] = fallback
    if outputs is not None:
        raw["model"]["outputs"] = outputs
    return parse_contract(yaml.safe_dump(raw, sort_keys=False), base_dir=CARD.parent, source="card_txn.yaml")


def rules_error(fallback: Any, outputs: Any = None) -> str:
    with pytest.raises(ContractError) as err:
        FallbackRules.from_contract(card_with(fallback, outputs))
    return str(err.value)


def txn_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({
        "TXN_AMOUNT": pa.array([r.get("amount") for r in rows], pa.decimal128(11, 2)),
        "COUNTRY": pa.array([r.get("country") for r in rows], pa.string()),
        "CHANNEL": pa.array([r.get("channel") for r in rows], pa.string()),
        "MCC": pa.array([r.get("mcc", 5411) for r in rows], pa.int64()),
    })


DEFAULT = {"then": {"fraud_score": 0.05}, "reason": "DEFAULT"}


# --------------------------------------------------------------------------- the card example


@pytest.fixture(scope="module")
def card_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("card") / "CARDTXN.dat"
    generate_card_file(path, records=20_000)
    return path


def reference_rule(row: dict[str, Any]) -> str:
    """The card contract's rules, written out by hand for one record."""
    amount, country, channel = row["TXN_AMOUNT"], row["COUNTRY"], row["CHANNEL"]
    if amount is not None and amount > 5000 and country is not None and country != "US":
        return "LARGE_FOREIGN"
    if channel == "E" and amount is not None and amount > 2000:
        return "LARGE_ECOM"
    return "DEFAULT"


def test_card_contract_rules_load_and_score_a_generated_file(card_file: Path) -> None:
    contract = load_contract(CARD)
    rules = FallbackRules.from_contract(contract)
    assert [r.id for r in rules.rules] == ["R1", "R2", "R3"]
    assert [r.reason for r in rules.rules] == ["LARGE_FOREIGN", "LARGE_ECOM", "DEFAULT"]
    assert rules.fields_used == {"TXN_AMOUNT", "COUNTRY", "CHANNEL"}
    table = pa.concat_tables([chunk.table for chunk in contract.decode_file(card_file)])
    scored = rules.score(table)
    assert scored.num_rows == table.num_rows == 20_000
    assert scored.schema.names == ["fraud_score", "rule_id", "reason"]
    assert scored.schema.field("fraud_score").type == pa.float32()
    want = [reference_rule(r) for r in table.select(["TXN_AMOUNT", "COUNTRY", "CHANNEL"]).to_pylist()]
    assert scored.column("reason").to_pylist() == want
    assert {"LARGE_FOREIGN", "LARGE_ECOM", "DEFAULT"} <= set(want)  # the file exercises every rule
    score_of = {"LARGE_FOREIGN": 0.9, "LARGE_ECOM": 0.6, "DEFAULT": 0.05}
    assert scored.column("fraud_score").to_pylist() == pytest.approx([score_of[w] for w in want])
    id_of = {"LARGE_FOREIGN": "R1", "LARGE_ECOM": "R2", "DEFAULT": "R3"}
    assert scored.column("rule_id").to_pylist() == [id_of[w] for w in want]


def test_scoring_each_chunk_matches_scoring_the_whole_file(card_file: Path) -> None:
    contract = load_contract(CARD)
    rules = FallbackRules.from_contract(contract)
    chunks = [chunk.table for chunk in contract.decode_file(card_file, batch_size=3_000)]
    assert len(chunks) > 1
    per_chunk = pa.concat_tables([rules.score(t) for t in chunks])
    assert per_chunk.equals(rules.score(pa.concat_tables(chunks)))


# --------------------------------------------------------------------------- semantics


def test_first_matching_rule_wins() -> None:
    contract = card_with([
        {"when": "TXN_AMOUNT > 5000 and COUNTRY != 'US'", "then": {"fraud_score": 0.9}, "reason": "LARGE_FOREIGN"},
        {"when": "TXN_AMOUNT > 1000", "then": {"fraud_score": 0.5}, "reason": "LARGE"},
        DEFAULT,
    ])
    rules = FallbackRules.from_contract(contract)
    table = txn_table([
        {"amount": D("6000.00"), "country": "DE"},  # matches both rules 1 and 2: rule 1
        {"amount": D("6000.00"), "country": "US"},  # rule 2 only
        {"amount": D("10.00"), "country": "DE"},  # none: default
    ])
    scored = rules.score(table)
    assert scored.column("reason").to_pylist() == ["LARGE_FOREIGN", "LARGE", "DEFAULT"]
    assert scored.column("rule_id").to_pylist() == ["R1", "R2", "R3"]
    assert scored.column("fraud_score").to_pylist() == pytest.approx([0.9, 0.5, 0.05])
    assert rules.choose(table).tolist() == [0, 1, 2]


def test_decimal_boundary_is_exact_in_rules() -> None:
    rules = FallbackRules.from_contract(load_contract(CARD))
    table = txn_table([{"amount": D("5000.00"), "country": "DE"}, {"amount": D("5000.01"), "country": "DE"}])
    assert rules.score(table).column("reason").to_pylist() == ["DEFAULT", "LARGE_FOREIGN"]


def test_a_null_field_does_not_match_and_falls_through() -> None:
    rules = FallbackRules.from_contract(load_contract(CARD))
    table = txn_table([
        {"amount": None, "country": "DE", "channel": "E"},
        {"amount": D("6000.00"), "country": None, "channel": "E"},  # rule 1 unknown -> rule 2
    ])
    assert rules.score(table).column("reason").to_pylist() == ["DEFAULT", "LARGE_ECOM"]


def test_an_empty_batch_scores_to_an_empty_table() -> None:
    rules = FallbackRules.from_contract(load_contract(CARD))
    scored = rules.score(txn_table([]))
    assert scored.num_rows == 0
    assert scored.schema.names == ["fraud_score", "rule_id", "reason"]


def test_a_lone_default_rule_scores_every_row() -> None:
    rules = FallbackRules.from_contract(card_with([DEFAULT]))
    table = txn_table([{"amount": D("1.00")}, {"amount": D("9999.00")}])
    assert rules.score(table).column("rule_id").to_pylist() == ["R1", "R1"]


def test_ids_reason_placement_and_several_outputs() -> None:
    outputs = {"fraud_score": {"type": "float", "min": 0, "max": 1}, "decision": {"type": "string"},
               "review": {"type": "bool"}, "tier": {"type": "int", "min": 1, "max": 3}}
    rules = FallbackRules.from_contract(card_with([
        {"id": "FOREIGN", "when": "COUNTRY != 'US'", "reason": "FOREIGN",
         "then": {"fraud_score": 1, "decision": "review", "review": True, "tier": 3}},
        {"then": {"fraud_score": 0, "decision": "approve", "review": False, "tier": 1.0, "reason": "DEFAULT"}},
    ], outputs))
    scored = rules.score(txn_table([{"country": "DE"}, {"country": "US"}]))
    assert scored.schema.names == ["fraud_score", "decision", "review", "tier", "rule_id", "reason"]
    assert scored.schema.field("tier").type == pa.int64()
    assert scored.to_pylist() == [
        {"fraud_score": 1.0, "decision": "review", "review": True, "tier": 3, "rule_id": "FOREIGN",
         "reason": "FOREIGN"},
        {"fraud_score": 0.0, "decision": "approve", "review": False, "tier": 1, "rule_id": "R2",
         "reason": "DEFAULT"},
    ]


# --------------------------------------------------------------------------- load-time checks


def test_a_final_default_rule_is_required() -> None:
    message = rules_error([{"when": "TXN_AMOUNT > 1", "then": {"fraud_score": 0.5}, "reason": "X"}])
    assert "a final default rule (no `when`) is required" in message
    assert message.startswith("card_txn.yaml: fallback")


def test_an_empty_or_missing_fallback_list_is_refused() -> None:
    raw = card_raw()
    del raw["fallback"]
    contract = parse_contract(yaml.safe_dump(raw, sort_keys=False), base_dir=CARD.parent, source="card_txn.yaml")
    with pytest.raises(ContractError, match="a final default rule"):
        FallbackRules.from_contract(contract)


def test_only_the_last_rule_may_leave_out_when() -> None:
    message = rules_error([{"then": {"fraud_score": 0.5}, "reason": "EARLY"}, DEFAULT])
    assert "fallback rule 1 (EARLY): only the last rule may leave out `when`" in message


def test_unknown_field_names_the_rule() -> None:
    message = rules_error([
        {"when": "TXN_AMOUNT > 5000", "then": {"fraud_score": 0.9}, "reason": "LARGE"},
        {"when": "CHANEL == 'E' and TXN_AMOUNT > 2000", "then": {"fraud_score": 0.6, "reason": "LARGE_ECOM"}},
        DEFAULT,
    ])
    assert "fallback rule 2 (LARGE_ECOM): unknown field CHANEL; did you mean CHANNEL?" in message


@pytest.mark.parametrize(("when", "fragment"), [
    ("COUNTRY > 5", "cannot compare COUNTRY (a string) with 5"),
    ("TXN_AMOUNT >", "syntax error"),
    ("TXN_AMOUNT * 2", "must be a condition (true/false)"),
    ("COUNTRY.startswith('D')", "method calls"),
])
def test_condition_errors_name_the_rule(when: str, fragment: str) -> None:
    message = rules_error([{"when": when, "then": {"fraud_score": 0.9}, "reason": "BAD_RULE"}, DEFAULT])
    assert "fallback rule 1 (BAD_RULE): " in message and fragment in message


def test_then_must_cover_every_declared_output() -> None:
    message = rules_error([{"then": {}, "reason": "DEFAULT"}])
    assert "fallback rule 1 (DEFAULT): `then` must set every output of model.outputs; missing fraud_score" in message


def test_then_may_not_set_undeclared_outputs() -> None:
    message = rules_error([{"then": {"fraud_score": 0.1, "frad_scor": 1}, "reason": "DEFAULT"}])
    assert "sets frad_scor, which model.outputs does not declare; did you mean fraud_score?" in message


@pytest.mark.parametrize(("value", "fragment"), [
    (1.5, "fraud_score 1.5 is above its max 1"),
    (-0.1, "fraud_score -0.1 is below its min 0"),
    ("high", "fraud_score must be a number"),
    (True, "fraud_score must be a number"),
    (None, "fraud_score must be a number"),
    (float("nan"), "must be a finite number"),
])
def test_then_values_must_fit_the_declared_type_and_range(value: Any, fragment: str) -> None:
    message = rules_error([{"then": {"fraud_score": value}, "reason": "DEFAULT"}])
    assert "fallback rule 1 (DEFAULT): then." in message and fragment in message


def test_int_bool_and_string_outputs_check_their_values() -> None:
    outputs = {"tier": {"type": "int"}, "review": {"type": "bool"}, "decision": {"type": "string"}}
    assert "tier must be a whole number" in rules_error(
        [{"then": {"tier": 1.5, "review": True, "decision": "x"}, "reason": "D"}], outputs)
    assert "review must be true or false" in rules_error(
        [{"then": {"tier": 1, "review": 1, "decision": "x"}, "reason": "D"}], outputs)
    assert "decision must be a string" in rules_error(
        [{"then": {"tier": 1, "review": True, "decision": 5}, "reason": "D"}], outputs)


def test_reason_is_required_and_given_once() -> None:
    assert "fallback rule 1: `reason` is required" in rules_error([{"then": {"fraud_score": 0.1}}])
    message = rules_error([{"then": {"fraud_score": 0.1, "reason": "A"}, "reason": "B"}])
    assert "reason given twice" in message
    assert "must be a non-empty string" in rules_error([{"then": {"fraud_score": 0.1, "reason": 7}}])


def test_rule_ids_are_unique_and_keys_known() -> None:
    message = rules_error([
        {"id": "X", "when": "MCC > 1", "then": {"fraud_score": 0.2}, "reason": "A"},
        {"id": "X", "then": {"fraud_score": 0.1}, "reason": "B"},
    ])
    assert "fallback rule 2 (B): id X is used by an earlier rule" in message
    assert "unknown key 'whn'" in rules_error([{"whn": "MCC > 1", "then": {"fraud_score": 0.1}, "reason": "A"}])
    with pytest.raises(ContractError, match="fallback rule 1: expected a mapping"):
        FallbackRules.from_config(["MCC > 1"], parse_outputs({"fraud_score": {}}), {"MCC": pa.int64()})


def test_fallback_needs_model_outputs() -> None:
    raw = card_raw()
    del raw["model"]["outputs"]
    contract = parse_contract(yaml.safe_dump(raw, sort_keys=False), base_dir=CARD.parent, source="card_txn.yaml")
    with pytest.raises(ContractError, match=r"model\.outputs is required"):
        FallbackRules.from_contract(contract)


def test_the_example_contract_is_not_changed_by_loading_rules() -> None:
    contract = load_contract(CARD)
    before = copy.deepcopy(contract.config.fallback)
    FallbackRules.from_contract(contract)
    assert contract.config.fallback == before


# --------------------------------------------------------------------------- output specs


def test_outputs_parse_from_the_card_contract() -> None:
    specs = outputs_from_contract(load_contract(CARD))
    assert specs == {"fraud_score": OutputSpec("fraud_score", "float", 0.0, 1.0)}
    assert specs["fraud_score"].arrow_type == pa.float32()


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"s": {"type": "decimal"}}, "model.outputs.s.type"),
    ({"s": {"type": "string", "min": 0}}, "min/max apply to float and int outputs"),
    ({"s": {"min": 2, "max": 1}}, "min 2 is above max 1"),
    ({"s": {"typ": "float"}}, "model.outputs.s.typ"),
    ({"rule_id": {}}, "reserved"),
    ({"bad name": {}}, "must be an identifier"),
    ({}, "expected a mapping"),
    ([1], "expected a mapping"),
])
def test_output_spec_errors(raw: Any, fragment: str) -> None:
    with pytest.raises(ContractError, match=None) as err:
        parse_outputs(raw)
    assert fragment in str(err.value)


def test_output_type_defaults_to_float() -> None:
    assert parse_outputs({"s": None})["s"] == OutputSpec("s", "float")


def test_validate_flags_nan_inf_and_out_of_range_rows() -> None:
    spec = OutputSpec("fraud_score", "float", 0, 1)
    check = spec.validate(np.array([0.5, np.nan, np.inf, -np.inf, 1.2, -0.5, 0.0, 1.0], dtype=np.float32))
    assert check.bad.tolist() == [False, True, True, True, True, True, False, False]
    assert check.reasons.tolist() == [
        None, "fraud_score is NaN or missing", "fraud_score is infinite", "fraud_score is infinite",
        "fraud_score 1.2 is above its max 1", "fraud_score -0.5 is below its min 0", None, None]


def test_validate_accepts_arrow_arrays_with_nulls_and_objects() -> None:
    spec = OutputSpec("fraud_score", "float", 0, 1)
    assert spec.validate(pa.array([0.1, None])).bad.tolist() == [False, True]
    assert spec.validate([0.1, None]).bad.tolist() == [False, True]
    assert spec.validate(np.array(["0.1", "x"])).bad.tolist() == [True, True]


def test_validate_int_bool_and_string_outputs() -> None:
    assert OutputSpec("tier", "int", 1, 3).validate(np.array([1.0, 2.5, 4.0, 3.0])).reasons.tolist() == [
        None, "tier 2.5 is not a whole number", "tier 4 is above its max 3", None]
    assert OutputSpec("review", "bool").validate(np.array([True, False])).bad.tolist() == [False, False]
    assert OutputSpec("review", "bool").validate(np.array([True, None, 1], dtype=object)).bad.tolist() == [
        False, True, True]
    assert OutputSpec("decision", "string").validate(np.array(["a", None], dtype=object)).reasons.tolist() == [
        None, "decision is not a string"]
    assert OutputSpec("decision", "string").validate(np.array([], dtype=object)).bad.tolist() == []
