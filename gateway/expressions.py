"""A small, safe expression language evaluated column-wise over an Arrow table.

Contracts use it for fallback conditions and model features:

    TXN_AMOUNT > 5000 and COUNTRY not in ('US', 'CA')
    CHANNEL == 'E' and startswith(MERCHANT_NAME, 'AMZN')
    coalesce(CASHBACK_AMOUNT, 0) / 100

The text is parsed with `ast.parse(mode="eval")` only to get a syntax tree; nothing is
ever evaluated by Python. Each node must be on a whitelist (boolean and/or/not,
comparisons, `in` with a literal list, + - * / %, unary -, literals, field names and a
few functions); the tree is type-checked against the contract's field types and compiled
into a tree of `pyarrow.compute` calls, so a batch of a million rows costs a few kernel
calls, not a million interpreter steps.

Semantics worth knowing:
- nulls follow SQL: a comparison with null is null, `and`/`or` are Kleene, and the final
  value of a condition treats null as false;
- decimal fields compare exactly with literals (5000.01 is the decimal 5000.01, never a
  float); + - * on decimals stay exact while the result fits 38 digits, / and % give
  float64; division by zero gives null;
- min/max skip nulls (like SQL LEAST/GREATEST in PostgreSQL).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.errors import ContractError

if TYPE_CHECKING:
    from schemas.contract import Contract

__all__ = ["FUNCTIONS", "Expression", "compile_condition", "compile_expression", "field_types",
           "schema_field_types"]

MAX_LENGTH = 4_000  # characters; longer texts are refused before parsing
MAX_DECIMAL_DIGITS = 38
FUNCTIONS = ("abs", "coalesce", "contains", "endswith", "is_null", "len", "lower", "max", "min", "round",
             "startswith", "upper")

_NUMERIC = ("int", "decimal", "float")
_WORDS = {"bool": "a condition", "int": "a whole number", "decimal": "a decimal number",
          "float": "a floating-point number", "string": "a string", "null": "None"}
_HYPHEN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z][A-Za-z0-9_-]*)*")
_HYPHEN_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+")
_NOT_LITERAL = object()
_FLOAT64 = pa.float64()
_BOOL = pa.bool_()

_COMPARE: dict[type[ast.cmpop], Callable[..., Any]] = {
    ast.Eq: pc.equal, ast.NotEq: pc.not_equal, ast.Lt: pc.less, ast.LtE: pc.less_equal,
    ast.Gt: pc.greater, ast.GtE: pc.greater_equal,
}
_REFUSED_OPERATORS = {ast.Pow: "**", ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
                      ast.BitXor: "^", ast.BitAnd: "&", ast.MatMult: "@"}
_REFUSED_NODES = {
    ast.Lambda: "lambda", ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings", ast.Subscript: "subscripts (x[...])", ast.Slice: "slices",
    ast.IfExp: "conditional expressions (a if c else b)", ast.NamedExpr: "assignments (:=)",
    ast.Dict: "dict literals", ast.Set: "set literals", ast.Starred: "starred arguments",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.List: "lists outside `in (...)`", ast.Tuple: "tuples outside `in (...)`",
}


def _kind(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_null(t):
        return "null"
    return str(t)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class Expression:
    """A compiled expression: `evaluate(table)` returns one value per row."""

    text: str
    result_type: pa.DataType
    fields_used: frozenset[str]
    where: str
    _run: Callable[[pa.Table], Any]

    @property
    def is_condition(self) -> bool:
        return pa.types.is_boolean(self.result_type)

    def evaluate(self, table: pa.Table, *, keep_nulls: bool = False) -> pa.Array:
        """Values for every row of `table`. A condition's nulls become false unless
        `keep_nulls` (features want them, to map them to NaN or a default)."""
        try:
            out = self._run(table)
        except _MissingColumn as exc:
            raise ContractError(f"{self.where}: field {exc.args[0]} is not in the table (columns: "
                                f"{', '.join(table.column_names)})") from None
        if isinstance(out, pa.Scalar):
            out = pa.repeat(out, table.num_rows)
        elif isinstance(out, pa.ChunkedArray):
            out = out.combine_chunks()
        if self.is_condition and not keep_nulls and out.null_count:
            out = out.fill_null(False)
        return out

    def mask(self, table: pa.Table) -> np.ndarray:
        """A condition as a numpy bool array (null counts as false)."""
        return np.asarray(self.evaluate(table).to_numpy(zero_copy_only=False), dtype=bool)


def compile_expression(text: str, fields: Mapping[str, pa.DataType], *, where: str) -> Expression:
    """Parses, checks and compiles `text` against `fields` (name -> Arrow type). Every
    problem is a ContractError that starts with `where` and names the expression."""
    if not isinstance(text, str):
        raise ContractError(f"{where}: expected an expression (a string), found {type(text).__name__} {text!r}")
    source = text.strip()
    if not source:
        raise ContractError(f"{where}: the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ContractError(f"{where}: the expression is {len(source)} characters long; at most {MAX_LENGTH}")
    compiler = _Compiler(source, fields, where)
    hyphenated = _whole_hyphen_name(source, fields)
    # `TXN-AMOUNT` alone is a copybook name written as-is, not a subtraction
    term = compiler.field(hyphenated, source) if hyphenated is not None else compiler.compile(compiler.parse())
    if term.kind not in (*_NUMERIC, "bool", "string"):
        compiler.fail(f"the value is {_WORDS.get(term.kind, term.kind)}; expected a condition, a number or a string")
    return Expression(source, term.type, frozenset(compiler.used), where, term.run)


def compile_condition(text: str, fields: Mapping[str, pa.DataType], *, where: str) -> Expression:
    """Like `compile_expression`, and the result must be true/false."""
    expr = compile_expression(text, fields, where=where)
    if not expr.is_condition:
        raise ContractError(f"{where}: must be a condition (true/false), but {text!r} is "
                            f"{_WORDS.get(_kind(expr.result_type), str(expr.result_type))} ({expr.result_type})")
    return expr


def field_types(contract: Contract) -> dict[str, pa.DataType]:
    """Names an expression may use for a contract's detail records, with their Arrow types:
    every leaf column of the decoded table outside OCCURS, by dotted path (GROUP.FIELD)
    and, when the name is unique, by its own key."""
    layout = contract.layout
    empty = np.zeros((0, layout.record_length), dtype=np.uint8)
    return schema_field_types(contract.spec.decoder().decode(empty).table.schema)


def schema_field_types(schema: pa.Schema) -> dict[str, pa.DataType]:
    """`field_types` for any table schema: structs are walked, lists (OCCURS) skipped."""
    out: dict[str, pa.DataType] = {}
    leaves: dict[str, list[str]] = {}

    def walk(prefix: str, fields: Sequence[pa.Field]) -> None:
        for f in fields:
            path = f"{prefix}.{f.name}" if prefix else f.name
            if pa.types.is_struct(f.type):
                walk(path, [f.type.field(i) for i in range(f.type.num_fields)])
            elif not (pa.types.is_list(f.type) or pa.types.is_large_list(f.type)
                      or pa.types.is_fixed_size_list(f.type)):
                out[path] = f.type
                leaves.setdefault(f.name, []).append(path)

    walk("", list(schema))
    for name, paths in leaves.items():
        if len(paths) == 1 and name not in out:
            out[name] = out[paths[0]]
    return out


# --------------------------------------------------------------------------- columns


class _MissingColumn(LookupError):
    pass


def _column(table: pa.Table, name: str) -> Any:
    """The column for a field name: a top-level key, a dotted path through structs, or a
    key unique among the nested leaves."""
    names = table.column_names
    if name in names:
        return table.column(name)
    path = name.split(".") if "." in name else _leaf_path(table.schema, name)
    if not path or path[0] not in names:
        raise _MissingColumn(name)
    col = table.column(path[0])
    for part in path[1:]:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            raise _MissingColumn(name)
        col = pc.struct_field(col, part)
    return col


def _leaf_path(schema: pa.Schema, name: str) -> list[str] | None:
    hits: list[list[str]] = []

    def walk(prefix: list[str], t: pa.DataType) -> None:
        for i in range(t.num_fields):
            f = t.field(i)
            if pa.types.is_struct(f.type):
                walk([*prefix, f.name], f.type)
            elif f.name == name:
                hits.append([*prefix, f.name])

    for f in schema:
        if pa.types.is_struct(f.type):
            walk([f.name], f.type)
    return hits[0] if len(hits) == 1 else None


def _whole_hyphen_name(source: str, fields: Mapping[str, pa.DataType]) -> str | None:
    if "-" not in source or not _HYPHEN_NAME.fullmatch(source):
        return None
    name = source.replace("-", "_")
    if name in fields:
        return name
    upper = [k for k in fields if k.upper() == name.upper()]
    return upper[0] if len(upper) == 1 else None


# --------------------------------------------------------------------------- compiler


@dataclass(frozen=True)
class _Term:
    """A typed, compiled sub-expression. `literal` holds the Python value of a constant."""

    type: pa.DataType
    run: Callable[[pa.Table], Any]
    src: str
    literal: Any = _NOT_LITERAL

    @property
    def kind(self) -> str:
        return _kind(self.type)

    @property
    def is_literal(self) -> bool:
        return self.literal is not _NOT_LITERAL


def _const(value: Any, typ: pa.DataType, src: str) -> _Term:
    scalar = pa.scalar(value, typ)
    return _Term(typ, lambda _t: scalar, src, value)


def _decimal_shape(term: _Term) -> tuple[int, int]:
    """(integer digits, scale) that hold every value of the term exactly."""
    if pa.types.is_decimal(term.type):
        return term.type.precision - term.type.scale, term.type.scale
    if term.is_literal and isinstance(term.literal, int):
        return max(1, len(str(abs(term.literal)))), 0
    return 19, 0  # int64 column: up to 19 digits


def _probe(fn: Callable[..., Any], *types: pa.DataType) -> pa.DataType | None:
    """The result type Arrow gives `fn` for these argument types, or None if it refuses."""
    try:
        return fn(*[pa.array([], t) for t in types]).type
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


class _Compiler:
    def __init__(self, text: str, fields: Mapping[str, pa.DataType], where: str) -> None:
        self.text = text
        self.fields = fields
        self.where = where
        self.used: set[str] = set()
        self._folded: dict[str, str] = {}
        for k in fields:
            self._folded[k.upper()] = k if k.upper() not in self._folded else ""

    # ---- errors
    def fail(self, message: str) -> NoReturn:
        raise ContractError(f'{self.where}: {message} (in "{self.text}")')

    def refuse(self, node: ast.AST, what: str, hint: str = "") -> NoReturn:
        snippet = ast.get_source_segment(self.text, node) or what
        self.fail(f"{snippet} is not allowed: {what}" + (f"; {hint}" if hint else ""))

    def src(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    # ---- entry
    def parse(self) -> ast.expr:
        try:
            return ast.parse(self.text, mode="eval").body
        except SyntaxError as exc:
            col = f" at column {exc.offset}" if exc.offset else ""
            hint = "; write it on one line" if "\n" in self.text else ""
            raise ContractError(f'{self.where}: syntax error{col} in "{self.text}": {exc.msg}{hint}') from None
        except (RecursionError, MemoryError, ValueError):
            raise ContractError(f'{self.where}: cannot parse "{self.text[:80]}": too deeply nested') from None

    def compile(self, node: ast.expr) -> _Term:
        try:
            return self._compile(node)
        except RecursionError:
            raise ContractError(f'{self.where}: "{self.text[:80]}" is too deeply nested') from None

    def _compile(self, node: ast.expr) -> _Term:
        builders: dict[type[ast.AST], Callable[[Any], _Term]] = {
            ast.Constant: self._constant, ast.Name: self._name, ast.Attribute: self._attribute,
            ast.UnaryOp: self._unaryop, ast.BoolOp: self._boolop, ast.Compare: self._compare,
            ast.BinOp: self._binop, ast.Call: self._call,
        }
        builder = builders.get(type(node))
        if builder is None:
            self.refuse(node, _REFUSED_NODES.get(type(node), type(node).__name__))
        return builder(node)

    # ---- leaves
    def _constant(self, node: ast.Constant) -> _Term:
        value, src = node.value, self.src(node)
        if isinstance(value, bool):
            return _const(value, _BOOL, src)
        if value is None:
            return _const(None, pa.null(), src)
        if isinstance(value, str):
            return _const(value, pa.string(), src)
        if isinstance(value, int):
            return self._int_literal(value, src)
        if isinstance(value, float):
            return self._decimal_literal(src, value)
        self.refuse(node, f"{type(value).__name__} literals")

    def _int_literal(self, value: int, src: str) -> _Term:
        if -(2**63) <= value < 2**63:
            return _const(value, pa.int64(), src)
        digits = len(str(abs(value)))
        if digits > MAX_DECIMAL_DIGITS:
            self.fail(f"the number {src} has more than {MAX_DECIMAL_DIGITS} digits")
        return _const(Decimal(value), pa.decimal128(digits, 0), src)

    def _decimal_literal(self, src: str, value: float) -> _Term:
        """A number with a point or exponent: an exact decimal, read from its source text."""
        try:
            exact = Decimal(src.lstrip("+"))
        except InvalidOperation:
            exact = Decimal(repr(value))
        if not exact.is_finite():
            return _const(value, _FLOAT64, src)
        _, digits, exponent = exact.as_tuple()
        assert isinstance(exponent, int)
        scale = max(0, -exponent)
        whole = max(1, len(digits) + exponent)
        if whole + scale > MAX_DECIMAL_DIGITS:
            return _const(value, _FLOAT64, src)
        exact = exact.quantize(Decimal(1).scaleb(-scale))
        return _const(exact, pa.decimal128(whole + scale, scale), src)

    def _name(self, node: ast.Name) -> _Term:
        if node.id.startswith("__"):
            self.refuse(node, "names starting with '__'")
        if node.id in FUNCTIONS:
            self.fail(f"{node.id} is a function; call it as {node.id}(...)")
        return self.field(node.id, node.id)

    def _attribute(self, node: ast.Attribute) -> _Term:
        parts: list[str] = []
        cur: ast.expr = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name):
            self.refuse(node, "attribute access", "dotted names are field paths such as GROUP.FIELD")
        parts.append(cur.id)
        if any(p.startswith("__") for p in parts):
            self.refuse(node, "names starting with '__'")
        return self.field(".".join(reversed(parts)), self.src(node))

    def field(self, name: str, src: str) -> _Term:
        key = name if name in self.fields else self._folded.get(name.upper(), "")
        if not key:
            self.fail(self._unknown(name))
        self.used.add(key)
        return _Term(self.fields[key], lambda t: _column(t, key), src)

    def _unknown(self, name: str) -> str:
        message = f"unknown field {name}"
        for word in _HYPHEN_WORDS.findall(self.text):
            if name in word.split("-") and word.replace("-", "_") in self.fields:
                return f"{message}: inside an expression '-' is minus; write {word.replace('-', '_')} for {word}"
        by_upper = {k.upper(): k for k in self.fields}
        close = difflib.get_close_matches(name.upper(), list(by_upper), n=3, cutoff=0.6)
        if close:
            return f"{message}; did you mean {' or '.join(by_upper[c] for c in close)}?"
        return message

    # ---- operators
    def _unaryop(self, node: ast.UnaryOp) -> _Term:
        if isinstance(node.op, ast.Not):
            term = self.condition(node.operand, "not")
            return _Term(_BOOL, lambda t: pc.invert(term.run(t)), self.src(node))
        if not isinstance(node.op, ast.USub):
            op = {ast.UAdd: "+", ast.Invert: "~"}.get(type(node.op), "?")
            self.refuse(node, f"unary {op}", "use - or not")
        value = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if type(value) is int:  # -5 and -5000.01 are literals, so decimals stay exact
            return self._int_literal(-value, self.src(node))
        if type(value) is float:
            return self._decimal_literal(self.src(node), -value)
        term = self.number(node.operand, "unary -")
        return _Term(term.type, lambda t: pc.negate(term.run(t)), self.src(node))

    def _boolop(self, node: ast.BoolOp) -> _Term:
        word = "and" if isinstance(node.op, ast.And) else "or"
        fn = pc.and_kleene if word == "and" else pc.or_kleene
        terms = [self.condition(v, word) for v in node.values]

        def run(t: pa.Table) -> Any:
            out = terms[0].run(t)
            for term in terms[1:]:
                out = fn(out, term.run(t))
            return out

        return _Term(_BOOL, run, self.src(node))

    def _compare(self, node: ast.Compare) -> _Term:
        ops = node.ops
        if any(isinstance(op, ast.Is | ast.IsNot) for op in ops):
            self.refuse(node, "`is`", "use is_null(x), or == for values")
        if any(isinstance(op, ast.In | ast.NotIn) for op in ops):
            if len(ops) > 1:
                self.fail("`in` cannot be chained with other comparisons; join them with `and`")
            return self._in(self._compile(node.left), node.comparators[0], negate=isinstance(ops[0], ast.NotIn))
        terms = [self._compile(n) for n in (node.left, *node.comparators)]
        src = self.src(node)
        parts = [self._compare_pair(op, terms[i], terms[i + 1], src) for i, op in enumerate(ops)]
        if len(parts) == 1:
            return parts[0]

        def run(t: pa.Table) -> Any:  # a < b < c is (a < b) and (b < c)
            out = parts[0].run(t)
            for p in parts[1:]:
                out = pc.and_kleene(out, p.run(t))
            return out

        return _Term(_BOOL, run, src)

    def _compare_pair(self, op: ast.cmpop, a: _Term, b: _Term, src: str) -> _Term:
        if "null" in (a.kind, b.kind):
            other = a if b.kind == "null" else b
            self.fail(f"cannot compare with None; use is_null({other.src})")
        if a.kind in _NUMERIC and b.kind in _NUMERIC:
            a, b = self.unify([a, b])
        elif a.kind != b.kind or a.kind not in ("string", "bool"):
            self.fail(f"cannot compare {a.src} ({_WORDS.get(a.kind, a.kind)}) with {b.src} "
                      f"({_WORDS.get(b.kind, b.kind)})")
        fn = _COMPARE[type(op)]
        x, y = a, b
        return _Term(_BOOL, lambda t: fn(x.run(t), y.run(t)), src)

    def _in(self, left: _Term, node: ast.expr, *, negate: bool) -> _Term:
        word = "not in" if negate else "in"
        if not isinstance(node, ast.List | ast.Tuple):
            self.fail(f"`{word}` needs a literal list, e.g. COUNTRY {word} ('US', 'CA')")
        items = [self._compile(e) for e in node.elts]
        for item in items:
            if not item.is_literal:
                self.fail(f"`{word}` needs literals in its list; {item.src} is not a literal")
        has_none = any(i.kind == "null" for i in items)
        items = [i for i in items if i.kind != "null"]
        if left.kind in _NUMERIC:
            bad = [i for i in items if i.kind not in _NUMERIC]
        else:
            bad = [i for i in items if i.kind != left.kind]
        if left.kind not in (*_NUMERIC, "string", "bool") or bad:
            what = bad[0].src if bad else "the list"
            self.fail(f"cannot test {left.src} ({_WORDS.get(left.kind, left.kind)}) {word} a list holding "
                      f"{what} ({_WORDS.get(bad[0].kind, bad[0].kind) if bad else ''})".replace(" ()", ""))
        if left.kind in _NUMERIC and items:
            unified = self.unify([left, *items])
            left, items = unified[0], unified[1:]
        value_set = pa.array([i.literal for i in items], type=left.type)
        missing = pa.scalar(True if has_none else None, _BOOL)
        x = left

        def run(t: pa.Table) -> Any:
            values = x.run(t)
            hit = pc.is_in(values, value_set=value_set)
            if values.null_count:  # null in (...) is null, unless the list holds None
                hit = pc.if_else(pc.is_valid(values), hit, missing)
            return pc.invert(hit) if negate else hit

        return _Term(_BOOL, run, self.src(node))

    def _binop(self, node: ast.BinOp) -> _Term:
        op = type(node.op)
        if op in _REFUSED_OPERATORS:
            hint = "use and/or/not for conditions" if op in (ast.BitOr, ast.BitAnd) else ""
            self.refuse(node, f"operator {_REFUSED_OPERATORS[op]}", hint)
        symbol = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}[op]
        a = self.number(node.left, symbol)
        b = self.number(node.right, symbol)
        src = self.src(node)
        if symbol in "/%":
            return self._divide(a, b, symbol, src)
        fn = {"+": pc.add, "-": pc.subtract, "*": pc.multiply}[symbol]
        if symbol != "*" or "float" in (a.kind, b.kind) or a.kind == b.kind == "int":
            a, b = self.unify([a, b])
        elif a.kind == "int" or b.kind == "int":  # int * decimal: the int as a decimal of its digits
            a, b = (self.cast(a, pa.decimal128(_decimal_shape(a)[0], 0)) if a.kind == "int" else a,
                    self.cast(b, pa.decimal128(_decimal_shape(b)[0], 0)) if b.kind == "int" else b)
        typ = _probe(fn, a.type, b.type)
        if typ is None:  # wider than 38 digits: fall back to float64
            a, b = self.cast(a, _FLOAT64), self.cast(b, _FLOAT64)
            typ = _FLOAT64
        x, y = a, b
        return _Term(typ, lambda t: fn(x.run(t), y.run(t)), src)

    def _divide(self, a: _Term, b: _Term, symbol: str, src: str) -> _Term:
        """/ and % in float64 (Python's true division and sign-of-divisor modulo); a zero
        divisor gives null, as in SQL, rather than an error for the whole batch."""
        if b.is_literal and b.literal == 0:
            self.fail(f"division by zero in {src}")
        ints = a.kind == b.kind == "int"
        x, y = self.cast(a, _FLOAT64), self.cast(b, _FLOAT64)
        null = pa.scalar(None, _FLOAT64)
        check_zero = not y.is_literal

        def run(t: pa.Table) -> Any:
            num, den = x.run(t), y.run(t)
            out = pc.divide(num, den)
            if symbol == "%":
                out = pc.subtract(num, pc.multiply(pc.floor(out), den))
            if check_zero:
                out = pc.if_else(pc.equal(den, 0.0), null, out)
            return out

        if symbol == "%" and ints:  # whole numbers stay whole
            return _Term(pa.int64(), lambda t: pc.cast(run(t), pa.int64(), safe=False), src)
        return _Term(_FLOAT64, run, src)

    # ---- functions
    def _call(self, node: ast.Call) -> _Term:
        if not isinstance(node.func, ast.Name):
            self.refuse(node, "method calls", "use a function such as lower(x) or startswith(x, 'p')")
        name = node.func.id
        if name.startswith("__"):
            self.refuse(node.func, "names starting with '__'")
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, FUNCTIONS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            self.fail(f"unknown function {name}; {hint}allowed: {', '.join(FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            self.refuse(node, "keyword or starred arguments", f"call {name}(...) with plain arguments")
        low, high = {"min": (2, 99), "max": (2, 99), "coalesce": (2, 99), "round": (1, 2),
                     "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2)}.get(name, (1, 1))
        if not low <= len(node.args) <= high:
            count = str(low) if low == high else f"{low} to {high}" if high < 99 else f"{low} or more"
            self.fail(f"{name}() takes {count} argument{'s' if high > 1 else ''}, found {len(node.args)}")
        args = [self._compile(a) for a in node.args]
        builder: Callable[[str, list[_Term], str], _Term] = getattr(self, f"_fn_{name}")
        return builder(name, args, self.src(node))

    def _fn_abs(self, name: str, args: list[_Term], src: str) -> _Term:
        x = self.require(args[0], name, _NUMERIC)
        return _Term(x.type, lambda t: pc.abs(x.run(t)), src)

    def _fn_min(self, name: str, args: list[_Term], src: str) -> _Term:
        terms = self.unify([self.require(a, name, _NUMERIC) for a in args])
        fn = pc.min_element_wise if name == "min" else pc.max_element_wise
        return _Term(terms[0].type, lambda t: fn(*[a.run(t) for a in terms], skip_nulls=True), src)

    _fn_max = _fn_min

    def _fn_len(self, name: str, args: list[_Term], src: str) -> _Term:
        x = self.require(args[0], name, ("string",))
        return _Term(pa.int64(), lambda t: pc.cast(pc.utf8_length(x.run(t)), pa.int64()), src)

    def _fn_lower(self, name: str, args: list[_Term], src: str) -> _Term:
        x = self.require(args[0], name, ("string",))
        fn = pc.utf8_lower if name == "lower" else pc.utf8_upper
        return _Term(pa.string(), lambda t: fn(x.run(t)), src)

    _fn_upper = _fn_lower

    def _fn_startswith(self, name: str, args: list[_Term], src: str) -> _Term:
        x = self.require(args[0], name, ("string",))
        pattern = args[1]
        if not (pattern.is_literal and pattern.kind == "string"):
            self.fail(f"{name}() needs a string literal as its second argument, found {pattern.src}")
        fn = {"startswith": pc.starts_with, "endswith": pc.ends_with, "contains": pc.match_substring}[name]
        text = pattern.literal
        return _Term(_BOOL, lambda t: fn(x.run(t), pattern=text), src)

    _fn_endswith = _fn_startswith
    _fn_contains = _fn_startswith

    def _fn_is_null(self, name: str, args: list[_Term], src: str) -> _Term:
        x = args[0]
        return _Term(_BOOL, lambda t: pc.is_null(x.run(t), nan_is_null=True), src)

    def _fn_coalesce(self, name: str, args: list[_Term], src: str) -> _Term:
        kinds = {a.kind for a in args}
        if kinds <= set(_NUMERIC):
            terms = self.unify(args)
        elif len(kinds) == 1 and kinds <= {"string", "bool"}:
            terms = args
        else:
            words = ", ".join(f"{a.src} ({_WORDS.get(a.kind, a.kind)})" for a in args)
            self.fail(f"coalesce() needs arguments of one type, found {words}")
        return _Term(terms[0].type, lambda t: pc.coalesce(*[a.run(t) for a in terms]), src)

    def _fn_round(self, name: str, args: list[_Term], src: str) -> _Term:
        x = self.require(args[0], name, _NUMERIC)
        digits = 0
        if len(args) == 2:
            if not (args[1].is_literal and args[1].kind == "int"):
                self.fail(f"round() needs a whole-number literal for its digits, found {args[1].src}")
            digits = int(args[1].literal)
        typ = _probe(lambda v: pc.round(v, ndigits=digits), x.type) or _FLOAT64
        if typ == _FLOAT64 and x.kind != "float":
            x = self.cast(x, _FLOAT64)
        return _Term(typ, lambda t: pc.round(x.run(t), ndigits=digits, round_mode="half_to_even"), src)

    # ---- type helpers
    def condition(self, node: ast.expr, word: str) -> _Term:
        term = self._compile(node)
        if term.kind != "bool":
            self.fail(f"`{word}` needs conditions, but {term.src} is {_WORDS.get(term.kind, term.kind)}")
        return term

    def number(self, node: ast.expr, symbol: str) -> _Term:
        term = self._compile(node)
        if term.kind not in _NUMERIC:
            what = "strings" if term.kind == "string" else _WORDS.get(term.kind, term.kind)
            self.fail(f"arithmetic ({symbol}) on {what} is not allowed: {term.src} is "
                      f"{_WORDS.get(term.kind, term.kind)}")
        return term

    def require(self, term: _Term, function: str, kinds: Sequence[str]) -> _Term:
        if term.kind not in kinds:
            want = " or ".join(_WORDS[k] for k in kinds)
            self.fail(f"{function}() needs {want}, but {term.src} is {_WORDS.get(term.kind, term.kind)}")
        return term

    def unify(self, terms: list[_Term]) -> list[_Term]:
        """Numeric terms cast to one type: int64 if all are whole, float64 if any is a
        float, else a decimal wide enough for all of them exactly (float64 past 38 digits)."""
        kinds = {t.kind for t in terms}
        if kinds == {"int"}:
            typ: pa.DataType = pa.int64()
        elif "float" in kinds:
            typ = _FLOAT64
        else:
            shapes = [_decimal_shape(t) for t in terms]
            whole, scale = max(s[0] for s in shapes), max(s[1] for s in shapes)
            typ = pa.decimal128(whole + scale, scale) if whole + scale <= MAX_DECIMAL_DIGITS else _FLOAT64
        return [self.cast(t, typ) for t in terms]

    def cast(self, term: _Term, typ: pa.DataType) -> _Term:
        if term.type == typ:
            return term
        if term.is_literal:  # converted once, here
            value = term.literal
            if pa.types.is_floating(typ):
                value = float(value)
            elif pa.types.is_decimal(typ):
                value = Decimal(value)
            return _const(value, typ, term.src)
        inner = term.run
        if pa.types.is_decimal(typ) and term.kind == "int":
            # Arrow casts int64 only to a decimal with 19 whole digits: go through decimal(19, 0)
            # (unify never asks for fewer whole digits for an int column).
            whole = pa.decimal128(19, 0)
            return _Term(typ, lambda t: pc.cast(pc.cast(inner(t), whole), typ), term.src)
        safe = not pa.types.is_floating(typ)  # int64 -> float64 above 2**53 is inexact by design
        return _Term(typ, lambda t: pc.cast(inner(t), typ, safe=safe), term.src)
