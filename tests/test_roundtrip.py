"""The encoder is the decoder's exact inverse.

Property tests, per field type and code page: values within the PIC's range survive
encode -> decode unchanged, and canonical bytes (written by a small independent reference
encoder below, one value at a time in plain Python) survive decode -> encode unchanged.
Example tests pin the reasons for values that cannot be written and the `lgw encode` CLI.
"""

from __future__ import annotations

import io
import json
import math
import struct
from decimal import Decimal
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from schemas.codepages import SUPPORTED, CodePage, code_page
from schemas.contract import RecordSpec
from schemas.copybook import parse_copybook
from schemas.encode import RecordEncoder, encode_jsonl, encode_table
from schemas.layout import Elementary, Layout, Usage

EBCDIC = ["cp037", "cp273", "cp500", "cp1047", *[f"cp{n}" for n in range(1140, 1149)]]
PAGES = list(SUPPORTED)
JAVA_BLANKS = "".join(chr(c) for c in range(0x21))
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers
@cache
def _layout(copybook: str) -> Layout:
    return parse_copybook(copybook)


def one_field(clause: str) -> str:
    """A record with field F (the clause under test) between two FILLERs."""
    return ("       01  REC.\n"
            "           05  FILLER        PIC X(2).\n"
            f"           05  F             {clause}.\n"
            "           05  FILLER        PIC X(3).\n")


def spec_for(copybook: str, page: str, **options: str) -> RecordSpec:
    return RecordSpec.from_layout(_layout(copybook), encoding=page, **options)


def field_of(spec: RecordSpec, name: str = "F") -> Elementary:
    node = spec.layout.find(name)
    assert isinstance(node, Elementary)
    return node


def table_of(spec: RecordSpec, rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RecordEncoder(spec).schema)


def roundtrip(spec: RecordSpec, rows: list[dict]) -> tuple[np.ndarray, pa.Table]:
    """Encode rows (no problems allowed), decode the bytes (no errors allowed)."""
    matrix, problems = encode_table(table_of(spec, rows), spec)
    assert problems == []
    assert matrix.shape == (len(rows), spec.layout.record_length)
    batch = spec.decoder().decode(matrix)
    assert batch.errors == []
    return matrix, batch.table


def assert_reencodes(spec: RecordSpec, matrix: np.ndarray) -> None:
    """encode(decode(bytes)) == bytes."""
    again, problems = encode_table(spec.decoder().decode(matrix).table, spec)
    assert problems == []
    assert again.tobytes() == matrix.tobytes()


def scaled(unscaled: int, scale: int) -> int | Decimal:
    """The value a field holds for these digits: int for whole numbers, else Decimal."""
    if scale > 0:
        return Decimal(unscaled).scaleb(-scale)
    value = unscaled * 10 ** (-scale)
    return value if -(2**63) <= value < 2**63 else Decimal(value)


# --------------------------------------------------------------------------- reference encoders
def ref_zoned(unscaled: int, f: Elementary, page: CodePage) -> bytes:
    digits = [int(c) for c in str(abs(unscaled)).zfill(f.digits)]
    out = bytearray(page.zero + d for d in digits)
    neg = unscaled < 0
    if f.signed and not f.sign_separate:
        i = 0 if f.sign_leading else len(digits) - 1
        if page.ebcdic:
            out[i] = (0xD0 if neg else 0xC0) + digits[i]
        else:
            out[i] = ord("}JKLMNOPQR"[digits[i]] if neg else "{ABCDEFGHI"[digits[i]])
    if f.sign_separate:
        sign = page.minus if neg else page.plus
        out = bytearray([sign]) + out if f.sign_leading else out + bytearray([sign])
    return bytes(out)


def ref_packed(unscaled: int, f: Elementary) -> bytes:
    if f.usage == Usage.PACKED_UNSIGNED:
        nibbles = str(unscaled).zfill(f.size * 2)
    else:
        sign = "F" if not f.signed else "D" if unscaled < 0 else "C"
        nibbles = str(abs(unscaled)).zfill(f.size * 2 - 1) + sign
    return bytes.fromhex(nibbles)


def ref_binary(unscaled: int, f: Elementary) -> bytes:
    order = "little" if f.usage == Usage.BINARY_LE else "big"
    return unscaled.to_bytes(f.size, order, signed=f.signed)


def ref_float(value: float, width: int, fmt: str) -> bytes:
    little = fmt.endswith("-le")
    if fmt.startswith("ieee"):
        return struct.pack(("<" if little else ">") + ("f" if width == 4 else "d"), value)
    if value == 0:
        raw = 0
    else:  # IBM HFP: sign, excess-64 base-16 exponent, normalized fraction
        frac_bits = width * 8 - 8
        mant, exp2 = math.frexp(abs(value))
        hexp = -(-exp2 // 4)
        frac = math.ldexp(mant, exp2 - 4 * hexp + frac_bits)
        assert frac == int(frac), "the test must pick exactly representable values"
        raw = ((value < 0) << (width * 8 - 1)) | ((hexp + 64) << frac_bits) | int(frac)
    return raw.to_bytes(width, "little" if little else "big")


def ref_text(value: str, f: Elementary, page: CodePage) -> bytes:
    data = page.encode_text(value)
    pad = bytes([page.space]) * (f.size - len(data))
    return pad + data if f.justified_right else data + pad


def field_bytes(matrix: np.ndarray, f: Elementary) -> list[bytes]:
    return [bytes(r) for r in matrix[:, f.offset: f.offset + f.size]]


def assert_fillers_blank(matrix: np.ndarray, spec: RecordSpec) -> None:
    space = spec.page.space
    assert (matrix[:, :2] == space).all() and (matrix[:, -3:] == space).all()


# --------------------------------------------------------------------------- numbers
ZONED = [
    "PIC 9(5)", "PIC S9(5)", "PIC S9(7)V99", "PIC 9(3)V9(4)", "PIC S9(4) SIGN LEADING",
    "PIC S9(4) SIGN TRAILING SEPARATE", "PIC S9(4)V99 SIGN LEADING SEPARATE", "PIC S9(3)PP",
    "PIC 9(3)PPP", "PIC SPP9(3)", "PIC SVP9(2)", "PIC 9(20)", "PIC S9(15)V9(5)", "PIC S9", "PIC 9(18)",
]
PACKED = [
    "PIC S9(5) COMP-3", "PIC S9(4) COMP-3", "PIC 9(5) COMP-3", "PIC 9(6)V99 COMP-3",
    "PIC S9(7)V99 PACKED-DECIMAL", "PIC S9(18)V9(4) COMP-3", "PIC S9(1) COMP-3", "PIC 9(5) COMP-3U",
    "PIC 9(6) COMP-3U", "PIC S9(3)PP COMP-3",
]
BINARY = [
    "PIC S9(4) COMP", "PIC 9(4) COMP", "PIC S9(9) COMP-4", "PIC 9(9) BINARY", "PIC S9(18) COMP-5",
    "PIC 9(18) COMP", "PIC S9(7)V99 COMP", "PIC S9(9)V99 BINARY", "PIC S9(2) COMP-9", "PIC 9(2) COMP-9",
    "PIC S9(4) COMP-9", "PIC 9(9) COMP-9", "PIC S9(18) COMP-9", "PIC S9(20) COMP", "PIC 9(25) COMP",
]


def binary_range(f: Elementary) -> tuple[int, int]:
    bits = 8 * f.size
    if f.size > 8:  # wider than 18 digits: the PIC digits bound the value
        top = 10**f.digits - 1
        return (-top if f.signed else 0), top
    if f.signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    # an unsigned 4/8-byte value with the top bit set decodes as null (Cobrix's rule)
    return 0, (1 << (bits - 1)) - 1 if f.size >= 4 else (1 << bits) - 1


def unscaled_range(f: Elementary) -> tuple[int, int]:
    if f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE):
        return binary_range(f)
    top = 10**f.digits - 1
    return (-top if f.signed and f.usage != Usage.PACKED_UNSIGNED else 0), top


def unscaled_values(f: Elementary) -> st.SearchStrategy[int]:
    lo, hi = unscaled_range(f)
    edges = st.sampled_from([v for v in (lo, hi, 0, 1, -1, lo + 1, hi - 1) if lo <= v <= hi])
    return st.one_of(edges, st.integers(lo, hi))


def check_numbers(clause: str, page: str, unscaled: list[int], reference) -> None:
    spec = spec_for(one_field(clause), page)
    f = field_of(spec)
    values = [scaled(u, f.scale) for u in unscaled]
    matrix, table = roundtrip(spec, [{"F": v} for v in values])
    assert table.column("F").to_pylist() == values
    assert field_bytes(matrix, f) == [reference(u, f) for u in unscaled]
    assert_fillers_blank(matrix, spec)
    assert_reencodes(spec, matrix)


@pytest.mark.parametrize("clause", ZONED)
@PROPERTY
@given(data=st.data())
def test_zoned_decimal_round_trips_in_every_code_page(clause: str, data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(PAGES))
    f = field_of(spec_for(one_field(clause), page))
    unscaled = data.draw(st.lists(unscaled_values(f), min_size=1, max_size=6))
    check_numbers(clause, page, unscaled, lambda u, f: ref_zoned(u, f, code_page(page)))


@pytest.mark.parametrize("clause", PACKED)
@PROPERTY
@given(data=st.data())
def test_packed_decimal_round_trips(clause: str, data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(PAGES))
    f = field_of(spec_for(one_field(clause), page))
    unscaled = data.draw(st.lists(unscaled_values(f), min_size=1, max_size=6))
    check_numbers(clause, page, unscaled, ref_packed)


@pytest.mark.parametrize("clause", BINARY)
@PROPERTY
@given(data=st.data())
def test_binary_round_trips_at_every_width(clause: str, data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(PAGES))
    f = field_of(spec_for(one_field(clause), page))
    unscaled = data.draw(st.lists(unscaled_values(f), min_size=1, max_size=6))
    check_numbers(clause, page, unscaled, ref_binary)


def test_binary_sizes_are_the_ones_under_test() -> None:
    sizes = {clause: field_of(spec_for(one_field(clause), "cp037")).size for clause in BINARY}
    assert {sizes["PIC S9(2) COMP-9"], sizes["PIC S9(4) COMP"], sizes["PIC S9(9) COMP-4"],
            sizes["PIC S9(18) COMP-5"], sizes["PIC S9(20) COMP"]} == {1, 2, 4, 8, 9}


def test_null_numbers_become_blanks_or_zeros() -> None:
    copybook = ("       01  REC.\n"
                "           05  Z1   PIC S9(3)V9.\n"
                "           05  P1   PIC S9(3) COMP-3.\n"
                "           05  P2   PIC 9(3) COMP-3.\n"
                "           05  B1   PIC S9(4) COMP.\n"
                "           05  D1   COMP-2.\n")
    spec = spec_for(copybook, "cp037")
    matrix, table = roundtrip(spec, [{}])
    assert matrix[0].tobytes() == b"\x40" * 4 + b"\x00\x0c" + b"\x00\x0f" + b"\0" * 10
    assert table.to_pylist() == [{"Z1": None, "P1": 0, "P2": 0, "B1": 0, "D1": 0.0}]


# --------------------------------------------------------------------------- edited pictures
EDITED = [
    ("PIC 9(4).99", PAGES), ("PIC S9(4).9(4)", PAGES), ("PIC ZZZ9.99", PAGES), ("PIC Z(4)9", PAGES),
    ("PIC ZZZZ", PAGES), ("PIC ***9.99", PAGES), ("PIC +9(4).99", PAGES), ("PIC 9(3).99-", PAGES),
    ("PIC ZZ9.99+", PAGES), ("PIC S9(3).99 SIGN LEADING SEPARATE", PAGES), ("PIC ZZ9V99", PAGES),
    ("PIC Z,ZZ9.99", PAGES), ("PIC Z,ZZ9V99", PAGES), ("PIC 9(3),99", PAGES), ("PIC ZZ,ZZ9", PAGES),
    # A fixed sign left of suppressed zeros ("-  5.50", as COBOL writes it) leaves blanks inside
    # the number, which the decoder rejects in ASCII: EBCDIC only.
    ("PIC -ZZ9.99", EBCDIC), ("PIC +ZZ9.99", EBCDIC),
]


@pytest.mark.parametrize(("clause", "pages"), EDITED)
@PROPERTY
@given(data=st.data())
def test_numeric_edited_round_trips(clause: str, pages: list[str], data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(pages))
    spec = spec_for(one_field(clause), page)
    f = field_of(spec)
    body = f.picture.symbols.replace("S", "").replace("V", "")
    digits = sum(c in "9Z*" for c in body)
    point = "." if "." in body else "V" if "V" in f.picture.symbols else ","
    frac = sum(c in "9Z*" for c in f.picture.symbols.partition(point)[2])
    top = 10**digits - 1
    lo = -top if f.signed else 0
    unscaled = data.draw(st.lists(st.one_of(st.sampled_from([0, top, lo]), st.integers(lo, top)),
                                  min_size=1, max_size=6))
    values = [scaled(u, frac) for u in unscaled]
    matrix, table = roundtrip(spec, [{"F": v} for v in values])
    assert table.column("F").to_pylist() == values
    assert_fillers_blank(matrix, spec)
    assert_reencodes(spec, matrix)


def test_edited_bytes_are_what_cobol_writes() -> None:
    cases = [("PIC ZZZ9.99", Decimal("12.5"), b"  12.50"), ("PIC ***9.99", Decimal("7"), b"***7.00"),
             ("PIC +9(4).99", Decimal("-3.25"), b"-0003.25"), ("PIC 9(3).99-", Decimal("1"), b"001.00 "),
             ("PIC ZZZZ", 0, b"   0"), ("PIC S9(4).9(4)", Decimal("-1.5"), b"0001.500}")]
    for clause, value, expected in cases:
        spec = spec_for(one_field(clause), "ascii")
        matrix, problems = encode_table(table_of(spec, [{"F": value}]), spec)
        assert problems == []
        assert field_bytes(matrix, field_of(spec)) == [expected], clause


# --------------------------------------------------------------------------- floats
FLOATS = [(usage, fmt) for usage in ("COMP-1", "COMP-2") for fmt in ("ibm", "ieee", "ibm-le", "ieee-le")]


def float_values(usage: str, fmt: str) -> st.SearchStrategy[float]:
    if usage == "COMP-1" and fmt.startswith("ibm"):  # 21 bits survive any hex normalization
        return st.builds(lambda k, e: math.ldexp(k, e), st.integers(-(2**21) + 1, 2**21 - 1),
                         st.integers(-60, 60))
    if usage == "COMP-1":
        return st.floats(width=32, allow_nan=False, allow_infinity=False)
    finite = st.floats(allow_nan=False, allow_infinity=False)
    if fmt.startswith("ibm"):  # IBM long holds every double between 16**-65 and 16**63
        return finite.filter(lambda v: v == 0 or 16.0**-64 <= abs(v) < 16.0**62)
    return finite


@pytest.mark.parametrize(("usage", "fmt"), FLOATS)
@PROPERTY
@given(data=st.data())
def test_floats_round_trip_ibm_and_ieee(usage: str, fmt: str, data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(PAGES))
    spec = spec_for(one_field(usage), page, float_format=fmt)
    f = field_of(spec)
    values = data.draw(st.lists(float_values(usage, fmt), min_size=1, max_size=6))
    matrix, table = roundtrip(spec, [{"F": v} for v in values])
    assert table.column("F").to_pylist() == values
    expected = [ref_float(v, f.size, fmt) for v in values]
    if fmt.startswith("ieee"):
        assert field_bytes(matrix, f) == expected
    else:  # -0.0 has no IBM sign: it is written as zero
        assert field_bytes(matrix, f) == [ref_float(abs(v) if v == 0 else v, f.size, fmt) for v in values]
    assert_reencodes(spec, matrix)


def test_ibm_float_rounds_to_the_nearest_short_fraction() -> None:
    spec = spec_for(one_field("COMP-1"), "cp037")
    value = 1 + 2**-23  # 24 significant bits; COMP-1 keeps 21 after the 1 (hex digit 0x1)
    matrix, problems = encode_table(table_of(spec, [{"F": 1.0}, {"F": value}, {"F": 0.1}]), spec)
    assert problems == []
    assert field_bytes(matrix, field_of(spec)) == [b"\x41\x10\x00\x00", b"\x41\x10\x00\x00",
                                                   b"\x40\x19\x99\x9a"]


def test_floats_beyond_the_format_are_rejected() -> None:
    copybook = "       01  R.\n           05  A  COMP-1.\n           05  B  COMP-2.\n"
    src = io.BytesIO(b'{"A": 1e80, "B": 1e300}\n{"A": "NaN", "B": "x"}\n')
    out = io.BytesIO()
    count, problems = encode_jsonl(src, out, spec_for(copybook, "cp037"))
    assert count == 2
    assert sorted((p["line"], p["field"], p["reason"]) for p in problems) == [
        (1, "A", "value out of range for COMP-1"), (1, "B", "value out of range for COMP-2"),
        (2, "A", "not a number"), (2, "B", "not a number")]
    assert out.getvalue() == bytes(24)


# --------------------------------------------------------------------------- text
TEXT = ["PIC X(8)", "PIC A(5)", "PIC X(6) JUSTIFIED RIGHT", "PIC X", "PIC X(40)"]


def text_values(page: CodePage, size: int) -> st.SearchStrategy[str]:
    def fits(s: str) -> bool:
        return len(page.encode_text(s)) <= size

    # US-ASCII and UTF-8 read control bytes as nothing (as Cobrix does): they cannot come back
    if page.multibyte:
        chars = st.characters(codec="utf-8", min_codepoint=0x20)
    else:
        chars = st.sampled_from(sorted(chr(c) for c in page.from_unicode if page.name != "ascii" or c >= 0x20))
    return st.text(chars, max_size=size).map(lambda s: s.strip(JAVA_BLANKS)).filter(fits)


@pytest.mark.parametrize("clause", TEXT)
@PROPERTY
@given(data=st.data())
def test_text_round_trips_with_every_character_of_the_code_page(clause: str, data: st.DataObject) -> None:
    page = data.draw(st.sampled_from(PAGES))
    spec = spec_for(one_field(clause), page)
    f = field_of(spec)
    values = data.draw(st.lists(text_values(spec.page, f.size), min_size=1, max_size=6))
    matrix, table = roundtrip(spec, [{"F": v} for v in values])
    assert table.column("F").to_pylist() == values
    assert field_bytes(matrix, f) == [ref_text(v, f, spec.page) for v in values]
    assert_reencodes(spec, matrix)


@pytest.mark.parametrize("page", [p for p in PAGES if p != "utf-8"])
def test_untrimmed_text_round_trips_every_byte(page: str) -> None:
    """With --trim none every byte of a single-byte page comes back (0x00-only fields aside:
    those decode as null, and null text is written as spaces)."""
    spec = spec_for(one_field("PIC X(16)"), page, trim="none")
    f = field_of(spec)
    valid = range(0x20, 0x80) if page == "ascii" else range(256)  # US-ASCII drops controls, blanks 0x80+
    data = np.array(valid, dtype=np.uint8).reshape(-1, 16)  # no row all 0x00
    matrix = np.full((len(data), spec.layout.record_length), code_page(page).space, dtype=np.uint8)
    matrix[:, f.offset: f.offset + 16] = data
    assert_reencodes(spec, matrix)


# --------------------------------------------------------------------------- records
RECORD = """\
       01  ORDER-REC.
           05  ORDER-ID          PIC S9(4) COMP.
           05  LINE-COUNT        PIC 9(2).
           05  CUSTOMER.
               10  CUST-NAME     PIC X(10).
               10  FILLER        PIC X(2).
               10  CUST-RATING   PIC S9V99 COMP-3.
           05  ITEMS OCCURS 3 TIMES.
               10  ITEM-CODE     PIC X(2).
               10  ITEM-QTY      PIC S9(3) COMP-3.
           05  LINES OCCURS 0 TO 4 TIMES DEPENDING ON LINE-COUNT.
               10  LINE-AMT      PIC S9(5)V99.
               10  LINE-TAGS     PIC X(2) OCCURS 2 TIMES.
           05  PAYLOAD-NUM       PIC S9(11) COMP-3.
           05  PAYLOAD-TXT REDEFINES PAYLOAD-NUM PIC X(6).
           05  TOTAL             COMP-2.
"""

WORDS = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1, max_size=2)


@st.composite
def orders(draw: st.DrawFn) -> dict:
    lines = draw(st.lists(st.fixed_dictionaries({
        "LINE_AMT": st.integers(-9999999, 9999999).map(lambda u: scaled(u, 2)),
        "LINE_TAGS": st.lists(WORDS, min_size=2, max_size=2)}), max_size=4))
    row = {
        "ORDER_ID": draw(st.integers(-32768, 32767)),
        "LINE_COUNT": len(lines),
        "CUSTOMER": {"CUST_NAME": draw(st.text(st.sampled_from("ABCXYZ &-"), max_size=10).map(str.strip)),
                     "CUST_RATING": scaled(draw(st.integers(-999, 999)), 2)},
        "ITEMS": draw(st.lists(st.fixed_dictionaries({"ITEM_CODE": WORDS, "ITEM_QTY": st.integers(-999, 999)}),
                               min_size=3, max_size=3)),
        "LINES": lines,
        "TOTAL": float(draw(st.integers(-(10**9), 10**9))),
    }
    if draw(st.booleans()):  # only one REDEFINES view carries the value
        row["PAYLOAD_NUM"] = draw(st.integers(-(10**11) + 1, 10**11 - 1))
    else:  # text that is never valid packed decimal (first byte's high nibble > 9 in EBCDIC, 'J'-'Z' low)
        row["PAYLOAD_TXT"] = draw(st.sampled_from("JKLMNOZ")) + draw(st.text(st.sampled_from("ABCXYZ"),
                                                                             min_size=5, max_size=5))
    return row


@PROPERTY
@given(page=st.sampled_from(PAGES), rows=st.lists(orders(), min_size=1, max_size=5))
def test_groups_occurs_depending_on_and_redefines_round_trip(page: str, rows: list[dict]) -> None:
    spec = spec_for(RECORD, page)
    matrix, table = roundtrip(spec, rows)
    for row, back in zip(rows, table.to_pylist(), strict=True):
        view = "PAYLOAD_NUM" if "PAYLOAD_NUM" in row else "PAYLOAD_TXT"
        other = "PAYLOAD_TXT" if view == "PAYLOAD_NUM" else "PAYLOAD_NUM"
        assert back.pop(view) == row.pop(view)
        if view == "PAYLOAD_TXT":
            assert back[other] is None  # the text is no packed number
        back.pop(other)
        assert back == row
    assert_reencodes(spec, matrix)
    lines = spec.layout.find("LINES")
    unused = matrix[:, lines.offset + lines.size * np.arange(4)[:, None] + np.arange(lines.size)[None, :]]
    counts = np.array([len(r["LINES"]) for r in rows])
    assert (unused[np.arange(4)[None, :] >= counts[:, None]] == spec.page.space).all()


def test_depending_on_count_comes_from_the_list_when_null() -> None:
    spec = spec_for(RECORD, "cp037")
    row = {"LINE_COUNT": None, "LINES": [{"LINE_AMT": 1, "LINE_TAGS": ["A", "B"]}] * 2}
    matrix, problems = encode_table(table_of(spec, [row]), spec)
    assert problems == [{"row": 0, "field": "CUSTOMER", "reason": "missing group (null or absent)"}]
    back = spec.decoder().decode(matrix).table.to_pylist()[0]
    assert back["LINE_COUNT"] == 2 and len(back["LINES"]) == 2


def test_depending_on_count_that_disagrees_with_the_list_is_reported() -> None:
    spec = spec_for(RECORD, "cp037")
    rows = [{"LINE_COUNT": 3, "LINES": [{"LINE_AMT": 1}], "CUSTOMER": {}},
            {"LINE_COUNT": 1, "LINES": [{"LINE_AMT": 1}] * 5, "CUSTOMER": {}}]
    _, problems = encode_table(table_of(spec, rows), spec)
    assert problems == [
        {"row": 0, "field": "LINES", "reason": "LINE-COUNT says 3 elements, the list has 1"},
        {"row": 1, "field": "LINES", "reason": "5 elements, OCCURS allows at most 4"},
    ]


def test_redefining_view_is_written_only_where_the_first_view_is_null() -> None:
    spec = spec_for(RECORD, "cp037")
    rows = [{"CUSTOMER": {}, "PAYLOAD_NUM": 5, "PAYLOAD_TXT": "IGNORED"},
            {"CUSTOMER": {}, "PAYLOAD_TXT": "ZEBRA"}]
    matrix, problems = encode_table(table_of(spec, rows), spec)
    assert problems == []  # the unwritten view's too-long text is no problem
    at = spec.layout.find("PAYLOAD_NUM").offset
    assert bytes(matrix[0, at: at + 6]) == bytes.fromhex("00000000005C")
    assert bytes(matrix[1, at: at + 6]) == "ZEBRA ".encode("cp037")


def test_several_01_records_share_the_bytes() -> None:
    copybook = ("       01  HDR.\n           05  HDR-TYPE  PIC X.\n           05  HDR-DATE  PIC 9(8).\n"
                "       01  DTL.\n           05  DTL-TYPE  PIC X.\n           05  DTL-AMT   PIC S9(5) COMP-3.\n")
    spec = spec_for(copybook, "cp037")
    rows = [{"HDR": {"HDR_TYPE": "H", "HDR_DATE": 20240131}}, {"DTL": {"DTL_TYPE": "D", "DTL_AMT": -12}}]
    matrix, problems = encode_table(table_of(spec, rows), spec)
    assert problems == []
    assert bytes(matrix[0]) == "H20240131".encode("cp037")
    assert bytes(matrix[1]) == "D".encode("cp037") + bytes.fromhex("00012D") + b"\x40" * 5


# --------------------------------------------------------------------------- problems
def test_values_that_do_not_fit_are_rejected_with_a_reason_and_blank_filled() -> None:
    copybook = ("       01  REC.\n"
                "           05  QTY      PIC S9(3).\n"
                "           05  CNT      PIC 9(3).\n"
                "           05  AMT      PIC S9(3)V99 COMP-3.\n"
                "           05  SMALL    PIC S9(4) COMP.\n"
                "           05  NAME     PIC X(4).\n")
    spec = spec_for(copybook, "cp037")
    rows = [{"QTY": 1000, "CNT": -1, "AMT": Decimal("1.234"), "SMALL": 40000, "NAME": "TOOLONG"},
            {"QTY": -999, "CNT": 999, "AMT": Decimal("-999.99"), "SMALL": -32768, "NAME": "OK"}]
    schema = pa.schema([("QTY", pa.int64()), ("CNT", pa.int64()), ("AMT", pa.decimal128(10, 3)),
                        ("SMALL", pa.int64()), ("NAME", pa.string())])
    matrix, problems = encode_table(pa.Table.from_pylist(rows, schema=schema), spec)
    assert problems == [
        {"row": 0, "field": "QTY", "reason": "value has more digits than PIC S9(3) holds"},
        {"row": 0, "field": "CNT", "reason": "negative value in an unsigned field (PIC 9(3))"},
        {"row": 0, "field": "AMT", "reason": "value has more decimal places than PIC S9(3)V99 holds (2)"},
        {"row": 0, "field": "SMALL", "reason": "value out of range for a 2-byte signed binary field"},
        {"row": 0, "field": "NAME", "reason": "value is 7 characters, the field holds 4"},
    ]
    assert bytes(matrix[0]) == b"\x40" * 6 + b"\x00\x00\x0c" + b"\0\0" + b"\x40" * 4
    back = spec.decoder().decode(matrix).table.to_pylist()
    assert back[0] == {"QTY": None, "CNT": None, "AMT": 0, "SMALL": 0, "NAME": ""}
    assert back[1] == rows[1]


@pytest.mark.parametrize(("page", "text", "bad"), [("cp037", "5 €", "€"), ("ascii", "café", "é"),
                                                   ("cp273", "a–b", "–"), ("latin-1", "Ω", "Ω")])
def test_character_missing_from_the_code_page_is_rejected(page: str, text: str, bad: str) -> None:
    spec = spec_for(one_field("PIC X(5)"), page)
    matrix, problems = encode_table(table_of(spec, [{"F": "FINE"}, {"F": text}]), spec)
    assert problems == [{"row": 1, "field": "F",
                         "reason": f"character {bad!r} (U+{ord(bad):04X}) has no byte in {page}"}]
    assert field_bytes(matrix, field_of(spec))[1] == bytes([spec.page.space]) * 5
    assert spec.decoder().decode(matrix).table.column("F").to_pylist() == ["FINE", ""]


def test_problems_inside_occurs_name_the_slot() -> None:
    spec = spec_for(RECORD, "cp037")
    row = {"CUSTOMER": {}, "ITEMS": [{"ITEM_QTY": 1}, {"ITEM_QTY": 1}, {"ITEM_QTY": 1000}],
           "LINE_COUNT": 1, "LINES": [{"LINE_TAGS": ["OK", "TOO LONG"]}]}
    _, problems = encode_table(table_of(spec, [row]), spec)
    assert [p["field"] for p in problems] == ["ITEMS[2].ITEM_QTY", "LINES[0].LINE_TAGS[1]"]


# --------------------------------------------------------------------------- JSON Lines and the CLI
def test_jsonl_accepts_dashes_the_01_wrapper_and_reports_lines() -> None:
    spec = spec_for(RECORD, "cp037")
    lines = [
        {"ORDER-REC": {"ORDER-ID": 7, "LINE-COUNT": 0, "CUSTOMER": {"CUST-NAME": "ACME"}}},
        {"order_id": 8, "customer": {"cust_rating": 1.25}, "PAYLOAD_TXT": "ZEBRA"},
        "not an object",
        {"ORDER_ID": 9, "CUSTOMER": {}, "COLOUR": "red", "ITEMS": [{"ITEM_QTY": "12"}]},
    ]
    src = io.BytesIO(b"\n".join(json.dumps(x).encode() for x in lines) + b"\n{broken\n\n")
    out = io.BytesIO()
    count, problems = encode_jsonl(src, out, spec, batch_size=2)
    assert count == 3
    assert [(p["line"], p["field"]) for p in problems] == [(3, None), (4, "COLOUR"), (5, None)]
    table = spec.decoder().decode(np.frombuffer(out.getvalue(), np.uint8).reshape(3, -1)).table
    got = table.select(["ORDER_ID", "CUSTOMER", "PAYLOAD_TXT"]).to_pylist()
    assert got[0]["CUSTOMER"]["CUST_NAME"] == "ACME"
    assert got[1]["CUSTOMER"]["CUST_RATING"] == Decimal("1.25") and got[1]["PAYLOAD_TXT"] == "ZEBRA"
    assert table.column("ITEMS").to_pylist()[2][0]["ITEM_QTY"] == 12


def test_jsonl_reports_numbers_the_field_cannot_hold() -> None:
    spec = spec_for(RECORD, "cp037")
    src = io.BytesIO(b'{"CUSTOMER": {"CUST_RATING": 1.234}, "ORDER_ID": 1.5}\n'
                     b'{"CUSTOMER": {"CUST_NAME": true}, "ORDER_ID": 99999999999999999999}\n')
    count, problems = encode_jsonl(src, io.BytesIO(), spec)
    assert count == 2
    assert [(p["line"], p["field"], p["reason"]) for p in problems] == [
        (1, "CUSTOMER.CUST_RATING", "value has more decimal places than PIC S9V99 holds (2)"),
        (1, "ORDER_ID", "value has more decimal places than PIC S9(4) holds (0)"),
        (2, "CUSTOMER.CUST_NAME", "expected a string"),
        (2, "ORDER_ID", "value out of range for a 2-byte signed binary field"),
    ]


@pytest.mark.parametrize("fmt", ["F", "V", "VB", "D"])
def test_every_framing_reads_back(tmp_path: Path, fmt: str) -> None:
    copybook = tmp_path / "rec.cpy"
    copybook.write_text("       01  REC.\n           05  NAME  PIC X(6).\n           05  AMT   PIC S9(5)V99.\n")
    rows = [{"NAME": f"N{i}", "AMT": Decimal(i) / 4} for i in range(2000)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"NAME": "{name}", "AMT": {amt}}}\n' for name, amt in (r.values() for r in rows)))
    out, back = tmp_path / "out.dat", tmp_path / "back.jsonl"
    options = ["--copybook", str(copybook), "--encoding", "ascii", "--record-format", fmt]
    assert main(["encode", str(src), *options, "-o", str(out)]) == 0
    assert main(["decode", str(out), *options, "-o", str(back)]) == 0
    decoded = [json.loads(x, parse_float=Decimal) for x in back.read_text().splitlines()]
    assert decoded == rows
    if fmt == "V":
        assert out.read_bytes()[:4] == bytes([0, 17, 0, 0])  # IBM RDW: big-endian, counts itself


@pytest.mark.parametrize(("case", "data", "copybook", "page"), [
    ("test9_cp1141", "TRAN.APR14.NPT.DATA.dat", "test9_copybook.cob", "cp1141"),
    ("test1", "example.bin", "test1_copybook.cob", "cp037"),
])
def test_cli_round_trips_cobrix_files_byte_for_byte(tmp_path: Path, cobrix_dir: Path, case: str, data: str,
                                                    copybook: str, page: str) -> None:
    """`lgw decode --trim none` then `lgw encode` gives back the original file.

    test9 (cp1141): national and control characters in PIC X, S9(9)V99 BINARY. Every byte
    comes back: the cp1141 table is a bijection (0x15 is NEL, not a second LF), --trim none
    keeps blanks and control characters, and no PIC X field there is all 0x00 (such a field
    decodes as null and would be written back as spaces). test1 (cp037): OCCURS DEPENDING ON
    with the unused slots left as spaces, COMP-3 redefined by PIC X, nested groups."""
    folder = cobrix_dir / case
    options = ["--copybook", str(folder / copybook), "--encoding", page, "--trim", "none"]
    decoded, encoded = tmp_path / "records.jsonl", tmp_path / "records.dat"
    assert main(["decode", str(folder / data), *options, "-o", str(decoded)]) == 0
    assert main(["encode", str(decoded), *options, "-o", str(encoded)]) == 0
    assert encoded.read_bytes() == (folder / data).read_bytes()


def test_cli_encode_reports_rejects_with_exit_status_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    copybook = tmp_path / "rec.cpy"
    copybook.write_text("       01  REC.\n           05  QTY  PIC 9(2).\n")
    src = tmp_path / "in.jsonl"
    src.write_text('{"QTY": 5}\n{"QTY": 500}\n')
    out = tmp_path / "out.dat"
    assert main(["encode", str(src), "--copybook", str(copybook), "-o", str(out), "--newline"]) == 1
    assert out.read_bytes() == "05".encode("cp037") + b"\n" + b"\x40\x40\n"
    err = capsys.readouterr().err.splitlines()
    assert json.loads(err[0]) == {"line": 2, "field": "QTY", "reason": "value has more digits than PIC 9(2) holds"}
    assert json.loads(err[-1]) == {"records": 2, "rejected": 1}
