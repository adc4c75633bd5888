"""Contract compatibility: can a reader built from NEW read data written for OLD?

The question is about bytes: a file produced for OLD goes through NEW's framing, layout
and rules. Anything that makes NEW cut, decode or validate those bytes differently is a
breaking reason; changes NEW readers do not notice (a field no longer read, a looser
rule) are notes. Fields are matched by dotted path, then by their path inside the record
(so renaming the 01 record is not a change), then by a name unique on both sides (a
field moved to another group still reads the same bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from schemas.docs import allowed_values, cobol_type
from schemas.layout import Category, Elementary, Group, Layout, Node, Usage

if TYPE_CHECKING:
    from schemas.contract import Contract, FieldRules, RecordType

_VARIABLE = ("V", "VB", "D")
_BINARY_USAGES = (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE)
# Pure 7-bit ASCII data decodes the same under these supersets.
_ASCII_SUPERSETS = ("latin-1", "utf-8")


@dataclass
class Verdict:
    """`reasons` break NEW readers of OLD data; `notes` are changes they survive."""

    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def compatible(self) -> bool:
        return not self.reasons

    def render(self) -> str:
        n = len(self.reasons)
        head = "compatible" if self.compatible else f"incompatible: {n} reason{'' if n == 1 else 's'}"
        lines = [head]
        lines += [f"  breaking: {r}" for r in self.reasons]
        lines += [f"  note: {r}" for r in self.notes]
        return "\n".join(lines)


def compare(old: Contract, new: Contract) -> Verdict:
    verdict = Verdict()
    _Comparison(old, new, verdict).run()
    return verdict


# --------------------------------------------------------------------------- helpers


def emitted_nodes(layout: Layout) -> Iterator[Node]:
    """Every node a reader decodes: FILLER, and anything under a FILLER group, is skipped."""
    def walk(group: Group) -> Iterator[Node]:
        for child in group.children:
            if child.is_filler:
                continue
            yield child
            if isinstance(child, Group):
                yield from walk(child)

    return walk(layout.root)


def relative_path(layout: Layout, node: Node) -> str:
    """The path below the record's single 01 level (the decoded record's own keys)."""
    top = layout.single_record()
    chain = [n for n in reversed([node, *node.ancestors()]) if n.level > 0 and n is not top]
    return ".".join(n.key for n in chain)


def _byte_range(node: Node) -> str:
    return f"bytes {node.offset}-{node.offset + node.extent}"


def _occupants(layout: Layout, start: int, end: int) -> list[str]:
    """Names of the items holding bytes [start, end): elementary fields, or an OCCURS or
    FILLER item as a whole (its slots repeat, so naming one slot would mislead)."""
    found: list[str] = []

    def visit(nodes: list[Node]) -> None:
        for n in nodes:
            if n.offset + n.extent <= start or n.offset >= end:
                continue
            if isinstance(n, Group) and not n.occurs and not n.is_filler:
                visit(n.children)
            else:
                name = "FILLER" if n.is_filler else n.path
                if name not in found:
                    found.append(name)

    visit(layout.root.children)
    return found


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _pic_text(f: Elementary) -> str:
    return cobol_type(f) or f.usage.value


def _occurs_text(n: Node) -> str:
    if not n.occurs:
        return "no OCCURS"
    count = str(n.occurs) if n.occurs_min == n.occurs else f"{n.occurs_min} TO {n.occurs}"
    return f"OCCURS {count}" + (f" DEPENDING ON {n.depending_on}" if n.depending_on else "")


def _occurs_key(n: Node) -> tuple[Any, ...]:
    return n.occurs, n.occurs_min if n.occurs else None, (n.depending_on or "").replace("-", "_").upper()


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _inside(inner: tuple[Any, Any], outer: tuple[Any, Any]) -> bool:
    try:
        return bool(outer[0] <= inner[0] and inner[1] <= outer[1])
    except TypeError:
        return False


# --------------------------------------------------------------------------- comparison


class _Comparison:
    def __init__(self, old: Contract, new: Contract, verdict: Verdict) -> None:
        self.old = old
        self.new = new
        self.v = verdict
        same = old.version == new.version
        self.o = "OLD" if same else f"v{old.version}"
        self.n = "NEW" if same else f"v{new.version}"

    def breaking(self, text: str) -> None:
        self.v.reasons.append(text)

    def note(self, text: str) -> None:
        self.v.notes.append(text)

    def run(self) -> None:
        self.identity()
        self.framing()
        self.layouts(self.old.layout, self.new.layout, "", with_rules=True)
        for role in ("header", "trailer"):
            self.record_type(role, getattr(self.old, role), getattr(self.new, role))

    # ---- whole-file properties
    def identity(self) -> None:
        if self.old.name != self.new.name:
            self.note(f"contract name changes from {self.old.name} to {self.new.name}")
        if self.new.version < self.old.version:
            self.note(f"NEW's version {self.new.version} is below OLD's {self.old.version}: "
                      "are the arguments the wrong way round? (lgw contract diff OLD NEW)")

    def framing(self) -> None:
        o, n = self.old, self.new
        o_page, n_page = o.spec.page.name, n.spec.page.name
        if o_page != n_page:
            if o_page == "ascii" and n_page in _ASCII_SUPERSETS:
                self.note(f"encoding {o_page} -> {n_page}: {n_page} reads ASCII bytes unchanged")
            else:
                self.breaking(f"encoding: {self.o} data is {o_page}, {self.n} reads it as {n_page}, "
                              "so text and zoned digits decode differently")
        of, nf = o.spec.framing, n.spec.framing
        if of.format != nf.format:
            self.breaking(f"record format: {self.o} writes {of.format}, {self.n} reads {nf.format}, "
                          "so records are cut at different places")
        elif nf.format == "F" and of.record_length != nf.record_length:
            self.breaking(f"record length: {self.o} records are {of.record_length} bytes, {self.n} reads "
                          f"{nf.record_length}-byte records (every record after the first is misaligned)")
        elif nf.format in _VARIABLE and of.record_length != nf.record_length:
            self.note(f"maximum record length {of.record_length} -> {nf.record_length} bytes")
        if nf.format in ("V", "VB"):
            for attr, what in (("rdw_endian", "RDW byte order"), ("rdw_includes_header", "RDW length counting")):
                ov, nv = getattr(of, attr), getattr(nf, attr)
                if ov is not None and nv is not None and ov != nv:
                    self.breaking(f"{what}: {self.o} has {ov}, {self.n} expects {nv}")
        oo, no = o.spec.options, n.spec.options
        has_floats = any(f.category == Category.FLOAT for f in n.layout.elementary())
        if oo.float_format != no.float_format and has_floats:
            self.breaking(f"float format: {self.o} writes COMP-1/COMP-2 as {oo.float_format}, "
                          f"{self.n} reads {no.float_format}")
        if oo.trim != no.trim:
            self.note(f"text trimming {oo.trim} -> {no.trim}: decoded strings may keep or lose blanks")

    # ---- layouts
    def layouts(self, old: Layout, new: Layout, where: str, *, with_rules: bool) -> None:
        """Findings in NEW's layout order, then the fields NEW no longer reads."""
        rows, removed = _match(old, new)
        for o_node, n_node, moved in rows:
            label = where + n_node.path
            if o_node is None:
                self.added(old, n_node, where)
                continue
            if moved:
                self.note(f"{label}: was {o_node.path} in {self.o} (same name, different group)")
            self.node_pair(old, o_node, n_node, label)
            if with_rules and isinstance(o_node, Elementary) and isinstance(n_node, Elementary):
                o_rules, n_rules = self._rules(self.old, o_node), self._rules(self.new, n_node)
                self.rules(label, o_rules, n_rules)
                self.allowed(label, o_node, n_node, o_rules, n_rules)
        for o_node in removed:
            self.note(f"{where}{o_node.path} ({_byte_range(o_node)}) is no longer read by {self.n}")

    def added(self, old_layout: Layout, node: Node, where: str) -> None:
        label = where + node.path
        old_len = self.old.spec.framing.record_length
        required = _has_required(self.new, node) if not where else False
        if self.new.spec.framing.format in _VARIABLE and node.offset >= old_len and not required:
            self.note(f"{label}: new in {self.n} at {_byte_range(node)}, beyond the end of {self.o}'s records "
                      f"(at most {old_len} bytes), so it reads as null there")
            return
        held = _occupants(old_layout, node.offset, node.offset + node.extent)
        if node.offset >= old_len:
            what = f"past the end of {self.o}'s {old_len}-byte records"
        elif held:
            what = f"which {self.o} wrote as {_names(held)}"
        else:
            what = f"which {self.o} did not lay out"
        ruled = _constrained(self.new, node) if not where else []
        if node.in_redefines and not ruled:
            # The decoder never rejects a record for a value in a REDEFINES view, so an extra
            # view of old bytes changes what NEW shows, not which records it accepts.
            self.note(f"{label}: new REDEFINES view in {self.n} of {_byte_range(node)}, {what}")
            return
        if required:
            why = " and is required"
        elif node.in_redefines:
            why = f" and {self.n} checks {_names(ruled)}"
        else:
            why = ""
        self.breaking(f"{label}: not in {self.o}{why}; {self.n} reads it from {_byte_range(node)}, {what}")

    def node_pair(self, old_layout: Layout, o: Node, n: Node, label: str) -> None:
        if isinstance(o, Group) != isinstance(n, Group):
            kinds = ("a group", "an elementary field") if isinstance(o, Group) else ("an elementary field", "a group")
            self.breaking(f"{label}: {kinds[0]} in {self.o}, {kinds[1]} in {self.n}")
            return
        # A moved group shows up in its fields' findings; one line per field is enough.
        shown_by_fields = isinstance(n, Group) and any(not c.is_filler for c in n.children)
        if o.offset != n.offset and not shown_by_fields:
            self.breaking(f"{label}: moves from offset {o.offset} to {n.offset}")
        if _occurs_key(o) != _occurs_key(n):
            self.breaking(f"{label}: {_occurs_text(o)} in {self.o}, {_occurs_text(n)} in {self.n}")
        elif n.occurs and o.size != n.size:
            self.breaking(f"{label}: each occurrence is {o.size} bytes in {self.o}, {n.size} in {self.n}, "
                          "so every occurrence after the first is misread")
        if isinstance(o, Elementary) and isinstance(n, Elementary):
            self.field_pair(old_layout, o, n, label)

    def field_pair(self, old_layout: Layout, o: Elementary, n: Elementary, label: str) -> None:
        was, now = _pic_text(o), _pic_text(n)
        if o.category != n.category:
            self.breaking(f"{label}: {o.category.value} ({was}) in {self.o}, {n.category.value} ({now}) in {self.n}")
            return
        if o.usage != n.usage:
            self.breaking(f"{label}: usage {o.usage.value} ({was}) in {self.o}, {n.usage.value} ({now}) in {self.n}")
            return
        if n.is_text:
            self.text_pair(old_layout, o, n, label)
        elif n.category != Category.FLOAT:
            self.number_pair(o, n, label)

    def text_pair(self, old_layout: Layout, o: Elementary, n: Elementary, label: str) -> None:
        if n.size > o.size:
            extra = _occupants(old_layout, o.offset + o.size, n.offset + n.size)
            what = f" that {self.o} wrote as {_names(extra)}" if extra else ""
            self.breaking(f"{label}: text grows from {o.size} to {n.size} bytes; {self.n} also reads "
                          f"{n.size - o.size} bytes{what}")
        elif n.size < o.size:
            self.breaking(f"{label}: text shrinks from {o.size} to {n.size} bytes; {self.n} cuts the last "
                          f"{o.size - n.size} bytes of {self.o}'s values")

    def number_pair(self, o: Elementary, n: Elementary, label: str) -> None:
        was, now = _pic_text(o), _pic_text(n)
        before = len(self.v.reasons)
        if o.scale != n.scale:
            self.breaking(f"{label}: scale {o.scale} ({was}) in {self.o}, {n.scale} ({now}) in {self.n}; "
                          "every value would be read at the wrong magnitude")
        if n.digits < o.digits:
            self.breaking(f"{label}: precision narrows from {o.digits} to {n.digits} digits ({was} -> {now})")
        elif n.digits > o.digits and n.size == o.size:
            self.note(f"{label}: precision widens from {o.digits} to {n.digits} digits in the same bytes")
        if o.signed and not n.signed:
            self.breaking(f"{label}: signed in {self.o}, unsigned in {self.n}; negative values would be rejected")
        elif n.signed and not o.signed:
            if n.usage in _BINARY_USAGES:
                self.breaking(f"{label}: unsigned binary in {self.o}, signed in {self.n}; values with the high "
                              "bit set would read as negative")
            else:
                self.note(f"{label}: becomes signed ({was} -> {now})")
        if (o.sign_leading, o.sign_separate) != (n.sign_leading, n.sign_separate) and o.signed and n.signed:
            self.breaking(f"{label}: sign position changes ({was} -> {now})")
        if o.category == Category.EDITED and o.picture and n.picture and o.picture.symbols != n.picture.symbols:
            self.breaking(f"{label}: edit picture changes ({was} -> {now})")
        if o.size != n.size and len(self.v.reasons) == before:
            self.breaking(f"{label}: {o.size} bytes ({was}) in {self.o}, {n.size} bytes ({now}) in {self.n}")

    # ---- contract rules
    @staticmethod
    def _rules(contract: Contract, node: Node) -> FieldRules | None:
        bound = contract.rules.get(node.path)
        return bound[1] if bound else None

    def rules(self, label: str, o: FieldRules | None, n: FieldRules | None) -> None:
        rejects = f"may reject records {self.o} accepted"
        o_req, n_req = bool(o and o.required), bool(n and n.required)
        if n_req and not o_req:
            self.breaking(f"{label}: now required; {rejects}")
        elif o_req and not n_req:
            self.note(f"{label}: no longer required")
        for attr, tighter, word in (("min", lambda a, b: b > a, "raised"), ("max", lambda a, b: b < a, "lowered")):
            ov = getattr(o, attr) if o else None
            nv = getattr(n, attr) if n else None
            if nv is not None and ov is None:
                self.breaking(f"{label}: new {attr} {nv}; {rejects}")
            elif nv is None and ov is not None:
                self.note(f"{label}: {attr} {ov} dropped")
            elif nv is not None and ov is not None and nv != ov:
                if tighter(ov, nv):
                    self.breaking(f"{label}: {attr} {word} from {ov} to {nv}; {rejects}")
                else:
                    self.note(f"{label}: {attr} relaxed from {ov} to {nv}")
        o_pat, n_pat = (o.pattern if o else None), (n.pattern if n else None)
        if n_pat is not None and o_pat is None:
            self.breaking(f"{label}: new pattern {n_pat}; {rejects}")
        elif n_pat is not None and n_pat != o_pat:
            self.breaking(f"{label}: pattern changes from {o_pat} to {n_pat}; {rejects}")
        elif n_pat is None and o_pat is not None:
            self.note(f"{label}: pattern {o_pat} dropped")
        if o is not None and n is not None and o.pii != n.pii:
            self.note(f"{label}: {'now' if n.pii else 'no longer'} marked PII")

    def allowed(self, label: str, o_node: Elementary, n_node: Elementary,
                o: FieldRules | None, n: FieldRules | None) -> None:
        rejects = f"may reject records {self.o} accepted"
        was, now = allowed_values(o_node, o), allowed_values(n_node, n)
        if now is None:
            if was is not None:
                self.note(f"{label}: any value allowed now (was {was.describe()})")
            return
        if was is None:
            self.breaking(f"{label}: values now limited to {now.describe()}; {rejects}")
            return
        lost = [_show(v) for v in was.values if not now.allows(v)]
        lost += [f"{_show(lo)} THRU {_show(hi)}" for lo, hi in was.ranges
                 if not any(_inside((lo, hi), r) for r in now.ranges)]
        if lost:
            self.breaking(f"{label}: no longer allows {', '.join(lost)}; {rejects}")
        gained = [_show(v) for v in now.values if not was.allows(v)]
        gained += [f"{_show(lo)} THRU {_show(hi)}" for lo, hi in now.ranges
                   if not any(_inside((lo, hi), r) for r in was.ranges)]
        if gained:
            self.note(f"{label}: now also allows {', '.join(gained)}")

    # ---- header and trailer records
    def record_type(self, role: str, o: RecordType | None, n: RecordType | None) -> None:
        if o is None and n is None:
            return
        if n is None:
            assert o is not None
            self.breaking(f"{role}: {self.o} files carry {role} records ({self._when(self.old, role)}); "
                          f"{self.n} would read them as detail records")
            return
        if o is None:
            control = n.control
            tail = ""
            if control and (control.count or control.sum) and control.on_mismatch == "reject_file":
                tail = ", and a file without a trailer fails its control check"
            self.breaking(f"{role}: {self.n} expects {role} records ({self._when(self.new, role)}) that {self.o} "
                          f"files do not have; a detail record matching them would be taken for a {role}{tail}")
            return
        if (o.offset, sorted(o.literals)) != (n.offset, sorted(n.literals)):
            self.breaking(f"{role}: discriminator changes from {self._when(self.old, role)} in {self.o} "
                          f"to {self._when(self.new, role)} in {self.n}")
        self.layouts(o.spec.layout, n.spec.layout, f"{role} ", with_rules=False)
        if o.control != n.control:
            self.note(f"{role}: control totals change ({_control_text(o)} -> {_control_text(n)})")

    @staticmethod
    def _when(contract: Contract, role: str) -> str:
        rt = getattr(contract, role)
        when = getattr(contract.config.record, role).when
        equals = when.equals if isinstance(when.equals, list) else [when.equals]
        return f"bytes {rt.offset}-{rt.offset + when.length} = {' or '.join(repr(e) for e in equals)}"


def _control_text(rt: RecordType) -> str:
    c = rt.control
    if c is None:
        return "none"
    parts = ([f"count {c.count}"] if c.count else []) + [f"sum {d}={t}" for d, t in c.sum.items()]
    return ", ".join(parts) + f" on mismatch {c.on_mismatch}" if parts else "none"


def _constrained(contract: Contract, node: Node) -> list[str]:
    """Paths at or under `node` that carry contract rules or 88-level values."""
    nodes = [node, *node.walk()] if isinstance(node, Group) else [node]
    return [n.path for n in nodes if n.path in contract.rules]


def _has_required(contract: Contract, node: Node) -> bool:
    nodes = [node, *node.walk()] if isinstance(node, Group) else [node]
    return any(bound[1].required for n in nodes if (bound := contract.rules.get(n.path)))


def _match(old: Layout, new: Layout) -> tuple[list[tuple[Node | None, Node, bool]], list[Node]]:
    """(old, new, moved) rows in NEW's order, old None for a NEW item OLD lacks; then the
    OLD items NEW no longer has."""
    old_nodes, new_nodes = list(emitted_nodes(old)), list(emitted_nodes(new))
    pairs: dict[int, tuple[Node | None, Node, bool]] = {}  # id(new node) -> pair
    taken: set[int] = set()

    def pair_by(key_old: Any, key_new: Any, moved: bool, only_fields: bool = False) -> None:
        def fits(n: Node) -> bool:
            return not only_fields or isinstance(n, Elementary)

        free_old: dict[str, list[Node]] = {}
        for o in old_nodes:
            if id(o) not in taken and fits(o):
                free_old.setdefault(key_old(o), []).append(o)
        free_new: dict[str, list[Node]] = {}
        for n in new_nodes:
            if id(n) not in pairs and fits(n):
                free_new.setdefault(key_new(n), []).append(n)
        for key, ns in free_new.items():
            os_ = free_old.get(key, [])
            if len(ns) == 1 and len(os_) == 1:  # ambiguous names are left unmatched, not guessed
                pairs[id(ns[0])] = (os_[0], ns[0], moved)
                taken.add(id(os_[0]))

    pair_by(lambda n: n.path, lambda n: n.path, moved=False)
    pair_by(lambda n: relative_path(old, n), lambda n: relative_path(new, n), moved=False)
    pair_by(lambda n: n.key, lambda n: n.key, moved=True, only_fields=True)
    added = {id(n) for n in _unmatched(new_nodes, set(pairs))}
    rows: list[tuple[Node | None, Node, bool]] = [
        pairs.get(id(n), (None, n, False))
        for n in new_nodes if id(n) in pairs or id(n) in added]
    return rows, _unmatched(old_nodes, taken)


def _unmatched(nodes: list[Node], matched: set[int]) -> list[Node]:
    """The unmatched nodes worth a finding of their own. A group none of whose items match
    is one finding (not one per field); a group whose items did match is only a new
    wrapper, and its items were compared one by one."""
    def whole(n: Node) -> bool:
        return id(n) not in matched and (not isinstance(n, Group) or all(id(d) not in matched for d in n.walk()))

    lost = [n for n in nodes if whole(n)]
    ids = {id(n) for n in lost}
    return [n for n in lost if not any(id(a) in ids for a in n.ancestors())]
