"""The record layout: a tree of groups and elementary fields with byte offsets.

A layout comes from a COBOL copybook (`schemas.copybook`) or from a contract's explicit
field list; the codecs only ever see this tree. Offsets and sizes are in bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from schemas.errors import ContractError, LimitError


class Usage(StrEnum):
    DISPLAY = "display"
    BINARY = "binary"  # COMP, COMP-4, BINARY: big-endian two's complement (IBM)
    NATIVE_BINARY = "comp-5"  # COMP-5: native binary; big-endian on z/OS
    BINARY_LE = "comp-9"  # little-endian binary (Cobrix's COMP-9, x86 COBOL)
    PACKED = "packed"  # COMP-3: BCD digits with a trailing sign nibble
    PACKED_UNSIGNED = "packed-unsigned"  # COMP-3U: BCD digits, no sign nibble
    FLOAT = "float"  # COMP-1: 4 bytes
    DOUBLE = "double"  # COMP-2: 8 bytes


USAGE_WORDS: dict[str, Usage] = {
    "DISPLAY": Usage.DISPLAY,
    "COMP": Usage.BINARY, "COMPUTATIONAL": Usage.BINARY,
    "COMP-0": Usage.BINARY, "COMPUTATIONAL-0": Usage.BINARY,  # Cobrix reads COMP-0 as COMP-4
    "COMP-4": Usage.BINARY, "COMPUTATIONAL-4": Usage.BINARY, "BINARY": Usage.BINARY,
    "COMP-5": Usage.NATIVE_BINARY, "COMPUTATIONAL-5": Usage.NATIVE_BINARY,
    "COMP-9": Usage.BINARY_LE, "COMPUTATIONAL-9": Usage.BINARY_LE,
    "COMP-3": Usage.PACKED, "COMPUTATIONAL-3": Usage.PACKED, "PACKED-DECIMAL": Usage.PACKED,
    "COMP-3U": Usage.PACKED_UNSIGNED, "COMPUTATIONAL-3U": Usage.PACKED_UNSIGNED,
    "COMP-1": Usage.FLOAT, "COMPUTATIONAL-1": Usage.FLOAT,
    "COMP-2": Usage.DOUBLE, "COMPUTATIONAL-2": Usage.DOUBLE,
}


class Category(StrEnum):
    TEXT = "text"  # PIC X / A (and alphanumeric-edited)
    NUMBER = "number"  # PIC 9 / S / V / P
    EDITED = "edited"  # numeric-edited: Z * + - $ . , CR DB B 0 /
    FLOAT = "float"  # COMP-1 / COMP-2, no picture


_REPEAT = re.compile(r"(.)\((\d+)\)")
_EDIT_SYMBOLS = set("Z*+-$.,B0/CRD")
MAX_DIGITS = 76  # the widest exact decimal Arrow holds (decimal256)


@dataclass(frozen=True)
class Limits:
    """What one record layout may ask for, checked before anything is allocated. The
    defaults fit any real copybook (IBM caps a QSAM record at 32,760 bytes); a contract
    raises them under `record.limits`, `lgw decode` with --max-* options."""

    record_bytes: int = 64 << 20  # one record, OCCURS at their maximum
    field_bytes: int = 16 << 20  # one PIC item (one occurrence)
    occurs: int = 1_000_000  # occurrences of one item in a record, nested OCCURS multiplied
    line_bytes: int = 1 << 20  # a line of a text (D) file; at least the record length

    def line_limit(self, record_length: int) -> int:
        return max(self.line_bytes, record_length + 2)  # room for the record and its CR LF


DEFAULT_LIMITS = Limits()


def _picture_size(text: str) -> int:
    """Characters the picture expands to, counted without expanding it."""
    size = 0
    for m in _REPEAT.finditer(text):
        size += int(m.group(2))
    return size + len(_REPEAT.sub("", text))


@dataclass(frozen=True)
class Picture:
    """A parsed PICTURE string. `symbols` is the string with repetitions expanded."""

    text: str
    symbols: str
    category: Category
    size: int  # characters in DISPLAY form (S, V and P take none)
    digits: int  # digit positions
    scale: int  # decimal places; negative when P scales to the left of the point
    signed: bool

    @classmethod
    def parse(cls, text: str, limits: Limits = DEFAULT_LIMITS) -> Picture:
        raw = text.upper()
        size = _picture_size(raw)
        if size > limits.field_bytes:
            raise LimitError(f"PIC {text} is {size:,} characters, over the field limit of {limits.field_bytes:,} "
                             "(record.limits.field_bytes, --max-field-bytes)")
        expanded = _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), raw)
        if "(" in expanded or ")" in expanded:
            raise ContractError(f"PIC {text}: malformed repetition, expected e.g. X(10) or 9(5)")
        if not expanded:
            raise ContractError("empty PIC string")
        chars = set(expanded)
        if chars & set("XAN") and chars <= set("XANB0/9"):
            return cls(text, expanded, Category.TEXT, len(expanded), 0, 0, False)
        if chars <= set("S9VP"):
            return cls._numeric(text, expanded)
        if chars <= _EDIT_SYMBOLS | set("9SV"):
            return cls._edited(text, expanded)
        bad = "".join(sorted(chars - (_EDIT_SYMBOLS | set("XAN9SVP"))))
        raise ContractError(f"PIC {text}: unsupported picture symbol(s) {bad!r}")

    @classmethod
    def _numeric(cls, text: str, s: str) -> Picture:
        if s.count("S") > 1 or ("S" in s and not s.startswith("S")):
            raise ContractError(f"PIC {text}: S must come first, once")
        if s.count("V") > 1:
            raise ContractError(f"PIC {text}: more than one V")
        body = s.lstrip("S")
        int_part, _, frac_part = body.partition("V")
        digits = body.count("9")
        if digits == 0:
            raise ContractError(f"PIC {text}: no digit positions")
        _check_digits(text, digits + body.count("P"))
        scale = frac_part.count("9") + frac_part.count("P")
        if "P" in int_part:
            if re.fullmatch(r"P+9+", int_part) and not frac_part:  # PPP999: Ps right of an implied point
                scale = len(int_part)
            elif re.fullmatch(r"9+P+", int_part):  # 999PPP: the value is scaled up by 10^P
                scale = -int_part.count("P")
            else:
                raise ContractError(f"PIC {text}: P must lead or trail the digits")
        return cls(text, s, Category.NUMBER, digits, digits, scale, "S" in s)

    @classmethod
    def _edited(cls, text: str, s: str) -> Picture:
        signed = "S" in s or "+" in s or "-" in s or "CR" in s or "DB" in s
        body = s.replace("S", "")
        # the explicit point: '.', else V, else a ',' (Cobrix reads PIC 999,99 as decimal)
        point = body.find(".") if "." in body else body.find("V") if "V" in body else body.find(",")
        positions = [i for i, c in enumerate(body) if c in "9Z*"]
        # A floating $ + - string holds digits in all but its first position; a single
        # + or - is only the sign.
        for i, c in enumerate(body):
            if c in "$+-" and i > 0 and body[i - 1] == c:
                positions.append(i)
        digits = len(positions)
        scale = len([i for i in positions if point >= 0 and i > point])
        size = len(body.replace("V", ""))
        if digits == 0:
            raise ContractError(f"PIC {text}: no digit positions")
        _check_digits(text, digits)
        return cls(text, s, Category.EDITED, size, digits, scale, signed)


def _check_digits(text: str, digits: int) -> None:
    if digits > MAX_DIGITS:
        raise LimitError(f"PIC {text} has {digits:,} digit positions; a number holds at most {MAX_DIGITS}")


@dataclass
class Node:
    name: str  # as written in the copybook (FILLER for unnamed)
    level: int
    line: int = 0
    occurs: int | None = None  # maximum occurrences
    occurs_min: int = 0
    depending_on: str | None = None
    redefines: str | None = None
    offset: int = 0  # of the first occurrence, from the start of the record
    size: int = 0  # bytes of one occurrence
    parent: Group | None = field(default=None, repr=False)
    redefined: bool = False  # another node REDEFINES this one

    @property
    def key(self) -> str:
        """The output name: '-' becomes '_' (JSON, Arrow, pydantic all prefer it)."""
        return self.name.replace("-", "_")

    @property
    def is_filler(self) -> bool:
        return self.name.upper() == "FILLER"

    @property
    def extent(self) -> int:
        return self.size * (self.occurs or 1)

    def ancestors(self) -> Iterator[Group]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    @property
    def path(self) -> str:
        parts = [self.key] + [g.key for g in self.ancestors() if g.level > 0]
        return ".".join(reversed(parts))

    @property
    def in_redefines(self) -> bool:
        """True when the bytes of this node are also read as another view."""
        return any(n.redefines or n.redefined for n in (self, *self.ancestors()))


@dataclass
class Elementary(Node):
    picture: Picture | None = None
    usage: Usage = Usage.DISPLAY
    sign_leading: bool = False
    sign_separate: bool = False
    justified_right: bool = False
    blank_when_zero: bool = False
    conditions: dict[str, list[str | int | float]] = field(default_factory=dict)  # 88 levels
    value: str | int | float | None = None

    @property
    def category(self) -> Category:
        if self.usage in (Usage.FLOAT, Usage.DOUBLE):
            return Category.FLOAT
        assert self.picture is not None
        return self.picture.category

    @property
    def is_text(self) -> bool:
        return self.category == Category.TEXT

    @property
    def digits(self) -> int:
        return self.picture.digits if self.picture else 0

    @property
    def scale(self) -> int:
        return self.picture.scale if self.picture else 0

    @property
    def signed(self) -> bool:
        return bool(self.picture and self.picture.signed) or self.sign_separate

    def byte_size(self) -> int:
        """Bytes of one occurrence, by usage (IBM Enterprise COBOL rules)."""
        u = self.usage
        if u == Usage.FLOAT:
            return 4
        if u == Usage.DOUBLE:
            return 8
        pic = self.picture
        if pic is None:
            raise ContractError(f"{self.name}: elementary item without PIC or COMP-1/COMP-2")
        if u == Usage.DISPLAY:
            return pic.size + (1 if self.sign_separate else 0)
        if pic.category != Category.NUMBER:
            raise ContractError(f"{self.name}: USAGE {u.value} needs a numeric PIC, found PIC {pic.text}")
        if u in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE):
            if u == Usage.BINARY_LE and pic.digits <= 2:
                return 1
            if pic.digits <= 4:
                return 2
            if pic.digits <= 9:
                return 4
            if pic.digits <= 18:
                return 8
            if pic.digits > 38:
                raise ContractError(f"{self.name}: binary PIC {pic.text} has {pic.digits} digits; at most 38")
            # Cobrix's size for wider binary numbers: enough bytes for the digits plus a sign bit
            return math.ceil((math.log2(10) * pic.digits + 1) / 8)
        if u == Usage.PACKED:
            return pic.digits // 2 + 1
        return (pic.digits + 1) // 2  # PACKED_UNSIGNED


@dataclass
class Group(Node):
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            if isinstance(child, Group):
                yield from child.walk()


@dataclass
class Layout:
    """The whole record: a root group (level 0) holding the 01 records or the fields."""

    root: Group
    name: str = "RECORD"

    @property
    def record_length(self) -> int:
        return self.root.size

    def walk(self) -> Iterator[Node]:
        return self.root.walk()

    def elementary(self) -> Iterator[Elementary]:
        for n in self.walk():
            if isinstance(n, Elementary):
                yield n

    def find(self, name: str) -> Node:
        """A node by copybook name, key or dotted path (case-insensitive); must be unique."""
        want = name.replace("-", "_").upper()
        hits = [n for n in self.walk() if n.key.upper() == want or n.path.upper() == want]
        if not hits:
            raise ContractError(f"field {name!r} is not in the layout")
        if len(hits) > 1:
            paths = ", ".join(h.path for h in hits)
            raise ContractError(f"field name {name!r} is ambiguous: {paths}; use a dotted path")
        return hits[0]

    def single_record(self) -> Group:
        """The content group: the single 01 record when there is one, else the root."""
        kids = [c for c in self.root.children if isinstance(c, Group) and c.level == 1]
        if len(kids) == 1 and len(self.root.children) == 1:
            return kids[0]
        return self.root


def assign_offsets(group: Group, start: int = 0) -> None:
    """Lays children out one after another; a REDEFINES starts where its target starts.

    A group's size is the furthest byte any child reaches, so a longer redefinition
    widens its parent (as IBM compilers do).
    """
    group.offset = start
    pos = start
    end = start
    by_name: dict[str, Node] = {}
    for child in group.children:
        if child.redefines:
            target = by_name.get(child.redefines.upper())
            if target is None:
                raise ContractError(
                    f"line {child.line}: {child.name} REDEFINES {child.redefines}, "
                    "which is not an earlier item at the same level"
                )
            target.redefined = True
            child_start = target.offset
        else:
            child_start = pos
        if isinstance(child, Group):
            assign_offsets(child, child_start)
        else:
            assert isinstance(child, Elementary)
            child.offset = child_start
            child.size = child.byte_size()
        # A longer redefinition pushes the next item back rather than overlapping it.
        pos = max(pos, child_start + child.extent)
        end = max(end, child_start + child.extent)
        by_name[child.name.upper()] = child
    group.size = end - start
