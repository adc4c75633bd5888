"""gateway.realtime.core.MicroBatchScorer: one micro-batch through decode, validation,
scoring and result/dead-letter building, without a broker. The pipeline is the bundled
example's (in-process ONNX fraud model); a model that is away is a KServe endpoint on a
closed port, or a tripped breaker."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from gateway.assembly import build_pipeline
from gateway.config import GatewayConfig, KServeModelConfig, ModelConfig, Policy, embedded_defaults
from gateway.outputs import outputs_from_contract
from gateway.pipeline import Pipeline, fixed_columns
from gateway.realtime.core import DeadLetter, MicroBatchScorer, Outcome, Result
from gateway.resilience.breaker import BreakerConfig, CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from gateway.resilience.retry import RetryPolicy
from gateway.state import KillSwitchWatcher, StateStore
from schemas.contract import Contract, load_contract, parse_contract
from schemas.errors import ConfigError, InfrastructureError
from schemas.examples import contract_path, generate_card_file
from schemas.jsonl import lines
from schemas.messages import FAST_JSON_MIN_MESSAGES
from schemas.records import read_records
from tests.model_servers import free_port
from tests.realtime_data import CrashesOnAmounts, json_amount

DETAILS = 320
RECORD = 120
CP = "cp037"
CONTRACT_HEADERS = {"lgw-contract": "card_txn", "lgw-contract-version": "1"}


# --------------------------------------------------------------------------- data and pipelines
@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(contract_path())


@pytest.fixture(scope="module")
def card_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("realtime") / "CARDTXN.DAT"
    generate_card_file(path, records=DETAILS, seed=5)
    return path


@pytest.fixture(scope="module")
def file_table(contract: Contract, card_file: Path) -> pa.Table:
    return pa.concat_tables([dc.table for dc in contract.decode_file(card_file)]).combine_chunks()


@pytest.fixture(scope="module")
def records(contract: Contract, card_file: Path) -> list[bytes]:
    matrix = np.concatenate([c.matrix for c in read_records(card_file, contract.spec.framing, 10_000)])
    return [bytes(row) for row in matrix[1:-1]]


@pytest.fixture(scope="module")
def json_records(file_table: pa.Table) -> list[bytes]:
    return [s.encode() for s in lines(file_table).to_pylist()]


@pytest.fixture(scope="module")
def model_pipeline(contract: Contract) -> Pipeline:
    return build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud")


def _ids(n: int, prefix: str = "card-txn-0-") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _headers(item: Result | DeadLetter) -> dict[str, str]:
    names = [k for k, _ in item.headers]
    assert len(names) == len(set(names)), names  # no header twice
    return {k: v.decode() for k, v in item.headers}


def _check_counts(outcome: Outcome, n: int) -> None:
    assert not outcome.paused
    assert outcome.handled == n
    indexes = [r.index for r in outcome.results] + [d.index for d in outcome.dead_letters]
    assert sorted(indexes) == list(range(n))


def _same(got: Any, expected: Any) -> bool:
    """A value of a result body against the input's: numbers compare as numbers (a decimal
    may be written as a JSON number or a numeric string)."""
    if expected is None or isinstance(expected, str | bool):
        return bool(got == expected) and type(got) is type(expected)
    return not isinstance(got, bool) and Decimal(str(got)) == Decimal(str(expected))


# --------------------------------------------------------------------------- JSON payloads
@pytest.mark.parametrize("n", [40, FAST_JSON_MIN_MESSAGES + 30])  # the model's path, the column-wise path
async def test_json_results_carry_id_outputs_provenance_and_input(model_pipeline: Pipeline,
                                                                   json_records: list[bytes], n: int) -> None:
    scorer = MicroBatchScorer(model_pipeline, "json")
    assert scorer.result_format == "json"
    payloads = json_records[:n]
    ids = _ids(n)
    ids[1] = 'quote " and backslash \\ inside'
    ids[2] = "tab\tnewline\ncontrol\x01 unicode \u00e9\u2028"
    ids[3] = "\\"
    outcome = await scorer.process(payloads, ids)
    _check_counts(outcome, n)
    assert outcome.dead_letters == []
    assert [r.index for r in outcome.results] == list(range(n))
    version = model_pipeline.model_version
    assert version is not None
    for result in outcome.results:
        body = json.loads(result.value)
        assert body["id"] == ids[result.index]
        assert 0.0 <= body["fraud_score"] <= 1.0
        assert (body["scored_by"], body["model_name"], body["model_version"]) == ("model", "fraud", version)
        assert (body["contract"], body["contract_version"]) == ("card_txn", 1)
        assert body["rule_id"] is None and body["reason"] is None
        sent = json.loads(model_pipeline.pii.redact_json(payloads[result.index]))  # the card number masked
        assert sent["TXN_PAN"][6:12] == "******"
        for key, value in sent.items():
            assert _same(body[key], value), (key, body[key], value)
        assert set(body) == {"id", "fraud_score", "scored_by", "model_name", "model_version", "contract",
                             "contract_version", "rule_id", "reason", *sent}
        assert _headers(result) == {"lgw-id": ids[result.index], "lgw-scored-by": "model", "lgw-model": "fraud",
                                    "lgw-model-version": version, **CONTRACT_HEADERS}



async def test_for_a_table_sink_the_scorer_renders_no_payloads_and_keeps_the_scored_rows(
        model_pipeline: Pipeline, json_records: list[bytes]) -> None:
    payloads = json_records[:30]
    rendered = await MicroBatchScorer(model_pipeline, "json").process(payloads, _ids(30))
    bare = await MicroBatchScorer(model_pipeline, "json", render=False).process(payloads, _ids(30))
    assert [r.index for r in bare.results] == [r.index for r in rendered.results] == list(range(30))
    assert all(r.value == b"" and r.headers == [] for r in bare.results)
    assert bare.table is not None and rendered.table is not None
    assert bare.table.equals(rendered.table) and list(bare.rows) == list(rendered.rows)

async def test_json_result_keeps_coerced_and_spaced_messages_valid(model_pipeline: Pipeline,
                                                                   json_records: list[bytes]) -> None:
    """Whitespace around the object, a pretty-printed one, a number sent as a string."""
    obj = json.loads(json_records[0])
    payloads = [b"  " + json_records[1] + b"\t ", json.dumps(obj, indent=2).encode(),
                json.dumps({**obj, "MCC": "4899"}).encode(), json_records[2]]
    outcome = await MicroBatchScorer(model_pipeline, "json").process(payloads, _ids(4))
    _check_counts(outcome, 4)
    bodies = {r.index: json.loads(r.value) for r in outcome.results}
    assert len(bodies) == 4
    assert bodies[0]["TXN_ID"] == json.loads(json_records[1])["TXN_ID"]
    assert bodies[1]["TXN_ID"] == obj["TXN_ID"]
    assert bodies[2]["MCC"] == 4899


async def test_json_dead_letters(model_pipeline: Pipeline, json_records: list[bytes]) -> None:
    obj = json.loads(json_records[0])
    payloads = [
        json_records[0],
        b"{broken",  # 1: decode
        json.dumps({**obj, "CHANNEL": "X"}).encode(),  # 2: allowed values
        json.dumps({**obj, "TXN_PAN": "4532X10001460201"}).encode(),  # 3: pii field
        json.dumps({k: v for k, v in obj.items() if k != "COUNTRY"}).encode(),  # 4: missing
        b"",  # 5: empty
        json_records[1],
    ]
    ids = _ids(len(payloads), "t-3-")
    scorer = MicroBatchScorer(model_pipeline, "json")
    outcome = await scorer.process(payloads, ids)
    _check_counts(outcome, len(payloads))
    assert [r.index for r in outcome.results] == [0, 6]
    dead = {d.index: d for d in outcome.dead_letters}
    assert sorted(dead) == [1, 2, 3, 4, 5]
    for i, d in dead.items():
        h = _headers(d)
        assert h["lgw-source"] == ids[i]
        assert {k: h[k] for k in CONTRACT_HEADERS} == CONTRACT_HEADERS
        assert "lgw-field-offset" not in h and "lgw-field-raw" not in h  # JSON: no byte offsets
        assert d.reasons and all(r.index == i for r in d.reasons)

    for i in (1, 5):
        h = _headers(dead[i])
        assert h["lgw-error"] == "decode" and "lgw-field" not in h
        assert h["lgw-reason"].startswith("Invalid JSON")

    h = _headers(dead[2])
    assert (h["lgw-error"], h["lgw-field"]) == ("validation", "CHANNEL")
    assert h["lgw-reason"].startswith("CHANNEL: ") and "allowed values" in h["lgw-reason"]

    h = _headers(dead[3])
    assert (h["lgw-error"], h["lgw-field"]) == ("validation", "TXN_PAN")
    assert "4532X10001460201" not in h["lgw-reason"] and "withheld" in h["lgw-reason"]

    h = _headers(dead[4])
    assert (h["lgw-error"], h["lgw-field"]) == ("validation", "COUNTRY")
    assert "required" in h["lgw-reason"].lower()

    assert scorer.stats.messages == 7 and scorer.stats.results == 2 and scorer.stats.dead_letters == 5


@pytest.mark.parametrize("n", [12, FAST_JSON_MIN_MESSAGES + 4])
async def test_json_hostile_messages_become_dead_letters(model_pipeline: Pipeline, json_records: list[bytes],
                                                         n: int) -> None:
    """Whatever the producer sends, each message gets its own answer: a message holding
    two objects is not two records, a blank one does not shift the others, a leading
    `null` does not take the process down."""
    a, b = json_records[0], json_records[1]
    hostile = {0: b"null", 2: a + b"," + b, 4: b"", 5: a + b" " + b, 7: a.replace(b'"TXN_ID"', b'"TXN\xff"'),
               9: b"   "}
    payloads = list(json_records[:n])
    for i, text in hostile.items():
        payloads[i] = text
    ids = _ids(n, "h-")
    outcome = await MicroBatchScorer(model_pipeline, "json").process(payloads, ids)
    _check_counts(outcome, n)
    dead = {d.index: _headers(d) for d in outcome.dead_letters}
    assert sorted(dead) == sorted(hostile)
    assert all(h["lgw-error"] == "decode" for h in dead.values())
    for result in outcome.results:
        body = json.loads(result.value)
        assert body["id"] == ids[result.index]
        assert body["TXN_ID"] == json.loads(json_records[result.index])["TXN_ID"]


async def test_json_message_with_two_objects_is_one_dead_letter(model_pipeline: Pipeline,
                                                                 json_records: list[bytes]) -> None:
    """'{..},{..}' joined into the model's batch array reads as two records: it must not."""
    payloads = [json_records[0], json_records[1] + b"," + json_records[2], json_records[3]]
    outcome = await MicroBatchScorer(model_pipeline, "json").process(payloads, ["a", "b", "c"])
    _check_counts(outcome, 3)
    assert [d.index for d in outcome.dead_letters] == [1]
    assert [json.loads(r.value)["id"] for r in outcome.results] == ["a", "c"]


async def test_json_payload_with_fixed_results_is_a_config_error(model_pipeline: Pipeline) -> None:
    with pytest.raises(ConfigError, match="payload copybook"):
        MicroBatchScorer(model_pipeline, "json", "fixed")


async def test_all_rejected_batch(model_pipeline: Pipeline) -> None:
    scorer = MicroBatchScorer(model_pipeline, "json")
    outcome = await scorer.process([b"{", b"[]", b"null"], ["a", "b", "c"])
    _check_counts(outcome, 3)
    assert outcome.results == [] and len(outcome.dead_letters) == 3


# --------------------------------------------------------------------------- copybook payloads
def _set(record: bytes, offset: int, value: bytes) -> bytes:
    return record[:offset] + value + record[offset + len(value):]


async def test_copybook_default_fixed_results(model_pipeline: Pipeline, records: list[bytes]) -> None:
    scorer = MicroBatchScorer(model_pipeline, "copybook")
    assert scorer.result_format == "fixed"
    columns = fixed_columns(model_pipeline)
    width = RECORD + sum(columns.values())
    payloads = records[:50]
    ids = _ids(50)
    outcome = await scorer.process(payloads, ids)
    _check_counts(outcome, 50)
    version = model_pipeline.model_version
    assert version is not None
    for result in outcome.results:
        assert len(result.value) == width
        # the input record, as it came but for its card number (masked in place)
        assert result.value[:RECORD] == model_pipeline.pii.redact_message(payloads[result.index], "copybook")
        assert result.value[:RECORD] != payloads[result.index]
        tail = result.value[RECORD:].decode(CP)
        fields, at = {}, 0
        for name, size in columns.items():
            fields[name] = tail[at:at + size].strip()
            at += size
        assert 0.0 <= float(fields["fraud_score"]) <= 1.0
        assert fields["scored_by"] == "model" and fields["model_version"] == version
        assert fields["rule_id"] == "" and fields["reason"] == ""
        assert _headers(result) == {"lgw-id": ids[result.index], "lgw-scored-by": "model", "lgw-model": "fraud",
                                    "lgw-model-version": version, **CONTRACT_HEADERS}


async def test_copybook_dead_letters_locate_the_bad_bytes(model_pipeline: Pipeline, records: list[bytes]) -> None:
    payloads = list(records[:8])
    payloads[1] = _set(payloads[1], 74, b"\x00" * 6)  # TXN-AMOUNT COMP-3 without a sign nibble
    payloads[3] = _set(payloads[3], 13, "4532X100014602AB".encode(CP))  # TXN-PAN (pii)
    payloads[4] = payloads[4][:100]
    payloads[6] = _set(payloads[6], 99, "Z".encode(CP))  # CHANNEL
    ids = _ids(8, "cb-0-")
    scorer = MicroBatchScorer(model_pipeline, "copybook")
    outcome = await scorer.process(payloads, ids)
    _check_counts(outcome, 8)
    assert [r.index for r in outcome.results] == [0, 2, 5, 7]
    dead = {d.index: _headers(d) for d in outcome.dead_letters}

    assert dead[1]["lgw-error"] == "decode"
    assert dead[1]["lgw-field"] == "CARD_TXN.TXN_AMOUNT"
    assert dead[1]["lgw-field-offset"] == "74" and dead[1]["lgw-field-raw"] == "00" * 6
    assert dead[1]["lgw-source"] == "cb-0-1"

    assert (dead[3]["lgw-error"], dead[3]["lgw-field"], dead[3]["lgw-field-offset"]) == (
        "validation", "CARD_TXN.TXN_PAN", "13")
    assert "lgw-field-raw" not in dead[3]  # pii: its bytes stay out of the headers
    assert "4532X100014602AB" not in dead[3]["lgw-reason"] and "withheld" in dead[3]["lgw-reason"]

    assert dead[4]["lgw-error"] == "decode" and "lgw-field" not in dead[4]
    assert "100 bytes" in dead[4]["lgw-reason"] and "120" in dead[4]["lgw-reason"]

    assert (dead[6]["lgw-error"], dead[6]["lgw-field"], dead[6]["lgw-field-offset"]) == (
        "validation", "CARD_TXN.CHANNEL", "99")
    assert dead[6]["lgw-field-raw"] == "Z".encode(CP).hex().upper()
    for i, h in dead.items():
        assert h["lgw-source"] == ids[i]
        assert {k: h[k] for k in CONTRACT_HEADERS} == CONTRACT_HEADERS


NOTES_CONTRACT = """\
contract: notes
version: 1
record:
  format: fixed_width
  fields:
    - {name: NOTE, pic: X(200)}
    - {name: CODE, pic: X(2)}
fields:
  NOTE: {pattern: "^[A-Z ]*$"}
  CODE: {pattern: "^[A-Z]{2}$"}
model:
  features: {code_is_ab: "CODE == 'AB'"}
  outputs:
    score: {type: float}
fallback:
  - then: {score: 0.5, reason: DEFAULT}
"""


async def test_a_dead_letter_quotes_at_most_64_bytes_of_the_field_like_a_reject() -> None:
    """A 200-byte field that fails validation: lgw-field-raw holds its first 64 bytes and
    lgw-field-raw-length the full count (a 16 MB field must not make a 32 MB header); a
    short field's header is whole, without a length."""
    pipeline = build_pipeline("notes", parse_contract(NOTES_CONTRACT, source="notes"), embedded_defaults(),
                              model_name=None)
    note = "lower case note".ljust(200).encode(CP)
    payloads = [note + "AB".encode(CP), "A NOTE".ljust(200).encode(CP) + "a1".encode(CP)]
    outcome = await MicroBatchScorer(pipeline, "copybook").process(payloads, _ids(2, "notes-0-"))
    _check_counts(outcome, 2)
    dead = {d.index: _headers(d) for d in outcome.dead_letters}
    assert dead[0]["lgw-field"] == "NOTE" and dead[0]["lgw-field-offset"] == "0"
    assert dead[0]["lgw-field-raw"] == note[:64].hex().upper()
    assert dead[0]["lgw-field-raw-length"] == "200"
    (letter,) = [d for d in outcome.dead_letters if d.index == 0]
    assert letter.reasons[0].to_json() == {"kind": "validation", "reason": letter.reasons[0].reason, "field": "NOTE",
                                           "offset": 0, "length": 200, "raw": note[:64].hex().upper(),
                                           "raw_truncated": True, "raw_length": 200}
    assert dead[1]["lgw-field"] == "CODE" and dead[1]["lgw-field-raw"] == "a1".encode(CP).hex().upper()
    assert "lgw-field-raw-length" not in dead[1]


async def test_copybook_json_results(model_pipeline: Pipeline, records: list[bytes], file_table: pa.Table) -> None:
    scorer = MicroBatchScorer(model_pipeline, "copybook", "json")
    payloads = list(records[:20])
    payloads[5] = payloads[5][:-1]
    ids = _ids(20)
    ids[0] = 'a"b\\c'
    outcome = await scorer.process(payloads, ids)
    _check_counts(outcome, 20)
    assert [d.index for d in outcome.dead_letters] == [5]
    rows = model_pipeline.pii.apply(file_table.slice(0, 20)).to_pylist()  # as they may leave: pii masked
    for result in outcome.results:
        body = json.loads(result.value, parse_float=Decimal)
        assert body["id"] == ids[result.index]
        assert body["scored_by"] == "model" and 0 <= body["fraud_score"] <= 1
        for key, value in rows[result.index].items():
            assert _same(body[key], value), (key, body[key], value)
        assert _headers(result)["lgw-id"] == ids[result.index]


# --------------------------------------------------------------------------- fallback, pause
@pytest.mark.parametrize("how", ["no_model", "force_fallback"])
async def test_fallback_pipeline_results(contract: Contract, json_records: list[bytes], how: str) -> None:
    kw: dict[str, Any] = {"model_name": None} if how == "no_model" else {"model_name": "fraud",
                                                                            "force_fallback": True}
    pipeline = build_pipeline("card_txn", contract, embedded_defaults(), **kw)
    scorer = MicroBatchScorer(pipeline, "json")
    outcome = await scorer.process(json_records[:30], _ids(30))
    _check_counts(outcome, 30)
    for result in outcome.results:
        body = json.loads(result.value)
        h = _headers(result)
        assert body["scored_by"] == "fallback" and h["lgw-scored-by"] == "fallback"
        assert body["model_name"] is None and body["model_version"] is None
        assert body["rule_id"] and h["lgw-rule-id"] == body["rule_id"]
        assert body["reason"] in {"LARGE_FOREIGN", "LARGE_ECOM", "DEFAULT"}
        assert body["fraud_score"] in (0.9, 0.6, 0.05)
        assert "lgw-model" not in h and "lgw-model-version" not in h
        assert {k: h[k] for k in CONTRACT_HEADERS} == CONTRACT_HEADERS
    assert scorer.stats.scored_by == {"fallback": 30}


def _unreachable_model_config() -> GatewayConfig:
    """A KServe endpoint on a port nobody listens on; one attempt, no retries."""
    endpoint = KServeModelConfig(backend="kserve", url=f"http://127.0.0.1:{free_port()}", model_name="fraud",
                                 version="7")
    return GatewayConfig(models={"fraud": ModelConfig(endpoint=endpoint, timeout_s=2.0,
                                                      retry=RetryPolicy(max_attempts=1))})


async def test_pause_policy_with_the_model_away(contract: Contract, json_records: list[bytes]) -> None:
    pipeline = build_pipeline("card_txn", contract, _unreachable_model_config(), model_name="fraud",
                              policy=Policy.PAUSE)
    scorer = MicroBatchScorer(pipeline, "json")
    outcome = await scorer.process(json_records[:10], _ids(10))
    assert outcome.paused and outcome.results == [] and outcome.dead_letters == []
    assert scorer.stats.paused_batches == 1 and scorer.stats.messages == 0


async def test_fallback_policy_with_the_model_away(contract: Contract, json_records: list[bytes]) -> None:
    pipeline = build_pipeline("card_txn", contract, _unreachable_model_config(), model_name="fraud",
                              policy=Policy.FALLBACK)
    scorer = MicroBatchScorer(pipeline, "json")
    outcome = await scorer.process([*json_records[:10], b"{"], _ids(11))
    _check_counts(outcome, 11)
    assert len(outcome.dead_letters) == 1  # a data error is still a dead letter
    assert {_headers(r)["lgw-scored-by"] for r in outcome.results} == {"fallback"}
    assert all("lgw-rule-id" in _headers(r) for r in outcome.results)


async def test_pause_policy_with_the_breaker_open(contract: Contract, records: list[bytes]) -> None:
    pipeline = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud", policy=Policy.PAUSE)
    scorer = MicroBatchScorer(pipeline, "copybook")
    first = await scorer.process(records[:5], _ids(5))
    _check_counts(first, 5)
    assert pipeline.model is not None
    pipeline.model.breaker.force_open()
    paused = await scorer.process(records[5:10], _ids(5))
    assert paused.paused and paused.handled == 0
    pipeline.model.breaker.reset()
    again = await scorer.process(records[5:10], _ids(5))
    _check_counts(again, 5)
    assert scorer.stats.paused_batches == 1
    assert scorer.stats.messages == 10 and scorer.stats.results == 10


# --------------------------------------------------------------------------- stats
async def test_stats_add_up(model_pipeline: Pipeline, json_records: list[bytes]) -> None:
    scorer = MicroBatchScorer(model_pipeline, "json")
    sent = 0
    for k, size in enumerate([1, 17, FAST_JSON_MIN_MESSAGES, 3]):
        payloads = list(json_records[:size])
        if size > 2:
            payloads[1] = b"{}"
            payloads[-1] = b"not json"
        outcome = await scorer.process(payloads, _ids(size, f"s{k}-"))
        _check_counts(outcome, size)
        sent += size
    s = scorer.stats
    assert s.messages == sent
    assert s.results + s.dead_letters == s.messages
    assert s.dead_letters == 6
    assert sum(s.scored_by.values()) == s.results and set(s.scored_by) == {"model"}
    assert s.paused_batches == 0
    empty = await scorer.process([], [])
    assert empty.handled == 0 and not empty.paused and scorer.stats.messages == sent


# --------------------------------------------------------------------------- a message that makes the pipeline raise
def crashing_pipeline(contract: Contract, json_records: list[bytes], crash_on: list[int]) -> Pipeline:
    """A pipeline whose model raises on the messages `crash_on` of `json_records`."""
    lenient = CircuitBreaker("fraud", BreakerConfig(minimum_number_of_calls=100))  # the bug is no outage
    amounts = {json_amount(json_records[i]) for i in crash_on}
    model = GuardedModel(CrashesOnAmounts(amounts), breaker=lenient, retry=RetryPolicy(max_attempts=1),
                         timeout_s=5.0, max_concurrency=1, outputs=outputs_from_contract(contract))
    pipeline = Pipeline(contract, name="card_txn", model=model)
    features = pipeline.features.matrix(MicroBatchScorer(pipeline, "json").codec.decode(json_records[:40]).table)
    assert np.flatnonzero(np.isin(features[:, 0], list(amounts))).tolist() == crash_on, "amounts are unique"
    return pipeline


async def test_a_message_that_makes_the_pipeline_raise_is_dead_lettered_alone(
        contract: Contract, json_records: list[bytes]) -> None:
    pipeline = crashing_pipeline(contract, json_records, [17])
    scorer = MicroBatchScorer(pipeline, "json")
    outcome = await scorer.process(json_records[:40], _ids(40))
    _check_counts(outcome, 40)
    (dead,) = outcome.dead_letters
    assert dead.index == 17
    h = _headers(dead)
    assert h["lgw-error"] == "crash" and h["lgw-source"] == "card-txn-0-17"
    assert h["lgw-reason"] == ("record crashed the pipeline: RuntimeError: "
                               "index 3 is out of bounds for axis 0 with size 3")
    assert [r.index for r in outcome.results] == [i for i in range(40) if i != 17]
    assert {_headers(r)["lgw-scored-by"] for r in outcome.results} == {"model"}
    assert {_headers(r)["lgw-model-version"] for r in outcome.results} == {"1"}
    assert scorer.stats.messages == 40 and scorer.stats.dead_letters == 1 and scorer.stats.results == 39
    assert scorer.stats.scored_by == {"model": 39}


async def test_a_pipeline_that_raises_for_every_message_is_broken_not_poisoned(
        contract: Contract, json_records: list[bytes]) -> None:
    pipeline = crashing_pipeline(contract, json_records, list(range(8)))
    scorer = MicroBatchScorer(pipeline, "json")
    with pytest.raises(RuntimeError, match="out of bounds"):  # the transport retries the batch
        await scorer.process(json_records[:8], _ids(8))
    assert scorer.stats.messages == scorer.stats.dead_letters == 0


async def test_an_unreachable_state_store_is_retried_not_dead_lettered(
        contract: Contract, json_records: list[bytes]) -> None:
    store = StateStore(f"postgresql+psycopg://lgw:secret@127.0.0.1:{free_port()}/lgw")
    pipeline = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud")
    pipeline.kill_switch = KillSwitchWatcher(store, "card_txn")
    scorer = MicroBatchScorer(pipeline, "json")
    with pytest.raises(InfrastructureError, match="state store"):
        await scorer.process(json_records[:1], _ids(1))
    assert scorer.stats.dead_letters == 0


async def test_a_crash_reason_withholds_the_records_pii_values(model_pipeline: Pipeline, contract: Contract,
                                                               json_records: list[bytes]) -> None:
    pan = json.loads(json_records[5])["TXN_PAN"]
    pipeline = build_pipeline("card_txn", contract, embedded_defaults(), model_name="fraud")
    score = pipeline.score

    async def chokes_on_the_pan(table: pa.Table) -> Any:
        if pan in table.column("TXN_PAN").to_pylist():
            raise ValueError(f"no issuer for card {pan}")
        return await score(table)

    pipeline.score = chokes_on_the_pan  # type: ignore[method-assign]
    outcome = await MicroBatchScorer(pipeline, "json").process(json_records[:10], _ids(10))
    _check_counts(outcome, 10)
    (dead,) = outcome.dead_letters
    assert dead.index == 5
    reason = _headers(dead)["lgw-reason"]
    assert reason == "record crashed the pipeline: ValueError: no issuer for card <pii withheld>"
    assert pan not in reason
