"""The checker and compiler: every syntax node must be on the whitelist, is type-checked
against the contract's field types, and becomes a `Term` whose run calls
`pyarrow.compute` over whole columns."""

from __future__ import annotations

import ast
import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation, localcontext
from functools import partial
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc

from gateway.expressions.columns import column
from gateway.expressions.functions import FUNCTIONS, compile_call
from gateway.expressions.terms import BOOL, FLOAT64, NUMERIC, WORDS, Term, const, decimal_shape, probe
from schemas.errors import ContractError

MAX_DECIMAL_DIGITS = 38
_HYPHEN_WORDS = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)+")

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


def one_line(message: str) -> str:
    """An error message as one line: the expression it quotes may hold newlines (a YAML
    block scalar), shown escaped as \\n, like every other unprintable character."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class Compiler:
    """Checks one expression's syntax tree against the whitelist and the field types and
    builds its `Term`, collecting the fields it uses."""

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
        raise ContractError(one_line(f'{self.where}: {message} (in "{self.text}")'))

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
            message = f'{self.where}: syntax error{col} in "{self.text}": {exc.msg}{hint}'
            raise ContractError(one_line(message)) from None
        except (RecursionError, MemoryError, ValueError):
            raise ContractError(one_line(f'{self.where}: cannot parse "{self.text[:80]}": too deeply nested')) from None

    def compile(self, node: ast.expr) -> Term:
        try:
            return self.term(node)
        except RecursionError:
            raise ContractError(one_line(f'{self.where}: "{self.text[:80]}" is too deeply nested')) from None

    def term(self, node: ast.expr) -> Term:
        builders: dict[type[ast.AST], Callable[[Any], Term]] = {
            ast.Constant: self._constant, ast.Name: self._name, ast.Attribute: self._attribute,
            ast.UnaryOp: self._unaryop, ast.BoolOp: self._boolop, ast.Compare: self._compare,
            ast.BinOp: self._binop, ast.Call: partial(compile_call, self),
        }
        builder = builders.get(type(node))
        if builder is None:
            self.refuse(node, _REFUSED_NODES.get(type(node), type(node).__name__))
        return builder(node)

    # ---- leaves
    def _constant(self, node: ast.Constant) -> Term:
        value, src = node.value, self.src(node)
        if isinstance(value, bool):
            return const(value, BOOL, src)
        if value is None:
            return const(None, pa.null(), src)
        if isinstance(value, str):
            return const(value, pa.string(), src)
        if isinstance(value, int):
            return self._int_literal(value, src)
        if isinstance(value, float):
            return self._decimal_literal(src, value)
        self.refuse(node, f"{type(value).__name__} literals")

    def _int_literal(self, value: int, src: str) -> Term:
        if -(2**63) <= value < 2**63:
            return const(value, pa.int64(), src)
        digits = len(str(abs(value)))
        if digits > MAX_DECIMAL_DIGITS:
            self.fail(f"the number {src} has more than {MAX_DECIMAL_DIGITS} digits")
        return const(Decimal(value), pa.decimal128(digits, 0), src)

    def _decimal_literal(self, src: str, value: float) -> Term:
        """A number with a point or exponent: an exact decimal, read from its source text."""
        try:
            exact = Decimal(src.lstrip("+"))
        except InvalidOperation:
            exact = Decimal(repr(value))
        if not exact.is_finite() or not math.isfinite(value):
            self.fail(f"the number {src} does not fit a float64 (it would be {value}); write a finite number")
        _, digits, exponent = exact.as_tuple()
        assert isinstance(exponent, int)
        scale = max(0, -exponent)
        whole = max(1, len(digits) + exponent)
        if whole + scale > MAX_DECIMAL_DIGITS:
            return const(value, FLOAT64, src)
        with localcontext(prec=MAX_DECIMAL_DIGITS):  # the default 28 digits cannot hold 1e30 exactly
            exact = exact.quantize(Decimal(1).scaleb(-scale))
        return const(exact, pa.decimal128(whole + scale, scale), src)

    def _name(self, node: ast.Name) -> Term:
        if node.id.startswith("__"):
            self.refuse(node, "names starting with '__'")
        if node.id in FUNCTIONS:
            self.fail(f"{node.id} is a function; call it as {node.id}(...)")
        return self.field(node.id, node.id)

    def _attribute(self, node: ast.Attribute) -> Term:
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

    def field(self, name: str, src: str) -> Term:
        key = name if name in self.fields else self._folded.get(name.upper(), "")
        if not key:
            self.fail(self._unknown(name))
        self.used.add(key)
        return Term(self.fields[key], lambda t: column(t, key), src)

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
    def _unaryop(self, node: ast.UnaryOp) -> Term:
        if isinstance(node.op, ast.Not):
            term = self.condition(node.operand, "not")
            return Term(BOOL, lambda t: pc.invert(term.run(t)), self.src(node))
        if not isinstance(node.op, ast.USub):
            op = {ast.UAdd: "+", ast.Invert: "~"}.get(type(node.op), "?")
            self.refuse(node, f"unary {op}", "use - or not")
        value = node.operand.value if isinstance(node.operand, ast.Constant) else None
        if type(value) is int:  # -5 and -5000.01 are literals, so decimals stay exact
            return self._int_literal(-value, self.src(node))
        if type(value) is float:
            return self._decimal_literal(self.src(node), -value)
        term = self.number(node.operand, "unary -")
        return Term(term.type, lambda t: pc.negate(term.run(t)), self.src(node))

    def _boolop(self, node: ast.BoolOp) -> Term:
        word = "and" if isinstance(node.op, ast.And) else "or"
        fn = pc.and_kleene if word == "and" else pc.or_kleene
        terms = [self.condition(v, word) for v in node.values]

        def run(t: pa.Table) -> Any:
            out = terms[0].run(t)
            for term in terms[1:]:
                out = fn(out, term.run(t))
            return out

        return Term(BOOL, run, self.src(node))

    def _compare(self, node: ast.Compare) -> Term:
        ops = node.ops
        if any(isinstance(op, ast.Is | ast.IsNot) for op in ops):
            self.refuse(node, "`is`", "use is_null(x), or == for values")
        if any(isinstance(op, ast.In | ast.NotIn) for op in ops):
            if len(ops) > 1:
                self.fail("`in` cannot be chained with other comparisons; join them with `and`")
            return self._in(self.term(node.left), node.comparators[0], negate=isinstance(ops[0], ast.NotIn))
        terms = [self.term(n) for n in (node.left, *node.comparators)]
        src = self.src(node)
        parts = [self._compare_pair(op, terms[i], terms[i + 1], src) for i, op in enumerate(ops)]
        if len(parts) == 1:
            return parts[0]

        def run(t: pa.Table) -> Any:  # a < b < c is (a < b) and (b < c)
            out = parts[0].run(t)
            for p in parts[1:]:
                out = pc.and_kleene(out, p.run(t))
            return out

        return Term(BOOL, run, src)

    def _compare_pair(self, op: ast.cmpop, a: Term, b: Term, src: str) -> Term:
        if "null" in (a.kind, b.kind):
            other = a if b.kind == "null" else b
            self.fail(f"cannot compare with None; use is_null({other.src})")
        if a.kind in NUMERIC and b.kind in NUMERIC:
            a, b = self.unify([a, b])
        elif a.kind != b.kind or a.kind not in ("string", "bool"):
            self.fail(f"cannot compare {a.src} ({WORDS.get(a.kind, a.kind)}) with {b.src} "
                      f"({WORDS.get(b.kind, b.kind)})")
        fn = _COMPARE[type(op)]
        x, y = a, b
        return Term(BOOL, lambda t: fn(x.run(t), y.run(t)), src)

    def _in(self, left: Term, node: ast.expr, *, negate: bool) -> Term:
        word = "not in" if negate else "in"
        if not isinstance(node, ast.List | ast.Tuple):
            self.fail(f"`{word}` needs a literal list, e.g. COUNTRY {word} ('US', 'CA')")
        items = [self.term(e) for e in node.elts]
        for item in items:
            if not item.is_literal:
                self.fail(f"`{word}` needs literals in its list; {item.src} is not a literal")
        has_none = any(i.kind == "null" for i in items)
        items = [i for i in items if i.kind != "null"]
        if left.kind in NUMERIC:
            bad = [i for i in items if i.kind not in NUMERIC]
        else:
            bad = [i for i in items if i.kind != left.kind]
        if left.kind not in (*NUMERIC, "string", "bool") or bad:
            what = bad[0].src if bad else "the list"
            self.fail(f"cannot test {left.src} ({WORDS.get(left.kind, left.kind)}) {word} a list holding "
                      f"{what} ({WORDS.get(bad[0].kind, bad[0].kind) if bad else ''})".replace(" ()", ""))
        if left.kind in NUMERIC and items:
            unified = self.unify([left, *items])
            left, items = unified[0], unified[1:]
        value_set = pa.array([i.literal for i in items], type=left.type)
        missing = pa.scalar(True if has_none else None, BOOL)
        x = left

        def run(t: pa.Table) -> Any:
            values = x.run(t)
            hit = pc.is_in(values, value_set=value_set)
            # a literal (or a term of literals) on the left runs as one scalar, not a column
            has_nulls = not values.is_valid if isinstance(values, pa.Scalar) else values.null_count
            if has_nulls:  # null in (...) is null, unless the list holds None
                hit = pc.if_else(pc.is_valid(values), hit, missing)
            return pc.invert(hit) if negate else hit

        return Term(BOOL, run, self.src(node))

    def _binop(self, node: ast.BinOp) -> Term:
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
            a, b = (self.cast(a, pa.decimal128(decimal_shape(a)[0], 0)) if a.kind == "int" else a,
                    self.cast(b, pa.decimal128(decimal_shape(b)[0], 0)) if b.kind == "int" else b)
        typ = probe(fn, a.type, b.type)
        if typ is None:  # wider than 38 digits: fall back to float64
            a, b = self.cast(a, FLOAT64), self.cast(b, FLOAT64)
            typ = FLOAT64
        x, y = a, b
        return Term(typ, lambda t: fn(x.run(t), y.run(t)), src)

    def _divide(self, a: Term, b: Term, symbol: str, src: str) -> Term:
        """/ and % in float64 (Python's true division and sign-of-divisor modulo); a zero
        divisor gives null, as in SQL, rather than an error for the whole batch."""
        if b.is_literal and b.literal == 0:
            self.fail(f"division by zero in {src}")
        ints = a.kind == b.kind == "int"
        x, y = self.cast(a, FLOAT64), self.cast(b, FLOAT64)
        null = pa.scalar(None, FLOAT64)
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
            return Term(pa.int64(), lambda t: pc.cast(run(t), pa.int64(), safe=False), src)
        return Term(FLOAT64, run, src)

    # ---- type helpers
    def condition(self, node: ast.expr, word: str) -> Term:
        term = self.term(node)
        if term.kind != "bool":
            self.fail(f"`{word}` needs conditions, but {term.src} is {WORDS.get(term.kind, term.kind)}")
        return term

    def number(self, node: ast.expr, symbol: str) -> Term:
        term = self.term(node)
        if term.kind not in NUMERIC:
            what = "strings" if term.kind == "string" else WORDS.get(term.kind, term.kind)
            self.fail(f"arithmetic ({symbol}) on {what} is not allowed: {term.src} is "
                      f"{WORDS.get(term.kind, term.kind)}")
        return term

    def require(self, term: Term, function: str, kinds: Sequence[str]) -> Term:
        if term.kind not in kinds:
            want = " or ".join(WORDS[k] for k in kinds)
            self.fail(f"{function}() needs {want}, but {term.src} is {WORDS.get(term.kind, term.kind)}")
        return term

    def unify(self, terms: list[Term]) -> list[Term]:
        """Numeric terms cast to one type: int64 if all are whole, float64 if any is a
        float, else a decimal wide enough for all of them exactly (float64 past 38 digits)."""
        kinds = {t.kind for t in terms}
        if kinds == {"int"}:
            typ: pa.DataType = pa.int64()
        elif "float" in kinds:
            typ = FLOAT64
        else:
            shapes = [decimal_shape(t) for t in terms]
            whole, scale = max(s[0] for s in shapes), max(s[1] for s in shapes)
            typ = pa.decimal128(whole + scale, scale) if whole + scale <= MAX_DECIMAL_DIGITS else FLOAT64
        return [self.cast(t, typ) for t in terms]

    def cast(self, term: Term, typ: pa.DataType) -> Term:
        if term.type == typ:
            return term
        if term.is_literal:  # converted once, here
            value = term.literal
            if pa.types.is_floating(typ):
                value = float(value)
            elif pa.types.is_decimal(typ):
                value = Decimal(value)
            return const(value, typ, term.src)
        inner = term.run
        if pa.types.is_decimal(typ) and term.kind == "int":
            # Arrow casts int64 only to a decimal with 19 whole digits: go through decimal(19, 0)
            # (unify never asks for fewer whole digits for an int column).
            whole = pa.decimal128(19, 0)
            return Term(typ, lambda t: pc.cast(pc.cast(inner(t), whole), typ), term.src)
        safe = not pa.types.is_floating(typ)  # int64 -> float64 above 2**53 is inexact by design
        return Term(typ, lambda t: pc.cast(inner(t), typ, safe=safe), term.src)
