"""The safe expression language: every allowed construct, every refusal, exact decimals,
null semantics, nested fields and the error messages contract authors see."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from gateway.expressions import (
    compile_condition,
    compile_expression,
    field_types,
    schema_field_types,
)
from schemas.contract import load_contract, parse_contract
from schemas.errors import ContractError
from schemas.examples import contract_path
from tests.helpers import copybook, decode_rows, ebcdic

D = Decimal
WHERE = "fallback rule 2 (LARGE_ECOM)"


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.table({
        "TXN_AMOUNT": pa.array([D("5000.00"), D("5000.01"), None, D("0.30"), D("-12.50")], pa.decimal128(11, 2)),
        "COUNTRY": ["US", "DE", None, "FR", "us"],
        "CHANNEL": ["E", "P", "E", None, "M"],
        "MCC": pa.array([5411, 4899, None, 7, -3], pa.int64()),
        "SCORE": [1.5, float("nan"), None, -2.0, 0.25],
        "FLAG": [True, False, None, True, False],
        "MERCHANT_NAME": ["AMZN MKTP", "NETFLIX.COM", None, "amzn prime", ""],
        "CUST": pa.array([{"ID": 1, "NAME": "ann"}, {"ID": 2, "NAME": None}, None,
                          {"ID": 4, "NAME": "dan"}, {"ID": 5, "NAME": "eve"}]),
        "ITEMS": pa.array([[1, 2], [], None, [3], [4]], pa.list_(pa.int64())),
    })


@pytest.fixture(scope="module")
def fields(table: pa.Table) -> dict[str, pa.DataType]:
    return schema_field_types(table.schema)


def values(text: str, table: pa.Table, fields: dict[str, pa.DataType], **kw: bool) -> list[object]:
    return compile_expression(text, fields, where=WHERE).evaluate(table, **kw).to_pylist()


def refused(text: str, fields: dict[str, pa.DataType]) -> str:
    with pytest.raises(ContractError) as err:
        compile_expression(text, fields, where=WHERE)
    message = str(err.value)
    assert message.startswith(WHERE + ": "), message
    return message


# --------------------------------------------------------------------------- field names


def test_field_types_lists_leaves_by_key_and_dotted_path_but_not_occurs(fields: dict[str, pa.DataType]) -> None:
    assert fields["TXN_AMOUNT"] == pa.decimal128(11, 2)
    assert fields["CUST.ID"] == pa.int64()
    assert fields["NAME"] == pa.string()  # unique nested key
    assert "ITEMS" not in fields and "CUST" not in fields


def test_field_types_of_the_card_contract() -> None:
    types = field_types(load_contract(contract_path("card_txn")))
    assert types["TXN_AMOUNT"] == pa.decimal128(11, 2)
    assert types["CASHBACK_AMOUNT"] == pa.decimal128(7, 2)
    assert types["MCC"] == pa.int64()
    assert types["COUNTRY"] == pa.string()
    assert "FILLER" not in types


NESTED_CPY = copybook(
    "01  REC.",
    "    05  CUST.",
    "        10  CUST-ID     PIC 9(5).",
    "        10  CUST-NAME   PIC X(10).",
    "    05  AMOUNT          PIC 9(5)V99.",
    "    05  ITEMS OCCURS 2 TIMES.",
    "        10  ITEM-CODE   PIC X(2).",
)


def test_field_types_of_a_nested_copybook_contract_skip_occurs(tmp_path: Path) -> None:
    (tmp_path / "REC.cpy").write_text(NESTED_CPY)
    contract = parse_contract("contract: nested\nversion: 1\nrecord: {format: copybook, copybook: REC.cpy}\n",
                              base_dir=tmp_path)
    types = field_types(contract)
    assert types["CUST.CUST_ID"] == pa.int64()
    assert types["CUST_NAME"] == pa.string()
    assert types["AMOUNT"] == pa.decimal128(7, 2)
    assert not any("ITEM" in k for k in types)


def test_dotted_paths_and_nested_keys_read_struct_fields_of_a_decoded_record() -> None:
    rows = [ebcdic("00042ALICE     0012345ABCD"), ebcdic("00007BOB       0000001EFGH")]
    _, batch = decode_rows(NESTED_CPY, rows)
    types = schema_field_types(batch.table.schema)
    expr = compile_condition("CUST.CUST_ID > 10 and CUST_NAME == 'ALICE' and AMOUNT == 123.45", types, where="t")
    assert expr.evaluate(batch.table).to_pylist() == [True, False]
    assert expr.fields_used == {"CUST.CUST_ID", "CUST_NAME", "AMOUNT"}


def test_dotted_path_through_a_null_struct_is_null(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("CUST.ID", table, fields) == [1, 2, None, 4, 5]
    assert values("CUST.NAME == 'ann'", table, fields) == [True, False, False, False, False]
    assert values("NAME", table, fields) == ["ann", None, None, "dan", "eve"]


def test_a_hyphenated_copybook_name_alone_is_the_field(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    expr = compile_expression("TXN-AMOUNT", fields, where=WHERE)
    assert expr.result_type == pa.decimal128(11, 2)
    assert expr.fields_used == {"TXN_AMOUNT"}
    assert compile_expression("MERCHANT-NAME", fields, where=WHERE).fields_used == {"MERCHANT_NAME"}


def test_a_hyphenated_name_inside_an_expression_is_explained(fields: dict[str, pa.DataType]) -> None:
    message = refused("TXN-AMOUNT > 5000", fields)
    assert "'-' is minus" in message and "write TXN_AMOUNT for TXN-AMOUNT" in message


def test_field_names_match_case_insensitively(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("country == 'DE'", table, fields) == [False, True, False, False, False]


def test_unknown_field_names_the_rule_and_suggests_close_names(fields: dict[str, pa.DataType]) -> None:
    message = refused("CHANEL == 'E' and TXN_AMOUNT > 2000", fields)
    assert message.startswith("fallback rule 2 (LARGE_ECOM): unknown field CHANEL; did you mean CHANNEL?")
    assert "CHANEL == 'E' and TXN_AMOUNT > 2000" in message


def test_unknown_field_without_close_names(fields: dict[str, pa.DataType]) -> None:
    assert "unknown field ZZZZ (in" in refused("ZZZZ > 1", fields)


def test_a_field_missing_from_the_table_at_run_time_is_a_contract_error(fields: dict[str, pa.DataType]) -> None:
    expr = compile_expression("MCC > 1", fields, where=WHERE)
    with pytest.raises(ContractError, match="field MCC is not in the table"):
        expr.evaluate(pa.table({"OTHER": [1]}))


# --------------------------------------------------------------------------- decimals


def test_decimal_comparison_is_exact_at_the_boundary(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("TXN_AMOUNT > 5000", table, fields)[:2] == [False, True]
    assert values("TXN_AMOUNT >= 5000.01", table, fields)[:2] == [False, True]
    assert values("TXN_AMOUNT == 5000.01", table, fields)[:2] == [False, True]
    assert values("TXN_AMOUNT > 5000.005", table, fields)[:2] == [False, True]  # literal finer than the field
    assert values("TXN_AMOUNT < 5000.001", table, fields)[:2] == [True, False]


def test_decimal_arithmetic_has_no_float_error(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    # 0.30 - 0.1 == 0.2 is false in binary floating point
    assert values("TXN_AMOUNT - 0.1 == 0.2", table, fields)[3] is True
    assert values("TXN_AMOUNT + 0.1 + 0.2 == 0.6", table, fields)[3] is True
    assert values("TXN_AMOUNT * 2", table, fields)[:2] == [D("10000.00"), D("10000.02")]


def test_division_gives_float64_and_null_for_a_zero_divisor(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    expr = compile_expression("TXN_AMOUNT / 2", fields, where=WHERE)
    assert expr.result_type == pa.float64()
    assert expr.evaluate(table).to_pylist()[:2] == [2500.0, 2500.005]
    assert values("MCC / (MCC - 7)", table, fields)[3] is None
    assert values("7 / 2", table, fields)[0] == 3.5


def test_division_by_a_zero_literal_is_refused(fields: dict[str, pa.DataType]) -> None:
    assert "division by zero" in refused("MCC / 0", fields)
    assert "division by zero" in refused("MCC % 0.0", fields)


def test_int_and_decimal_mix_exactly(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("MCC > 7.5", table, fields) == [True, True, False, False, False]
    assert values("MCC + TXN_AMOUNT", table, fields)[3] == D("7.30")
    assert values("MCC in (7.0, 5411)", table, fields) == [True, False, False, True, False]


def test_float_fields_compare_as_float(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("SCORE > 0.3", table, fields) == [True, False, False, False, False]  # NaN > x is false
    assert values("SCORE + TXN_AMOUNT", table, fields)[0] == 5001.5


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(("text", "want"), [
    ("MCC == 7", [False, False, False, True, False]),
    ("MCC != 7", [True, True, False, False, True]),
    ("MCC < 7", [False, False, False, False, True]),
    ("MCC <= 7", [False, False, False, True, True]),
    ("MCC > 4899", [True, False, False, False, False]),
    ("MCC >= 4899", [True, True, False, False, False]),
    ("0 < MCC < 5000", [False, True, False, True, False]),
    ("COUNTRY < 'F'", [False, True, False, False, False]),
    ("FLAG == True", [True, False, False, True, False]),
    ("(MCC > 100) == FLAG", [True, False, False, False, True]),
])
def test_comparisons(text: str, want: list[bool], table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values(text, table, fields) == want


@pytest.mark.parametrize(("text", "want"), [
    ("MCC + 1", [5412, 4900, None, 8, -2]),
    ("MCC - 1", [5410, 4898, None, 6, -4]),
    ("MCC * 2", [10822, 9798, None, 14, -6]),
    ("MCC % 10", [1, 9, None, 7, 7]),  # Python's sign-of-divisor modulo: -3 % 10 == 7
    ("-MCC", [-5411, -4899, None, -7, 3]),
    ("-(MCC + 1) * 2", [-10824, -9800, None, -16, 4]),
    ("MCC - -1", [5412, 4900, None, 8, -2]),
])
def test_arithmetic(text: str, want: list[object], table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values(text, table, fields) == want


def test_float_modulo_follows_python(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("SCORE % 1", table, fields)[3] == pytest.approx(-2.0 % 1)
    assert values("MCC % -10", table, fields)[4] == -3 % -10


def test_boolean_logic_and_precedence(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("MCC > 100 and COUNTRY != 'US'", table, fields) == [False, True, False, False, False]
    assert values("MCC > 100 or COUNTRY == 'FR'", table, fields) == [True, True, False, True, False]
    assert values("not MCC > 100", table, fields) == [False, False, False, True, True]
    assert values("not (MCC > 100 and FLAG) or CHANNEL == 'E'", table, fields) == [True, True, True, True, True]


def test_a_comparison_with_null_is_false_in_a_condition(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    # row 2 is all nulls: every comparison, and its negation, is false
    assert values("MCC > 0", table, fields)[2] is False
    assert values("not MCC > 0", table, fields)[2] is False
    assert values("MCC > 0 or TXN_AMOUNT > 0", table, fields)[2] is False
    assert values("MCC > 0 or CHANNEL == 'E'", table, fields)[2] is True  # Kleene: null or true is true


def test_keep_nulls_leaves_unknown_conditions_null(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("MCC > 0", table, fields, keep_nulls=True)[2] is None


def test_in_and_not_in_with_literal_lists(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("COUNTRY in ('US', 'FR')", table, fields) == [True, False, False, True, False]
    assert values("COUNTRY in ['US', 'FR']", table, fields) == [True, False, False, True, False]
    assert values("COUNTRY not in ('US', 'FR')", table, fields) == [False, True, False, False, True]
    assert values("TXN_AMOUNT in (5000.01, 0.3)", table, fields) == [False, True, False, True, False]
    assert values("MCC in (-3,)", table, fields) == [False, False, False, False, True]
    assert values("COUNTRY in ()", table, fields) == [False] * 5


def test_none_in_a_list_matches_nulls(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("COUNTRY in ('US', None)", table, fields) == [True, False, True, False, False]
    assert values("COUNTRY not in ('US', None)", table, fields) == [False, True, False, True, True]


def test_literals(table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    assert values("True", table, fields) == [True] * 5
    assert values("False or MCC == 7", table, fields) == [False, False, False, True, False]
    assert compile_expression("1.5", fields, where=WHERE).result_type == pa.decimal128(2, 1)
    assert compile_expression("'x'", fields, where=WHERE).result_type == pa.string()
    assert values("MCC > 1e3", table, fields) == [True, True, False, False, False]


def test_a_multi_chunk_table_gives_one_array() -> None:
    chunked = pa.Table.from_batches([pa.record_batch({"A": [1, 2]}), pa.record_batch({"A": [3]})])
    out = compile_expression("A > 1", {"A": pa.int64()}, where=WHERE).evaluate(chunked)
    assert isinstance(out, pa.Array) and out.to_pylist() == [False, True, True]


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(("text", "want"), [
    ("abs(MCC)", [5411, 4899, None, 7, 3]),
    ("abs(TXN_AMOUNT)", [D("5000.00"), D("5000.01"), None, D("0.30"), D("12.50")]),
    ("min(MCC, 100)", [100, 100, 100, 7, -3]),  # nulls are skipped, as in SQL LEAST
    ("max(MCC, 100, 5000)", [5411, 5000, 5000, 5000, 5000]),
    ("min(TXN_AMOUNT, 1)", [D("1.00"), D("1.00"), D("1.00"), D("0.30"), D("-12.50")]),
    ("len(COUNTRY)", [2, 2, None, 2, 2]),
    ("lower(COUNTRY)", ["us", "de", None, "fr", "us"]),
    ("upper(COUNTRY) == 'US'", [True, False, False, False, True]),
    ("startswith(MERCHANT_NAME, 'AMZN')", [True, False, False, False, False]),
    ("startswith(lower(MERCHANT_NAME), 'amzn')", [True, False, False, True, False]),
    ("endswith(MERCHANT_NAME, '.COM')", [False, True, False, False, False]),
    ("contains(MERCHANT_NAME, 'FLIX')", [False, True, False, False, False]),
    ("is_null(COUNTRY)", [False, False, True, False, False]),
    ("is_null(SCORE)", [False, True, True, False, False]),  # NaN counts as missing
    ("not is_null(CUST.NAME)", [True, False, False, True, True]),
    ("coalesce(MCC, 0)", [5411, 4899, 0, 7, -3]),
    ("coalesce(CHANNEL, COUNTRY, 'X')", ["E", "P", "E", "FR", "M"]),
    ("coalesce(TXN_AMOUNT, 0) > 0", [True, True, False, True, False]),
    ("round(TXN_AMOUNT, 1)", [D("5000.00"), D("5000.00"), None, D("0.30"), D("-12.50")]),
    ("round(SCORE + 0.004, 2)", [1.5, None, None, -2.0, 0.25]),
    ("round(MCC, -1)", [5410, 4900, None, 10, 0]),
    ("round(2.5)", [D("2")] * 5),  # half to even, like Python's round
])
def test_functions(text: str, want: list[object], table: pa.Table, fields: dict[str, pa.DataType]) -> None:
    got = values(text, table, fields)
    got = [None if isinstance(v, float) and v != v else v for v in got]  # NaN -> None for comparison
    assert got == want


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("text", "fragment"), [
    ("COUNTRY.lower()", "method calls"),
    ("MCC.__class__", "names starting with '__'"),
    ("__import__('os').system('true')", "is not allowed"),
    ("__builtins__", "names starting with '__'"),
    ("COUNTRY[0]", "subscripts"),
    ("COUNTRY[0:1]", "subscripts"),
    ("lambda: 1", "lambda"),
    ("[x for x in ITEMS]", "comprehensions"),
    ("{x for x in ITEMS}", "comprehensions"),
    ("{x: 1 for x in ITEMS}", "comprehensions"),
    ("any(x for x in ITEMS)", "unknown function any"),
    ("f'{COUNTRY}' == 'US'", "f-strings"),
    ("MCC if FLAG else 0", "conditional expressions"),
    ("(X := 1)", "assignments"),
    ("{'a': 1}", "dict literals"),
    ("{1, 2}", "set literals"),
    ("[1, 2]", "lists outside"),
    ("MCC ** 2", "operator **"),
    ("MCC // 2", "operator //"),
    ("FLAG & FLAG", "operator &; use and/or/not"),
    ("FLAG | FLAG", "operator |"),
    ("MCC << 1", "operator <<"),
    ("~MCC", "unary ~"),
    ("+MCC", "unary +"),
    ("MCC is None", "`is`"),
    ("b'US' == COUNTRY", "bytes literals"),
    ("1j", "complex literals"),
    ("...", "ellipsis literals"),
    ("lower(x=COUNTRY)", "keyword or starred arguments"),
    ("max(*ITEMS)", "keyword or starred arguments"),
    ("open('/etc/passwd')", "unknown function open"),
    ("eval('1')", "unknown function eval"),
    ("lowr(COUNTRY)", "did you mean lower?"),
    ("lower", "lower is a function"),
    ("MCC > ", "syntax error"),
    ("MCC = 1", "syntax error"),
    ("", "the expression is empty"),
])
def test_refusals_name_the_expression_and_what_is_not_allowed(text: str, fragment: str,
                                                              fields: dict[str, pa.DataType]) -> None:
    message = refused(text, fields)
    assert fragment in message
    if text:
        assert text.strip() in message


@pytest.mark.parametrize(("text", "fragment"), [
    ("COUNTRY > 5", "cannot compare COUNTRY (a string) with 5 (a whole number)"),
    ("TXN_AMOUNT == 'US'", "cannot compare TXN_AMOUNT (a decimal number) with 'US' (a string)"),
    ("FLAG == 1", "cannot compare FLAG (a condition)"),
    ("COUNTRY + 'X'", "arithmetic (+) on strings is not allowed"),
    ("-COUNTRY", "arithmetic (unary -) on strings"),
    ("COUNTRY * 2", "arithmetic (*) on strings"),
    ("(MCC > 1) + 1", "arithmetic (+) on a condition"),
    ("MCC and FLAG", "`and` needs conditions, but MCC is a whole number"),
    ("not COUNTRY", "`not` needs conditions"),
    ("MCC == None", "cannot compare with None; use is_null(MCC)"),
    ("MCC in MCC", "`in` needs a literal list"),
    ("MCC in (1, 'a')", "a list holding 'a' (a string)"),
    ("COUNTRY in ('US', 1)", "a list holding 1"),
    ("MCC in (1, SCORE)", "needs literals in its list"),
    ("MCC < 1 in (1,)", "`in` cannot be chained"),
    ("len(MCC)", "len() needs a string, but MCC is a whole number"),
    ("abs(COUNTRY)", "abs() needs a whole number or a decimal number or a floating-point number"),
    ("startswith(COUNTRY, CHANNEL)", "needs a string literal"),
    ("round(SCORE, 1.5)", "needs a whole-number literal"),
    ("min(MCC)", "min() takes 2 or more arguments, found 1"),
    ("lower(COUNTRY, 1)", "lower() takes 1 argument, found 2"),
    ("coalesce(MCC, COUNTRY)", "coalesce() needs arguments of one type"),
    ("None", "the value is None"),
])
def test_type_errors_are_caught_at_compile_time(text: str, fragment: str, fields: dict[str, pa.DataType]) -> None:
    assert fragment in refused(text, fields)


def test_compile_condition_requires_true_false(fields: dict[str, pa.DataType]) -> None:
    with pytest.raises(ContractError, match=r"must be a condition \(true/false\).*decimal"):
        compile_condition("TXN_AMOUNT + 1", fields, where=WHERE)
    assert compile_condition("MCC > 1", fields, where=WHERE).is_condition


def test_an_over_long_expression_is_refused(fields: dict[str, pa.DataType]) -> None:
    assert "characters long" in refused(" or ".join(["MCC > 1"] * 1000), fields)


def test_a_deeply_nested_expression_is_refused_not_crashed(fields: dict[str, pa.DataType]) -> None:
    message = refused("-" * 3000 + "MCC", fields)
    assert "nested" in message or "not allowed" in message


def test_non_string_expression_is_refused(fields: dict[str, pa.DataType]) -> None:
    with pytest.raises(ContractError, match="expected an expression"):
        compile_expression(5000, fields, where=WHERE)  # type: ignore[arg-type]


def test_result_type_and_fields_used(fields: dict[str, pa.DataType]) -> None:
    expr = compile_expression("TXN_AMOUNT > 5000 and COUNTRY != 'US'", fields, where=WHERE)
    assert expr.result_type == pa.bool_()
    assert expr.fields_used == {"TXN_AMOUNT", "COUNTRY"}
    assert compile_expression("MCC + 1", fields, where=WHERE).result_type == pa.int64()
    assert compile_expression("TXN_AMOUNT + 1", fields, where=WHERE).result_type == pa.decimal128(12, 2)
    assert compile_expression("SCORE + 1", fields, where=WHERE).result_type == pa.float64()


# --------------------------------------------------------------------------- issue 10: found by the fuzz suite


def test_a_syntax_error_in_a_multi_line_expression_is_one_line(fields: dict[str, pa.DataType]) -> None:
    message = refused("MCC > (\n1", fields)
    assert "\n" not in message
    assert 'syntax error at column 7 in "MCC > (\\n1"' in message and "write it on one line" in message


def test_a_type_error_quoting_a_multi_line_expression_is_one_line(fields: dict[str, pa.DataType]) -> None:
    message = refused("(MCC +\n'x')", fields)
    assert "\n" not in message and "arithmetic (+) on strings" in message and '"(MCC +\\n\'x\')"' in message


@pytest.mark.parametrize(("text", "want"), [
    ("1 in (1, 2)", [True] * 5),
    ("1 not in (2, 3)", [True] * 5),
    ("'US' in ('DE',)", [False] * 5),
    ("abs(-2) in (1, 2)", [True] * 5),
])
def test_a_literal_on_the_left_of_in_runs_on_every_row(text: str, want: list[bool], table: pa.Table,
                                                        fields: dict[str, pa.DataType]) -> None:
    assert values(text, table, fields) == want
    assert values(text, table.slice(0, 0), fields) == []


@pytest.mark.parametrize(("text", "fragment"), [
    ("round(MCC, 99999999999)", "round() to 99999999999 digits: the digits must be between -38 and 38"),
    ("round(SCORE, -39)", "round() to -39 digits: the digits must be between -38 and 38"),
    ("round(MCC, -19)", "MCC has at most 19 whole digits, so every value would round to 0; the digits must be "
                        "between -18 and 38"),
    ("round(TXN_AMOUNT, -12)", "TXN_AMOUNT has at most 9 whole digits"),
])
def test_round_digits_are_bounded_at_compile_time(text: str, fragment: str, fields: dict[str, pa.DataType]) -> None:
    assert fragment in refused(text, fields)


def test_round_a_huge_float_to_many_places_leaves_it_whole() -> None:
    # 1e300 * 10**10 overflows float64: Arrow failed the whole batch at scoring
    big = pa.table({"X": pa.array([1e300, -1e300, 2.0**53 + 2, 1.23456, None, float("inf")], pa.float64())})
    expr = compile_expression("round(X, 10)", {"X": pa.float64()}, where=WHERE)
    assert expr.evaluate(big).to_pylist() == [1e300, -1e300, 2.0**53 + 2, 1.23456, None, float("inf")]
    assert compile_expression("round(X, 2)", {"X": pa.float64()}, where=WHERE).evaluate(big).to_pylist()[3] == 1.23
    assert compile_expression("round(X, 38)", {"X": pa.float64()}, where=WHERE).evaluate(big).to_pylist()[0] == 1e300
