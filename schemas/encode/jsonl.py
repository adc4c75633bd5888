"""JSON Lines -> records: each line parsed with exact decimals, shaped into the decoder's
table schema (`_JsonShape`), encoded by `RecordEncoder` and framed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from schemas.encode.encoded import Problem, problem_text
from schemas.encode.numbers import EXACT, to_decimal
from schemas.encode.records import RecordEncoder, frame, norm_key
from schemas.fields import numeric_type
from schemas.layout import Category, Elementary, Group, Node, Usage

if TYPE_CHECKING:
    from schemas.contract import RecordSpec


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
        self.wrapper = norm_key(top.key) if top.level == 1 and norm_key(top.key) not in self.root.kids else None

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
            out[node.key] = out[norm_key(node.key)] = shape
        return out

    def rows(self, objs: list[Any], checked: bool) -> tuple[list[dict[str, Any]], Problems]:
        problems: Problems = []
        rows = []
        for i, obj in enumerate(objs):
            if self.wrapper and len(obj) == 1:
                (key, inner), = obj.items()
                if type(inner) is dict and norm_key(key) == self.wrapper:
                    obj = inner
            rows.append(self.group(obj, self.root, "", i, problems, checked))
        return rows, problems

    def group(self, obj: dict[str, Any], shape: _Branch, path: str, row: int, problems: Problems,
              checked: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        kids = shape.kids
        for key, v in obj.items():
            kid = kids.get(key) or kids.get(norm_key(key))
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
            v = to_decimal(v)
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
        d = to_decimal(v) if not isinstance(v, int) else Decimal(v)
        if d is None:
            problems.append((row, path, "not a finite number"))
            return None
        if _exponent(d) < -shape.scale and _exponent(d := d.normalize(EXACT)) < -shape.scale:
            problems.append((row, path, problem_text(Problem.TOO_MANY_DECIMALS, f)))
            return None
        if not abs(d) < shape.limit:
            binary = f.usage in (Usage.BINARY, Usage.NATIVE_BINARY, Usage.BINARY_LE)
            problems.append((row, path, problem_text(Problem.OUT_OF_RANGE if binary else Problem.TOO_MANY_DIGITS, f)))
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


def encode_jsonl(src: IO[bytes] | Iterable[bytes], out: IO[bytes], spec: RecordSpec, *, newline: bool = False,
                 batch_size: int = 50_000) -> tuple[int, list[dict[str, Any]]]:
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
        if len(objs) >= batch_size:
            flush()
    flush()
    errors.sort(key=lambda e: e["line"])
    return count, errors
