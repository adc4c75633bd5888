"""Model features: the contract's `model.features` as a float32 matrix per batch."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml

from gateway.features import FeatureMap
from schemas.contract import Contract, load_contract, parse_contract
from schemas.errors import ContractError
from schemas.examples import contract_path, generate_card_file

D = Decimal
CARD = contract_path("card_txn")
FIELDS = {"TXN_AMOUNT": pa.decimal128(11, 2), "COUNTRY": pa.string(), "MCC": pa.int64(), "SCORE": pa.float64(),
          "CASHBACK_AMOUNT": pa.decimal128(7, 2)}


def card_with(features: Any) -> Contract:
    raw = yaml.safe_load(CARD.read_text(encoding="utf-8"))
    raw["model"]["features"] = features
    return parse_contract(yaml.safe_dump(raw, sort_keys=False), base_dir=CARD.parent, source="card_txn.yaml")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.table({
        "TXN_AMOUNT": pa.array([D("1234.56"), None, D("-0.01")], pa.decimal128(11, 2)),
        "COUNTRY": ["US", "DE", None],
        "MCC": pa.array([5411, None, 7], pa.int64()),
        "SCORE": [0.5, None, float("nan")],
        "CASHBACK_AMOUNT": pa.array([D("0.00"), None, D("20.00")], pa.decimal128(7, 2)),
    })


def test_card_contract_features_on_a_generated_file(tmp_path: Path) -> None:
    contract = load_contract(CARD)
    features = FeatureMap.from_contract(contract)
    assert features.names == ["amount", "foreign", "mcc", "ecom", "cashback"]
    assert features.fields_used == {"TXN_AMOUNT", "COUNTRY", "MCC", "CHANNEL", "CASHBACK_AMOUNT"}
    path = tmp_path / "CARDTXN.dat"
    generate_card_file(path, records=5_000)
    table = pa.concat_tables([chunk.table for chunk in contract.decode_file(path)])
    matrix = features.matrix(table)
    assert matrix.shape == (5_000, 5) and matrix.dtype == np.float32 and matrix.flags["C_CONTIGUOUS"]
    rows = table.to_pylist()
    want = np.array([[float(r["TXN_AMOUNT"]), r["COUNTRY"] != "US", r["MCC"], r["CHANNEL"] == "E",
                      float(r["CASHBACK_AMOUNT"])] for r in rows], dtype=np.float32)
    np.testing.assert_array_equal(matrix, want)
    assert set(np.unique(matrix[:, 1])) <= {0.0, 1.0}


def test_booleans_are_0_1_and_nulls_nan(table: pa.Table) -> None:
    features = FeatureMap.from_config({"amount": "TXN_AMOUNT", "foreign": "COUNTRY != 'US'", "mcc": "MCC",
                                       "score": "SCORE"}, FIELDS)
    m = features.matrix(table)
    np.testing.assert_array_equal(m[0], np.array([1234.56, 0, 5411, 0.5], dtype=np.float32))
    assert np.isnan(m[1, 0]) and m[1, 1] == 1.0 and np.isnan(m[1, 2]) and np.isnan(m[1, 3])
    assert m[2, 0] == np.float32(-0.01)
    assert np.isnan(m[2, 1])  # unknown country: a null condition stays missing for the model
    assert np.isnan(m[2, 3])


def test_long_form_with_default_fills_nulls(table: pa.Table) -> None:
    features = FeatureMap.from_config({
        "cashback": {"expr": "CASHBACK_AMOUNT", "default": 0},
        "foreign": {"expr": "COUNTRY != 'US'", "default": False},
        "mcc": {"expr": "MCC", "default": -1},
    }, FIELDS)
    m = features.matrix(table)
    np.testing.assert_array_equal(m[:, 0], np.array([0, 0, 20], dtype=np.float32))
    np.testing.assert_array_equal(m[:, 1], np.array([0, 1, 0], dtype=np.float32))
    np.testing.assert_array_equal(m[:, 2], np.array([5411, -1, 7], dtype=np.float32))


def test_expressions_and_hyphenated_names(table: pa.Table) -> None:
    features = FeatureMap.from_config({"amount": "TXN-AMOUNT", "total": "coalesce(TXN_AMOUNT, 0) * 2 + 1",
                                       "ratio": "MCC / 2"}, FIELDS)
    m = features.matrix(table)
    np.testing.assert_allclose(m[:, 1], [2470.12, 1.0, 0.98], rtol=1e-6)
    np.testing.assert_allclose(m[:, 2][[0, 2]], [2705.5, 3.5])


def test_feature_map_from_a_contract_long_form() -> None:
    features = FeatureMap.from_contract(card_with({"amount": "TXN-AMOUNT", "cashback": {"expr": "CASHBACK_AMOUNT",
                                                                                         "default": 0}}))
    assert features.names == ["amount", "cashback"]
    assert features.features[1].default == 0.0


def test_a_multi_chunk_table() -> None:
    chunked = pa.Table.from_batches([pa.record_batch({"MCC": [1, 2]}), pa.record_batch({"MCC": [3]})])
    m = FeatureMap.from_config({"mcc": "MCC", "big": "MCC > 1"}, {"MCC": pa.int64()}).matrix(chunked)
    np.testing.assert_array_equal(m, np.array([[1, 0], [2, 1], [3, 1]], dtype=np.float32))


def test_an_empty_batch_gives_an_empty_matrix(table: pa.Table) -> None:
    m = FeatureMap.from_config({"mcc": "MCC"}, FIELDS).matrix(table.slice(0, 0))
    assert m.shape == (0, 1) and m.dtype == np.float32


@pytest.mark.parametrize(("features", "fragment"), [
    ({"amount": "TXN_AMONT"}, "model.features.amount: unknown field TXN_AMONT; did you mean TXN_AMOUNT?"),
    ({"country": "COUNTRY"}, "model.features.country: a model input must be a number or a condition"),
    ({"x": "MCC +"}, "model.features.x: syntax error"),
    ({"x": "MCC.bit_length()"}, "method calls"),
    ({"x": {"expression": "MCC"}}, "model.features.x: "),
    ({"x": {"expr": "MCC", "default": "zero"}}, "model.features.x: default"),
    ({"x": 5}, "model.features.x: expected a field, an expression"),
    ({}, "model.features: expected a mapping"),
])
def test_feature_errors_name_the_feature(features: Any, fragment: str) -> None:
    with pytest.raises(ContractError) as err:
        FeatureMap.from_config(features, FIELDS, source="card_txn.yaml")
    assert fragment in str(err.value)


def test_a_contract_without_model_features_is_refused() -> None:
    raw = yaml.safe_load(CARD.read_text(encoding="utf-8"))
    del raw["model"]["features"]
    contract = parse_contract(yaml.safe_dump(raw, sort_keys=False), base_dir=CARD.parent, source="card_txn.yaml")
    with pytest.raises(ContractError, match=r"model\.features is required"):
        FeatureMap.from_contract(contract)
