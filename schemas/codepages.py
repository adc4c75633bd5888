"""Single-byte code pages as lookup tables, so text and zoned numbers decode as numpy gathers.

A `CodePage` maps every byte to one Unicode code point. EBCDIC tables come from the
standard library where it has them (cp037, cp273, cp500, cp1140) and from the `ebcdic`
package otherwise; its cp1141-cp1148 tables send both 0x15 and 0x25 to LF, which would
make encoding ambiguous, so 0x15 is restored to IBM's NEL (U+0085) as in cp037.
UTF-8 is not single-byte: text fields in UTF-8 records are decoded by pyarrow instead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from schemas.errors import ContractError

EBCDIC_PAGES = (
    "cp037", "cp273", "cp500", "cp1047",
    "cp1140", "cp1141", "cp1142", "cp1143", "cp1144", "cp1145", "cp1146", "cp1147", "cp1148",
)
ASCII_PAGES = ("ascii", "latin-1", "utf-8")
_STANDARD_LIBRARY_PAGES = frozenset({"cp037", "cp273", "cp500", "cp1140"})  # the rest are the `ebcdic` package's
SUPPORTED = EBCDIC_PAGES + ASCII_PAGES

_ALIASES = {
    "ebcdic": "cp037", "ibm037": "cp037", "ibm-037": "cp037", "cp37": "cp037", "037": "cp037",
    "ibm1047": "cp1047", "ibm500": "cp500", "ibm273": "cp273",
    "us-ascii": "ascii", "ascii7": "ascii",
    "latin1": "latin-1", "iso-8859-1": "latin-1", "iso8859-1": "latin-1", "l1": "latin-1",
    "utf8": "utf-8",
}
_NEL = 0x85


def canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key.startswith("ibm-") or key.startswith("ibm"):
        key = "cp" + key.removeprefix("ibm-").removeprefix("ibm").lstrip("0").zfill(3)
    if key not in SUPPORTED:
        raise ContractError(f"unknown encoding {name!r}: expected one of {', '.join(SUPPORTED)}")
    return key


@dataclass(frozen=True)
class CodePage:
    """Byte -> code point tables for one single-byte encoding (or UTF-8's ASCII subset)."""

    name: str
    ebcdic: bool
    to_unicode: np.ndarray  # uint32[256]; 0xFFFFFFFF where the byte is not valid text
    from_unicode: dict[int, int] = field(repr=False)
    utf8_len: np.ndarray = field(repr=False)  # uint8[256]: bytes of the code point in UTF-8
    utf8_bytes: np.ndarray = field(repr=False)  # uint8[256, 3]
    blank: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(256, dtype=bool))  # char <= U+0020
    invalid: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(256, dtype=bool))
    dropped: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(256, dtype=bool))
    # byte -> its ASCII char when it is a plain ASCII char or a blank (<= U+0020), else 0x80
    # (non-ASCII, invalid): one bytes.translate both converts a text field and flags the rest
    ascii_checked: bytes = b""
    space: int = 0x20
    zero: int = 0x30
    plus: int = 0x2B
    minus: int = 0x2D
    point: int = 0x2E
    comma: int = 0x2C

    @property
    def multibyte(self) -> bool:
        return self.name == "utf-8"

    def byte_of(self, char: str) -> int:
        return self.from_unicode[ord(char)]

    def encode_text(self, text: str) -> bytes:
        if self.multibyte:
            return text.encode("utf-8")
        try:
            return bytes(self.from_unicode[ord(c)] for c in text)
        except KeyError as exc:
            bad = chr(exc.args[0])
            raise ValueError(f"character {bad!r} (U+{ord(bad):04X}) has no byte in {self.name}") from None


INVALID = np.uint32(0xFFFFFFFF)


def _table(name: str) -> np.ndarray:
    table = np.full(256, INVALID, dtype=np.uint32)
    if name == "ascii":
        # US-ASCII as Cobrix reads it: a byte above 0x7F is not text, it shows as a space.
        table[:128] = np.arange(128, dtype=np.uint32)
        table[128:] = 0x20
        return table
    if name == "utf-8":
        table[:128] = np.arange(128, dtype=np.uint32)
        return table
    if name == "latin-1":
        return np.arange(256, dtype=np.uint32)
    if name not in _STANDARD_LIBRARY_PAGES:
        # the `ebcdic` package registers its codecs (cp1047, cp1141-cp1148) when imported,
        # all of them at once (5 ms of every start-up): only when one of them is asked for
        import ebcdic  # noqa: F401
    text = bytes(range(256)).decode(name)
    table[:] = [ord(c) for c in text]
    if name != "cp037" and table[0x15] == table[0x25]:
        table[0x15] = _NEL
    return table


def _text_class(name: str, b: int, table: np.ndarray, valid: np.ndarray) -> int:
    """0 plain ASCII char, 1 blank, 2 needs the general text path, 4 invalid."""
    if not valid[b]:
        return 4
    if name == "ascii" and (b < 0x20 or b >= 0x80):
        return 2  # controls are dropped and high bytes become spaces: the general path does both
    if table[b] <= 0x20:
        return 1
    return 2 if table[b] >= 0x80 else 0


@functools.cache
def code_page(name: str) -> CodePage:
    canon = canonical_name(name)
    table = _table(canon)
    valid = table != INVALID
    from_unicode: dict[int, int] = {}
    for b, cp in enumerate(table):  # the first byte of a char is the one encoding writes
        if valid[b]:
            from_unicode.setdefault(int(cp), b)
    utf8_len = np.zeros(256, dtype=np.uint8)
    utf8_bytes = np.zeros((256, 3), dtype=np.uint8)
    for b in range(256):
        # A byte with no char in the page reads as a space (as Cobrix shows it); the
        # decoder still reports it as a reason.
        enc = chr(int(table[b])).encode("utf-8") if valid[b] else b" "
        utf8_len[b] = len(enc)
        utf8_bytes[b, : len(enc)] = list(enc)
    ebc = canon in EBCDIC_PAGES
    chars = {c: from_unicode[ord(c)] for c in " 0+-.,"}
    return CodePage(
        name=canon, ebcdic=ebc, to_unicode=table, from_unicode=from_unicode,
        utf8_len=utf8_len, utf8_bytes=utf8_bytes,
        blank=~valid | (table <= 0x20), invalid=~valid,
        ascii_checked=bytes(int(table[b]) if _text_class(canon, b, table, valid) <= 1 else 0x80 for b in range(256)),
        dropped=(np.arange(256) < 0x20) if canon == "ascii" else np.zeros(256, dtype=bool),
        space=chars[" "], zero=chars["0"], plus=chars["+"], minus=chars["-"],
        point=chars["."], comma=chars[","],
    )
