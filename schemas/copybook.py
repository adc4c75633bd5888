"""COBOL copybook parser: data-division entries to a `Layout` with byte offsets.

Covers what record layouts use in practice: level numbers and groups, PIC X/A/9/S/V/P
and numeric-edited pictures, USAGE DISPLAY / COMP / COMP-4 / BINARY / COMP-5 / COMP-3 /
COMP-3U / COMP-1 / COMP-2, SIGN LEADING/TRAILING [SEPARATE], REDEFINES, OCCURS n and
OCCURS m TO n DEPENDING ON, FILLER, 88-level condition names, VALUE, SYNC/JUSTIFIED/
BLANK WHEN ZERO (accepted, no effect on layout). Source is fixed format (sequence area in
columns 1-6, indicator in 7, text in 8-72) or free format; tabs are expanded first.
Every error names the copybook line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ContractError, CopybookSyntaxError, LimitError
from schemas.layout import (
    DEFAULT_LIMITS,
    USAGE_WORDS,
    Elementary,
    Group,
    Layout,
    Limits,
    Node,
    Picture,
    Usage,
    assign_offsets,
)

_TOKEN = re.compile(r"\"(?:[^\"]|\"\")*\"\.?|'(?:[^']|'')*'\.?|[^\s]+")
_LEVEL = re.compile(r"^\d{1,2}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_DIRECTIVES = {"EJECT", "SKIP1", "SKIP2", "SKIP3"}
_FIGURATIVE: dict[str, str | int] = {
    "SPACE": " ", "SPACES": " ", "ZERO": 0, "ZEROS": 0, "ZEROES": 0,
    "HIGH-VALUE": "\xff", "HIGH-VALUES": "\xff", "LOW-VALUE": "\x00", "LOW-VALUES": "\x00",
    "QUOTE": '"', "QUOTES": '"', "NULL": "\x00", "NULLS": "\x00",
}
_NOISE = {"IS", "ARE", "TIMES", "ON", "BY", "KEY", "CHARACTER", "WHEN", "ALL"}
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,29}$")  # a COBOL word: shown in messages


@dataclass
class _Token:
    text: str
    line: int


def _source_lines(text: str, tab_size: int) -> list[tuple[int, str]]:
    """(line number, program text) per line, with sequence/indicator areas removed."""
    # A tab counts as one column, as in Cobrix: copybooks edited with tabs still line up.
    raw = [ln.replace("\t", " " * tab_size).replace("\u00a0", " ").rstrip("\r\n") for ln in text.splitlines()]
    fixed = _looks_fixed_format(raw)
    out: list[tuple[int, str]] = []
    for number, line in enumerate(raw, 1):
        if fixed:
            indicator = line[6:7]
            if indicator in ("*", "/"):
                continue
            body = line[7:72] if indicator == "-" else line[6:72]
            if body.lstrip().startswith("*"):  # banner lines shifted out of column 7
                continue
        else:
            body = line
            stripped = body.lstrip()
            if stripped.startswith("*>") or stripped.startswith("*"):
                continue
            if "*>" in body:
                body = body[: body.index("*>")]
        if "*>" in body:  # floating comment, allowed in fixed format by modern compilers
            body = body[: body.index("*>")]
        out.append((number, body))
    return out


def _looks_fixed_format(lines: list[str]) -> bool:
    """Fixed format unless some entry starts before column 7 (a level number in 1-6)."""
    for line in lines:
        if not line.strip():
            continue
        if line[6:7] in ("*", "/"):
            continue
        m = re.match(r"\s*(\d{1,2})\s+\S", line)
        if m and m.start(1) < 6:  # a level number inside the sequence area: free format
            return False
    return True


def _shown(tok: str) -> str:
    """A token as an error message may quote it: COBOL words only. A path that points at
    some other file (a key, a password file) must not have its text copied into a message
    that ends up in logs; the line number says where to look."""
    return repr(tok) if _WORD.match(tok) else "<not shown: not a COBOL word>"


def _statements(text: str, tab_size: int, source: str | None) -> list[list[_Token]]:
    statements: list[list[_Token]] = []
    current: list[_Token] = []
    for number, body in _source_lines(text, tab_size):
        for m in _TOKEN.finditer(body):
            tok = m.group(0)
            if not current and tok.upper().rstrip(".") in _DIRECTIVES:
                continue
            if len(tok) > 1 and tok[-1] in ",;" and tok[0] not in "'\"":
                tok = tok[:-1]  # ", " and "; " are separators in COBOL (VALUE 1, 2, 3)
            elif tok in (",", ";"):
                continue
            if tok.endswith(".") and (len(tok) == 1 or not tok[:-1].endswith(".")):
                if len(tok) > 1:
                    current.append(_Token(tok[:-1], number))
                if current:
                    statements.append(current)
                current = []
            else:
                current.append(_Token(tok, number))
    if current and not statements and not _LEVEL.match(current[0].text):
        raise CopybookSyntaxError("this does not look like a copybook: no entry starts with a level number and "
                                  "ends with a period (its text is not shown)", current[0].line, source)
    if current:
        raise CopybookSyntaxError(f"the entry that starts on line {current[0].line} does not end with a period",
                                  current[-1].line, source)
    return statements


def _literal(tok: str) -> str | int | float:
    if tok[:1] in ("'", '"'):
        q = tok[0]
        return tok[1:-1].replace(q * 2, q)
    up = tok.upper()
    if up in _FIGURATIVE:
        return _FIGURATIVE[up]
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        return float(tok)
    except ValueError:
        return tok


class _EntryParser:
    """Parses the clauses of one data-description entry."""

    def __init__(self, tokens: list[_Token], source: str | None, limits: Limits = DEFAULT_LIMITS, *,
                 first: bool = False) -> None:
        self.tokens = tokens
        self.first = first  # the file's first entry: until it parses, the file may be no copybook at all
        self.pos = 0
        self.source = source
        self.limits = limits
        self.line = tokens[0].line

    def error(self, message: str) -> CopybookSyntaxError:
        return CopybookSyntaxError(message, self.line, self.source)

    def peek(self) -> str | None:
        while self.pos < len(self.tokens) and self.tokens[self.pos].text.upper() in _NOISE:
            self.pos += 1
        return self.tokens[self.pos].text if self.pos < len(self.tokens) else None

    def take(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise self.error(f"expected {what} at the end of the entry")
        self.pos += 1
        return tok

    def take_int(self, what: str) -> int:
        tok = self.take(what)
        if not tok.isdigit():
            raise self.error(f"expected {what} (a whole number), found {_shown(tok)}")
        return int(tok)

    def parse(self) -> tuple[int, Node]:
        level_tok = self.tokens[0].text
        if not _LEVEL.match(level_tok):
            if self.first:
                raise self.error("expected a level number (01-49, 66, 77 or 88) at the start of the first entry; "
                                 "this does not look like a copybook (its text is not shown)")
            raise self.error(f"expected a level number (01-49, 66, 77 or 88), found {_shown(level_tok)}")
        level = int(level_tok)
        if not (1 <= level <= 49 or level in (66, 77, 88)):
            raise self.error(f"level number {level_tok} is not 01-49, 66, 77 or 88")
        self.pos = 1
        name = "FILLER"
        nxt = self.peek()
        if nxt is not None and nxt.upper() not in _CLAUSES and nxt.upper() not in USAGE_WORDS:
            name = self.take("a name")
            if not _NAME.match(name):
                raise self.error(f"invalid data name: {_shown(name)}")
        attrs: dict = {}
        values: list = []
        while (tok := self.peek()) is not None:
            up = tok.upper()
            self.pos += 1
            if up in ("PIC", "PICTURE"):
                pic = self.take("a PICTURE string")
                try:
                    attrs["picture"] = Picture.parse(pic, self.limits)
                except LimitError as exc:
                    raise self.error(f"{name}: {exc}") from None
                except ContractError as exc:
                    raise self.error(str(exc)) from None
            elif up == "USAGE":
                word = self.take("a usage").upper()
                if word not in USAGE_WORDS:
                    raise self.error(f"unknown USAGE {_shown(word)}")
                attrs["usage"] = USAGE_WORDS[word]
            elif up in USAGE_WORDS:
                attrs["usage"] = USAGE_WORDS[up]
            elif up == "REDEFINES":
                attrs["redefines"] = self.take("the name of the redefined item")
            elif up == "OCCURS":
                self._occurs(attrs)
            elif up in ("VALUE", "VALUES"):
                values.extend(self._values())
            elif up == "SIGN":
                continue
            elif up in ("LEADING", "TRAILING"):
                attrs["sign_leading"] = up == "LEADING"
                if self.peek() and self.peek().upper() == "SEPARATE":  # type: ignore[union-attr]
                    self.pos += 1
                    attrs["sign_separate"] = True
            elif up == "SEPARATE":
                attrs["sign_separate"] = True
            elif up in ("JUST", "JUSTIFIED"):
                attrs["justified_right"] = True
                if self.peek() and self.peek().upper() == "RIGHT":  # type: ignore[union-attr]
                    self.pos += 1
            elif up == "BLANK":
                if (self.peek() or "").upper() in ("ZERO", "ZEROS", "ZEROES"):
                    self.pos += 1
                attrs["blank_when_zero"] = True
            elif up in ("SYNC", "SYNCHRONIZED", "EXTERNAL", "GLOBAL", "LEFT", "RIGHT"):
                continue
            elif up == "RENAMES":
                self.pos = len(self.tokens)  # 66 RENAMES takes no storage: nothing to lay out
            elif _LEVEL.match(tok):
                line = self.tokens[self.pos - 1].line
                raise CopybookSyntaxError(
                    f"level number {tok} inside the entry for {name} (which starts on line {self.line}): "
                    "is the period missing at the end of that entry?", line, self.source)
            else:
                raise self.error(f"unexpected word {_shown(tok)} in the entry for {name}")
        return level, self._node(level, name, attrs, values)

    def _occurs(self, attrs: dict) -> None:
        first = self.take_int("the OCCURS count")
        if (self.peek() or "").upper() == "TO":
            self.pos += 1
            attrs["occurs_min"] = first
            attrs["occurs"] = self.take_int("the OCCURS maximum")
        else:
            attrs["occurs"] = first
            attrs["occurs_min"] = first
        while (tok := self.peek()) is not None:
            up = tok.upper()
            if up == "DEPENDING":
                self.pos += 1
                attrs["depending_on"] = self.take("the DEPENDING ON item")
            elif up in ("ASCENDING", "DESCENDING", "INDEXED"):
                self.pos += 1
                while (t := self.peek()) is not None and t.upper() not in _CLAUSES:
                    self.pos += 1
            else:
                break
        if attrs["occurs"] < 1:
            raise self.error("OCCURS needs a maximum of at least 1")
        if "depending_on" in attrs and attrs["occurs_min"] == attrs["occurs"]:
            attrs["occurs_min"] = 0  # OCCURS n DEPENDING ON x: the count may be anything up to n

    def _values(self) -> list:
        out: list = []
        while (tok := self.peek()) is not None and tok.upper() not in _CLAUSES - {"THRU", "THROUGH"}:
            self.pos += 1
            if tok.upper() in ("THRU", "THROUGH"):
                if not out:
                    raise self.error("THRU without a first value")
                out[-1] = (out[-1], _literal(self.take("the THRU value")))
            else:
                out.append(_literal(tok))
        if not out:
            raise self.error("VALUE without a literal")
        return out

    def _node(self, level: int, name: str, attrs: dict, values: list) -> Node:
        common = {k: attrs[k] for k in ("occurs", "occurs_min", "depending_on", "redefines") if k in attrs}
        if level == 88:
            return _Condition(name=name, level=88, line=self.line, values=values)
        if "picture" in attrs or attrs.get("usage") in (Usage.FLOAT, Usage.DOUBLE):
            node = Elementary(name=name, level=level, line=self.line, **common)
            for k in ("picture", "usage", "sign_leading", "sign_separate", "justified_right",
                      "blank_when_zero"):
                if k in attrs:
                    setattr(node, k, attrs[k])
            node.value = values[0] if values and not isinstance(values[0], tuple) else None
            return node
        group = Group(name=name, level=level, line=self.line, **common)
        group_usage = attrs.get("usage")
        if group_usage is not None:
            group._usage = group_usage  # type: ignore[attr-defined]  # inherited by children
        if "sign_leading" in attrs or "sign_separate" in attrs:
            group._sign = (attrs.get("sign_leading", False), attrs.get("sign_separate", False))  # type: ignore[attr-defined]
        return group


_CLAUSES = {
    "PIC", "PICTURE", "USAGE", "REDEFINES", "OCCURS", "TO", "DEPENDING", "INDEXED", "ASCENDING",
    "DESCENDING", "VALUE", "VALUES", "SIGN", "LEADING", "TRAILING", "SEPARATE", "JUST",
    "JUSTIFIED", "BLANK", "SYNC", "SYNCHRONIZED", "EXTERNAL", "GLOBAL", "THRU", "THROUGH",
    "RENAMES", "LEFT", "RIGHT",
} | set(USAGE_WORDS)


@dataclass
class _Condition(Node):
    values: list | None = None


def parse_copybook(text: str, *, source: str | None = None, tab_size: int = 1,
                   limits: Limits = DEFAULT_LIMITS) -> Layout:
    """Parses copybook text into a Layout. Raises CopybookSyntaxError naming the line, also
    for an entry that takes more than `limits` allow (checked before any allocation)."""
    root = Group(name="ROOT", level=0)
    stack: list[Node] = [root]
    last_item: Node | None = None
    records: list[Group] = []
    for tokens in _statements(text, tab_size, source):
        level, node = _EntryParser(tokens, source, limits, first=last_item is None).parse()
        if isinstance(node, _Condition):
            if not isinstance(last_item, Elementary):
                raise CopybookSyntaxError(
                    f"88 {node.name} must follow an elementary item", node.line, source)
            last_item.conditions[node.name] = list(node.values or [])
            continue
        if level == 66:
            continue
        if level == 77:
            level = 1
            node.level = 1
        while stack[-1].level >= level:
            stack.pop()
        parent = stack[-1]
        if isinstance(parent, Elementary):
            raise CopybookSyntaxError(
                f"{node.name} (level {level:02d}) is under {parent.name}, which has a PIC and "
                "cannot have subordinate items", node.line, source)
        assert isinstance(parent, Group)
        if level == 1 and parent is root and records:
            # Several 01 records describe the same bytes: each is a view from offset 0.
            node.redefines = records[0].name
        node.parent = parent
        parent.children.append(node)
        if isinstance(node, Elementary):
            _inherit(node, parent)
        if isinstance(node, Group):
            if level == 1 and parent is root:
                records.append(node)
            stack.append(node)
        last_item = node
    if not root.children:
        raise CopybookSyntaxError("no data description entries found", None, source)
    for node in [root, *root.walk()]:
        if isinstance(node, Group) and not node.children and node is not root:
            raise CopybookSyntaxError(
                f"{node.name} has no PIC and no subordinate items", node.line, source)
    _check_depending(root, source)
    try:
        assign_offsets(root)
    except ContractError as exc:
        raise CopybookSyntaxError(str(exc), None, source) from None
    check_limits(root, limits, source)
    name = records[0].key if len(records) == 1 else "RECORD"
    return Layout(root=root, name=name)


def check_limits(root: Group, limits: Limits, source: str | None = None) -> None:
    """Refuses a layout whose OCCURS expand too far or whose record is too long, naming
    the innermost entry at fault (sizes are plain integers here: nothing is allocated)."""
    def occurrences(node: Node) -> int:
        count = node.occurs or 1
        for a in node.ancestors():
            count *= a.occurs or 1
        return count

    for node in root.walk():
        slots = occurrences(node)
        if slots > limits.occurs:
            raise CopybookSyntaxError(
                f"{node.name} occurs {slots:,} times in a record (nested OCCURS multiplied), over the limit "
                f"of {limits.occurs:,} occurrences (record.limits.occurs, --max-occurs)", node.line, source)
    culprit = _largest_inner(root, limits.record_bytes)
    if culprit is not None:
        what = f"{culprit.name} takes" if culprit is not root else "the record takes"
        times = f" ({culprit.occurs:,} x {culprit.size:,})" if culprit.occurs else ""
        raise CopybookSyntaxError(
            f"{what} {culprit.extent:,} bytes{times}, over the record limit of {limits.record_bytes:,} bytes "
            "(record.limits.record_bytes, --max-record-bytes)", culprit.line, source)


def _largest_inner(node: Node, limit: int) -> Node | None:
    """The innermost node (children first) that extends over `limit` bytes, if any."""
    if isinstance(node, Group):
        for child in node.children:
            found = _largest_inner(child, limit)
            if found is not None:
                return found
    return node if node.extent > limit else None


def _inherit(node: Elementary, parent: Group) -> None:
    for g in [parent, *parent.ancestors()]:
        usage = getattr(g, "_usage", None)
        if usage is not None and node.usage == Usage.DISPLAY and node.picture is not None:
            node.usage = usage
            break
    for g in [parent, *parent.ancestors()]:
        sign = getattr(g, "_sign", None)
        if sign is not None and node.signed and not node.sign_separate and not node.sign_leading:
            node.sign_leading, node.sign_separate = sign
            break


def _check_depending(root: Group, source: str | None) -> None:
    names = {n.name.upper(): n for n in root.walk()}
    for n in root.walk():
        if n.depending_on:
            target = names.get(n.depending_on.upper())
            if target is None:
                raise CopybookSyntaxError(
                    f"{n.name} OCCURS DEPENDING ON {n.depending_on}, which is not defined", n.line, source)
            if not isinstance(target, Elementary) or (target.is_text and target.picture is None):
                raise CopybookSyntaxError(
                    f"{n.name} OCCURS DEPENDING ON {n.depending_on}, which is not a numeric item",
                    n.line, source)


def load_copybook(path: str | Path, *, tab_size: int = 1, limits: Limits = DEFAULT_LIMITS) -> Layout:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ContractError(f"cannot read copybook {p}: {exc.strerror}") from None
    return parse_copybook(text, source=str(p), tab_size=tab_size, limits=limits)
