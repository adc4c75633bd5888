"""Hypothesis strategies for the fuzz suite: structured inputs from each entry point's
grammar (copybooks, record files, contracts, configs, expressions) and byte-level
mutations of valid inputs. Every strategy builds the JSON-able input dict that
tests.fuzz_worker's target of the same name takes.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from gateway.config import example_dropfolder_config
from gateway.expressions import FUNCTIONS
from schemas.examples import contract_path, generate_card_file
from tests.fuzz_harness import encode_bytes

CARD_CONTRACT = contract_path("card_txn")
CARD_COPYBOOK = (CARD_CONTRACT.parent / "copybooks" / "CARDTXN.cpy").read_text(encoding="utf-8")
COBRIX_EXTRA = Path(__file__).resolve().parent / "data" / "cobrix_extra"


def _card_sample() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "card.dat"
        generate_card_file(path, records=6, seed=5, bad_every=3)
        return path.read_bytes()


CARD_SAMPLE = _card_sample()

# --------------------------------------------------------------------------- bytes
# Sizes: mostly what real copybooks and files hold, sometimes an edge, rarely hostile (a
# hostile size costs the worker an allocation up to its cap, or its time limit).
EDGE_SIZES = [0, 1, 2, 4, 9, 10, 18, 19, 38, 39, 76, 77, 100, 255, 256, 4096, 32767, 65535, 100_000]
HOSTILE_SIZES = [400_000_000, 10**12]
size = st.integers(0, 99).flatmap(
    lambda roll: st.sampled_from(HOSTILE_SIZES) if roll == 0 else st.sampled_from(EDGE_SIZES) if roll < 12
    else st.integers(1, 40) if roll < 30 else st.integers(1, 12))
# EBCDIC and ASCII digits, spaces, signs, packed nibbles, line ends: bytes a decoder treats specially
INTERESTING_BYTES = [0x00, 0x0A, 0x0C, 0x0D, 0x15, 0x1D, 0x20, 0x25, 0x2D, 0x30, 0x39, 0x40, 0x4B, 0x60, 0x7F, 0x80,
                     0xC0, 0xC1, 0xD0, 0xD9, 0xF0, 0xF5, 0xF9, 0xFF]
byte_values = st.one_of(st.sampled_from(INTERESTING_BYTES), st.integers(0, 255))


def byte_strings(max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(byte_values, max_size=max_size).map(bytes)


@st.composite
def mutations(draw: st.DrawFn, base: bytes, tokens: list[bytes], max_ops: int = 4) -> bytes:
    """`base` after a few byte-level edits: flips, deletions, insertions of random bytes or
    of grammar tokens, duplicated spans, digit runs replaced by edge numbers."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "token", "duplicate", "number"]))
        at = draw(st.integers(0, max(len(data), 0)))
        if op == "flip" and data:
            data[min(at, len(data) - 1)] = draw(byte_values)
        elif op == "delete":
            del data[at: at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(byte_strings(8))
        elif op == "token":
            data[at:at] = draw(st.sampled_from(tokens))
        elif op == "duplicate" and data:
            span = data[at: at + draw(st.integers(1, 64))]
            to = draw(st.integers(0, len(data)))
            data[to:to] = span
        elif op == "number":
            digits = [i for i in range(len(data)) if 0x30 <= data[i] <= 0x39]
            if digits:
                i = digits[draw(st.integers(0, len(digits) - 1))]
                j = i
                while j < len(data) and 0x30 <= data[j] <= 0x39:
                    j += 1
                data[i:j] = str(draw(st.sampled_from(EDGE_SIZES + HOSTILE_SIZES))).encode()
    return bytes(data)


# --------------------------------------------------------------------------- copybooks
USAGES = ["", "", "", "COMP", "COMP-3", "COMP-3U", "COMP-4", "COMP-5", "COMP-9", "BINARY", "PACKED-DECIMAL",
          "USAGE IS COMP-3", "COMPUTATIONAL-5"]
FLOAT_USAGES = ["COMP-1", "COMP-2"]


@st.composite
def numeric_pictures(draw: st.DrawFn) -> str:
    n, m = draw(size), draw(st.integers(1, 6))
    return draw(st.sampled_from([f"9({n})", f"S9({n})", f"S9({n})V9({m})", f"9({n})V99", f"V9({n})", f"SV9({n})",
                                 f"9({n})PP", f"PP9({n})", "S9(4)V9(2)", "S999V99", "9", "S9(18)", "9(19)"]))


@st.composite
def display_pictures(draw: st.DrawFn) -> str:
    """Text and numeric-edited pictures: DISPLAY only."""
    n = draw(size)
    return draw(st.sampled_from([f"X({n})", f"A({n})", f"N({n})", f"X({n})BX", "XXX", f"Z({n})9", f"-({n})9.99",
                                 f"+({n})9", f"$({n})9.99", f"9({n}).99CR", "ZZ,ZZ9.99DB", "99/99/99", f"Z({n}).ZZ",
                                 f"*({n})9"]))


@st.composite
def copybook_texts(draw: st.DrawFn) -> str:
    """A copybook from the grammar: one or two 01 records, nested groups, elementary items
    with PIC/USAGE/SIGN/OCCURS/REDEFINES/VALUE clauses and 88 levels."""
    entries: list[tuple[int, str]] = []  # (level, text of the entry without the level)
    numeric: list[str] = []  # names usable as DEPENDING ON counts

    def name() -> str:
        return "FILLER" if draw(st.integers(0, 9)) == 0 else f"F-{len(entries)}"

    def occurs() -> str:
        pick = draw(st.integers(0, 9))
        if pick == 0:
            return f" OCCURS {draw(size)} TIMES"
        if pick == 1 and numeric:
            lo, hi = draw(st.integers(0, 3)), draw(size)
            return f" OCCURS {lo} TO {hi} TIMES DEPENDING ON {draw(st.sampled_from(numeric))}"
        return ""

    def elementary(level: int, previous: str | None) -> str:
        label = name()
        redefines = f" REDEFINES {previous}" if previous and draw(st.integers(0, 7)) == 0 else ""
        kind = draw(st.integers(0, 9))
        if kind == 0:
            clauses = " " + draw(st.sampled_from(FLOAT_USAGES))
        elif kind < 5:
            clauses = f" PIC {draw(display_pictures())}"
        else:
            pic = draw(numeric_pictures())
            usage = draw(st.sampled_from(USAGES))
            clauses = f" PIC {pic}" + (f" {usage}" if usage else "")
            if pic.startswith("S") and not usage and draw(st.booleans()):
                clauses += draw(st.sampled_from([" SIGN LEADING SEPARATE", " SIGN IS TRAILING", " LEADING"]))
            if not redefines and label != "FILLER":
                numeric.append(label)
        clauses += occurs()
        clauses += draw(st.sampled_from(["", "", "", " VALUE SPACES", " VALUE 0", " VALUE 'A'", " JUST RIGHT",
                                         " BLANK WHEN ZERO", " SYNC"]))
        entries.append((level, f"{label}{redefines}{clauses}"))
        for _ in range(draw(st.integers(0, 1))):
            value = draw(st.sampled_from(["'A'", "'P' 'E'", "1 THRU 5", "SPACES", "ZERO", "'X' THRU 'Z'", "99"]))
            entries.append((88, f"C-{len(entries)} VALUE {value}"))
        return label

    def group(level: int, depth: int) -> None:
        previous: str | None = None
        for _ in range(draw(st.integers(1, 4))):
            child = min(level + draw(st.sampled_from([2, 4, 5])), 49)
            if depth < 3 and child < 45 and draw(st.integers(0, 3)) == 0:
                label = name()
                usage = draw(st.sampled_from(["", "", " COMP-3", " USAGE DISPLAY"]))
                entries.append((child, f"{label}{occurs()}{usage}"))
                group(child, depth + 1)
                previous = label
            else:
                previous = elementary(child, previous)

    for record in range(draw(st.integers(1, 2))):
        entries.append((1, f"REC-{record}"))
        group(1, 0)
    return _render(entries, fixed=draw(st.booleans()))


def _render(entries: list[tuple[int, str]], *, fixed: bool) -> str:
    """Entries as source lines; fixed format keeps the text within columns 8-72."""
    lines = []
    for level, text in entries:
        indent = "       " if fixed else ""
        words = f"{level:02d}  {text}.".split(" ")
        line = indent + "    " * min(level // 5, 4)
        for word in words:
            if fixed and len(line) + len(word) + 1 > 72:
                lines.append(line)
                line = indent + "        "
            line += word + " "
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


COPYBOOK_TOKENS = [t.encode() for t in [
    " PIC ", "X(", "9(", "(99999999999)", "(0)", "(400000000)", " OCCURS ", " 2 TO 9999 ", " DEPENDING ON ",
    " REDEFINES ", " COMP-3", " COMP-0", " COMP-1", ".", ". ", "\n", "\t", "'", '"', " 88 ", " 66 ", " 77 ",
    " RENAMES ", "*", "*>", " VALUE ", " THRU ", "S", "V", "P", "\u00a0", "\r", "      *", " 01 ", " 05 ", " 49 ",
    " 50 ", " SIGN LEADING SEPARATE", " INDEXED BY I", " ASCENDING KEY IS ", "-", "\x00", "é",
]]
SEED_COPYBOOKS = [CARD_COPYBOOK, *(p.read_text(encoding="utf-8", errors="replace")
                                  for p in sorted(COBRIX_EXTRA.rglob("*.cpy")) + sorted(COBRIX_EXTRA.rglob("*.cob")))]


@st.composite
def mutated_copybooks(draw: st.DrawFn) -> str:
    base = draw(st.sampled_from(SEED_COPYBOOKS)).encode("utf-8")
    return draw(mutations(base, COPYBOOK_TOKENS, max_ops=3)).decode("utf-8", errors="replace")


any_copybook = st.one_of(copybook_texts(), mutated_copybooks())


# --------------------------------------------------------------------------- record files
@st.composite
def record_files(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """File bytes framed as F, V, VB or D (mostly well framed, sometimes broken) and the
    `lgw decode` options that read them."""
    fmt = draw(st.sampled_from(["F", "F", "V", "VB", "D"]))
    records = draw(st.lists(byte_strings(80), max_size=8))
    options: dict[str, Any] = {"record_format": fmt}
    if fmt == "F":
        data = b"".join(records)
        if draw(st.integers(0, 4)) == 0:
            options["record_length"] = draw(st.integers(1, 200))
    elif fmt == "D":
        data = draw(st.sampled_from([b"\n", b"\r\n"])).join(records)
    else:
        endian = draw(st.sampled_from(["big", "little"]))
        includes = draw(st.booleans())
        data = b"".join(_rdw(len(r) + (4 if includes else 0), endian) + r for r in records)
        if fmt == "VB":
            data = _rdw(len(data) + 4, "big") + data
        if draw(st.booleans()):
            options["rdw_endian"] = endian
            options["rdw_includes_header"] = "yes" if includes else "no"
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutations(data, [b"\x00\x00\x00\x00", b"\xff\xff\x00\x00", b"\n", b"\x00\x04\x00\x00"]))
    options.update(draw(st.fixed_dictionaries({}, optional={
        "encoding": st.sampled_from(["cp037", "cp1047", "cp273", "ascii", "latin-1", "utf-8"]),
        "trim": st.sampled_from(["both", "left", "right", "none"]),
        "float_format": st.sampled_from(["ibm", "ieee", "ibm-le", "ieee-le"]),
    })))
    return data, options


def _rdw(length: int, endian: str) -> bytes:
    n = min(length, 0xFFFF).to_bytes(2, "big")
    return n + b"\x00\x00" if endian == "big" else b"\x00\x00" + n[::-1]


@st.composite
def decode_inputs(draw: st.DrawFn) -> dict[str, Any]:
    data, options = draw(record_files())
    return {"copybook": draw(any_copybook), "data_b64": encode_bytes(data), "options": options,
            "batch_size": draw(st.sampled_from([1, 2, 3, 50_000]))}


# --------------------------------------------------------------------------- YAML trees
HOSTILE_STRINGS = ["", " ", "../../../etc/passwd", "/dev/zero", "copybooks/CARDTXN.cpy", "X(400000000)",
                   "9(100000)", "cp037", "utf-16", "F", "V", "VB", "D", "((", "TXN_AMOUNT > 5000", "^[A-Z",
                   "(?=a)", "\\d{1000000}", "a" * 300, "${LGW_NOPE}", "\n", "nan", "-1", "1e400", "\x00", "é"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30]),
    st.floats(), st.sampled_from(HOSTILE_STRINGS), st.text(max_size=12),
)
yaml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "when", "then", "type", "x"]), inner,
                                                 max_size=3)), max_leaves=6)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k in tree:
            out += _paths(tree[k], (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_trees(draw: st.DrawFn, base: dict[str, Any], max_ops: int = 3) -> Any:
    """A YAML document tree after key deletions, type swaps, edge values and unknown keys."""
    tree = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(tree)
        if not paths:
            break
        path = paths[draw(st.integers(0, len(paths) - 1))]
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["delete", "set", "set", "extra", "wrap"]))
        last = path[-1]
        if op == "delete":
            del parent[last]
        elif op == "set":
            parent[last] = draw(yaml_values)
        elif op == "extra" and isinstance(parent[last], dict):
            parent[last][draw(st.sampled_from(["unknown", "pii", "limits", "extra_key"]))] = draw(scalars)
        elif op == "wrap":
            parent[last] = [parent[last]]
    return tree


def yaml_text(tree: Any) -> bytes:
    return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False).encode("utf-8")


YAML_TOKENS = [t.encode() for t in [": ", "\n", "- ", "{", "}", "[", "]", "&a ", "*a", "!!python/object ", "<<: ",
                                    "'", '"', "#", "\t", "999999999999999999999", ".nan", "~", "? ", "|", "---\n"]]


@st.composite
def yaml_documents(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    text = yaml_text(draw(mutated_trees(base)) if draw(st.integers(0, 3)) else base)
    if draw(st.integers(0, 2)) == 0:
        text = draw(mutations(text, YAML_TOKENS))
        if draw(st.integers(0, 7)):  # mostly still UTF-8 text, so the YAML parser gets to work
            text = text.decode("utf-8", errors="replace").encode("utf-8")
    return text


# --------------------------------------------------------------------------- contracts
CARD = yaml.safe_load(CARD_CONTRACT.read_text(encoding="utf-8"))
FIXED_WIDTH = {
    "contract": "orders", "version": 2,
    "record": {"format": "fixed_width", "encoding": "ascii", "record_format": "F", "fields": [
        {"name": "ORDER_ID", "type": "string", "length": 6},
        {"name": "AMOUNT", "pic": "S9(5)V99", "usage": "COMP-3"},
        {"name": "QTY", "type": "integer", "length": 4},
        {"name": "CODE", "pic": "X(2)", "offset": 20},
    ]},
    "fields": {"ORDER_ID": {"required": True, "pattern": "^[A-Z0-9]+$"}, "AMOUNT": {"min": 0, "max": 10000},
               "CODE": {"enum": ["AA", "BB"], "pii": True}},
    "model": {"name": "fraud", "features": {"amount": "AMOUNT", "bulk": "QTY > 10"},
              "outputs": {"fraud_score": {"type": "float", "min": 0, "max": 1}}},
    "fallback": [{"when": "AMOUNT > 500", "then": {"fraud_score": 0.7, "reason": "BIG"}},
                 {"then": {"fraud_score": 0.1, "reason": "DEFAULT"}}],
}
ORDERS_SAMPLE = b"".join(f"A{i:05d}".encode() + b"\x00\x12\x34\x5c" + f"{i:04d}".encode() + b"      AA"
                         for i in range(5))


@st.composite
def contract_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """A contract (a mutated card_txn or fixed-width one), its copybook (often mutated)
    and a sample data file for it (sometimes mutated)."""
    card = draw(st.booleans())
    document = draw(yaml_documents(CARD if card else FIXED_WIDTH))
    copybook = CARD_COPYBOOK
    if draw(st.integers(0, 3)) == 0:
        copybook = draw(any_copybook)
    data = CARD_SAMPLE if card else ORDERS_SAMPLE
    if draw(st.integers(0, 2)) == 0:
        data = draw(mutations(data, [b"H", b"T", b"D", b"\x40" * 10, b"\x00" * 8]))
    return {"yaml_b64": encode_bytes(document), "copybooks": {"CARDTXN.cpy": copybook},
            "data_b64": encode_bytes(data), "batch_size": draw(st.sampled_from([2, 50_000]))}


# --------------------------------------------------------------------------- configs
def _config_base() -> dict[str, Any]:
    cfg = example_dropfolder_config("sqlite:///var/state.db")
    cfg["models"]["scorer"] = {"endpoint": {"backend": "kserve", "url": "http://127.0.0.1:9/v2", "model_name": "m"},
                               "timeout_s": 1.5, "retry": {"max_attempts": 2},
                               "breaker": {"failure_rate_threshold": 50}}
    cfg["models"]["flow"] = {"endpoint": {"backend": "mlflow", "url": "http://127.0.0.1:9/invocations"}}
    cfg["pipelines"]["stream"] = {"contract": str(CARD_CONTRACT), "model": "scorer", "policy": "pause",
                                  "source": {"type": "kafka", "topics": ["in"], "group_id": "g",
                                             "result_topic": "out", "dlq_topic": "dlq"}}
    cfg["pipelines"]["queue"] = {"contract": str(CARD_CONTRACT), "source": {"type": "amqp", "queue": "requests"}}
    cfg["pipelines"]["table"] = {"contract": str(CARD_CONTRACT), "model": "flow",
                                 "source": {"type": "odbc", "connection": {"dsn": "lgw"}, "table": "txn",
                                            "mode": "incrementing", "key": "id"},
                                 "sink": {"connection": {"driver": "SQLite3", "database": "x.db"}, "table": "scored",
                                          "key": ["id"]}}
    cfg["kafka"] = {"bootstrap_servers": "127.0.0.1:9092", "linger_ms": 0}
    return cfg


CONFIG = _config_base()


@st.composite
def config_inputs(draw: st.DrawFn) -> dict[str, Any]:
    return {"yaml_b64": encode_bytes(draw(yaml_documents(CONFIG)))}


# --------------------------------------------------------------------------- expressions
FIELD_NAMES = ["TXN_AMOUNT", "COUNTRY", "CHANNEL", "MCC", "BALANCE", "CASHBACK_AMOUNT", "TXN_DATE", "TERMINAL_ID",
               "AUTH_CODE", "MERCHANT_NAME", "TXN_ID", "CARD_TXN.MCC", "TXN-AMOUNT", "txn_amount", "UNKNOWN",
               "__class__", "nan", "inf", "True"]
LITERALS = ["0", "1", "-1", "5000", "5000.01", "0.0", "1e308", "1e-400", "1e400", "9" * 20, "9" * 39, "9" * 400,
            "2**63", "0x1F", "1_000", "'US'", "'E'", "''", "'\\x00'", "None", "True", "False", "'é'", "b'x'", "1j",
            "...", "0.1e-5", "12345678901234567890.123456789012345678"]
ATOMS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(LITERALS))
BINARY = ["+", "-", "*", "/", "%", "**", "//", "&", "|", "<", "<=", "==", "!=", ">", ">=", "and", "or", "in",
          "not in", "is", "@"]


def _expressions(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    functions = st.sampled_from([*FUNCTIONS, "eval", "open", "__import__", "getattr", "print"])
    return st.one_of(
        st.tuples(inner, st.sampled_from(BINARY), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["not ", "-", "+", "~"]), inner).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(functions, st.lists(inner, max_size=4)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, st.sampled_from(["in", "not in"]), st.lists(st.sampled_from(LITERALS), max_size=4)).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])},)"),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} < {t[1]} < {t[2]}"),
        st.sampled_from(["(lambda: 1)()", "[x for x in y]", "TXN_AMOUNT[0]", "a if b else c", "(x := 1)",
                         "{'a': 1}", "f'{TXN_AMOUNT}'", "TXN_AMOUNT.__class__", "COUNTRY.lower()", "*TXN_AMOUNT"]),
        st.tuples(inner, st.sampled_from(["round(", "abs(", "len("])).map(lambda t: f"{t[1]}{t[0]}, -12)"),
    )


grammar_expressions = st.recursive(ATOMS, _expressions, max_leaves=10)
VALID_EXPRESSIONS = ["TXN_AMOUNT > 5000 and COUNTRY != 'US'", "CHANNEL == 'E' and startswith(MERCHANT_NAME, 'AMZN')",
                     "coalesce(CASHBACK_AMOUNT, 0) / 100", "round(TXN_AMOUNT * 1.1, 2) >= 10",
                     "min(MCC, 5000) % 7", "COUNTRY not in ('US', 'CA')", "is_null(CASHBACK_AMOUNT) or MCC > 1",
                     "len(lower(MERCHANT_NAME)) + abs(BALANCE)"]
EXPRESSION_TOKENS = [t.encode() for t in ["(", ")", ",", "'", "TXN_AMOUNT", " and ", " or ", " not ", "-", "**",
                                          "9999999999999999999999999999999999999999", ".", "__", " in ", "\n",
                                          "\x00", "1e999", "round(", "==", "None"]]
hostile_expressions = st.sampled_from([
    "(" * 200 + "1" + ")" * 200, "-" * 5000 + "1", "not " * 1000 + "True", "1 + " * 1200 + "1",
    " and ".join(["MCC > 1"] * 600), "x" * 4001, "'" + "a" * 3990 + "'", "round(TXN_AMOUNT, 99999999999)",
    "round(MCC, -40)", "MCC * " * 100 + "MCC", "TXN_AMOUNT * " * 30 + "TXN_AMOUNT", "1" * 5000,
])


# Well-typed expressions over the card_txn fields: they compile, so they reach evaluation.
NUMERIC_FIELDS = ["TXN_AMOUNT", "MCC", "BALANCE", "CASHBACK_AMOUNT", "TXN_DATE", "TXN_TIME", "TERMINAL_ID",
                  "AUTH_CODE"]
TEXT_FIELDS = ["COUNTRY", "CHANNEL", "MERCHANT_NAME", "TXN_ID", "CURRENCY"]
NUMBER_LITERALS = ["0", "1", "-1", "7", "5000.01", "0.5", "-0.001", "100", "9" * 18, "9" * 19, "9" * 38,
                   "99999999999999999999.99", "1e300", "-1e300", "2.5e-10", "1" + "0" * 37]
numbers = st.recursive(
    st.one_of(st.sampled_from(NUMERIC_FIELDS), st.sampled_from(NUMBER_LITERALS)),
    lambda n: st.one_of(
        st.tuples(n, st.sampled_from(["+", "-", "*", "/", "%"]), n).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        n.map(lambda x: f"-{x}"), n.map(lambda x: f"abs({x})"),
        st.tuples(n, st.integers(-40, 40)).map(lambda t: f"round({t[0]}, {t[1]})"),
        st.tuples(st.sampled_from(["min", "max", "coalesce"]), st.lists(n, min_size=2, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.sampled_from(TEXT_FIELDS).map(lambda f: f"len({f})")),
    max_leaves=8)
texts = st.one_of(st.sampled_from(TEXT_FIELDS), st.sampled_from(["'US'", "''", "'é'", "'E'"]),
                  st.sampled_from(TEXT_FIELDS).map(lambda f: f"lower({f})"),
                  st.sampled_from(TEXT_FIELDS).map(lambda f: f"coalesce({f}, 'x')"))
conditions = st.recursive(
    st.one_of(
        st.tuples(numbers, st.sampled_from(["<", "<=", "==", "!=", ">", ">="]), numbers).map(" ".join),
        st.tuples(texts, st.sampled_from(["==", "!=", "<"]), texts).map(" ".join),
        st.tuples(numbers, st.lists(st.sampled_from(NUMBER_LITERALS), min_size=1, max_size=3)).map(
            lambda t: f"{t[0]} in ({', '.join(t[1])},)"),
        st.tuples(st.sampled_from(["startswith", "endswith", "contains"]), texts).map(
            lambda t: f"{t[0]}({t[1]}, 'A')"),
        st.one_of(numbers, texts).map(lambda x: f"is_null({x})")),
    lambda c: st.one_of(st.tuples(c, st.sampled_from(["and", "or"]), c).map(lambda t: f"({' '.join(t)})"),
                        c.map(lambda x: f"not {x}")),
    max_leaves=6)
typed_expressions = st.one_of(numbers, conditions)


@st.composite
def expression_inputs(draw: st.DrawFn) -> dict[str, Any]:
    pick = draw(st.integers(0, 11))
    if pick < 4:
        text = draw(typed_expressions)
    elif pick < 8:
        text = draw(grammar_expressions)
    elif pick < 11:
        base = draw(st.sampled_from(VALID_EXPRESSIONS)).encode()
        text = draw(mutations(base, EXPRESSION_TOKENS)).decode("utf-8", errors="replace")
    else:
        text = draw(hostile_expressions)
    return {"text": text, "keep_nulls": draw(st.booleans())}
