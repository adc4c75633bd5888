"""Column-wise decoders: one elementary field across N records at once.

Each decoder takes a C-contiguous uint8 block of shape (N, width) holding the field's
bytes in every record (and, for short variable-length records, how many of them are
really there) and returns an Arrow array plus a per-row reason code for values that
could not be decoded. No Python loop runs per record: every step is a numpy gather,
comparison or reduction over the whole block.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.codepages import CodePage
from schemas.layout import MAX_DIGITS, Category, Elementary, Usage


class Reason(IntEnum):
    OK = 0
    INVALID_DIGIT = 1
    INVALID_SIGN = 2
    INVALID_NIBBLE = 3
    INVALID_SIGN_NIBBLE = 4
    UNSIGNED_NEGATIVE = 5
    OVERFLOW = 6
    INVALID_TEXT = 7
    EMBEDDED_BLANK = 8
    UNSIGNED_OVERPUNCH = 9


REASON_TEXT = {
    Reason.INVALID_DIGIT: "invalid digit in zoned decimal",
    Reason.INVALID_SIGN: "invalid sign",
    Reason.INVALID_NIBBLE: "invalid packed-decimal digit nibble",
    Reason.INVALID_SIGN_NIBBLE: "invalid packed-decimal sign nibble",
    Reason.UNSIGNED_NEGATIVE: "negative value in an unsigned field",
    Reason.OVERFLOW: "value does not fit the field's type",
    Reason.INVALID_TEXT: "byte not valid in the encoding",
    Reason.EMBEDDED_BLANK: "blank inside a number",
    Reason.UNSIGNED_OVERPUNCH: "sign overpunch in an unsigned field",
}


@dataclass
class DecodeOptions:
    trim: str = "both"  # both | left | right | none
    float_format: str = "ibm"  # ibm | ieee (big-endian) | ibm-le | ieee-le
    keep_control_chars: bool = False  # ascii/utf-8 text: Cobrix drops bytes 0x00-0x1F; keep them instead


@dataclass
class Decoded:
    values: pa.Array
    reasons: np.ndarray | None = None  # uint8 per row, Reason codes; None when all fine


def _validity(valid: Any) -> pa.Buffer | None:
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


# --------------------------------------------------------------------------- text
def decode_text(block: np.ndarray, avail: np.ndarray | None, page: CodePage, trim: str,
                keep_control_chars: bool = False) -> Decoded:
    """Text through the code page's byte -> UTF-8 tables, trimmed like Java's String.trim
    (every char <= U+0020), as Cobrix does. A field of all 0x00 bytes, or one that starts
    past the end of a short record, is null. In ascii and utf-8 text the control bytes
    0x00-0x1F are dropped (Cobrix) unless `keep_control_chars`."""
    n, width = block.shape
    if page.multibyte:
        return _decode_utf8_text(block, avail, trim, keep_control_chars)
    if avail is None:
        fast = _decode_ascii_text(block, page, trim)
        if fast is not None:
            return fast
    cols = np.arange(width, dtype=np.int32)
    solid = ~page.blank[block]
    within = None
    if avail is not None:
        within = cols[None, :] < avail[:, None]
        solid &= within
    has_solid = solid.any(axis=1)
    start = np.zeros(n, dtype=np.int64)
    stop = np.full(n, width, dtype=np.int64) if avail is None else np.clip(avail, 0, width).astype(np.int64)
    if trim in ("both", "left"):
        start = np.where(has_solid, solid.argmax(axis=1), stop)
    if trim in ("both", "right"):
        stop = np.where(has_solid, width - solid[:, ::-1].argmax(axis=1), start)
    stop = np.maximum(stop, start)
    nonzero = block.any(axis=1) if within is None else (block.astype(bool) & within).any(axis=1)
    valid = nonzero if avail is None else nonzero & (avail > 0)
    dropped = page.dropped[block] if page.name == "ascii" and not keep_control_chars else None
    trimmed = trim != "none" or within is not None or dropped is not None
    keep = (cols[None, :] >= start[:, None]) & (cols[None, :] < stop[:, None]) if trimmed else None
    if dropped is not None and keep is not None:
        keep &= ~dropped  # US-ASCII text drops control bytes (as Cobrix does)
    reasons = None
    invalid = page.invalid[block]
    if within is not None:
        invalid &= within
    if invalid.any():
        reasons = np.where(invalid.any(axis=1), Reason.INVALID_TEXT, Reason.OK).astype(np.uint8)
    ulen = page.utf8_len[block]
    multibyte = bool((ulen > 1).any())
    if not multibyte:  # every char is one UTF-8 byte: gather, no per-byte offsets needed
        ascii_bytes = page.utf8_bytes[:, 0][block]
        data = ascii_bytes[keep] if keep is not None else ascii_bytes.ravel()
        row_len = stop - start if dropped is None or keep is None else keep.sum(axis=1, dtype=np.int64)
    else:
        if keep is not None:
            ulen = ulen * keep
        flat_len = ulen.ravel()
        row_len = ulen.sum(axis=1, dtype=np.int64)
        ends = np.cumsum(flat_len, dtype=np.int64)
        data = np.empty(int(ends[-1]) if ends.size else 0, dtype=np.uint8)
        flat_bytes = block.ravel()
        starts = ends - flat_len
        for k in range(3):
            sel = flat_len > k
            data[starts[sel] + k] = page.utf8_bytes[flat_bytes[sel], k]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_len, out=offsets[1:])
    if offsets[-1] < 2**31:
        arr = pa.Array.from_buffers(pa.string(), n, [_validity(valid), pa.py_buffer(offsets.astype(np.int32)),
                                                     pa.py_buffer(data)])
    else:
        arr = pa.Array.from_buffers(pa.large_string(), n, [_validity(valid), pa.py_buffer(offsets),
                                                           pa.py_buffer(data)])
    return Decoded(arr, reasons)


_JAVA_BLANKS = "".join(chr(c) for c in range(0x21))
_ASCII_TRIM = {"both": pc.ascii_trim, "left": pc.ascii_ltrim, "right": pc.ascii_rtrim}


def _decode_ascii_text(block: np.ndarray, page: CodePage, trim: str) -> Decoded | None:
    """The common case, every byte an ASCII char: one bytes.translate and Arrow's trim.
    None when some byte is non-ASCII or invalid (the general path handles those)."""
    raw = block.tobytes()
    data = raw.translate(page.ascii_checked)
    if data and np.frombuffer(data, dtype=np.uint8).max() >= 0x80:
        return None
    n, width = block.shape
    offsets = np.arange(0, n * width + 1, width, dtype=np.int64)
    # null: a field of zero bytes only; with no zero byte in the block (one memchr) none is
    validity = _validity(block.any(axis=1)) if b"\0" in raw else None
    typ = pa.string() if n * width < 2**31 else pa.large_string()
    offs = offsets.astype(np.int32) if typ == pa.string() else offsets
    arr = pa.Array.from_buffers(typ, n, [validity, pa.py_buffer(offs), pa.py_buffer(data)])
    if trim in _ASCII_TRIM:
        arr = _ASCII_TRIM[trim](arr, characters=_JAVA_BLANKS)
    return Decoded(arr, None)


def _decode_utf8_text(block: np.ndarray, avail: np.ndarray | None, trim: str, keep_control_chars: bool) -> Decoded:
    n, width = block.shape
    lengths = np.full(n, width, dtype=np.int32) if avail is None else np.clip(avail, 0, width).astype(np.int32)
    within = np.arange(width)[None, :] < lengths[:, None]
    valid = ~((block == 0) | ~within).all(axis=1)
    if not keep_control_chars:
        # a control byte is never part of a multi-byte UTF-8 sequence: dropping it keeps the rest valid
        within &= block >= 0x20
        lengths = within.sum(axis=1, dtype=np.int32)
    data = block[within]
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    binary = pa.Array.from_buffers(pa.binary(), n, [_validity(valid), pa.py_buffer(offsets), pa.py_buffer(data)])
    reasons = None
    try:
        arr = binary.cast(pa.string())
    except pa.ArrowInvalid:
        ok = np.array([v is None or _is_utf8(v) for v in binary.to_pylist()])  # error path only
        reasons = np.where(ok, Reason.OK, Reason.INVALID_TEXT).astype(np.uint8)
        arr = pa.array([v.decode("utf-8", "replace") if v is not None and good else None
                        for v, good in zip(binary.to_pylist(), ok, strict=True)], pa.string())
    if trim == "both":
        arr = pc.utf8_trim(arr, characters=_JAVA_BLANKS)
    elif trim == "left":
        arr = pc.utf8_ltrim(arr, characters=_JAVA_BLANKS)
    elif trim == "right":
        arr = pc.utf8_rtrim(arr, characters=_JAVA_BLANKS)
    return Decoded(arr, reasons)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --------------------------------------------------------------------------- numbers
def numeric_type(f: Elementary) -> pa.DataType:
    """int64 for whole numbers up to 18 digits, else an exact decimal wide enough for the
    P scaling too: PIC 9(20)PPP holds 23-digit values, PIC PP9(37) 39 decimal places."""
    if f.category == Category.FLOAT:
        return pa.float32() if f.usage == Usage.FLOAT else pa.float64()
    digits, scale = _digits_for_type(f), f.scale
    # a binary field sized by its bytes may reach past MAX_DIGITS with its Ps: values beyond are rejected
    precision = min(max(digits - min(scale, 0), scale, 1), MAX_DIGITS)
    if scale <= 0 and precision <= 18:
        return pa.int64()
    decimal = pa.decimal128 if precision <= 38 else pa.decimal256
    return decimal(precision, max(scale, 0))


def _digits_for_type(f: Elementary) -> int:
    # Binary fields hold more than their PIC digits (Cobrix does not cut them): size by bytes.
    if f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE):
        size = f.byte_size()
        return {1: 3, 2: 5, 4: 10, 8: 19}.get(size, f.digits)
    return f.digits


def to_arrow_number(unscaled: np.ndarray, valid: np.ndarray, f: Elementary) -> pa.Array:
    """Unscaled integers (the digits as written) -> the field's exact Arrow type."""
    typ = numeric_type(f)
    scale = f.scale
    n = len(unscaled)
    if pa.types.is_integer(typ):
        if unscaled.dtype == object:  # an extra packed nibble can exceed the PIC: keep what fits
            fits = np.array([v is not None and -(2**63) <= v < 2**63 for v in unscaled], dtype=bool)
            valid = valid & fits
            unscaled = np.where(fits, unscaled, 0)
        values = unscaled.astype(np.int64, copy=False)
        if scale < 0:
            values = values * (10 ** (-scale))
        return pa.Array.from_buffers(pa.int64(), n, [_validity(valid), pa.py_buffer(np.ascontiguousarray(values))])
    word_count = 4 if pa.types.is_decimal256(typ) else 2
    if unscaled.dtype == object:  # wider than int64: exact Python ints (a Decimal would round them to 28 digits)
        wide = np.where(valid, unscaled, 0)
        if scale < 0:
            wide = wide * 10 ** (-scale)
        return pa.Array.from_buffers(typ, n, [_validity(valid), pa.py_buffer(_decimal_words(wide, word_count))])
    values = np.where(valid, unscaled.astype(np.int64, copy=False), 0)  # a null's garbage must not fail the cast
    words = _decimal_words(values, word_count)
    if scale >= 0:
        return pa.Array.from_buffers(typ, n, [_validity(valid), pa.py_buffer(words)])
    # P left of the point (999PP): the integers as written at a negative scale, and Arrow's
    # exact rescale multiplies them by 10^P (in int64 the product would wrap around)
    as_written = pa.decimal256(19, scale) if word_count == 4 else pa.decimal128(19, scale)
    return pa.Array.from_buffers(as_written, n, [_validity(valid), pa.py_buffer(words)]).cast(typ)


_WORD = (1 << 64) - 1


def _decimal_words(values: np.ndarray, word_count: int) -> np.ndarray:
    """Integers (int64, or Python ints in an object array) as the little-endian 64-bit
    words of a two's-complement decimal128 (2 words) or decimal256 (4 words)."""
    words = np.empty((len(values), word_count), dtype=np.uint64)
    if values.dtype != object:
        words[:, 0] = values.view(np.uint64)
        words[:, 1:] = (values >> 63).view(np.uint64)[:, None]  # sign extension
        return words
    for i in range(word_count):  # Python's >> on a negative int is arithmetic: two's complement words
        words[:, i] = ((values >> (64 * i)) & _WORD).astype(np.uint64)
    return words


def _accumulate(digits: np.ndarray) -> np.ndarray:
    """Digit matrix (N, k) -> integers; object dtype beyond 18 digits (exact)."""
    n, k = digits.shape
    if k <= 18:
        acc = np.zeros(n, dtype=np.int64)
        for j in range(k):
            acc = acc * 10 + digits[:, j]
        return acc
    head = _accumulate(digits[:, : k - 18]).astype(object)
    tail = _accumulate(digits[:, k - 18 :]).astype(object)
    return head * (10**18) + tail


# Byte classes for DISPLAY numbers.
_OTHER, _DIGIT, _PUNCH_POS, _PUNCH_NEG, _PLUS, _MINUS, _POINT, _COMMA, _SPACE, _NUL = range(10)


def _display_tables(page: CodePage) -> tuple[np.ndarray, np.ndarray]:
    """(class, digit value) per byte for DISPLAY numbers in this code page."""
    cls = np.full(256, _OTHER, dtype=np.int8)
    dig = np.zeros(256, dtype=np.int64)
    def put(b: int, c: int, d: int = 0) -> None:
        cls[b], dig[b] = c, d
    for d in range(10):
        put(page.zero + d, _DIGIT, d)
        if page.ebcdic:  # zone C = +, D = - (IBM zoned decimal)
            put(0xC0 + d, _PUNCH_POS, d)
            put(0xD0 + d, _PUNCH_NEG, d)
        else:  # ASCII overpunch letters as written by IBM and Micro Focus COBOL
            put(ord("{") if d == 0 else ord("A") + d - 1, _PUNCH_POS, d)
            put(ord("}") if d == 0 else ord("J") + d - 1, _PUNCH_NEG, d)
    put(page.plus, _PLUS)
    put(page.minus, _MINUS)
    put(page.point, _POINT)
    put(page.comma, _COMMA)
    put(page.space, _SPACE)
    put(0, _NUL)
    return cls, dig


_DISPLAY_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_FAST_CACHE: dict[str, tuple[bytes, np.ndarray, np.ndarray]] = {}


def _fast_tables(page: CodePage) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(plain digit value or 0xFF, as bytes.translate table; digit value incl. overpunch or
    0xFF; 1 where the byte is a negative overpunch)."""
    cached = _FAST_CACHE.get(page.name)
    if cached is None:
        cls, dig = _DISPLAY_CACHE.get(page.name) or _display_tables(page)
        plain = np.where(cls == _DIGIT, dig, 0xFF).astype(np.uint8)
        punch = np.where((cls == _DIGIT) | (cls == _PUNCH_POS) | (cls == _PUNCH_NEG), dig, 0xFF).astype(np.uint8)
        cached = _FAST_CACHE[page.name] = (plain.tobytes(), punch, (cls == _PUNCH_NEG))
    return cached


def _display_fast(block: np.ndarray, f: Elementary, page: CodePage) -> Decoded | None:
    """Plain zoned digits with at most an overpunched sign in its place: the usual case.
    None when anything else shows up (blanks, separate signs, points): the general path."""
    n, width = block.shape
    if width > 18 or f.category != Category.NUMBER or f.sign_separate:
        return None
    plain, punch, negative_punch = _fast_tables(page)
    digits = np.frombuffer(block.tobytes().translate(plain), dtype=np.uint8).reshape(n, width)
    negative = None
    if f.signed:
        col = 0 if f.sign_leading else width - 1
        sign_byte = block[:, col]
        punched = punch[sign_byte]
        if punched.max(initial=0) > 9:
            return None
        digits = digits.copy()
        digits[:, col] = punched
        negative = negative_punch[sign_byte]
    if digits.max(initial=0) > 9:
        return None
    acc = digits[:, 0].astype(np.int64)
    for j in range(1, width):
        acc *= 10
        acc += digits[:, j]
    if negative is not None and negative.any():
        acc = np.where(negative, -acc, acc)
    return Decoded(to_arrow_number(acc, np.ones(n, dtype=bool), f), None)


def _too_wide(unscaled: np.ndarray, f: Elementary) -> np.ndarray:
    """Rows whose magnitude has more digits than the field's decimal type can hold."""
    typ = numeric_type(f)
    if not pa.types.is_decimal(typ):
        return np.zeros(len(unscaled), dtype=bool)
    limit = 10 ** (typ.precision + min(f.scale, 0))
    if unscaled.dtype == object:
        return np.array([abs(v) >= limit for v in unscaled], dtype=bool)
    return np.abs(unscaled) >= limit


def decode_display_number(block: np.ndarray, avail: np.ndarray | None, f: Elementary,
                          page: CodePage) -> Decoded:
    """DISPLAY numbers, plain or edited, the way Cobrix reads them: digits in order, one
    sign anywhere ('+', '-', or an overpunched digit: anywhere in EBCDIC, first or last
    byte in ASCII), '.' or ',' as an explicit decimal point, blanks skipped (EBCDIC) or
    trimmed (ASCII). A negative or overpunched value in an unsigned field is invalid.
    All blank -> null without a reason; anything else malformed -> null with a reason."""
    if avail is None:
        fast = _display_fast(block, f, page)
        if fast is not None:
            return fast
    tables = _DISPLAY_CACHE.get(page.name)
    if tables is None:
        tables = _DISPLAY_CACHE[page.name] = _display_tables(page)
    class_lut, digit_lut = tables
    n, width = block.shape
    cls = class_lut[block]
    pic = f.picture
    assert pic is not None
    cr_neg = np.zeros(n, dtype=bool)
    if (pic.symbols.endswith("CR") or pic.symbols.endswith("DB")) and width >= 2:
        # the last two bytes are the credit/debit symbol (or blanks), never digits
        tail = block[:, -2:]
        for word in ("CR", "DB"):
            code = np.array([page.from_unicode.get(ord(c), -1) for c in word])
            cr_neg |= (tail == code[None, :]).all(axis=1)
        cls = cls.copy()
        cls[:, -2:] = np.where(cr_neg[:, None], _SPACE, cls[:, -2:])
    if not page.ebcdic and width > 2:
        inner = cls[:, 1:-1]
        inner[(inner == _PUNCH_POS) | (inner == _PUNCH_NEG)] = _OTHER
    comma_is_separator = "," in pic.symbols and ("." in pic.symbols or "V" in pic.symbols)
    is_digit = (cls == _DIGIT) | (cls == _PUNCH_POS) | (cls == _PUNCH_NEG)
    is_punch = (cls == _PUNCH_POS) | (cls == _PUNCH_NEG)
    is_sign = is_punch | (cls == _PLUS) | (cls == _MINUS)
    # ',' is a decimal point (as Cobrix reads it) unless the picture inserts it as a separator
    is_point = (cls == _POINT) if comma_is_separator else (cls == _POINT) | (cls == _COMMA)
    blank = (cls == _SPACE) | (cls == _NUL)
    other = cls == _OTHER
    if "$" in pic.symbols or "*" in pic.symbols:  # currency / check-protect fill read as blanks
        other &= ~np.isin(block, [page.from_unicode.get(0x24, -1), page.from_unicode.get(0x2A, -1)])
    all_blank = blank.all(axis=1)
    reasons = np.zeros(n, dtype=np.uint8)
    reasons[other.any(axis=1)] = Reason.INVALID_DIGIT
    signs = is_sign.sum(axis=1)
    reasons[(signs > 1) & (reasons == 0)] = Reason.INVALID_SIGN
    if not page.ebcdic:  # ASCII: blanks between digits make a number invalid (as in Cobrix)
        numeral = is_digit | is_point
        seen = np.maximum.accumulate(numeral, axis=1)
        rest = np.maximum.accumulate(numeral[:, ::-1], axis=1)[:, ::-1]
        embedded = (blank & seen & rest).any(axis=1)
        reasons[embedded & (reasons == 0)] = Reason.EMBEDDED_BLANK
    reasons[(is_point.sum(axis=1) > 1) & (reasons == 0)] = Reason.INVALID_DIGIT
    negative = (cls == _MINUS).any(axis=1) | (cls == _PUNCH_NEG).any(axis=1) | cr_neg
    if not f.signed:
        reasons[negative & (reasons == 0)] = Reason.UNSIGNED_NEGATIVE
        reasons[is_punch.any(axis=1) & (reasons == 0)] = Reason.UNSIGNED_OVERPUNCH
    digits = np.where(is_digit, digit_lut[block], 0)
    ndigits = is_digit.sum(axis=1)
    reasons[(ndigits == 0) & ~all_blank & (reasons == 0)] = Reason.INVALID_DIGIT
    # digits after an explicit point set the data's own scale
    after_point = np.maximum.accumulate(is_point, axis=1)
    data_scale = (is_digit & after_point).sum(axis=1)
    has_point = is_point.any(axis=1)
    explicit = "." in pic.symbols or (comma_is_separator is False and "," in pic.symbols)
    wide = f.digits + max(f.scale, 0) > 18 or width > 18
    acc: np.ndarray = np.zeros(n, dtype=object if wide else np.int64)
    for j in range(width):
        col = digits[:, j] if not wide else digits[:, j].astype(object)
        acc = np.where(is_digit[:, j], acc * 10 + col, acc)
    scale = max(f.scale, 0)
    if explicit or has_point.any():
        own = np.where(has_point | explicit, data_scale, scale)
        shift = scale - own
        if (shift < 0).any():  # more decimals than the field holds: round half up like Spark
            drop = np.where(shift < 0, -shift, 0)
            div = np.power(10, drop.astype(object if wide else np.int64))
            acc = np.where(shift < 0, (acc + div // 2) // div, acc)
        up = np.where(shift > 0, shift, 0)
        acc = acc * np.power(10, up.astype(object if wide else np.int64))
    reasons[_too_wide(acc, f) & (reasons == 0)] = Reason.OVERFLOW
    acc = np.where(negative, -acc, acc)
    valid = ~all_blank & (reasons == 0)
    if avail is not None:
        cut = avail < width
        valid &= ~cut
        reasons[cut] = Reason.OK
    return Decoded(to_arrow_number(acc, valid, f), reasons if reasons.any() else None)


# COMP-3 a byte at a time: its two BCD digits as one value 0-99; -1 where a nibble is no digit
_BCD_PAIR = np.full(256, -1, dtype=np.int64)
_BCD_PAIR[np.arange(100) // 10 * 16 + np.arange(100) % 10] = np.arange(100)


def decode_packed(block: np.ndarray, avail: np.ndarray | None, f: Elementary) -> Decoded:
    """COMP-3: two BCD digits a byte, the last nibble the sign (C/F +, D -). COMP-3U has
    no sign nibble. An invalid nibble makes the value null with a reason."""
    n, width = block.shape
    signed = f.usage == Usage.PACKED
    if width * 2 - signed > 18:
        return _decode_packed_nibbles(block, avail, f)
    # up to 18 digits: a byte's two digits at a time, looked up (half the passes of a
    # digit at a time, and no matrix of nibbles)
    value = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for j in range(width - 1 if signed else width):
        pair = np.take(_BCD_PAIR, block[:, j])
        bad |= pair < 0
        value *= 100
        value += pair
    reasons = np.zeros(n, dtype=np.uint8)
    negative = np.zeros(n, dtype=bool)
    if signed:
        last = block[:, -1]
        high = (last >> 4).astype(np.int64)
        sign_nibble = last & 0x0F
        bad |= high > 9
        value = value * 10 + high
        negative = sign_nibble == 0xD
        reasons[~np.isin(sign_nibble, (0xC, 0xD, 0xF))] = Reason.INVALID_SIGN_NIBBLE
    if bad.any():
        reasons[bad] = Reason.INVALID_NIBBLE
        value[bad] = 0
    return _signed_packed(value, negative, reasons, avail, width, f)


def _decode_packed_nibbles(block: np.ndarray, avail: np.ndarray | None, f: Elementary) -> Decoded:
    """COMP-3 of more than 18 digits, a nibble at a time (exact, through Python ints)."""
    n, width = block.shape
    nibbles = np.empty((n, width * 2), dtype=np.int16)
    nibbles[:, 0::2] = block >> 4
    nibbles[:, 1::2] = block & 0x0F
    reasons = np.zeros(n, dtype=np.uint8)
    if f.usage == Usage.PACKED:
        digits = nibbles[:, :-1]
        sign_nibble = nibbles[:, -1]
        negative = sign_nibble == 0xD
        reasons[~np.isin(sign_nibble, (0xC, 0xD, 0xF))] = Reason.INVALID_SIGN_NIBBLE
    else:
        digits = nibbles
        negative = np.zeros(n, dtype=bool)
    reasons[(digits > 9).any(axis=1)] = Reason.INVALID_NIBBLE
    value = _accumulate(np.where(digits > 9, 0, digits))
    return _signed_packed(value, negative, reasons, avail, width, f)


def _signed_packed(value: np.ndarray, negative: np.ndarray, reasons: np.ndarray, avail: np.ndarray | None,
                   width: int, f: Elementary) -> Decoded:
    """A COMP-3 column from its magnitudes and signs: too many digits for the field's type
    is an overflow; a record cut short before the field's end is null without a reason."""
    reasons[_too_wide(value, f) & (reasons == 0)] = Reason.OVERFLOW
    value = np.where(negative, -value, value)
    valid = reasons == 0
    if avail is not None:
        valid &= avail >= width
        reasons[avail < width] = Reason.OK
    return Decoded(to_arrow_number(value, valid, f), reasons if reasons.any() else None)


def decode_binary(block: np.ndarray, avail: np.ndarray | None, f: Elementary) -> Decoded:
    """COMP/COMP-4/BINARY/COMP-5 big-endian, COMP-9 little-endian two's complement. The value
    is not cut to the PIC digits; an unsigned value beyond the signed range of its width
    is null (as Cobrix does)."""
    n, width = block.shape
    order = "<" if f.usage == Usage.BINARY_LE else ">"
    reasons = np.zeros(n, dtype=np.uint8)
    if width not in (1, 2, 4, 8):  # wider than 18 digits: exact through Python ints (rare)
        byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
        ints = [int.from_bytes(bytes(r), byteorder, signed=f.signed) for r in block]
        value: np.ndarray = np.empty(n, dtype=object)
        value[:] = ints
    else:
        kind = "i" if f.signed else "u"
        raw = np.ascontiguousarray(block).view(f"{order}{kind}{width}").ravel()
        if not f.signed and width >= 4:
            over = raw > np.iinfo(f"i{width}").max
            reasons[over] = Reason.OVERFLOW
            value = np.where(over, 0, raw).astype(np.int64)
        else:
            value = raw.astype(np.int64)
    # 9 bytes and more hold more digits than the PIC (and its Ps) give the decimal type
    over = _too_wide(value, f) & (reasons == 0)
    if over.any():
        reasons[over] = Reason.OVERFLOW
        value = np.where(over, 0, value)
    valid = reasons == 0
    if avail is not None:
        valid &= avail >= width
        reasons[avail < width] = Reason.OK
    return Decoded(to_arrow_number(value, valid, f), reasons if reasons.any() else None)


def decode_float(block: np.ndarray, avail: np.ndarray | None, f: Elementary, fmt: str) -> Decoded:
    """COMP-1 / COMP-2 as IBM hexadecimal floating point (the mainframe's) or IEEE 754."""
    n, width = block.shape
    contiguous = np.ascontiguousarray(block)
    little = fmt.endswith("-le")
    if fmt.startswith("ieee"):
        values = contiguous.view(f"{'<' if little else '>'}f{width}").ravel().astype(np.float64)
    else:
        raw = contiguous.view(f"{'<' if little else '>'}u{width}").ravel().astype(np.uint64)
        bits = width * 8
        sign = np.where((raw >> np.uint64(bits - 1)) & np.uint64(1), -1.0, 1.0)
        exponent = ((raw >> np.uint64(bits - 8)) & np.uint64(0x7F)).astype(np.int64) - 64
        fraction = (raw & np.uint64((1 << (bits - 8)) - 1)).astype(np.float64)
        values = sign * np.ldexp(fraction, 4 * exponent - (bits - 8))
    valid = np.isfinite(values)
    if avail is not None:
        valid &= avail >= width
    typ = pa.float32() if width == 4 else pa.float64()
    arr = pa.Array.from_buffers(typ, n, [_validity(valid), pa.py_buffer(values.astype(typ.to_pandas_dtype()))])
    return Decoded(arr, None)


def decode_field(block: np.ndarray, avail: np.ndarray | None, f: Elementary, page: CodePage,
                 options: DecodeOptions) -> Decoded:
    cat = f.category
    if cat == Category.TEXT:
        return decode_text(block, avail, page, options.trim, options.keep_control_chars)
    if cat == Category.FLOAT:
        return decode_float(block, avail, f, options.float_format)
    if f.usage in (Usage.PACKED, Usage.PACKED_UNSIGNED):
        return decode_packed(block, avail, f)
    if f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE):
        return decode_binary(block, avail, f)
    return decode_display_number(block, avail, f, page)
