"""Numeric field encoders: zoned decimal, numeric-edited, packed decimal (COMP-3),
binary (COMP/COMP-4/BINARY/COMP-5/COMP-9) and floating point (COMP-1/COMP-2).

Fixed-point values are first made exact integers at the field's scale (`unscaled`): wide
decimals, floats and text go through `Decimal`, never through float arithmetic.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codepages import CodePage
from schemas.encode.encoded import Encoded, Problem
from schemas.layout import Elementary, Usage

# Decimal arithmetic that never rounds: scaling by 10**scale must keep every digit.
EXACT = decimal.Context(prec=200, Emax=10**6, Emin=-(10**6))


def non_null(arr: pa.Array) -> np.ndarray:
    """Per value: True where it is not null."""
    if arr.null_count == 0:
        return np.ones(len(arr), dtype=bool)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def unscaled(arr: pa.Array, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value * 10**scale as exact integers, valid, problems) for a numeric or string array.

    int64 when every value fits, else object (Python ints). Values with more decimal
    places than `scale` are TOO_MANY_DECIMALS; text that is no number is NOT_A_NUMBER."""
    n = len(arr)
    problems = np.zeros(n, dtype=np.uint8)
    typ = arr.type
    if n == 0 or pa.types.is_null(typ) or arr.null_count == n:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool), problems
    valid = non_null(arr)
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
        d = to_decimal(v)
        if d is None:
            problems[i] = Problem.NOT_A_NUMBER
            continue
        shifted = d.scaleb(scale, EXACT)
        if shifted != shifted.to_integral_value(context=EXACT):
            problems[i] = Problem.TOO_MANY_DECIMALS
            continue
        ints[i] = int(shifted)
    return ints, valid, problems


def to_decimal(v: Any) -> Decimal | None:
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
    ints, valid, problems = unscaled(arr, f.scale)
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
        problems = np.where(non_null(arr), Problem.UNSUPPORTED, Problem.OK).astype(np.uint8)
        return Encoded(np.full((n, f.size), page.space, dtype=np.uint8), problems if problems.any() else None)
    chars = plan.chars
    ndig = len(plan.digit_cols)
    scale = ndig - plan.int_digits
    sign_symbol = next((c for c in chars if c in "+-"), None)
    signed = f.signed
    ints, valid, problems = unscaled(arr, scale)
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
    ints, valid, problems = unscaled(arr, f.scale)
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
    ints, valid, problems = unscaled(arr, f.scale)
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
    valid = non_null(arr) if n else np.zeros(0, dtype=bool)
    if pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type):
        values = np.asarray(pc.cast(arr, pa.float64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.float64)
    else:
        dec = [None if v is None else to_decimal(v) for v in arr.to_pylist()]
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

