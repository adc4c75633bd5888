"""Contract validation rules, column-wise: the fast pattern path agrees with the regex
engine, and each rule names its field and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.contract import parse_contract
from schemas.patterns import fixed_pattern, match_fixed
from schemas.validate import byte_lengths, extremes

PATTERNS = ["^[0-9]{16}$", "^[A-Z]{2}$", "^TX[0-9]{10}$", "^[^a-z]{3}$", r"^\d{4}$", "^A[B-D]-[0-9]$"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fixed_patterns_take_the_fast_path(pattern: str) -> None:
    assert fixed_pattern(pattern) is not None


@pytest.mark.parametrize("pattern", ["^(A|B)$", "^[A-Z]+$", "[A-Z]{2}", "^[A-Z]{2,3}$", "^é$", r"^\w{2}$"])
def test_other_patterns_are_left_to_the_regex_engine(pattern: str) -> None:
    assert fixed_pattern(pattern) is None


def test_non_ascii_rows_are_matched_by_characters_not_bytes() -> None:
    tables = fixed_pattern("^[^a-z]{3}$")
    assert tables is not None
    assert match_fixed(pa.array(["éAB", "abc", "ABC", "AB"]), tables, "^[^a-z]{3}$").tolist() == [
        True, False, True, False]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATTERNS),
       st.lists(st.one_of(st.none(), st.text(alphabet="0123456789ABCDTXaz-é ", max_size=18)), max_size=30))
def test_fast_path_agrees_with_python_regex(pattern: str, values: list[str | None]) -> None:
    tables = fixed_pattern(pattern)
    assert tables is not None
    got = match_fixed(pa.array(values, pa.string()), tables, pattern).tolist()
    want = [v is None or (re.search(pattern, v) is not None and "\n" not in v) for v in values]
    assert got == want
    sliced = pa.array(["ab", *values], pa.string())[1:]  # a column that starts inside its buffers
    assert match_fixed(sliced, tables, pattern).tolist() == want


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PATTERNS), st.data())
def test_a_column_of_the_patterns_width_is_checked_as_a_matrix_alike(pattern: str, data: st.DataObject) -> None:
    """Every value as wide as the pattern: the buffer is checked as one n x width matrix,
    ranges of bytes by subtraction; the bytes just outside each range ('/', ':', '@', '[')
    must fail as the regex says."""
    tables = fixed_pattern(pattern)
    assert tables is not None
    value = st.text(alphabet="0123456789/:@[ABCDTXZaz-", min_size=len(tables), max_size=len(tables))
    values = data.draw(st.lists(value, min_size=1, max_size=40))
    want = [re.search(pattern, v) is not None for v in values]
    assert match_fixed(pa.array(values, pa.string()), tables, pattern).tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=20), st.integers(0, 3),
       st.sampled_from([pa.string(), pa.large_string()]))
def test_byte_lengths_read_from_the_offsets_equal_arrows(values: list[str | None], skip: int,
                                                         typ: pa.DataType) -> None:
    col = pa.array(["xyz"] * skip + values, typ)[skip:]
    want = [0 if n is None else n for n in pc.binary_length(col).to_pylist()]
    assert byte_lengths(col).tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-10**12, 10**12)), max_size=20),
       st.sampled_from([pa.int64(), pa.float64(), pa.decimal128(15, 0)]))
def test_extremes_equal_arrows_min_max(values: list[int | None], typ: pa.DataType) -> None:
    col = pa.array(values, typ)
    mm = pc.min_max(col).as_py()
    assert extremes(col) == (mm["min"], mm["max"])


def test_required_text_catches_null_as_well_as_blank() -> None:
    from schemas.contract import FieldRules
    from schemas.copybook import parse_copybook
    from schemas.validate import violations

    node = parse_copybook("       01 REC.\n          05 NAME PIC X(4).\n").find("NAME")
    col = pa.array(["ABCD", None, "", "XY"], pa.string())
    [(bad, why)] = violations(node, FieldRules(required=True), col)  # type: ignore[arg-type]
    assert bad.tolist() == [False, True, True, False]
    assert "missing" in why


@pytest.mark.parametrize(("col", "bad"), [
    (pa.array([5, 1, None, 10, 11], pa.int64()), [False, True, False, False, True]),
    (pa.array([2.5, 10.0, 10.5, None, 2.0], pa.float64()), [False, False, True, False, False]),
    (pa.array([None, None], pa.int64()), [False, False]),
    (pa.array([2, 3], pa.int64()), [False, False]),
])
def test_min_and_max_on_whole_columns_and_rows(col: pa.Array, bad: list[bool]) -> None:
    from decimal import Decimal

    from schemas.contract import FieldRules
    from schemas.copybook import parse_copybook
    from schemas.validate import violations

    node = parse_copybook("       01 REC.\n          05 QTY PIC 9(4).\n").find("QTY")
    found = violations(node, FieldRules(min=Decimal(2), max=Decimal(10)), col)  # type: ignore[arg-type]
    combined = [any(mask[i] for mask, _ in found) for i in range(len(col))]
    assert combined == bad
    assert all(mask.any() for mask, _ in found)  # a rule is reported only where rows break it


def test_rejects_of_a_pii_field_withhold_its_value_and_bytes(tmp_path: Path) -> None:
    contract = parse_contract(
        "contract: acct\nversion: 1\nrecord:\n  format: fixed_width\n  encoding: ascii\n  record_format: F\n"
        "  fields:\n  - {name: ACCT, pic: X(4)}\n  - {name: LIMIT, pic: 9(3)}\n  - {name: CODE, pic: X(2)}\n"
        "fields:\n  ACCT: {pii: true, pattern: '^[0-9]{4}$'}\n  LIMIT: {pii: true, max: 500}\n"
        "  CODE: {enum: [AA]}\n", source="acct.yaml")
    path = tmp_path / "acct.dat"
    path.write_bytes(b"12AB900BB" + b"1234X12AA")  # record 1: three rule violations; record 2: LIMIT not digits
    rejects = [r.to_json() for dc in contract.decode_file(path) for r in dc.rejects]
    by_field = {(r["record"], r["field"]): r for r in rejects}
    assert by_field[1, "ACCT"]["reason"] == "does not match the pattern ^[0-9]{4}$ (value withheld, pii field)"
    assert by_field[1, "LIMIT"]["reason"] == "above the maximum 500 (value withheld, pii field)"
    assert by_field[1, "CODE"]["reason"] == "not one of the allowed values (AA): 'BB'"  # not pii: quoted
    assert by_field[1, "CODE"]["raw"] == b"BB".hex().upper()
    assert by_field[2, "LIMIT"]["field_offset"] == 4 and by_field[2, "LIMIT"]["length"] == 3
    for key in [(1, "ACCT"), (1, "LIMIT"), (2, "LIMIT")]:
        assert by_field[key]["raw"] is None and by_field[key]["raw_withheld"] == "pii"
    assert not any(secret in str(rejects) for secret in ("12AB", "900", "X12", "3132"))
