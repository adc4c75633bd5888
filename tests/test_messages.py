"""schemas.messages: micro-batches of real-time payloads (copybook record bytes or JSON
objects) decoded and validated against the bundled card_txn contract. No broker, no
model: the codec alone, on data generated once per module.

The copybook path is checked against decoding the same records as a file; the JSON
column-wise fast path is checked against the pydantic path (`fast_json=False`), which
has the last word: both must accept the same messages, build the same table and refuse
the same messages for the same reasons.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, generate_card_file
from schemas.jsonl import lines
from schemas.layout import Elementary
from schemas.messages import FAST_JSON_MIN_MESSAGES, DecodedMessages, MessageCodec, by_message
from schemas.records import read_records

DETAILS = 420  # detail records in the generated file
RECORD = 120  # CARD-TXN, bytes


# --------------------------------------------------------------------------- data (once per module)
@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path())


@pytest.fixture(scope="module")
def card_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("messages") / "CARDTXN.DAT"
    summary = generate_card_file(path, records=DETAILS, seed=11)
    assert summary["damaged"] == 0
    return path


@pytest.fixture(scope="module")
def file_table(contract: Contract, card_file: Path) -> pa.Table:
    chunks = list(contract.decode_file(card_file))
    assert not [r for dc in chunks for r in dc.rejects]
    table = pa.concat_tables([dc.table for dc in chunks]).combine_chunks()
    assert table.num_rows == DETAILS
    return table


@pytest.fixture(scope="module")
def detail_records(contract: Contract, card_file: Path) -> list[bytes]:
    """The detail records' bytes: every record between the header and the trailer."""
    matrix = np.concatenate([c.matrix for c in read_records(card_file, contract.spec.framing, 10_000)])
    details = [bytes(row) for row in matrix[1:-1]]
    assert len(details) == DETAILS and all(len(r) == RECORD for r in details)
    return details


@pytest.fixture(scope="module")
def json_records(file_table: pa.Table) -> list[bytes]:
    return [s.encode() for s in lines(file_table).to_pylist()]


@pytest.fixture(scope="module")
def fields(contract: Contract) -> dict[str, Elementary]:
    return {f.key: f for f in contract.layout.elementary() if not f.is_filler}


@pytest.fixture(scope="module")
def copybook_codec(contract: Contract) -> MessageCodec:
    return MessageCodec(contract, "copybook")


@pytest.fixture(scope="module")
def fast(contract: Contract) -> MessageCodec:
    return MessageCodec(contract, "json", fast_json=True)


@pytest.fixture(scope="module")
def slow(contract: Contract) -> MessageCodec:
    return MessageCodec(contract, "json", fast_json=False)


def _accounted(decoded: DecodedMessages, n: int) -> None:
    """Every message is either a table row or rejected, never both, never lost."""
    rejected = {r.index for r in decoded.rejects}
    kept = decoded.index.tolist()
    assert decoded.table.num_rows == len(kept)
    assert len(set(kept)) == len(kept) and kept == sorted(kept)
    assert not rejected & set(kept)
    assert decoded.table.num_rows + len(rejected) == n
    assert set(kept) | rejected == set(range(n))
    assert [r.index for r in decoded.rejects] == sorted(r.index for r in decoded.rejects)


# --------------------------------------------------------------------------- copybook
def test_copybook_batch_decodes_like_the_file(copybook_codec: MessageCodec, detail_records: list[bytes],
                                              file_table: pa.Table) -> None:
    decoded = copybook_codec.decode(detail_records)
    assert decoded.rejects == []
    assert decoded.record_json is None
    assert decoded.index.tolist() == list(range(DETAILS))
    assert decoded.table.schema == file_table.schema
    assert decoded.table.equals(file_table)
    assert decoded.table.to_pylist() == file_table.to_pylist()


def test_copybook_empty_batch(copybook_codec: MessageCodec, file_table: pa.Table) -> None:
    decoded = copybook_codec.decode([])
    assert decoded.table.num_rows == 0 and decoded.table.schema == file_table.schema
    assert len(decoded.index) == 0 and decoded.rejects == []


@pytest.mark.parametrize("size", [0, 1, RECORD - 1, RECORD + 1, 2 * RECORD])
def test_copybook_wrong_length_is_a_decode_reject(copybook_codec: MessageCodec, detail_records: list[bytes],
                                                  file_table: pa.Table, size: int) -> None:
    wrong = (detail_records[0] * 3)[:size]
    batch = [*detail_records[:3], wrong, *detail_records[3:6]]
    decoded = copybook_codec.decode(batch)
    _accounted(decoded, len(batch))
    [reject] = decoded.rejects
    assert reject.index == 3 and reject.kind == "decode"
    assert f"message is {size} bytes" in reject.reason
    assert "CARD_TXN" in reject.reason and str(RECORD) in reject.reason  # the layout and its length
    assert reject.field is None and reject.field_offset is None
    assert decoded.index.tolist() == [0, 1, 2, 4, 5, 6]
    assert decoded.table.equals(file_table.slice(0, 6))
    assert reject.to_json() == {"kind": "decode", "reason": reject.reason}


def _set(record: bytes, offset: int, value: bytes) -> bytes:
    return record[:offset] + value + record[offset + len(value):]


def test_copybook_field_errors_name_field_offset_length_and_bytes(
        copybook_codec: MessageCodec, detail_records: list[bytes], fields: dict[str, Elementary],
        file_table: pa.Table) -> None:
    amount, pan, mcc = fields["TXN_AMOUNT"], fields["TXN_PAN"], fields["MCC"]
    assert (amount.offset, amount.size, pan.offset, pan.size, mcc.offset, mcc.size) == (74, 6, 13, 16, 65, 4)
    recs = list(detail_records[:40])
    # a rule violation before a decode error in the batch: each keeps its own kind
    recs[2] = _set(recs[2], mcc.offset, "0000".encode("cp037"))  # MCC min 1
    recs[5] = _set(recs[5], amount.offset, b"\x00" * amount.size)  # packed decimal without a sign nibble
    letters = "45320100ABCD0201".encode("cp037")
    recs[9] = _set(recs[9], pan.offset, letters)  # pattern ^[0-9]{16}$
    recs[11] = recs[11][:-1]  # 119 bytes
    decoded = copybook_codec.decode(recs)
    _accounted(decoded, len(recs))
    by = by_message(decoded.rejects)
    assert sorted(by) == [2, 5, 9, 11]

    [low_mcc] = by[2]
    assert (low_mcc.kind, low_mcc.field, low_mcc.field_offset, low_mcc.length) == (
        "validation", mcc.path, mcc.offset, mcc.size)
    assert low_mcc.raw == "0000".encode("cp037") and "minimum 1" in low_mcc.reason

    packed = by[5][0]  # then "required value is missing" for the same field
    assert (packed.kind, packed.field, packed.field_offset, packed.length, packed.raw) == (
        "decode", amount.path, amount.offset, amount.size, b"\x00" * 6)
    assert "packed" in packed.reason
    assert {r.field for r in by[5]} == {amount.path}
    assert packed.to_json() == {"kind": "decode", "reason": packed.reason, "field": amount.path,
                                "offset": amount.offset, "length": amount.size, "raw": "000000000000"}

    [bad_pan] = by[9]
    assert (bad_pan.kind, bad_pan.field, bad_pan.field_offset, bad_pan.length, bad_pan.raw) == (
        "validation", pan.path, pan.offset, pan.size, letters)
    assert "pattern" in bad_pan.reason

    [short] = by[11]
    assert short.kind == "decode" and "119" in short.reason

    # the table keeps the good records, in message order, as the file decoded them
    expected = [i for i in range(len(recs)) if i not in by]
    assert decoded.index.tolist() == expected
    assert decoded.table.equals(file_table.take(pa.array(expected)))


def test_copybook_index_maps_rows_to_messages(copybook_codec: MessageCodec, detail_records: list[bytes],
                                              file_table: pa.Table, fields: dict[str, Elementary]) -> None:
    """Shuffled records with a bad one every 7th: row r of the table is message index[r]."""
    rng = np.random.default_rng(3)
    order = rng.permutation(DETAILS)[:300]
    channel = fields["CHANNEL"]
    batch = []
    for pos, i in enumerate(order.tolist()):
        rec = detail_records[i]
        if pos % 7 == 3:
            rec = _set(rec, channel.offset, "X".encode("cp037"))  # not P, E or M
        batch.append(rec)
    decoded = copybook_codec.decode(batch)
    _accounted(decoded, len(batch))
    assert {r.index for r in decoded.rejects} == {p for p in range(len(batch)) if p % 7 == 3}
    assert all(r.kind == "validation" and r.field == channel.path for r in decoded.rejects)
    assert decoded.table.equals(file_table.take(pa.array(order[decoded.index])))


# --------------------------------------------------------------------------- JSON mutations
Mutation = Callable[[dict[str, Any], bytes], bytes]


def _dump(obj: dict[str, Any], **kw: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, **kw).encode()


def _with(**changes: Any) -> Mutation:
    return lambda obj, _text: _dump({**obj, **changes})


def _without(key: str) -> Mutation:
    return lambda obj, _text: _dump({k: v for k, v in obj.items() if k != key})


def _raw(key: str, value: bytes) -> Mutation:
    """`key` set to a raw JSON text: a number spelled as given, or bytes JSON cannot hold."""
    return lambda obj, _text: _dump({**obj, key: "@@"}).replace(b'"@@"', value)


# name, mutation, expected outcome: None (accepted) or (kind, field)
MUTATIONS: list[tuple[str, Mutation, tuple[str, str | None] | None]] = [
    ("broken_json", lambda _o, t: t[:-1], ("decode", None)),
    ("unknown_key", _with(EXTRA=1), ("validation", "EXTRA")),
    ("missing_required", _without("TXN_ID"), ("validation", "TXN_ID")),
    ("null_required_text", _with(CHANNEL=None), ("validation", "CHANNEL")),
    ("null_required_pan", _with(TXN_PAN=None), ("validation", "TXN_PAN")),
    ("null_required_number", _with(TXN_DATE=None), ("validation", "TXN_DATE")),
    ("text_too_long", _with(MERCHANT_NAME="X" * 23), ("validation", "MERCHANT_NAME")),
    ("text_too_long_unicode", _with(MERCHANT_NAME="\u00c4" * 23), ("validation", "MERCHANT_NAME")),
    ("text_max_unicode", _with(MERCHANT_NAME="\U0001f600" * 22), None),  # 22 characters, 88 bytes
    ("binary_out_of_range", _with(AUTH_CODE=65536), ("validation", "AUTH_CODE")),  # PIC 9(4) COMP: 2 bytes
    ("negative_unsigned", _with(AUTH_CODE=-1), ("validation", "AUTH_CODE")),
    ("zoned_out_of_range", _with(BALANCE=10_000_000), ("validation", "BALANCE")),  # PIC S9(7)V99
    ("too_many_decimals", _raw("TXN_AMOUNT", b"12.345"), ("validation", "TXN_AMOUNT")),  # V99
    ("exponent_number", _raw("TXN_AMOUNT", b"1.5E2"), None),
    ("below_min", _with(MCC=0), ("validation", "MCC")),
    ("above_max", _with(TXN_TIME=235960), ("validation", "TXN_TIME")),
    ("date_below_min", _with(TXN_DATE=19991231), ("validation", "TXN_DATE")),
    ("cashback_negative", _with(CASHBACK_AMOUNT=-0.01), ("validation", "CASHBACK_AMOUNT")),
    ("pattern", _with(COUNTRY="us"), ("validation", "COUNTRY")),
    ("pattern_pan", _with(TXN_PAN="4532X10001460201"), ("validation", "TXN_PAN")),
    ("allowed_values", _with(CHANNEL="X"), ("validation", "CHANNEL")),
    ("allowed_values_blank", _with(CHANNEL=""), ("validation", "CHANNEL")),
    ("wrong_json_type", _with(COUNTRY=12), ("validation", "COUNTRY")),
    ("lax_number_as_string", _with(MCC="4899"), None),
    ("decimal_as_string", _with(TXN_AMOUNT="12.34"), None),
    ("null_optional", _with(TXN_TIME=None, MERCHANT_NAME=None), None),
    ("whitespace_around", lambda _o, t: b" \t " + t + b"  ", None),
    ("pretty_printed", lambda o, _t: json.dumps(o, indent=2).encode(), None),
    ("escaped_text", _raw("CURRENCY", b'"\\u0055SD"'), None),  # "USD"
    ("duplicate_key_last_wins", lambda _o, t: t.replace(b'"MCC":', b'"MCC":0,"MCC":', 1), None),
    ("duplicate_key_bad_last", lambda _o, t: t[:-1] + b',"MCC":0}', ("validation", "MCC")),
    ("empty_message", lambda _o, _t: b"", ("decode", None)),
    ("blank_message", lambda _o, _t: b"   ", ("decode", None)),
    ("not_an_object", lambda _o, t: b"[" + t + b"]", ("decode", None)),
    ("json_null", lambda _o, _t: b"null", ("decode", None)),
    ("two_objects_comma", lambda _o, t: t + b"," + t, ("decode", None)),
    ("two_objects_space", lambda _o, t: t + b" " + t, ("decode", None)),
    ("invalid_utf8", _raw("MERCHANT_NAME", b'"A\xff\xfeB"'), ("decode", None)),
    ("control_character", _raw("MERCHANT_NAME", b'"A\tB"'), ("decode", None)),  # a raw tab in a string
]

MUTATION_NAMES = [m[0] for m in MUTATIONS]
# what the column-wise path parses itself (the others send the whole batch to pydantic)
COLUMNAR = {"missing_required", "null_required_text", "null_required_pan", "null_required_number",
            "text_too_long", "text_too_long_unicode", "text_max_unicode", "binary_out_of_range",
            "negative_unsigned", "zoned_out_of_range", "below_min", "above_max", "date_below_min",
            "cashback_negative", "pattern", "pattern_pan", "allowed_values", "allowed_values_blank",
            "exponent_number", "decimal_as_string", "null_optional", "whitespace_around", "escaped_text"}


def _mutate(json_records: list[bytes], mutation: Mutation, i: int) -> bytes:
    text = json_records[i]
    return mutation(json.loads(text), text)


@pytest.fixture(scope="module")
def mutated_batch(json_records: list[bytes]) -> tuple[list[bytes], dict[int, str]]:
    """400 messages, every 7th mutated (each mutation at least twice)."""
    batch = list(json_records[:400])
    where: dict[int, str] = {}
    for k, pos in enumerate(range(3, 400, 7)):
        name, mutation, _ = MUTATIONS[k % len(MUTATIONS)]
        batch[pos] = _mutate(json_records, mutation, pos)
        where[pos] = name
    assert set(where.values()) == set(MUTATION_NAMES)
    return batch, where


def _same_value(parsed: Any, expected: Any) -> bool:
    """A record_json value against its table value: numbers compare as numbers (a decimal
    may be written as a JSON number or as a numeric string)."""
    if expected is None or isinstance(expected, str):
        return parsed == expected and type(parsed) is type(expected)
    if isinstance(parsed, bool):
        return False
    if isinstance(expected, int):
        return isinstance(parsed, int | Decimal) and parsed == expected
    assert isinstance(expected, Decimal)
    return isinstance(parsed, int | Decimal | str) and Decimal(str(parsed)) == expected


def _check_record_json(decoded: DecodedMessages) -> list[dict[str, Any]]:
    assert decoded.record_json is not None
    assert len(decoded.record_json) == decoded.table.num_rows
    parsed_all = []
    for text, row in zip(decoded.record_json, decoded.table.to_pylist(), strict=True):
        assert isinstance(text, bytes)
        parsed = json.loads(text, parse_float=Decimal)
        assert isinstance(parsed, dict)
        assert set(parsed) <= set(row)
        for key, value in row.items():
            assert _same_value(parsed.get(key), value), (key, parsed.get(key), value, text)
        parsed_all.append(parsed)
    return parsed_all


def _assert_same(a: DecodedMessages, b: DecodedMessages) -> None:
    assert a.table.schema == b.table.schema
    assert a.table.equals(b.table)
    assert a.index.tolist() == b.index.tolist()
    assert [(r.index, r.kind, r.field, r.reason) for r in a.rejects] == \
           [(r.index, r.kind, r.field, r.reason) for r in b.rejects]


class _Spy:
    """Records what the codec's two JSON paths were given and returned."""

    def __init__(self, codec: MessageCodec, monkeypatch: pytest.MonkeyPatch) -> None:
        self.columnar: list[bool] = []  # whether the column-wise parse held
        self.pydantic: list[int] = []  # messages judged by the model per call
        columnar, pydantic = codec._json_columnar, codec._json_pydantic

        def spy_columnar(payloads: Any) -> Any:
            out = columnar(payloads)
            self.columnar.append(out is not None)
            return out

        def spy_pydantic(payloads: Any, index: Any) -> Any:
            self.pydantic.append(len(payloads))
            return pydantic(payloads, index)

        monkeypatch.setattr(codec, "_json_columnar", spy_columnar)
        monkeypatch.setattr(codec, "_json_pydantic", spy_pydantic)


def test_json_valid_batch_takes_the_fast_path_as_is(fast: MessageCodec, slow: MessageCodec,
                                                    json_records: list[bytes], file_table: pa.Table,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(fast, monkeypatch)
    decoded = fast.decode(json_records)
    assert spy.columnar == [True] and spy.pydantic == []
    assert decoded.rejects == [] and decoded.index.tolist() == list(range(DETAILS))
    assert decoded.table.equals(file_table)
    assert decoded.record_json == json_records  # the messages themselves, not encoded again
    _assert_same(decoded, slow.decode(json_records))


def test_json_empty_batch(fast: MessageCodec, file_table: pa.Table) -> None:
    decoded = fast.decode([])
    assert decoded.table.num_rows == 0 and decoded.table.schema == file_table.schema


@pytest.mark.parametrize("name", MUTATION_NAMES)
def test_json_mutation_fast_and_pydantic_agree(name: str, fast: MessageCodec, slow: MessageCodec,
                                               json_records: list[bytes], file_table: pa.Table,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One kind of mutation at three places of a batch big enough for the fast path."""
    _, mutation, expected = MUTATIONS[MUTATION_NAMES.index(name)]
    batch = list(json_records[:FAST_JSON_MIN_MESSAGES + 20])
    spots = [0, 77, len(batch) - 1]
    for i in spots:
        batch[i] = _mutate(json_records, mutation, i)
    spy = _Spy(fast, monkeypatch)
    a = fast.decode(batch)
    b = slow.decode(batch)
    _accounted(a, len(batch))
    _assert_same(a, b)
    if name in COLUMNAR:  # parsed column-wise: only the doubtful messages went to the model
        assert spy.columnar == [True]
        assert spy.pydantic == ([] if expected is None else [len(spots)])
    else:
        assert spy.columnar in ([], [False])
    if expected is None:
        assert a.rejects == [] and a.table.num_rows == len(batch)
    else:
        by = by_message(a.rejects)
        assert sorted(by) == spots
        kind, field = expected
        for i in spots:
            first = by[i][0]
            assert (first.kind, first.field) == (kind, field), first
            if kind == "validation":
                assert field is not None
        untouched = [i for i in range(len(batch)) if i not in spots]
        assert a.table.equals(file_table.take(pa.array(untouched)))
    _check_record_json(a)
    _check_record_json(b)


def test_json_mutated_batch_fast_and_pydantic_agree(fast: MessageCodec, slow: MessageCodec,
                                                    mutated_batch: tuple[list[bytes], dict[int, str]]) -> None:
    batch, where = mutated_batch
    assert len(batch) >= FAST_JSON_MIN_MESSAGES
    a = fast.decode(batch)
    b = slow.decode(batch)
    _accounted(a, len(batch))
    _assert_same(a, b)
    expected = {n: e for n, _, e in MUTATIONS}
    rejected = {i for i, name in where.items() if expected[name] is not None}
    assert {r.index for r in a.rejects} == rejected
    by = by_message(a.rejects)
    for i, name in where.items():
        outcome = expected[name]
        if outcome is not None:
            assert (by[i][0].kind, by[i][0].field) == outcome, (name, by[i])
    _check_record_json(a)
    _check_record_json(b)


def test_json_small_batch_uses_the_model(fast: MessageCodec, slow: MessageCodec,
                                         mutated_batch: tuple[list[bytes], dict[int, str]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    batch = mutated_batch[0][:60]
    spy = _Spy(fast, monkeypatch)
    a = fast.decode(batch)
    assert spy.columnar == [] and spy.pydantic == [len(batch)]
    _assert_same(a, slow.decode(batch))


def test_json_only_constraint_violations_fast_path(fast: MessageCodec, slow: MessageCodec,
                                                   json_records: list[bytes],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A ~400-message batch with every column-wise mutation: parsed by Arrow once, the
    doubtful messages judged by the model, the rest taken as they are."""
    batch = list(json_records[:400])
    columnar = [m for m in MUTATIONS if m[0] in COLUMNAR]
    bad: set[int] = set()
    for k, pos in enumerate(range(5, 400, 9)):
        _, mutation, expected = columnar[k % len(columnar)]
        batch[pos] = _mutate(json_records, mutation, pos)
        if expected is not None:
            bad.add(pos)
    spy = _Spy(fast, monkeypatch)
    a = fast.decode(batch)
    assert spy.columnar == [True] and spy.pydantic == [len(bad)]
    b = slow.decode(batch)
    _assert_same(a, b)
    assert {r.index for r in a.rejects} == bad
    _check_record_json(a)
    _check_record_json(b)


def test_json_coerced_value_is_written_coerced(fast: MessageCodec, slow: MessageCodec,
                                               json_records: list[bytes]) -> None:
    batch = list(json_records[:300])
    batch[10] = _mutate(json_records, _with(MCC="4899"), 10)
    for codec in (fast, slow):
        decoded = codec.decode(batch)
        assert decoded.rejects == []
        assert decoded.table.column("MCC")[10].as_py() == 4899
        assert decoded.record_json is not None
        assert json.loads(decoded.record_json[10])["MCC"] == 4899  # the number, not the string


def test_json_reject_reasons(slow: MessageCodec, json_records: list[bytes]) -> None:
    obj = json.loads(json_records[0])
    batch = [
        b"{not json",
        _dump({**obj, "CHANNEL": "X"}),
        _dump({k: v for k, v in obj.items() if k != "COUNTRY"}),
        _dump({**obj, "MCC": 0, "COUNTRY": "us"}),
        _dump({**obj, "TXN_PAN": "4532X10001460201"}),
        _dump({**obj, "BOGUS": 1}),
        json_records[1],
    ]
    decoded = slow.decode(batch)
    by = {i: rs[0] for i, rs in by_message(decoded.rejects).items()}
    assert sorted(by) == [0, 1, 2, 3, 4, 5]
    assert decoded.index.tolist() == [6]

    assert by[0].kind == "decode" and by[0].field is None and by[0].reason.startswith("Invalid JSON")
    assert by[0].to_json() == {"kind": "decode", "reason": by[0].reason}

    assert (by[1].kind, by[1].field) == ("validation", "CHANNEL")
    assert "allowed values" in by[1].reason and "'X'" in by[1].reason
    assert by[1].to_json() == {"kind": "validation", "reason": by[1].reason, "field": "CHANNEL"}

    assert (by[2].kind, by[2].field) == ("validation", "COUNTRY") and "required" in by[2].reason
    assert (by[3].kind, by[3].field) == ("validation", "MCC")
    assert "greater than or equal to 1" in by[3].reason and "(and 1 more)" in by[3].reason
    assert (by[4].kind, by[4].field) == ("validation", "TXN_PAN") and "pattern" in by[4].reason
    assert (by[5].kind, by[5].field) == ("validation", "BOGUS") and "Extra inputs" in by[5].reason
    for r in by.values():  # JSON rejects have no byte offsets
        assert r.field_offset is None and r.raw == b""


# --------------------------------------------------------------------------- hypothesis
_FIELD_NAMES = ["TXN_REC_TYPE", "TXN_ID", "TXN_PAN", "TXN_DATE", "TXN_TIME", "MERCHANT_NAME", "MCC", "COUNTRY",
                "CURRENCY", "TXN_AMOUNT", "BALANCE", "CASHBACK_AMOUNT", "TERMINAL_ID", "AUTH_CODE", "CHANNEL"]
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=24)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**33), max_value=2**33),
    st.sampled_from([0, 1, 9999, 10_000, 65_535, 65_536, 235_959, 20_000_101, 20_991_231, 2**31, -(2**31) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(min_value=-10**8, max_value=10**8, places=3, allow_nan=False, allow_infinity=False).map(float),
    st.integers(min_value=-99999, max_value=99999).map(str),
    _text,
    st.sampled_from(["", " ", "P", "E", "M", "X", "D", "US", "us", "USD", "TX0000000001", "4532010001460201",
                     "12.34", "1e2", "\u00c4" * 22]),
)
_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from([*_FIELD_NAMES, "EXTRA"]), _values),
    st.tuples(st.just("drop"), st.sampled_from(_FIELD_NAMES), st.none()),
    st.tuples(st.just("text"), st.sampled_from(["", "{", "null", "[]", "{}", " {} "]), st.none()),
)


def _object_or_none(text: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


@pytest.fixture(scope="module")
def base_batch(json_records: list[bytes]) -> list[bytes]:
    return list(json_records[:FAST_JSON_MIN_MESSAGES])


@settings(max_examples=50, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(st.integers(0, FAST_JSON_MIN_MESSAGES - 1), _mutation), min_size=1, max_size=8))
def test_json_random_mutations_fast_and_pydantic_agree(fast: MessageCodec, slow: MessageCodec,
                                                       base_batch: list[bytes],
                                                       changes: list[tuple[int, tuple[str, str, Any]]]) -> None:
    batch = list(base_batch)
    for i, (op, key, value) in changes:
        obj = _object_or_none(batch[i])  # an earlier change may have left text that is no object
        if obj is None:
            obj = json.loads(base_batch[i])
        if op == "set":
            obj[key] = value
            batch[i] = _dump(obj)
        elif op == "drop":
            obj.pop(key, None)
            batch[i] = _dump(obj)
        else:
            batch[i] = key.encode()
    a = fast.decode(batch)
    b = slow.decode(batch)
    _accounted(a, len(batch))
    _assert_same(a, b)
    _check_record_json(a)
    _check_record_json(b)
