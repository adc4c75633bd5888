"""Encode Arrow tables (and JSON Lines) back into fixed-layout legacy records: the exact
inverse of `schemas.batch.RecordDecoder`, so `decode(encode(table)) == table` for every
value the layout can hold and `encode(decode(bytes)) == bytes` for canonically written
records.

Like the decoder, the encoder works column-wise: every elementary field is encoded once
for all records and all of its OCCURS slots, as numpy arithmetic over the whole column,
and scattered into an (N, record length) byte matrix. Canonical forms (what a COBOL
program writes with default compiler options):

- text: left-justified (JUSTIFIED RIGHT: right-justified), padded with the code page's
  space; null -> spaces.
- zoned decimal: zero-padded digits; signed fields overpunch the last digit (SIGN LEADING:
  the first): zone C/D in EBCDIC, '{' 'A'-'I' / '}' 'J'-'R' in ASCII (IBM and Micro Focus);
  SIGN SEPARATE writes '+'/'-'. Null -> spaces, which the decoder reads back as null.
- numeric-edited: digits, '.' as the point byte, Z/* replacing leading zeros (never the
  last integer digit, so zero stays readable), ',' separators, one '+'/'-' sign symbol.
- COMP-3: sign nibble C (+) / D (-) when signed, F when unsigned; COMP-3U: no sign nibble.
- binary: two's complement in the field's byte size, big-endian (COMP-9: little-endian).
- COMP-1/COMP-2: IBM hexadecimal floating point unless `float_format` says IEEE.
- null binary/packed/float -> zero. FILLER -> spaces.

OCCURS lists write their elements; the remaining slots of a fixed OCCURS are filled as if
null (so they decode cleanly), those past an OCCURS DEPENDING ON count are left as spaces
(the decoder never reads them; mainframe files have them so). A REDEFINES area is written
from the first (redefined) view; a redefining view is written instead only where it has a
value and every earlier view is empty (null).

Values that cannot be written (too long, too many digits, a character the code page
lacks, ...) do not stop the batch: the field is filled as if null and the problem is
reported per row, so callers can route those records to rejects.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.batch import RecordDecoder
from schemas.codepages import CodePage
from schemas.fields import numeric_type
from schemas.layout import Category, Elementary, Group, Layout, Node, Usage

if TYPE_CHECKING:
    from schemas.contract import RecordSpec


class Problem(IntEnum):
    OK = 0
    TOO_LONG = 1
    BAD_CHAR = 2
    TOO_MANY_DIGITS = 3
    NEGATIVE_UNSIGNED = 4
    TOO_MANY_DECIMALS = 5
    NOT_A_NUMBER = 6
    OUT_OF_RANGE = 7
    UNSUPPORTED = 8


_EXACT = decimal.Context(prec=200, Emax=10**6, Emin=-(10**6))


def _norm(name: str) -> str:
    return name.replace("-", "_").upper()


def _problem_text(problem: Problem, f: Elementary) -> str:
    pic = f"PIC {f.picture.text}" if f.picture else f"USAGE {f.usage.value}"
    if problem == Problem.TOO_MANY_DIGITS:
        return f"value has more digits than {pic} holds"
    if problem == Problem.NEGATIVE_UNSIGNED:
        return f"negative value in an unsigned field ({pic})"
    if problem == Problem.TOO_MANY_DECIMALS:
        return f"value has more decimal places than {pic} holds ({max(f.scale, 0)})"
    if problem == Problem.NOT_A_NUMBER:
        return "not a finite number"
    if problem == Problem.OUT_OF_RANGE and f.category == Category.FLOAT:
        return f"value out of range for {'COMP-1' if f.usage == Usage.FLOAT else 'COMP-2'}"
    if problem == Problem.OUT_OF_RANGE:
        kind = "signed" if f.signed else "unsigned"
        return f"value out of range for a {f.size}-byte {kind} {f.usage.value} field"
    if problem == Problem.UNSUPPORTED:
        return f"{pic}: this editing is not supported by the encoder"
    return "value cannot be encoded"


@dataclass
class Encoded:
    """One field's bytes for M values, plus a Problem code per value (None: all fine).
    A value with a problem is encoded as if it were null (spaces, or zero for binary,
    packed and float fields)."""

    block: np.ndarray  # uint8 (M, size)
    problems: np.ndarray | None = None
    details: dict[int, str] | None = None  # row -> specific reason text, where it helps


# --------------------------------------------------------------------------- numbers
def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _unscaled(arr: pa.Array, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value * 10**scale as exact integers, valid, problems) for a numeric or string array.

    int64 when every value fits, else object (Python ints). Values with more decimal
    places than `scale` are TOO_MANY_DECIMALS; text that is no number is NOT_A_NUMBER."""
    n = len(arr)
    problems = np.zeros(n, dtype=np.uint8)
    typ = arr.type
    if n == 0 or pa.types.is_null(typ) or arr.null_count == n:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), problems
    valid = _valid(arr)
    if pa.types.is_integer(typ) and not pa.types.is_uint64(typ):
        ints = np.asarray((arr.fill_null(0) if arr.null_count else arr).to_numpy(zero_copy_only=False))
        ints = ints.astype(np.int64, copy=False)
        return _rescale(ints, 0, scale, valid, problems), valid, problems
    if pa.types.is_decimal128(typ):
        words = np.frombuffer(arr.buffers()[1], dtype=np.int64)[2 * arr.offset: 2 * (arr.offset + n)]
        lo, hi = words[0::2], words[1::2]
        if (hi == (lo >> 63))[valid].all():  # every value fits 64 bits
            ints = np.where(valid, lo, 0)
            return _rescale(ints, typ.scale, scale, valid, problems), valid, problems
    ints = np.zeros(n, dtype=object)
    for i, v in enumerate(arr.to_pylist()):  # wide decimals, floats, text: exact through Decimal
        if v is None:
            continue
        d = _to_decimal(v)
        if d is None:
            problems[i] = Problem.NOT_A_NUMBER
            continue
        shifted = d.scaleb(scale, _EXACT)
        if shifted != shifted.to_integral_value(context=_EXACT):
            problems[i] = Problem.TOO_MANY_DECIMALS
            continue
        ints[i] = int(shifted)
    return ints, valid, problems


def _to_decimal(v: Any) -> Decimal | None:
    try:
        if isinstance(v, bool):
            return None
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v.strip()) if isinstance(v, str) else Decimal(v)
    except (decimal.InvalidOperation, TypeError, ValueError):
        return None
    return d if d.is_finite() else None


def _rescale(ints: np.ndarray, have: int, want: int, valid: np.ndarray, problems: np.ndarray) -> np.ndarray:
    shift = want - have
    if shift > 0:
        factor = 10**shift
        if ints.dtype != object:
            limit = np.iinfo(np.int64).max // factor if shift <= 18 else 0
            if shift > 18 or ((ints > limit) | (ints < -limit)).any():
                ints = ints.astype(object)
        return ints * factor
    if shift < 0:
        factor = 10 ** (-shift)
        if factor > np.iinfo(np.int64).max:
            ints = ints.astype(object)
        lost = (ints % factor != 0) & valid
        problems[lost] = Problem.TOO_MANY_DECIMALS
        return np.where(lost, 0, ints // factor)
    return ints


def _checked(ints: np.ndarray, valid: np.ndarray, problems: np.ndarray, digits: int,
             signed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range-checks unscaled values against `digits` (and the sign); returns (magnitude as
    int64 or object, negative, ok) with failing rows zeroed and their problem recorded."""
    limit = 10**digits
    over = np.asarray((ints >= limit) | (ints <= -limit), dtype=bool) & valid & (problems == 0)
    problems[over] = Problem.TOO_MANY_DIGITS
    neg = np.asarray(ints < 0, dtype=bool) & valid & (problems == 0)
    if not signed:
        problems[neg] = Problem.NEGATIVE_UNSIGNED
    ok = valid & (problems == 0)
    clean = np.where(ok, ints, 0)
    if digits > 18:  # |-2**63| does not fit int64
        clean = clean.astype(object)
    magnitude = np.abs(clean)
    if digits <= 18:
        magnitude = magnitude.astype(np.int64)
    return magnitude, neg & ok, ok


def _digit_matrix(magnitude: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers (< 10**width) -> (M, width) decimal digits, most significant first."""
    if width > 18:
        hi = _digit_matrix(magnitude // 10**18, width - 18)
        lo = _digit_matrix(np.asarray(magnitude % 10**18).astype(np.int64), 18)
        return np.hstack([hi, lo])
    m = np.asarray(magnitude).astype(np.int64)
    out = np.empty((len(m), width), dtype=np.uint8)
    for j in range(width - 1, -1, -1):
        out[:, j] = m % 10
        m = m // 10
    return out


# Overpunched last/first digit in ASCII: + is '{' 'A'..'I', - is '}' 'J'..'R'.
_ASCII_PUNCH_POS = np.frombuffer(b"{ABCDEFGHI", dtype=np.uint8)
_ASCII_PUNCH_NEG = np.frombuffer(b"}JKLMNOPQR", dtype=np.uint8)


def _overpunch(digits: np.ndarray, neg: np.ndarray, page: CodePage) -> np.ndarray:
    if page.ebcdic:  # IBM zoned decimal: zone C = +, D = -
        return (np.where(neg, 0xD0, 0xC0) + digits).astype(np.uint8)
    return np.where(neg, _ASCII_PUNCH_NEG[digits], _ASCII_PUNCH_POS[digits]).astype(np.uint8)


def _sign_bytes(neg: np.ndarray, page: CodePage) -> np.ndarray:
    return np.where(neg, page.minus, page.plus).astype(np.uint8)[:, None]


def encode_zoned(arr: pa.Array, f: Elementary, page: CodePage) -> Encoded:
    """DISPLAY numbers without editing: PIC 9 / S9 / V / P, sign overpunched or separate."""
    pic = f.picture
    assert pic is not None
    ints, valid, problems = _unscaled(arr, f.scale)
    magnitude, neg, ok = _checked(ints, valid, problems, pic.digits, f.signed)
    digits = _digit_matrix(magnitude, pic.digits)
    body = (page.zero + digits).astype(np.uint8)
    if f.signed and not f.sign_separate:
        col = 0 if f.sign_leading else pic.digits - 1
        body[:, col] = _overpunch(digits[:, col], neg, page)
    if f.sign_separate:
        sign = _sign_bytes(neg, page)
        body = np.hstack([sign, body] if f.sign_leading else [body, sign])
    body[~ok] = page.space
    return Encoded(body, problems if problems.any() else None)


@dataclass(frozen=True)
class _EditPlan:
    """Numeric-edited picture, position by position (V removed, S handled by the layout)."""

    chars: str
    digit_cols: list[int]  # byte positions of 9 / Z / *
    int_digits: int  # digit positions left of the point
    suppressible: list[bool]  # per digit position: a Z/* that may turn a leading zero to fill
    point: str | None  # the explicit point symbol: '.', or ',' when the picture has no '.' or V


def _edit_plan(f: Elementary) -> _EditPlan | None:
    pic = f.picture
    assert pic is not None
    body = pic.symbols.replace("S", "")
    chars = body.replace("V", "")
    # Like the decoder (and Cobrix): without '.' or V, a ',' is the decimal point.
    mark = "." if "." in body else None if "V" in body else "," if "," in body else None
    point = body.find(mark or "V") if (mark or "V" in body) else len(body)
    signs = [i for i, c in enumerate(chars) if c in "+-"]
    if (set(chars) - set("9Z*.,+-") or chars.count(".") > 1 or (mark == "," and chars.count(",") > 1)
            or len(signs) > 1 or (signs and signs[0] not in (0, len(chars) - 1))
            or (signs and ("S" in pic.symbols or f.sign_separate))):
        return None
    digit_cols = [i for i, c in enumerate(chars) if c in "9Z*"]
    int_digits = sum(1 for i in digit_cols if i < point)
    if not digit_cols or ("Z" in chars and "*" in chars):
        return None
    suppressible = []
    leading = True
    for k, col in enumerate(digit_cols):
        leading = leading and chars[col] in "Z*"
        suppressible.append(leading and k < int_digits - 1)
    if f.signed and not f.sign_separate and not signs and f.sign_leading and suppressible:
        suppressible[0] = False  # the overpunch needs a digit there
    return _EditPlan(chars, digit_cols, int_digits, suppressible, mark)


def encode_edited(arr: pa.Array, f: Elementary, page: CodePage) -> Encoded:
    """Numeric-edited DISPLAY numbers the decoder reads back: explicit point, zero
    suppression, separators and one sign symbol (see `_edit_plan` for the subset)."""
    plan = _edit_plan(f)
    n = len(arr)
    if plan is None:
        problems = np.where(_valid(arr), Problem.UNSUPPORTED, Problem.OK).astype(np.uint8)
        return Encoded(np.full((n, f.size), page.space, dtype=np.uint8), problems if problems.any() else None)
    chars = plan.chars
    ndig = len(plan.digit_cols)
    scale = ndig - plan.int_digits
    sign_symbol = next((c for c in chars if c in "+-"), None)
    signed = f.signed
    ints, valid, problems = _unscaled(arr, scale)
    magnitude, neg, ok = _checked(ints, valid, problems, ndig, signed)
    digits = _digit_matrix(magnitude, ndig)
    seen = np.maximum.accumulate(digits != 0, axis=1) if ndig else digits.astype(bool)
    fill = page.from_unicode[ord("*")] if "*" in chars else page.space
    out = np.empty((n, len(chars)), dtype=np.uint8)
    suppressed = np.zeros((n, ndig), dtype=bool)
    for k, col in enumerate(plan.digit_cols):
        suppressed[:, k] = plan.suppressible[k] & ~seen[:, k]
        out[:, col] = np.where(suppressed[:, k], fill, page.zero + digits[:, k])
    next_digit = 0
    for col, c in enumerate(chars):
        while next_digit < ndig and plan.digit_cols[next_digit] < col:
            next_digit += 1
        if c == plan.point:
            out[:, col] = page.point if c == "." else page.comma
        elif c == ",":  # a separator inside the suppressed leading zeros is fill too
            inside = suppressed[:, next_digit] if next_digit < ndig else np.zeros(n, dtype=bool)
            out[:, col] = np.where(inside, fill, page.comma)
        elif c == "+":
            out[:, col] = np.where(neg, page.minus, page.plus)
        elif c == "-":
            out[:, col] = np.where(neg, page.minus, page.space)
    if signed and sign_symbol is None and not f.sign_separate:
        k = 0 if f.sign_leading else ndig - 1
        out[:, plan.digit_cols[k]] = _overpunch(digits[:, k], neg, page)
    if f.sign_separate:
        sign = _sign_bytes(neg, page)
        out = np.hstack([sign, out] if f.sign_leading else [out, sign])
    out[~ok] = page.space
    return Encoded(out, problems if problems.any() else None)


def encode_packed(arr: pa.Array, f: Elementary) -> Encoded:
    """COMP-3: BCD digits and a sign nibble (C +, D -, F unsigned); COMP-3U: digits only."""
    pic = f.picture
    assert pic is not None
    ints, valid, problems = _unscaled(arr, f.scale)
    signed = f.signed and f.usage == Usage.PACKED
    magnitude, neg, _ = _checked(ints, valid, problems, pic.digits, signed)
    if f.usage == Usage.PACKED:
        nibbles = np.empty((len(arr), f.size * 2), dtype=np.uint8)
        nibbles[:, :-1] = _digit_matrix(magnitude, f.size * 2 - 1)
        nibbles[:, -1] = np.where(neg, 0xD, 0xC) if f.signed else 0xF
    else:
        nibbles = _digit_matrix(magnitude, f.size * 2)
    block = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).astype(np.uint8)
    return Encoded(block, problems if problems.any() else None)


def _binary_range(f: Elementary) -> tuple[int, int]:
    bits = 8 * f.size
    if f.signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if f.size >= 4 and f.size <= 8:  # the decoder (like Cobrix) reads the top bit set as overflow
        return 0, (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def encode_binary(arr: pa.Array, f: Elementary) -> Encoded:
    """COMP/COMP-4/BINARY/COMP-5 big-endian, COMP-9 little-endian, two's complement. Like
    the decoder (and Cobrix) the value may exceed the PIC digits as long as the bytes hold it."""
    ints, valid, problems = _unscaled(arr, f.scale)
    lo, hi = _binary_range(f)
    if f.size > 8:  # the decoder's type holds the PIC digits only
        lo, hi = max(lo, -(10**f.digits) + 1), min(hi, 10**f.digits - 1)
    live = valid & (problems == 0)
    neg = np.asarray(ints < 0, dtype=bool) & live
    if not f.signed:
        problems[neg] = Problem.NEGATIVE_UNSIGNED
    out = np.asarray((ints < lo) | (ints > hi), dtype=bool) & valid & (problems == 0)
    problems[out] = Problem.OUT_OF_RANGE
    ok = valid & (problems == 0)
    order: Literal["little", "big"] = "little" if f.usage == Usage.BINARY_LE else "big"
    if f.size in (1, 2, 4, 8):
        vals = np.where(ok, ints, 0).astype(np.int64)
        dtype = f"{'<' if order == 'little' else '>'}{'i' if f.signed else 'u'}{f.size}"
        block = vals.astype(dtype).view(np.uint8).reshape(len(arr), f.size)
    else:  # wider than 18 digits (Cobrix's sizes): exact through Python ints, rare
        block = np.frombuffer(b"".join(int(v if k else 0).to_bytes(f.size, order, signed=f.signed)
                                       for v, k in zip(ints, ok, strict=True)),
                              dtype=np.uint8).reshape(len(arr), f.size).copy()
    return Encoded(block, problems if problems.any() else None)


def encode_float(arr: pa.Array, f: Elementary, fmt: str) -> Encoded:
    """COMP-1 (4 bytes) / COMP-2 (8 bytes) as IBM hexadecimal floating point (base 16,
    excess-64 exponent, normalized fraction) or IEEE 754, big- or little-endian."""
    n = len(arr)
    width = f.size
    problems = np.zeros(n, dtype=np.uint8)
    valid = _valid(arr) if n else np.zeros(0, dtype=bool)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type):
        values = np.asarray(pc.cast(arr, pa.float64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        dec = [None if v is None else _to_decimal(v) for v in arr.to_pylist()]
        problems[[i for i, (v, d) in enumerate(zip(arr.to_pylist(), dec, strict=True))
                  if v is not None and d is None]] = Problem.NOT_A_NUMBER
        values = np.array([0.0 if d is None else float(d) for d in dec], dtype=np.float64)
    problems[valid & ~np.isfinite(values) & (problems == 0)] = Problem.NOT_A_NUMBER
    values = np.where(valid & (problems == 0), values, 0.0)
    little = fmt.endswith("-le")
    if fmt.startswith("ieee"):
        if width == 4:
            with np.errstate(over="ignore"):
                narrow = values.astype(np.float32)
            problems[~np.isfinite(narrow)] = Problem.OUT_OF_RANGE
            values = np.where(np.isfinite(narrow), values, 0.0)
        block = values.astype(f"{'<' if little else '>'}f{width}").view(np.uint8).reshape(n, width)
        return Encoded(block, problems if problems.any() else None)
    bits = width * 8
    frac_bits = bits - 8
    mant, exp2 = np.frexp(np.abs(values))  # |v| = mant * 2**exp2, mant in [0.5, 1)
    hexp = -((-exp2) // 4)  # smallest e with |v| < 16**e
    frac = np.rint(np.ldexp(mant, exp2 - 4 * hexp + frac_bits))
    carry = frac >= 2.0**frac_bits  # rounding reached the next power of 16
    frac = np.where(carry, frac / 16, frac)
    hexp = hexp + carry
    biased = hexp + 64
    problems[(biased > 127) & (problems == 0)] = Problem.OUT_OF_RANGE
    tiny = biased < 0  # below 16**-64: denormalize, possibly to zero
    frac = np.where(tiny, np.rint(np.ldexp(frac, 4 * np.minimum(biased, 0))), frac)
    biased = np.where(tiny, 0, biased)
    zero = (frac == 0) | (problems != 0)
    sign = (values < 0) & ~zero
    raw = ((sign.astype(np.uint64) << np.uint64(bits - 1))
           | (np.where(zero, 0, biased).astype(np.uint64) << np.uint64(frac_bits))
           | np.where(zero, 0, frac).astype(np.uint64))
    block = raw.astype(f"{'<' if little else '>'}u{width}").view(np.uint8).reshape(n, width)
    return Encoded(block, problems if problems.any() else None)


# --------------------------------------------------------------------------- text
def _string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 of length M+1 from 0, UTF-8 data) of a string array."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = arr.fill_null("")
    n = len(arr)
    kind = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=kind)[arr.offset: arr.offset + n + 1].astype(np.int64)
    buf = arr.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, dtype=np.uint8)
    data = data[offsets[0]: offsets[-1]]
    return offsets - offsets[0], data


_LOOKUPS: dict[str, np.ndarray] = {}


def _lookup(page: CodePage) -> np.ndarray:
    """Code point -> byte (-1: not in the page) as a dense table up to the page's highest
    code point plus one (-1), so translating a column is a single gather."""
    table = _LOOKUPS.get(page.name)
    if table is None:
        table = np.full(max(page.from_unicode) + 2, -1, dtype=np.int16)
        table[list(page.from_unicode)] = list(page.from_unicode.values())
        _LOOKUPS[page.name] = table
    return table


def encode_text(arr: pa.Array, f: Elementary, page: CodePage) -> Encoded:
    """PIC X/A: the whole column's characters translated in one gather through the code
    page's table, then put in place in the (M, size) block in one scatter."""
    n, size = len(arr), f.size
    problems = np.zeros(n, dtype=np.uint8)
    if n == 0 or pa.types.is_null(arr.type):
        return Encoded(np.full((n, size), page.space, dtype=np.uint8))
    offsets, data = _string_parts(arr)
    if page.multibyte:  # UTF-8 records: the field size counts bytes
        units = data
        lens = np.diff(offsets)
        missing = np.zeros(len(units), dtype=bool)
    else:
        points = np.frombuffer(data.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
        leads = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])  # one UTF-8 lead byte a character
        lens = leads[offsets[1:]] - leads[offsets[:-1]]
        table = _lookup(page)
        codes = table[np.minimum(points, len(table) - 1)]
        missing = codes < 0
        units = codes.astype(np.uint8)
    problems[lens > size] = Problem.TOO_LONG
    if missing.any():
        rows = np.repeat(np.arange(n), lens)
        problems[np.unique(rows[missing])] = Problem.BAD_CHAR
    ok = problems == 0
    if ok.all() and (lens == size).all():  # every value fills its field (e.g. decoded with --trim none)
        block = units.reshape(n, size)
    else:  # each character's place in the flattened block: its row's start, then its position
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        shift = np.arange(n, dtype=np.int64) * size - starts + ((size - lens) if f.justified_right else 0)
        flat = np.arange(len(units), dtype=np.int64) + np.repeat(shift, lens)
        if not ok.all():
            keep = np.repeat(ok, lens)
            flat, units = flat[keep], units[keep]
        flat_block = np.full(n * size, page.space, dtype=np.uint8)
        flat_block[flat] = units
        block = flat_block.reshape(n, size)
    details = None
    if not ok.all():
        details = {}
        values = arr.to_pylist()
        for i in np.flatnonzero(~ok):  # error path only
            if problems[i] == Problem.TOO_LONG:
                unit = "bytes" if page.multibyte else "characters"
                details[int(i)] = f"value is {int(lens[i])} {unit}, the field holds {size}"
            else:
                bad = next(c for c in str(values[i]) if ord(c) not in page.from_unicode)
                details[int(i)] = f"character {bad!r} (U+{ord(bad):04X}) has no byte in {page.name}"
    return Encoded(block, problems if problems.any() else None, details)


def encode_field(arr: pa.Array, f: Elementary, page: CodePage, float_format: str = "ibm") -> Encoded:
    cat = f.category
    if cat == Category.TEXT:
        return encode_text(arr, f, page)
    if cat == Category.FLOAT:
        return encode_float(arr, f, float_format)
    if f.usage in (Usage.PACKED, Usage.PACKED_UNSIGNED):
        return encode_packed(arr, f)
    if f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE):
        return encode_binary(arr, f)
    if cat == Category.EDITED:
        return encode_edited(arr, f, page)
    return encode_zoned(arr, f, page)


# --------------------------------------------------------------------------- records
@dataclass
class _Dim:
    count: int
    stride: int


class RecordEncoder:
    """Encodes Arrow tables shaped like `RecordDecoder`'s output for one record spec."""

    def __init__(self, spec: RecordSpec) -> None:
        self.spec = spec
        self.layout: Layout = spec.layout
        self.page: CodePage = spec.page
        self.float_format = spec.options.float_format
        self.top = self.layout.single_record()
        framing = spec.framing
        self.width = framing.record_length if framing.format == "F" and framing.record_length else \
            self.layout.record_length
        self._schema: pa.Schema | None = None

    @property
    def schema(self) -> pa.Schema:
        """The decoder's output schema (the shape `encode` expects)."""
        if self._schema is None:
            blank = np.zeros((1, self.layout.record_length), dtype=np.uint8)
            self._schema = RecordDecoder(self.layout, self.page).decode(blank).table.schema
        return self._schema

    def encode(self, table: pa.Table) -> tuple[np.ndarray, list[dict[str, Any]]]:
        run = _Run(self, table.num_rows)
        columns = run.columns(table)
        run.prepare_counts(columns)
        kids = [c for c in self.top.children if not c.is_filler] if isinstance(self.top, Group) else []
        n = table.num_rows
        run.children(kids, columns, [], np.ones(n, dtype=bool), np.ones(n, dtype=bool))
        matrix = run.matrix
        if self.width > matrix.shape[1]:
            pad = np.full((n, self.width - matrix.shape[1]), self.page.space, dtype=np.uint8)
            matrix = np.hstack([matrix, pad])
        elif self.width < matrix.shape[1]:
            matrix = np.ascontiguousarray(matrix[:, : self.width])
        run.problems.sort(key=lambda p: (p[0], p[1]))
        return matrix, [{"row": r, "field": path, "reason": why} for r, _, path, why in run.problems]


def encode_table(table: pa.Table, spec: RecordSpec) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The inverse of `RecordDecoder.decode`: an (N, record length) uint8 matrix and the
    problems per row ({"row", "field", "reason"}); a row with problems is still encoded,
    its bad fields filled as if null."""
    return RecordEncoder(spec).encode(table)


def _struct_children(arr: pa.Array) -> dict[str, pa.Array]:
    """A struct's children by normalized name, with the struct's own nulls pushed down."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_struct(arr.type):
        return {}
    kids = arr.flatten()
    return {_norm(arr.type.field(i).name): kids[i] for i in range(arr.type.num_fields)}


def _lengths(arr: pa.Array) -> np.ndarray:
    lengths = pc.list_value_length(arr)
    return np.asarray((lengths.fill_null(0) if lengths.null_count else lengths).to_numpy(zero_copy_only=False),
                      dtype=np.int64)


class _Run:
    def __init__(self, encoder: RecordEncoder, n: int) -> None:
        self.e = encoder
        self.n = n
        self.matrix = np.full((n, encoder.layout.record_length), encoder.page.space, dtype=np.uint8)
        self.problems: list[tuple[int, int, str, str]] = []  # (row, byte offset, path, reason)
        self.counts: dict[int, np.ndarray] = {}  # id(OCCURS DEPENDING ON node) -> count per record
        self.overrides: dict[int, pa.Array] = {}  # id(count field) -> values with nulls filled in

    # ---- input shape
    def columns(self, table: pa.Table) -> dict[str, pa.Array]:
        cols = {_norm(name): table.column(i).combine_chunks() for i, name in enumerate(table.column_names)}
        top = self.e.top
        kid_keys = {_norm(c.key) for c in top.children} if isinstance(top, Group) else set()
        wrapper = cols.get(_norm(top.key))
        if top.level == 1 and wrapper is not None and len(cols) == 1 and _norm(top.key) not in kid_keys:
            return _struct_children(wrapper)  # the 01 record's own name wraps the fields
        return cols

    def lookup(self, columns: dict[str, pa.Array], node: Node) -> pa.Array | None:
        """A node's column when no OCCURS sits above it (one value per record)."""
        chain = [a for a in reversed([node, *node.ancestors()]) if a is not self.e.top and a.level > 0]
        arr: pa.Array | None = None
        level: dict[str, pa.Array] = columns
        for i, a in enumerate(chain):
            if i < len(chain) - 1 and a.occurs:
                return None
            arr = level.get(_norm(a.key))
            if arr is None:
                return None
            level = _struct_children(arr) if i < len(chain) - 1 else {}
        return arr

    def prepare_counts(self, columns: dict[str, pa.Array]) -> None:
        """OCCURS DEPENDING ON: a null count field takes its list's length; the count (clipped
        to the OCCURS bounds, as the decoder clips it) says how many elements come back."""
        for node in self.e.layout.walk():
            if not node.depending_on or any(a.occurs for a in node.ancestors()):
                continue
            assert node.occurs is not None
            target = self.e.layout.find(node.depending_on)
            lists = self.lookup(columns, node)
            lengths = _lengths(lists) if lists is not None else np.zeros(self.n, dtype=np.int64)
            given = self.lookup(columns, target)
            if given is None or len(given) != self.n:
                given = pa.nulls(self.n, pa.int64())
            ints, valid, problems = _unscaled(given, 0)
            known = valid & (problems == 0)
            if isinstance(target, Elementary) and (~valid).any() and not problems.any() \
                    and id(target) not in self.overrides:
                self.overrides[id(target)] = pa.array(np.where(valid, ints, lengths).astype(np.int64), pa.int64())
            counts = np.where(known, ints, lengths)
            counts = np.minimum(np.maximum(counts, node.occurs_min), node.occurs)
            self.counts[id(node)] = np.asarray(counts).astype(np.int64)

    # ---- walking the layout
    def children(self, kids: list[Node], arrays: dict[str, pa.Array], dims: list[_Dim],
                 present: np.ndarray, write: np.ndarray) -> None:
        """Encodes siblings; each REDEFINES set picks one view per record (slot) to write."""
        sets: list[list[Node]] = []
        by_name: dict[str, list[Node]] = {}
        for kid in kids:
            views = by_name.get(kid.redefines.upper()) if kid.redefines else None
            if views is None:
                views = [kid]
                sets.append(views)
            else:
                views.append(kid)
            by_name[kid.name.upper()] = views
        m = len(present)
        for views in sets:
            if len(views) == 1:
                self.node(views[0], arrays.get(_norm(views[0].key)), dims, present, write)
                continue
            has = [self.has_value(v, arrays.get(_norm(v.key)), m) for v in views]
            taken = has[0].copy()
            won = np.zeros(m, dtype=bool)
            masks = []
            for h in has[1:]:
                win = h & ~taken
                masks.append(win)
                taken |= win
                won |= win
            for view, mask in zip(views, [~won, *masks], strict=True):
                self.node(view, arrays.get(_norm(view.key)), dims, present, write & mask)

    def has_value(self, node: Node, arr: pa.Array | None, m: int) -> np.ndarray:
        """Per record (slot): does this view carry any non-null value?"""
        if arr is None:
            return np.zeros(m, dtype=bool)
        valid = _valid(arr)
        if node.occurs:
            return valid & (_lengths(arr) > 0)
        if isinstance(node, Elementary):
            return valid
        assert isinstance(node, Group)
        kids = _struct_children(arr)
        acc = np.zeros(m, dtype=bool)
        for c in node.children:
            if not c.is_filler:
                acc |= self.has_value(c, kids.get(_norm(c.key)), m)
        return valid & acc

    def node(self, node: Node, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
             write: np.ndarray) -> None:
        if node.occurs:
            arr, present = self.expand(node, arr, dims, present, write)
            write = np.repeat(write, node.occurs)
            if node.depending_on:  # slots past the count stay spaces, as mainframe files have them
                write &= present
            dims = [*dims, _Dim(node.occurs, node.size)]
        if isinstance(node, Elementary):
            self.elementary(node, arr, dims, present, write)
            return
        assert isinstance(node, Group)
        kids = [c for c in node.children if not c.is_filler]
        if kids and not node.in_redefines:
            null = ~_valid(arr) if arr is not None else np.ones(len(present), dtype=bool)
            for flat in np.flatnonzero(present & write & null):
                self.report(node, dims, int(flat), "missing group (null or absent)")
        self.children(kids, _struct_children(arr) if arr is not None else {}, dims, present, write)

    def expand(self, node: Node, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
               write: np.ndarray) -> tuple[pa.Array | None, np.ndarray]:
        """A list column -> one value per OCCURS slot (null where the list has no element)."""
        k = node.occurs
        assert k is not None
        outer = len(present)
        lengths = _lengths(arr) if arr is not None else np.zeros(outer, dtype=np.int64)
        shown = present & write
        for flat in np.flatnonzero((lengths > k) & shown):
            self.report(node, dims, int(flat), f"{int(lengths[flat])} elements, OCCURS allows at most {k}")
        taken = np.minimum(lengths, k)
        counts = self.counts.get(id(node))
        if counts is not None and self.n:
            expected = np.repeat(counts, outer // self.n)
            for flat in np.flatnonzero((taken != expected) & (lengths <= k) & shown):
                self.report(node, dims, int(flat),
                            f"{node.depending_on} says {int(expected[flat])} elements, the list has "
                            f"{int(lengths[flat])}")
        slot = np.arange(k)
        inner_present = (present[:, None] & (slot[None, :] < taken[:, None])).ravel()
        if arr is None or not inner_present.any():
            return None, inner_present
        values = arr.flatten()
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if outer else np.zeros(0, dtype=np.int64)
        idx = (starts[:, None] + slot[None, :]).ravel()
        idx = np.where(inner_present, idx, 0)
        return values.take(pa.array(idx, pa.int64(), mask=~inner_present)), inner_present

    def elementary(self, f: Elementary, arr: pa.Array | None, dims: list[_Dim], present: np.ndarray,
                   write: np.ndarray) -> None:
        m = len(present)
        arr = self.overrides.get(id(f), arr)
        if arr is None:
            arr = pa.nulls(m, pa.string() if f.is_text else pa.int64())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        enc = encode_field(arr, f, self.e.page, self.e.float_format)  # bad values come back as if null
        if enc.problems is not None:
            for flat in np.flatnonzero((enc.problems != 0) & present & write):
                why = (enc.details or {}).get(int(flat)) or _problem_text(Problem(int(enc.problems[flat])), f)
                self.report(f, dims, int(flat), why)
        self.scatter(f, enc.block, dims, write)

    def scatter(self, f: Elementary, block: np.ndarray, dims: list[_Dim], write: np.ndarray) -> None:
        """Writes the field's bytes into every slot through a strided view of the records
        (record, OCCURS slots..., byte), where `write` allows."""
        shape = (self.n, *[d.count for d in dims], f.size)
        strides = (self.matrix.strides[0], *[d.stride for d in dims], 1)
        view = np.lib.stride_tricks.as_strided(self.matrix[:, f.offset:], shape=shape, strides=strides,
                                               writeable=True)
        block = block.reshape(shape)
        if write.all():
            view[...] = block
        else:
            mask = write.reshape(shape[:-1])
            view[mask] = block[mask]

    def report(self, node: Node, dims: list[_Dim], flat: int, reason: str) -> None:
        """One problem at grid position `flat` (record, then OCCURS slots outer to inner)."""
        idx = np.unravel_index(flat, (self.n, *[d.count for d in dims]))
        row, slots = int(idx[0]), iter(int(s) for s in idx[1:])
        chain = [a for a in reversed([node, *node.ancestors()]) if a is not self.e.top and a.level > 0]
        parts = []
        offset = node.offset
        for a in chain:
            slot = next(slots, None) if a.occurs else None
            if slot is None:  # also a list reported before its own slots exist
                parts.append(a.key)
            else:
                parts.append(f"{a.key}[{slot}]")
                offset += slot * a.size
        self.problems.append((row, offset, ".".join(parts), reason))


# --------------------------------------------------------------------------- JSON Lines
_TEXT, _FLOAT, _INT, _DEC = range(4)
Problems = list[tuple[int, str | None, str]]  # (row in chunk, field path, reason)


@dataclass
class _Leaf:
    name: str  # the output key
    field: Elementary
    kind: int
    scale: int  # of the transport type
    limit: int  # magnitudes must stay below this (int64 or the decimal's integer digits)
    listed: bool


@dataclass
class _Branch:
    name: str
    node: Node
    kids: dict[str, _Leaf | _Branch]  # by key as written and by normalized key
    listed: bool


class _JsonShape:
    """Turns parsed JSON objects into rows of the decoder's schema: keys matched with '-'
    or '_' and in any case, the 01 wrapper optional, and every leaf type-checked so that
    `pa.Table.from_pylist` does not silently coerce (a string into a list of characters,
    1.5 into the integer 1). Range and digit checks stay in the encoder; only a decimal
    whose scale or size the Arrow type cannot take fails the chunk's fast path, and the
    chunk is then shaped again with every number checked here."""

    def __init__(self, encoder: RecordEncoder) -> None:
        self.schema = pa.schema([pa.field(f.name, _transport(f.type)) for f in encoder.schema])
        top = encoder.top
        self.kids = [c for c in top.children if not c.is_filler] if isinstance(top, Group) else []
        self.root = _Branch(top.key, top, self._kids(self.kids), False)
        self.wrapper = _norm(top.key) if top.level == 1 and _norm(top.key) not in self.root.kids else None

    def _kids(self, nodes: list[Node]) -> dict[str, _Leaf | _Branch]:
        out: dict[str, _Leaf | _Branch] = {}
        for node in nodes:
            listed = node.occurs is not None
            shape: _Leaf | _Branch
            if isinstance(node, Group):
                shape = _Branch(node.key, node, self._kids([c for c in node.children if not c.is_filler]), listed)
            else:
                assert isinstance(node, Elementary)
                if node.is_text:
                    shape = _Leaf(node.key, node, _TEXT, 0, 0, listed)
                elif node.category == Category.FLOAT:
                    shape = _Leaf(node.key, node, _FLOAT, 0, 0, listed)
                else:
                    typ = _transport(numeric_type(node))
                    if pa.types.is_integer(typ):
                        shape = _Leaf(node.key, node, _INT, 0, 2**63, listed)
                    else:
                        shape = _Leaf(node.key, node, _DEC, typ.scale, 10 ** (typ.precision - typ.scale), listed)
            out[node.key] = out[_norm(node.key)] = shape
        return out

    def rows(self, objs: list[Any], checked: bool) -> tuple[list[dict[str, Any]], Problems]:
        problems: Problems = []
        rows = []
        for i, obj in enumerate(objs):
            if self.wrapper and len(obj) == 1:
                (key, inner), = obj.items()
                if type(inner) is dict and _norm(key) == self.wrapper:
                    obj = inner
            rows.append(self.group(obj, self.root, "", i, problems, checked))
        return rows, problems

    def group(self, obj: dict[str, Any], shape: _Branch, path: str, row: int, problems: Problems,
              checked: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kids = shape.kids
        for key, v in obj.items():
            kid = kids.get(key) or kids.get(_norm(key))
            if kid is None:
                problems.append((row, path + key, "not a field of the layout"))
                continue
            name = kid.name
            if v is None:
                out[name] = None
            elif not kid.listed:
                out[name] = self.one(v, kid, path + name, row, problems, checked)
            elif type(v) is list:
                out[name] = [self.one(x, kid, f"{path}{name}[{j}]", row, problems, checked) for j, x in enumerate(v)]
            else:
                occurs = kid.field.occurs if isinstance(kid, _Leaf) else kid.node.occurs
                problems.append((row, path + name, f"expected a list (OCCURS {occurs})"))
        return out

    def one(self, v: Any, shape: _Leaf | _Branch, path: str, row: int, problems: Problems, checked: bool) -> Any:
        t = type(v)
        if v is None:
            return None
        if isinstance(shape, _Branch):
            if t is dict:
                return self.group(v, shape, path + ".", row, problems, checked)
            problems.append((row, path, "expected an object (a group)"))
            return None
        kind = shape.kind
        if kind == _TEXT:
            if t is str:
                return v
            if t is int or t is Decimal:  # a code or number written as a JSON number
                return format(v, "f") if t is Decimal else str(v)
            problems.append((row, path, "expected a string"))
            return None
        if t is str:
            v = _to_decimal(v)
            t = Decimal
            if v is None:
                problems.append((row, path, "not a number"))
                return None
        if t is not int and t is not Decimal and t is not float:
            problems.append((row, path, "expected a number"))
            return None
        if kind == _FLOAT:
            return float(v)
        if t is int and -shape.limit <= v < shape.limit:
            return v
        return self.number(v, shape, path, row, problems) if checked or kind == _INT or t is not Decimal else v

    def number(self, v: int | float | Decimal, shape: _Leaf, path: str, row: int,
               problems: Problems) -> int | Decimal | None:
        f = shape.field
        d = _to_decimal(v) if not isinstance(v, int) else Decimal(v)
        if d is None:
            problems.append((row, path, "not a finite number"))
            return None
        if _exponent(d) < -shape.scale and _exponent(d := d.normalize(_EXACT)) < -shape.scale:
            problems.append((row, path, _problem_text(Problem.TOO_MANY_DECIMALS, f)))
            return None
        if not abs(d) < shape.limit:
            binary = f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE)
            problems.append((row, path, _problem_text(Problem.OUT_OF_RANGE if binary else Problem.TOO_MANY_DIGITS, f)))
            return None
        return int(d) if shape.kind == _INT else d

    def table(self, objs: list[Any]) -> tuple[pa.Table, Problems]:
        rows, problems = self.rows(objs, checked=False)
        try:
            return pa.Table.from_pylist(rows, schema=self.schema), problems
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        rows, problems = self.rows(objs, checked=True)
        try:
            return pa.Table.from_pylist(rows, schema=self.schema), problems
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        for i, row in enumerate(rows):  # last resort, one row at a time: should not happen
            try:
                pa.Table.from_pylist([row], schema=self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                problems.append((i, None, f"cannot be converted: {exc}"))
                rows[i] = {}
        return pa.Table.from_pylist(rows, schema=self.schema), problems


def _exponent(d: Decimal) -> int:
    exponent = d.as_tuple().exponent
    return exponent if isinstance(exponent, int) else 0


def _transport(typ: pa.DataType) -> pa.DataType:
    """The decoder's types with decimal precision widened, so over-long values reach the
    encoder (and get its 'too many digits' reason) instead of failing the whole chunk."""
    if pa.types.is_decimal128(typ):
        return pa.decimal128(38, typ.scale)
    if pa.types.is_decimal256(typ):
        return pa.decimal256(76, typ.scale)
    if pa.types.is_float32(typ):  # so a value beyond COMP-1 is reported, not turned into inf
        return pa.float64()
    if pa.types.is_struct(typ):
        return pa.struct([pa.field(f.name, _transport(f.type)) for f in typ])
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return pa.list_(_transport(typ.value_type))
    return typ


def frame(matrix: np.ndarray, spec: RecordSpec, *, newline: bool = False) -> bytes:
    """Records -> file bytes: F (optionally newline-terminated), V (IBM RDW: big-endian
    length that counts its own 4 bytes), VB (RDW records in BDW blocks of up to 32,760
    bytes), D (one line per record)."""
    fmt = spec.framing.format
    n, width = matrix.shape
    if fmt == "F":
        if not newline:
            return matrix.tobytes()
        return np.hstack([matrix, np.full((n, 1), 0x0A, dtype=np.uint8)]).tobytes()
    if fmt == "D":
        return np.hstack([matrix, np.full((n, 1), 0x0A, dtype=np.uint8)]).tobytes()
    rdw_len = width + 4
    if rdw_len > 0x7FFF:
        raise ValueError(f"record of {width} bytes is too long for a V/VB RDW")
    rdw = np.array([rdw_len >> 8, rdw_len & 0xFF, 0, 0], dtype=np.uint8)
    records = np.hstack([np.tile(rdw, (n, 1)), matrix])
    if fmt == "V":
        return records.tobytes()
    per_block = max(1, (32760 - 4) // rdw_len)  # IBM's largest block (BLKSIZE 32760)
    out = bytearray()
    for lo in range(0, n, per_block):
        chunk = records[lo: lo + per_block]
        bdw_len = 4 + chunk.size
        out += bytes([bdw_len >> 8, bdw_len & 0xFF, 0, 0]) + chunk.tobytes()
    return bytes(out)


def encode_jsonl(src: IO[bytes] | Iterable[bytes], out: IO[bytes], spec: RecordSpec, *, newline: bool = False,
                 chunk_records: int = 50_000) -> tuple[int, list[dict[str, Any]]]:
    """JSON Lines (one record object a line, numbers read as exact decimals) -> records
    written to `out` in the spec's framing. Returns (records written, problems), each
    problem {"line", "field", "reason"}. A line that is not a JSON object is skipped; any
    other problem still writes the record with the bad field filled as if null."""
    encoder = RecordEncoder(spec)
    shape = _JsonShape(encoder)
    count = 0
    errors: list[dict[str, Any]] = []
    objs: list[dict[str, Any]] = []
    lines: list[int] = []

    def flush() -> None:
        nonlocal count
        if not objs:
            return
        table, shaped = shape.table(objs)
        errors.extend({"line": lines[i], "field": path, "reason": why} for i, path, why in shaped)
        matrix, problems = encoder.encode(table)
        errors.extend({"line": lines[p["row"]], "field": p["field"], "reason": p["reason"]} for p in problems)
        if spec.framing.format == "D":  # the reader would split or shorten these records
            cut = (matrix == 0x0A).any(axis=1) | (matrix[:, -1] == 0x0D if matrix.shape[1] else False)
            errors.extend({"line": lines[int(i)], "field": None,
                           "reason": "record holds a line-end byte (0x0A, or 0x0D last); format D cannot carry it"}
                          for i in np.flatnonzero(cut))
        out.write(frame(matrix, spec, newline=newline))
        count += len(objs)
        objs.clear()
        lines.clear()

    for number, raw in enumerate(src, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            errors.append({"line": number, "field": None, "reason": f"not valid JSON: {exc}"})
            continue
        if type(obj) is not dict:
            errors.append({"line": number, "field": None, "reason": "a line must hold a JSON object"})
            continue
        objs.append(obj)
        lines.append(number)
        if len(objs) >= chunk_records:
            flush()
    flush()
    errors.sort(key=lambda e: e["line"])
    return count, errors


__all__ = ["Encoded", "Problem", "RecordEncoder", "encode_field", "encode_jsonl", "encode_table", "frame"]
