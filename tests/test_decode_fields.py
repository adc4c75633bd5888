"""Column decoders: each field type, in EBCDIC and ASCII, with the reasons bad values get."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from schemas.contract import RecordSpec
from schemas.copybook import parse_copybook
from schemas.errors import ContractError
from tests.helpers import copybook, decode_rows, ebcdic


def one_field(pic: str) -> str:
    return copybook("01  REC.", f"    05  F  {pic}.")


def values(pic: str, rows: list[bytes], encoding: str = "cp037", **kw) -> list:  # type: ignore[no-untyped-def]
    recs, _ = decode_rows(one_field(pic), rows, encoding, **kw)
    return [r["F"] for r in recs]


def reasons(pic: str, rows: list[bytes], encoding: str = "cp037") -> list[str]:
    _, batch = decode_rows(one_field(pic), rows, encoding)
    return [e.reason_of(i) for e in batch.errors for i in range(len(e.rows))]


def test_text_trims_like_java_and_all_nul_is_null() -> None:
    rows = [ebcdic("  AB C  "), b"\x00" * 8, ebcdic("        ")]
    assert values("PIC X(8)", rows) == ["AB C", None, ""]
    assert values("PIC X(8)", rows[:1], trim="left") == ["AB C  "]
    assert values("PIC X(8)", rows[:1], trim="right") == ["  AB C"]
    assert values("PIC X(8)", rows[:1], trim="none") == ["  AB C  "]


def test_national_characters_decode_per_code_page() -> None:
    assert values("PIC X(4)", ["Grüß".encode("cp273")], "cp273") == ["Grüß"]
    assert values("PIC X(3)", [b"\x9f\xc1\xc2"], "cp1140") == ["€AB"]
    assert values("PIC X(3)", ["é€a".encode()[:3].ljust(3)], "latin-1") == ["Ã©â"]


def test_us_ascii_shows_high_bytes_as_spaces_and_drops_controls_like_cobrix() -> None:
    assert values("PIC X(4)", [b"A\xe9B ", b"1\x00 \x00"], "ascii", trim="none") == ["A B ", "1 "]
    assert reasons("PIC X(4)", [b"A\xe9B "], "ascii") == []
    assert values("PIC X(4)", [b"A\xe9B "], "latin-1") == ["AéB"]


@pytest.mark.parametrize(("encoding", "raw", "expected"), [
    ("cp037", b"\xf1\xf2\xf3\xc4", Decimal("12.34")),
    ("cp037", b"\xf1\xf2\xf3\xd4", Decimal("-12.34")),
    ("cp037", b"\xf0\xf0\xf0\xd0", Decimal("0.00")),
    ("ascii", b"123D", Decimal("12.34")),
    ("ascii", b"123M", Decimal("-12.34")),
    ("ascii", b"000}", Decimal("-0.00")),
    ("ascii", b"1234", Decimal("12.34")),
])
def test_zoned_overpunch_in_ebcdic_and_ascii(encoding: str, raw: bytes, expected: Decimal) -> None:
    assert values("PIC S99V99", [raw], encoding) == [expected]


def test_zoned_blank_is_null_without_a_reason_and_garbage_has_one() -> None:
    assert values("PIC 9(4)", [ebcdic("    "), ebcdic(" 12 "), ebcdic("12?4")]) == [None, 12, None]
    assert reasons("PIC 9(4)", [ebcdic("12?4")]) == ["invalid digit in zoned decimal"]


def test_unsigned_zoned_refuses_a_sign() -> None:
    assert values("PIC 9(3)", [b"\xf1\xf2\xd3", b"\xf1\xf2\xc3"]) == [None, None]
    assert reasons("PIC 9(3)", [b"\xf1\xf2\xd3", b"\xf1\xf2\xc3"]) == [
        "negative value in an unsigned field", "sign overpunch in an unsigned field"]


def test_separate_signs_leading_and_trailing() -> None:
    assert values("PIC S9(3) SIGN LEADING SEPARATE", [ebcdic("-123"), ebcdic("+045")]) == [-123, 45]
    assert values("PIC S9(3) SIGN TRAILING SEPARATE", [ebcdic("123-")]) == [-123]


def test_explicit_decimal_point_and_edited_pictures() -> None:
    assert values("PIC S9(3).99", [b"\xf3\xf0\xf5\x4b\xf0\xd3"]) == [Decimal("-305.03")]
    assert values("PIC ZZZ9.99-", [ebcdic("  12.50-"), ebcdic("   0.00 ")]) == [Decimal("-12.50"), Decimal("0.00")]
    assert values("PIC ZZ,ZZ9.99", [ebcdic(" 1,234.50")], "cp037") == [Decimal("1234.50")]


def test_p_scaling() -> None:
    assert values("PIC 9(3)PP", [ebcdic("123")]) == [12300]
    assert values("PIC SVPP9(3)", [b"\xf1\xf2\xd3"]) == [Decimal("-0.00123")]


@pytest.mark.parametrize(("pic", "raw", "expected"), [
    ("PIC S9(5)V99 COMP-3", b"\x12\x34\x56\x7c", Decimal("12345.67")),
    ("PIC S9(5)V99 COMP-3", b"\x12\x34\x56\x7d", Decimal("-12345.67")),
    ("PIC 9(5) COMP-3", b"\x12\x34\x5f", 12345),
    ("PIC 9(4) COMP-3", b"\x01\x23\x4f", 1234),
    ("PIC 9(4) COMP-3U", b"\x12\x34", 1234),
    ("PIC S9(18) COMP-3", b"\x01\x23\x45\x67\x89\x01\x23\x45\x67\x8c", 123456789012345678),
    ("PIC S9(25) COMP-3", b"\x12\x34\x56\x78\x90\x12\x34\x56\x78\x90\x12\x34\x5d",
     -1234567890123456789012345),
])
def test_packed_decimal(pic: str, raw: bytes, expected: object) -> None:
    assert values(pic, [raw]) == [expected]


def test_packed_decimal_bad_nibbles_are_null_with_reasons() -> None:
    rows = [b"\x12\x3a\x5c", b"\x12\x34\x5b"]
    assert values("PIC S9(5) COMP-3", rows) == [None, None]
    assert reasons("PIC S9(5) COMP-3", rows) == ["invalid packed-decimal digit nibble",
                                                 "invalid packed-decimal sign nibble"]


@pytest.mark.parametrize("pic", ["PIC S9(1) COMP-3", "PIC S9(7)V99 COMP-3", "PIC 9(6) COMP-3", "PIC 9(4) COMP-3U",
                                 "PIC S9(17) COMP-3", "PIC 9(18) COMP-3U", "PIC S9(19) COMP-3"])
def test_packed_decimal_a_byte_at_a_time_decodes_as_a_nibble_at_a_time(pic: str) -> None:
    # mostly valid values, and bytes of every kind in every position
    from schemas import fields

    field = parse_copybook(one_field(pic)).root
    while not hasattr(field, "usage"):
        field = field.children[0]
    rng = np.random.default_rng(7)
    width = field.size
    digits = rng.integers(0, 10, (3_000, width * 2))
    block = (digits[:, 0::2] * 16 + digits[:, 1::2]).astype(np.uint8)
    if "U" not in pic:
        block[:, -1] = (block[:, -1] & 0xF0) | rng.choice([0xC, 0xD, 0xF], 3_000)
    block[:500] = rng.integers(0, 256, (500, width), dtype=np.uint8)
    avail = np.where(np.arange(3_000) % 97 == 0, width - 1, width)
    fast, slow = fields.decode_packed(block, avail, field), fields._decode_packed_nibbles(block, avail, field)
    assert fast.values.equals(slow.values)
    assert (fast.reasons is None and slow.reasons is None) or np.array_equal(fast.reasons, slow.reasons)


@pytest.mark.parametrize(("pic", "raw", "expected"), [
    ("PIC S9(4) COMP", b"\xff\xfd", -3),
    ("PIC 9(4) COMP", b"\xff\xff", 65535),
    ("PIC S9(9) COMP", b"\x80\x00\x00\x00", -(2**31)),
    ("PIC 9(8) COMP", b"\x39\x32\x31\x31", 959590705),
    ("PIC 9(8) COMP", b"\xf9\xf2\xf7\xf1", None),  # unsigned with the top bit set: null (Cobrix)
    ("PIC S9(7)V99 COMP", b"\xff\xff\xff\x9c", Decimal("-1.00")),
    ("PIC S9(18) COMP-5", b"\x7f\xff\xff\xff\xff\xff\xff\xff", 2**63 - 1),
    ("PIC S9(4) COMP-9", b"\xfd\xff", -3),
    ("PIC S9(19) COMP", b"\xff\xd5\xaa\xd3\x7e\x6a\xf5\x9f\x59", -3050393257676267687),
])
def test_binary_numbers(pic: str, raw: bytes, expected: object) -> None:
    assert values(pic, [raw]) == [expected]


def test_floats_ibm_hex_and_ieee() -> None:
    cpy = copybook("01  REC.", "    05  S COMP-1.", "    05  D COMP-2.")
    ibm = bytes.fromhex("C276A000") + bytes.fromhex("4314 2EFC CAF7 09B7".replace(" ", ""))
    recs, _ = decode_rows(cpy, [ibm])
    assert recs[0]["S"] == -118.625
    assert math.isclose(recs[0]["D"], 322.936717, rel_tol=1e-9)


def test_occurs_depending_on_cuts_arrays_and_ignores_unused_slots() -> None:
    cpy = copybook("01  REC.", "    05  N  PIC 9.", "    05  ITEM OCCURS 3 DEPENDING ON N.",
                   "        10  V PIC S9(3) COMP-3.")
    rows = [ebcdic("2") + b"\x00\x1c\x00\x2d" + b"\xff\xff", ebcdic("0") + b"\xff" * 6]
    recs, batch = decode_rows(cpy, rows)
    assert recs == [{"N": 2, "ITEM": [{"V": 1}, {"V": -2}]}, {"N": 0, "ITEM": []}]
    assert batch.errors == []  # garbage in slots beyond the count is not a reject


def test_errors_name_the_slot_of_a_bad_occurs_item() -> None:
    cpy = copybook("01  REC.", "    05  ITEM OCCURS 2.", "        10  V PIC S9(3) COMP-3.")
    _, batch = decode_rows(cpy, [b"\x00\x1c\x00\x2a"])
    err = batch.errors[0]
    assert (err.path_of(0), int(err.offsets[0])) == ("REC.ITEM[1].V", 2)


def test_short_records_null_cut_numbers_and_keep_present_text() -> None:
    cpy = copybook("01  REC.", "    05  A PIC X(4).", "    05  B PIC 9(2).", "    05  C PIC X(4).")
    rows = [ebcdic("ABCD12XY"), ebcdic("ABCD1")]
    recs, batch = decode_rows(cpy, rows, lengths=[8, 5])
    assert recs == [{"A": "ABCD", "B": 12, "C": "XY"}, {"A": "ABCD", "B": None, "C": None}]
    assert batch.errors == []


def test_a_record_of_only_filler_is_still_one_row_per_record(tmp_path: Path) -> None:
    """No column to decode, but every record is accounted for: one (empty) row each,
    and an OCCURS group of FILLER keeps one empty item per occurrence."""
    recs, batch = decode_rows(copybook("01  REC.", "    05  FILLER PIC X(4)."), [ebcdic("ABCD"), ebcdic("EFGH")])
    assert recs == [{}, {}] and batch.num_rows == 2
    cpy = copybook("01  REC.", "    05  N PIC 9.", "    05  G OCCURS 0 TO 3 DEPENDING ON N.",
                   "        10  FILLER PIC X(2).")
    recs, _ = decode_rows(cpy, [ebcdic("2ab"), ebcdic("1cd")])
    assert recs == [{"N": 2, "G": [{}, {}]}, {"N": 1, "G": [{}]}]
    data = tmp_path / "filler.dat"
    data.write_bytes(ebcdic("ABCDEFGHIJKL"))
    spec = RecordSpec.from_layout(parse_copybook(copybook("01  REC.", "    05  FILLER PIC X(4).")))
    chunks = list(spec.decode_file(data, batch_size=2))
    assert [dc.table.num_rows for dc in chunks] == [2, 1]
    assert [n for dc in chunks for n in dc.record_numbers()] == [1, 2, 3]


@pytest.mark.parametrize(("pic", "raw", "expected"), [
    ("PIC 9(19) COMP", b"\x0a" + bytes(8), None),  # 184467440737095516160: 21 digits
    ("PIC 9(19) COMP", b"\x00" + b"\xff" * 8, None),  # 2**64 - 1: 20 digits
    ("PIC 9(19) COMP", b"\x00\x8a\xc7\x23\x04\x89\xe7\xff\xff", 9999999999999999999),
    ("PIC S9(19) COMP", b"\xff\x75\x38\xdc\xfb\x76\x18\x00\x01", -9999999999999999999),
    ("PIC 9(18)P(58) COMP", b"\x7f" + b"\xff" * 7, None),  # (2**63 - 1) * 10**58: 77 digits
])
def test_binary_wider_than_its_picture_is_rejected_not_a_failed_chunk(pic: str, raw: bytes,
                                                                       expected: object) -> None:
    five = b"\x00" * (len(raw) - 1) + b"\x05"  # a small value of the same field decodes beside it
    assert values(pic, [raw, five]) == [expected, 5 * 10 ** (58 if "P(58)" in pic else 0)]
    assert reasons(pic, [raw]) == ([] if expected is not None else ["value does not fit the field's type"])


def test_a_too_wide_binary_value_is_a_reject_with_its_field_offset_and_raw_bytes(tmp_path: Path) -> None:
    data = tmp_path / "wide.dat"
    data.write_bytes(ebcdic("AB") + b"\x0a" + bytes(8) + ebcdic("CD") + bytes(8) + b"\x07")
    layout = parse_copybook(copybook("01  REC.", "    05  T PIC X(2).", "    05  N PIC 9(19) COMP."))
    (dc,) = RecordSpec.from_layout(layout).decode_file(data)
    assert dc.table.to_pylist() == [{"T": "AB", "N": None}, {"T": "CD", "N": 7}]
    assert [r.to_json() for r in dc.rejects] == [
        {"record": 1, "record_offset": 0, "field": "REC.N", "field_offset": 2, "offset": 2, "length": 9,
         "raw": "0A" + "00" * 8, "reason": "value does not fit the field's type"}]


@pytest.mark.parametrize(("pic", "raw", "expected", "arrow_type"), [
    ("PIC 9(17)PP", ebcdic("9" * 17), Decimal("9999999999999999900"), pa.decimal128(19, 0)),
    ("PIC S9(17)PP", ebcdic("9" * 16) + b"\xd9", Decimal("-9999999999999999900"), pa.decimal128(19, 0)),
    ("PIC 9(20)PPP", ebcdic("9" * 20), Decimal("99999999999999999999000"), pa.decimal128(23, 0)),
    ("PIC 9(17)PP COMP", b"\x7f" + b"\xff" * 7, Decimal((2**63 - 1) * 100), pa.decimal128(21, 0)),
    ("PIC S9(5)P(30) COMP-3", b"\x12\x34\x5d", Decimal(-12345 * 10**30), pa.decimal128(35, 0)),
    ("PIC PP9(37) COMP", bytes(15) + b"\x07", Decimal("7E-39"), pa.decimal256(39, 39)),
    ("PIC PP9(17)", ebcdic("9" * 17), Decimal("0.0099999999999999999"), pa.decimal128(19, 19)),
])
def test_p_scaling_counts_in_the_decimal_type(pic: str, raw: bytes, expected: Decimal,
                                              arrow_type: pa.DataType) -> None:
    """The P positions widen the value: 9(17)PP needs 19 digits (in int64 it wrapped
    around), 9(20)PPP 23 (it was rejected), PP9(37) 39 decimal places (it failed)."""
    recs, batch = decode_rows(one_field(pic), [raw])
    batch.table.validate(full=True)
    assert batch.table.schema.field("F").type == arrow_type
    assert recs == [{"F": expected}] and batch.errors == []


@pytest.mark.parametrize(("pic", "raw", "expected"), [
    ("PIC 9(30)", ebcdic("1" * 30), Decimal("1" * 30)),
    ("PIC 9(30)", ebcdic("9" * 30), Decimal("9" * 30)),
    ("PIC S9(36)V99", ebcdic("9" * 37) + b"\xd9", Decimal("-" + "9" * 36 + ".99")),
    ("PIC S9(39) COMP-3", bytes.fromhex("12345678901234567890123456789012345678" + "9d"),
     Decimal("-123456789012345678901234567890123456789")),
    ("PIC 9(76)", ebcdic("7" * 76), Decimal("7" * 76)),
])
def test_numbers_past_28_digits_keep_every_digit(pic: str, raw: bytes, expected: Decimal) -> None:
    """Decimal's default context rounds to 28 digits: 30 ones decoded as ...1100, and 30
    nines (rounded up to 31 digits) failed the whole chunk."""
    recs, batch = decode_rows(one_field(pic), [raw])
    batch.table.validate(full=True)
    assert recs == [{"F": expected}] and batch.errors == []


@pytest.mark.parametrize(("count", "found"), [
    ("PIC X", "PIC X"), ("PIC 9V9", "PIC 9V9"), ("COMP-1", "a float field"),
])
def test_a_depending_on_count_that_is_not_a_whole_number_is_refused(count: str, found: str) -> None:
    cpy = copybook("01  REC.", f"    05  N {count}.", "    05  G PIC X OCCURS 0 TO 3 DEPENDING ON N.")
    with pytest.raises(ContractError, match=rf"^G OCCURS DEPENDING ON N: the count must be a whole number "
                                            rf"\(PIC 9 without V\), found {re.escape(found)}$"):
        decode_rows(cpy, [b"\x00" * 8])


def test_a_depending_on_count_past_int64_is_cut_to_the_maximum() -> None:
    """A 19-digit binary or 30-digit zoned count: its table holds the declared maximum
    (negative: none), instead of an 'Integer value out of bounds' failing the chunk."""
    cpy = copybook("01  REC.", "    05  N PIC S9(19) COMP.", "    05  G PIC X OCCURS 0 TO 3 DEPENDING ON N.")
    rows = [b"\x00\x8a\xc7\x23\x04\x89\xe7\xff\xff" + ebcdic("abc"), b"\xff\x75\x38\xdc\xfb\x76\x18\x00\x01"]
    recs, _ = decode_rows(cpy, rows)
    assert [r["G"] for r in recs] == [["a", "b", "c"], []]
    cpy = copybook("01  REC.", "    05  N PIC 9(30).", "    05  G PIC X OCCURS 0 TO 2 DEPENDING ON N.")
    recs, _ = decode_rows(cpy, [ebcdic("9" * 30 + "ab")])
    assert recs == [{"N": Decimal("9" * 30), "G": ["a", "b"]}]
