"""One elementary field's values -> its bytes, in the canonical form (what a COBOL
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
"""

from __future__ import annotations

import pyarrow as pa

from schemas.codepages import CodePage
from schemas.encode.encoded import Encoded
from schemas.encode.numbers import encode_binary, encode_edited, encode_float, encode_packed, encode_zoned
from schemas.encode.text import encode_text
from schemas.layout import Category, Elementary, Usage


def encode_field(arr: pa.Array, f: Elementary, page: CodePage, float_format: str = "ibm") -> Encoded:
    """The encoder for the field's category and usage; a value it cannot write comes back
    as if null, with its `Problem`."""
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
