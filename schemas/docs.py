"""Documents derived from a contract: the pydantic model of its decoded records (and so
its JSON Schema), and the layout table that `lgw contract check` prints.

The model mirrors what the decoder emits (`schemas.decoder`): groups are nested objects
keyed by `node.key`, OCCURS are arrays, FILLER is left out, and a copybook with a single
01 record contributes that record's children as the top-level keys.
"""

from __future__ import annotations

import io
import keyword
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Annotated, Any
from weakref import WeakKeyDictionary

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, create_model
from pydantic_core import PydanticCustomError, core_schema
from rich import box
from rich.console import Console
from rich.table import Table

from schemas.errors import ContractError
from schemas.fields import numeric_type
from schemas.layout import Category, Elementary, Group, Layout, Node, Usage

if TYPE_CHECKING:
    from schemas.contract import Contract, FieldRules, RecordType

# --------------------------------------------------------------------------- pydantic model

_MODELS: WeakKeyDictionary[Contract, type[BaseModel]] = WeakKeyDictionary()

_USAGE_WORD = {
    Usage.DISPLAY: "", Usage.BINARY: "COMP", Usage.NATIVE_BINARY: "COMP-5", Usage.BINARY_LE: "COMP-9",
    Usage.PACKED: "COMP-3", Usage.PACKED_UNSIGNED: "COMP-3U", Usage.FLOAT: "COMP-1", Usage.DOUBLE: "COMP-2",
}
_BINARY_USAGES = (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE)


def pydantic_model(contract: Contract) -> type[BaseModel]:
    """The model of one decoded detail record, built once per loaded contract."""
    model = _MODELS.get(contract)
    if model is None:
        model = _MODELS[contract] = _ModelBuilder(contract).build()
    return model


def model_name(contract: Contract) -> str:
    """card_txn v1 -> CardTxnV1: a class name that still says which contract it is."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", contract.name) if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + f"V{contract.version}"


def output_children(group: Group) -> Iterator[Node]:
    """The children the decoder emits: FILLER items (and everything under them) are skipped."""
    return (c for c in group.children if not c.is_filler)


@dataclass(frozen=True)
class AllowedValues:
    """Allowed values of a field (contract `enum` plus its 88-level VALUEs, THRU ranges
    included), as a pydantic annotation: an after-validator on the field's own type, so the
    JSON Schema keeps the type and maxLength next to the `enum`. Numbers are held as
    Decimal so 1, 1.0 and Decimal('1.00') compare equal; text is held trimmed."""

    values: tuple[str | Decimal, ...]
    ranges: tuple[tuple[Any, Any], ...] = ()  # inclusive (low, high), Decimal or str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        js = handler.resolve_ref_schema(handler(schema))
        values = [_json_number(v) if isinstance(v, Decimal) else v for v in self.values]
        if not self.ranges:
            js["enum"] = values
            return js
        choices: list[dict[str, Any]] = [{"enum": values}] if values else []
        for lo, hi in self.ranges:
            if isinstance(lo, Decimal):
                choices.append({"minimum": _json_number(lo), "maximum": _json_number(hi)})
            else:  # JSON Schema cannot bound strings by collating order: leave the range open
                choices.append({"type": "string", "x-thru": [lo, hi]})
        js.setdefault("allOf", []).append({"anyOf": choices})
        return js

    def allows(self, value: Any) -> bool:
        probe: Any = value if isinstance(value, str) else _as_decimal(value)
        return probe in self.values or any(_within(probe, lo, hi) for lo, hi in self.ranges)

    def _check(self, value: Any) -> Any:
        if self.allows(value):
            return value
        raise PydanticCustomError("allowed_values", "value is not one of the allowed values ({allowed})",
                                  {"allowed": self.describe()})

    def describe(self) -> str:
        shown = [repr(v) if isinstance(v, str) else str(v) for v in self.values]
        shown += [f"{_show(lo)} THRU {_show(hi)}" for lo, hi in self.ranges]
        return ", ".join(shown)


def _within(value: Any, lo: Any, hi: Any) -> bool:
    try:
        return bool(lo <= value <= hi)
    except TypeError:  # a number against a text range, or the reverse: never inside
        return False


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


@dataclass(frozen=True)
class NumberPattern:
    """A contract `pattern` on a numeric field: matched against the number's text, as the
    column-wise validator does (pydantic's own `pattern` only applies to strings)."""

    pattern: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        compiled = re.compile(self.pattern)

        def check(value: Any) -> Any:
            if value is not None and not compiled.search(str(value)):
                raise PydanticCustomError("number_pattern", "{value} does not match the pattern {pattern}",
                                          {"value": str(value), "pattern": self.pattern})
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        js = handler.resolve_ref_schema(handler(schema))
        js["x-pattern"] = self.pattern  # JSON Schema's `pattern` only constrains strings
        return js


def _as_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def _json_number(d: Decimal) -> int | float:
    return int(d) if d == d.to_integral_value() else float(d)


def allowed_values(node: Elementary, rules: FieldRules | None) -> AllowedValues | None:
    """`enum` and 88-level values together (the validator treats them as one allowed set).
    Text is compared trimmed, because decoded text is trimmed."""
    raw: list[Any] = list(rules.enum or []) if rules else []
    raw_ranges: list[tuple[Any, Any]] = []
    for values in node.conditions.values():
        for v in values:
            (raw_ranges if isinstance(v, tuple) else raw).append(v)
    out: list[str | Decimal] = []
    for v in raw:
        norm = _normal(node, v)
        if norm is not None and norm not in out:  # a figurative constant on a number never matches
            out.append(norm)
    ranges = [(lo, hi) for lo, hi in ((_normal(node, a), _normal(node, b)) for a, b in raw_ranges)
              if lo is not None and hi is not None]
    if not out and not ranges:
        return None
    return AllowedValues(tuple(out), tuple(ranges))


def _normal(node: Elementary, value: Any) -> str | Decimal | None:
    return str(value).strip() if node.is_text else _as_decimal(value)


def natural_range(f: Elementary) -> tuple[int | Decimal, int | Decimal] | None:
    """The values a numeric field can hold, from its bytes, picture and decoded type.

    Bounded by byte positions rather than PIC digits where the two differ, because the
    decoder (like Cobrix) reads every nibble of a packed field and every bit of a binary one.
    """
    if f.category in (Category.TEXT, Category.FLOAT):
        return None
    typ = numeric_type(f)
    if pa.types.is_decimal(typ):
        top = Decimal(10) ** (typ.precision - typ.scale) - Decimal(1).scaleb(-typ.scale)
        return (-top if f.signed else Decimal(0)), top
    if f.usage in _BINARY_USAGES:
        bits = 8 * f.size
        return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.signed else (0, 2**bits - 1)
    if f.usage == Usage.PACKED:
        digits = 2 * f.size - 1
    elif f.usage == Usage.PACKED_UNSIGNED:
        digits = 2 * f.size
    elif f.category == Category.EDITED:
        digits = f.picture.size if f.picture else f.size  # a lenient read may find digits anywhere
    else:
        digits = f.digits
    top_int = (10**digits - 1) * 10 ** max(0, -f.scale)  # 999PP scales the value up by 100
    return (-top_int if f.signed else 0), top_int


class _ModelBuilder:
    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.base = model_name(contract)

    def build(self) -> type[BaseModel]:
        layout = self.contract.layout
        extra = {"x-contract": self.contract.name, "x-contract-version": self.contract.version}
        doc = self.contract.config.description or f"A {layout.name} record of contract " \
                                                  f"{self.contract.name} v{self.contract.version}."
        return self._model(self.base, layout.single_record(), doc, extra)

    def _model(self, name: str, group: Group, doc: str | None = None,
               schema_extra: dict[str, Any] | None = None) -> type[BaseModel]:
        config = ConfigDict(extra="forbid", regex_engine="python-re",  # contract patterns are Python re
                            json_schema_extra=schema_extra)
        fields: dict[str, Any] = {}
        seen: set[str] = set()
        for child in output_children(group):
            if child.key in seen:
                raise ContractError(f"{child.path}: two items named {child.name} under {group.name}; "
                                    "the decoded record cannot hold both")
            seen.add(child.key)
            fields[_attribute_name(child.key, fields)] = self._field(child)
        return create_model(name, __config__=config, __doc__=doc, **fields)

    def _field(self, node: Node) -> tuple[Any, Any]:
        required = self._required(node)
        rules = self._rules(node)
        item: Any
        if isinstance(node, Group):
            item = self._model(f"{self.base}_{node.path.replace('.', '_')}", node)
        else:
            assert isinstance(node, Elementary)
            item = self._scalar(node, rules)
        kw: dict[str, Any] = {"alias": node.key, "title": node.name}
        if node.occurs:
            # Group occurrences always decode to objects; elementary ones may be null.
            item = list[item] if isinstance(node, Group) else list[item | None]
            kw["max_length"] = node.occurs
            if node.occurs_min:  # fixed OCCURS n, or OCCURS m TO n DEPENDING ON
                kw["min_length"] = node.occurs_min
        if rules and rules.description:
            kw["description"] = rules.description
        extra = _field_extra(node, rules)
        if extra:
            kw["json_schema_extra"] = extra
        if required:
            return item, Field(..., **kw)
        return item | None, Field(None, **kw)

    def _rules(self, node: Node) -> FieldRules | None:
        bound = self.contract.rules.get(node.path)
        return bound[1] if bound else None

    def _required(self, node: Node) -> bool:
        """Required when the contract says so; a group is required when anything in it is,
        or leaving the group out would dodge its required fields."""
        if isinstance(node, Elementary):
            rules = self._rules(node)
            return bool(rules and rules.required)
        assert isinstance(node, Group)
        return any(self._required(c) for c in output_children(node))

    def _scalar(self, f: Elementary, rules: FieldRules | None) -> Any:
        meta: list[Any] = []
        base: type
        if f.is_text:
            base = str
            meta.append(Field(max_length=f.size, pattern=rules.pattern if rules else None))
        else:
            base, bounds = _number_type(f, rules)
            if bounds:
                meta.append(Field(**bounds))
            if rules and rules.pattern:
                meta.append(NumberPattern(rules.pattern))
        allowed = allowed_values(f, rules)
        if allowed:
            meta.append(allowed)
        return Annotated[(base, *meta)] if meta else base


def _number_type(f: Elementary, rules: FieldRules | None) -> tuple[type, dict[str, Any]]:
    """The Python type of a numeric field and its ge/le/digit constraints: the field's own
    range narrowed by the contract's min/max."""
    typ = numeric_type(f)
    lo_rule = rules.min if rules else None
    hi_rule = rules.max if rules else None
    if pa.types.is_floating(typ):
        bounds = {"ge": None if lo_rule is None else float(lo_rule), "le": None if hi_rule is None else float(hi_rule)}
        return float, {k: v for k, v in bounds.items() if v is not None}
    natural = natural_range(f)
    assert natural is not None
    lo: Any = natural[0] if lo_rule is None else max(natural[0], lo_rule)
    hi: Any = natural[1] if hi_rule is None else min(natural[1], hi_rule)
    if pa.types.is_integer(typ):
        # An int field's bound must be an int: min 0.5 on whole numbers means 1.
        return int, {"ge": int(Decimal(lo).to_integral_value(rounding="ROUND_CEILING")),
                     "le": int(Decimal(hi).to_integral_value(rounding="ROUND_FLOOR"))}
    return Decimal, {"ge": Decimal(lo), "le": Decimal(hi), "max_digits": typ.precision,
                     "decimal_places": typ.scale}


def _field_extra(node: Node, rules: FieldRules | None) -> dict[str, Any]:
    """Where the value sits in the legacy record, for readers of the JSON Schema."""
    cobol: dict[str, Any] = {"name": node.name, "offset": node.offset, "length": node.size}
    if isinstance(node, Elementary):
        cobol["type"] = cobol_type(node)
        if node.conditions:
            cobol["conditions"] = {name: [list(v) if isinstance(v, tuple) else v for v in values]
                                   for name, values in node.conditions.items()}
    if node.redefines:
        cobol["redefines"] = node.redefines
    if node.occurs:
        cobol["occurs"] = node.occurs
    if node.depending_on:
        cobol["depending_on"] = node.depending_on
    extra: dict[str, Any] = {"x-cobol": cobol}
    if rules and rules.pii:
        extra["x-pii"] = True
    return extra


def _attribute_name(key: str, taken: dict[str, Any]) -> str:
    """A Python attribute for a record key; the key itself stays the alias. Keys that are not
    identifiers, or that would shadow BaseModel's API (`copy`, `json`, `model_*`), are renamed."""
    name = key
    if not key.isidentifier() or keyword.iskeyword(key) or key.startswith("_") or key.startswith("model_") \
            or hasattr(BaseModel, key):
        name = "f_" + re.sub(r"\W", "_", key)
    while name in taken:
        name += "_"
    return name


# --------------------------------------------------------------------------- layout table

# rich's SIMPLE box (a rule under the header only) drawn with ASCII, for pipes and files.
_PLAIN_BOX = box.Box("    \n    \n -- \n    \n    \n -- \n    \n    \n", ascii=True)


def cobol_type(f: Elementary) -> str:
    """PIC and USAGE as a copybook would spell them, e.g. `PIC S9(9)V99 COMP-3`."""
    parts = [f"PIC {f.picture.text}"] if f.picture else []
    if _USAGE_WORD[f.usage]:
        parts.append(_USAGE_WORD[f.usage])
    if f.sign_separate or f.sign_leading:
        parts.append("SIGN " + ("LEADING" if f.sign_leading else "TRAILING") + (" SEPARATE" if f.sign_separate else ""))
    return " ".join(parts)


def decoded_type(f: Elementary) -> str:
    """The JSON/Arrow type a value decodes to."""
    if f.is_text:
        return "string"
    typ = numeric_type(f)
    if pa.types.is_integer(typ):
        return "integer"
    if pa.types.is_decimal(typ):
        return f"decimal({typ.precision},{typ.scale})"
    return "float" if typ == pa.float32() else "double"


def _occurs_text(node: Node) -> str:
    parts: list[str] = []
    if node.occurs:
        count = f"{node.occurs_min} TO {node.occurs}" if node.occurs_min != node.occurs else str(node.occurs)
        parts.append(f"OCCURS {count} ({node.size} B each)")
        if node.depending_on:
            parts.append(f"DEPENDING ON {node.depending_on}")
    if node.redefines:
        parts.append(f"REDEFINES {node.redefines}")
    elif node.redefined:
        parts.append("redefined")
    return " ".join(parts)


def _value_text(v: Any) -> str:
    if isinstance(v, tuple):
        return f"{_show(v[0])} THRU {_show(v[1])}"
    return _show(v)


def constraints_text(node: Node, rules: FieldRules | None) -> str:
    parts: list[str] = []
    if rules:
        if rules.required:
            parts.append("required")
        if rules.min is not None:
            parts.append(f"min {rules.min}")
        if rules.max is not None:
            parts.append(f"max {rules.max}")
        if rules.pattern is not None:
            parts.append(f"pattern {rules.pattern}")
        if rules.enum:
            parts.append("enum " + "|".join(_value_text(v) for v in rules.enum))
    if isinstance(node, Elementary):
        for name, values in node.conditions.items():
            parts.append(f"88 {name}=" + "|".join(_value_text(v) for v in values))
    if rules and rules.pii:
        parts.append("PII")
    return "; ".join(parts)


def _layout_table(title: str, layout: Layout, rules_of: Callable[[Node], FieldRules | None],
                  table_box: box.Box) -> Table:
    table = Table(title=title, box=table_box, title_justify="left", pad_edge=False,
                  caption="offset: 0-based byte; end: offset + length (exclusive)", caption_justify="left")
    table.add_column("lvl", justify="right")
    table.add_column("name", no_wrap=True)
    for col in ("offset", "length", "end"):
        table.add_column(col, justify="right")
    table.add_column("type")
    table.add_column("decoded as")
    table.add_column("occurs / redefines")
    table.add_column("constraints", overflow="fold")
    for node in layout.walk():
        depth = sum(1 for a in node.ancestors() if a.level > 0)
        if isinstance(node, Elementary):
            kind, decoded = cobol_type(node), decoded_type(node)
        else:
            kind, decoded = "group", ""
        table.add_row(f"{node.level:02d}", "  " * depth + node.name, str(node.offset), str(node.extent),
                      str(node.offset + node.extent), kind, decoded, _occurs_text(node),
                      constraints_text(node, rules_of(node)))
    return table


def _record_type_text(rt: RecordType, contract: Contract) -> str:
    cfg = getattr(contract.config.record, rt.role)
    equals = cfg.when.equals if isinstance(cfg.when.equals, list) else [cfg.when.equals]
    when = " or ".join(repr(e) for e in equals)
    text = f"{rt.role} {rt.spec.layout.name} (bytes {rt.offset}-{rt.offset + len(rt.literals[0])} = {when})"
    if rt.control:
        checks = ([f"count {rt.control.count}"] if rt.control.count else []) + \
                 [f"sum {d}={t}" for d, t in rt.control.sum.items()]
        if checks:
            text += f" control {', '.join(checks)} on mismatch {rt.control.on_mismatch}"
    return text


def summary_line(contract: Contract) -> str:
    framing = contract.spec.framing
    length = f"record length {framing.record_length} bytes"
    if framing.format != "F":
        length = f"record length up to {framing.record_length} bytes"
    elif framing.record_length != contract.layout.record_length:
        length += f" (layout {contract.layout.record_length})"
    parts = [f"encoding {contract.spec.page.name}", f"record format {framing.format}", length]
    parts += [_record_type_text(rt, contract) for rt in (contract.header, contract.trailer) if rt]
    return f"contract {contract.name} v{contract.version}: " + ", ".join(parts)


def print_layout(contract: Contract, out: IO[str]) -> None:
    """The contract's record layouts as tables, then one summary line.

    On a terminal rich draws the tables directly. Anywhere else (a pipe, a file, a test's
    captured stdout) the output is plain ASCII text without colour codes or the trailing
    blanks rich pads lines with, so it diffs and greps cleanly. Markup stays off in both
    because patterns such as ^[A-Z]{2}$ would otherwise be read as style tags."""
    terminal = bool(getattr(out, "isatty", lambda: False)())
    target: IO[str] = out if terminal else io.StringIO()
    console = Console(file=target, width=160, markup=False, highlight=False, emoji=False,
                      force_terminal=terminal, no_color=not terminal)
    table_box = box.SIMPLE if terminal else _PLAIN_BOX

    def detail_rules(node: Node) -> FieldRules | None:
        bound = contract.rules.get(node.path)
        return bound[1] if bound else None

    console.print(_layout_table(f"{contract.name} v{contract.version}: {contract.layout.name}",
                                contract.layout, detail_rules, table_box))
    for rt in (contract.header, contract.trailer):
        if rt is not None:
            console.print(_layout_table(f"{rt.role}: {rt.spec.layout.name}", rt.spec.layout,
                                        lambda _n: None, table_box))
    console.print(summary_line(contract), soft_wrap=True)
    if not terminal:
        assert isinstance(target, io.StringIO)
        out.write("".join(line.rstrip() + "\n" for line in target.getvalue().splitlines()))
