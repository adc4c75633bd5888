"""Reference profiles and PSI (gateway.governance.profile): stable on the same
distribution, past the shift threshold on a shifted one, never holding a pii value."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from gateway.governance.profile import (
    MAX_CATEGORIES,
    CategoricalProfile,
    NumericProfile,
    Profile,
    build_profile,
    compare,
    psi,
)
from gateway.isolation import pii_names
from schemas.contract import load_contract
from schemas.errors import ConfigError
from schemas.examples import contract_path, generate_card_file

SHIFT = 0.25  # the common "a shift" reading of PSI
STABLE = 0.1


def normal(seed: int, n: int = 20_000, mean: float = 100.0, sd: float = 15.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    amounts = rng.normal(mean, sd, n).round(2)
    return pa.table({
        "amount": pa.array([Decimal(f"{a:.2f}") for a in amounts], pa.decimal128(11, 2)),
        "channel": pa.array(rng.choice(["POS", "ATM", "WEB"], n, p=[0.6, 0.1, 0.3])),
        "count": pa.array(rng.integers(0, 10, n)),
    })


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])
    assert psi([1.0, 0.0], [0.0, 1.0]) > 1  # an empty bin on one side: large, still finite
    with pytest.raises(ValueError, match="one length"):
        psi([0.5, 0.5], [1.0])


def test_the_same_distribution_is_stable_and_a_shifted_one_crosses_the_threshold_on_its_columns_only() -> None:
    reference = build_profile(normal(1))
    same = compare(reference, normal(2))
    assert all(d.psi is not None and d.psi < STABLE for d in same.values()), same
    shifted = normal(3, mean=115.0)  # one standard deviation
    drift = compare(reference, shifted)
    amount = drift["amount"]
    assert amount.psi is not None and amount.psi > SHIFT
    assert 0 < amount.out_of_range < 0.5
    for stable in ("channel", "count"):
        value = drift[stable].psi
        assert value is not None and value < STABLE


def test_a_category_share_change_and_a_new_category_are_drift() -> None:
    reference = build_profile(pa.table({"channel": ["POS"] * 60 + ["WEB"] * 40}))
    moved = compare(reference, pa.table({"channel": ["POS"] * 20 + ["WEB"] * 80}))["channel"].psi
    new = compare(reference, pa.table({"channel": ["POS"] * 60 + ["APP"] * 40}))["channel"].psi
    assert moved is not None and moved > SHIFT
    assert new is not None and new > SHIFT


def test_null_rates_are_kept_and_an_all_null_column_has_no_psi() -> None:
    table = pa.table({"x": pa.array([1.0, None, 3.0, None]), "y": pa.nulls(4, pa.float64())})
    profile = build_profile(table)
    x, y = profile.columns["x"], profile.columns["y"]
    assert isinstance(x, NumericProfile) and x.null_rate == 0.5 and (x.min, x.max) == (1.0, 3.0)
    assert isinstance(y, NumericProfile) and y.null_rate == 1.0 and y.shares == []
    drift = compare(profile, pa.table({"x": pa.array([None, None, None, 2.0]), "y": pa.array([1.0, 2.0, 3.0, 4.0])}))
    assert drift["x"].null_rate == 0.75 and drift["x"].reference_null_rate == 0.5
    assert drift["y"].psi is None


def test_pii_and_high_cardinality_columns_keep_no_values(tmp_path: Path) -> None:
    contract = load_contract(contract_path("card_txn"))
    path = tmp_path / "cards.dat"
    generate_card_file(path, records=2_000, seed=5)
    table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    pii = pii_names(contract)
    assert "TXN_PAN" in pii
    profile = build_profile(table, pii=pii)
    pan = profile.columns["TXN_PAN"]
    assert isinstance(pan, CategoricalProfile) and pan.shares is None
    text = profile.model_dump_json()
    for value in table.column("TXN_PAN").to_pylist()[:200]:
        assert value not in text
    txn_id = profile.columns["TXN_ID"]  # unique per record: more than MAX_CATEGORIES values
    assert isinstance(txn_id, CategoricalProfile) and txn_id.shares is None
    assert len(set(table.column("TXN_ID").to_pylist())) > MAX_CATEGORIES
    # a second file of the same generator is stable on every profiled column
    other = tmp_path / "other.dat"
    generate_card_file(other, records=2_000, seed=6)
    drift = compare(profile, pa.concat_tables([dc.table for dc in contract.decode_file(other)]))
    measured = {k: d.psi for k, d in drift.items() if d.psi is not None}
    assert {"TXN_AMOUNT", "COUNTRY", "CHANNEL", "MCC"} <= set(measured)
    assert all(v < SHIFT for v in measured.values()), measured


def test_a_profile_round_trips_through_json_and_refuses_unknown_keys() -> None:
    profile = build_profile(normal(4, n=1_000))
    again = Profile.model_validate_json(profile.model_dump_json())
    assert again == profile
    doc = json.loads(profile.model_dump_json())
    doc["columns"]["amount"]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        Profile.model_validate(doc)
    with pytest.raises(ConfigError, match="expected 2 or more, found 1"):
        build_profile(normal(4, n=10), bins=1)
