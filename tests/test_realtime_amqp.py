"""Real-time request/reply over a real RabbitMQ (AMQP 0-9-1).

The gateway runs in process (`run_until` as an asyncio task, stopped by an Event); the
requester is a plain aio-pika client, not FastStream: an exclusive reply queue, requests
published to the default exchange with `reply_to` and `correlation_id`. Every test uses
queues and a dead-letter exchange of its own (uuid names) and deletes them afterwards.

RabbitMQ: `LGW_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/). One that cannot
be reached skips these tests locally and fails them under CI (CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from gateway.config import GatewayConfig
from gateway.governance.pii import policy_for
from gateway.realtime.core import MicroBatchScorer, Outcome
from schemas.contract import Contract, load_contract
from schemas.examples import contract_path, model_info
from tests.helpers import unavailable
from tests.model_servers import GarbageModelServer, ModelServerProcess
from tests.realtime_data import (
    RECORD,
    Gateway,
    appended_fields,
    copybook_records,
    crash_on,
    json_amount,
    json_records,
    until,
    with_field,
)

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("LGW_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REPLY_TIMEOUT_S = 30.0
# what leaves of a card record, pii masked (the contract's policy)
MASKED = policy_for(load_contract(contract_path("card_txn"))).redact_message


# --------------------------------------------------------------------------- broker fixtures
@pytest.fixture
async def amqp() -> AsyncIterator[AbstractConnection]:
    """The test's own connection to RabbitMQ (the requester and the checks)."""
    try:
        conn = await asyncio.wait_for(aio_pika.connect(AMQP_URL), timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        unavailable(f"RabbitMQ not reachable at {AMQP_URL}: {exc!r}")
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class Names:
    """Per-test AMQP names; `queue(suffix)` hands out request queue names to clean up."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    queues: list[str] = field(default_factory=list)

    @property
    def dlx(self) -> str:
        return f"lgw.test.{self.tag}.dlx"

    def queue(self, suffix: str = "req") -> str:
        name = f"lgw.test.{self.tag}.{suffix}"
        self.queues += [name, f"{name}.dlq"]
        return name


@pytest.fixture
async def names(amqp: AbstractConnection) -> AsyncIterator[Names]:
    n = Names()
    yield n
    channel = await amqp.channel()  # a fresh one: the test's channel may have been closed by an error
    for q in n.queues:
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.queue_delete(q, if_unused=False, if_empty=False)
    with contextlib.suppress(aio_pika.exceptions.AMQPError):
        await channel.exchange_delete(n.dlx)
    await channel.close()


@pytest.fixture
async def channel(amqp: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    ch = await amqp.channel()
    yield ch
    if not ch.is_closed:
        await ch.close()


async def ready_count(amqp: AbstractConnection, queue: str) -> int:
    """Messages ready in `queue` (not counting unacknowledged ones), by a passive declare."""
    ch = await amqp.channel()
    try:
        q = await ch.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)
    finally:
        await ch.close()


async def drain(channel: AbstractChannel, queue: str) -> list[AbstractIncomingMessage]:
    q = await channel.declare_queue(queue, passive=True)
    out: list[AbstractIncomingMessage] = []
    while (m := await q.get(no_ack=True, fail=False)) is not None:
        out.append(m)
    return out


# --------------------------------------------------------------------------- the requester
@dataclass
class Reply:
    body: bytes
    headers: dict[str, Any]
    content_type: str | None

    @property
    def status(self) -> Any:
        return self.headers.get("lgw-status")

    @property
    def scored_by(self) -> Any:
        return self.headers.get("lgw-scored-by")


class Requester:
    """A plain AMQP client: requests with reply_to + correlation_id, replies gathered by id."""

    def __init__(self, channel: AbstractChannel, queue: str) -> None:
        self.channel = channel
        self.queue = queue
        self.replies: dict[str, list[Reply]] = defaultdict(list)
        self.reply_queue: AbstractQueue | None = None
        self.sent: list[str] = []
        self._arrived = asyncio.Event()

    async def open(self) -> Requester:
        # the request queue as the gateway declares it: requests sent before it is up wait there
        await self.channel.declare_queue(self.queue, durable=True)
        self.reply_queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await self.reply_queue.consume(self._on_reply, no_ack=True)
        return self

    async def _on_reply(self, m: AbstractIncomingMessage) -> None:
        assert m.correlation_id is not None, "a reply without a correlation id"
        self.replies[m.correlation_id].append(Reply(m.body, dict(m.headers or {}), m.content_type))
        self._arrived.set()

    async def send(self, body: bytes, cid: str | None = None, *, reply: bool = True) -> str:
        """Publishes a request; its message_id is `msg-<correlation id>` (aiormq would make one up)."""
        cid = cid or uuid.uuid4().hex
        assert self.reply_queue is not None
        message = aio_pika.Message(body, correlation_id=cid, message_id=f"msg-{cid}",
                                   reply_to=self.reply_queue.name if reply else None,
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.channel.default_exchange.publish(message, routing_key=self.queue)
        if reply:
            self.sent.append(cid)
        return cid

    async def send_all(self, bodies: Iterable[bytes], prefix: str) -> list[str]:
        return [await self.send(b, f"{prefix}-{i}") for i, b in enumerate(bodies)]

    def answered(self, cids: Iterable[str]) -> set[str]:
        return {c for c in cids if self.replies.get(c)}

    async def wait_for(self, cids: Sequence[str], timeout: float = REPLY_TIMEOUT_S,
                       at_least: int | None = None) -> None:
        """Until every one of `cids` (or `at_least` of them) has a reply."""
        want = len(cids) if at_least is None else at_least
        deadline = time.monotonic() + timeout
        while len(self.answered(cids)) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(cids) - self.answered(cids))
                pytest.fail(f"{len(missing)} of {len(cids)} requests without a reply after {timeout:g}s "
                            f"(wanted {want}); first missing: {missing[:5]}", pytrace=False)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=min(left, 0.5))

    def only_reply(self, cid: str) -> Reply:
        got = self.replies.get(cid, [])
        assert len(got) == 1, f"request {cid}: {len(got)} replies, expected exactly one"
        return got[0]


@pytest.fixture
async def requester_factory(channel: AbstractChannel) -> Callable[[str], Awaitable[Requester]]:
    async def make(queue: str) -> Requester:
        return await Requester(channel, queue).open()

    return make


def onnx_model() -> dict[str, Any]:
    info = model_info("fraud")
    return {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}


def gateway_config(tmp_path: Path, names: Names, pipelines: dict[str, dict[str, Any]], *,
                   model: dict[str, Any] | None = None) -> GatewayConfig:
    """Real-time pipelines of the card-transaction contract scored by `model` (default:
    the bundled ONNX model in process); `pipelines`: name -> AMQP source settings."""
    return GatewayConfig.model_validate({
        "models": {"fraud": model or onnx_model()},
        "pipelines": {name: {"contract": str(contract_path("card_txn")), "model": "fraud",
                             "source": {"type": "amqp", "dead_letter_exchange": names.dlx, **src}}
                      for name, src in pipelines.items()},
        "amqp": {"url": AMQP_URL, "graceful_timeout_s": 10},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"},
        "base_dir": tmp_path,
    })


# --------------------------------------------------------------------------- records
def slow_scorer(monkeypatch: pytest.MonkeyPatch, *, delay_s: float = 0.0,
                gate: asyncio.Event | None = None) -> dict[str, int]:
    """Instruments MicroBatchScorer.process: counts the requests inside it (now and at most),
    and holds each one for `delay_s` or until `gate` opens."""
    seen = {"in_flight": 0, "max_in_flight": 0, "entered": 0}
    original = MicroBatchScorer.process

    async def process(self: MicroBatchScorer, payloads: Sequence[bytes], ids: Sequence[str]) -> Outcome:
        seen["entered"] += 1
        seen["in_flight"] += 1
        seen["max_in_flight"] = max(seen["max_in_flight"], seen["in_flight"])
        try:
            if gate is not None:
                await gate.wait()
            if delay_s:
                await asyncio.sleep(delay_s)
            return await original(self, payloads, ids)
        finally:
            seen["in_flight"] -= 1

    monkeypatch.setattr(MicroBatchScorer, "process", process)
    return seen


# --------------------------------------------------------------------------- 1. copybook round trip
async def test_copybook_request_reply_round_trip(amqp: AbstractConnection, names: Names, tmp_path: Path,
                                                 requester_factory: Callable[[str], Awaitable[Requester]],
                                                 serve: Callable[[GatewayConfig], Gateway],
                                                 appended: dict[str, int]) -> None:
    queue = names.queue()
    requester = await requester_factory(queue)
    gateway = serve(gateway_config(tmp_path, names, {"cards": {"queue": queue, "prefetch": 32}}))
    inputs = copybook_records(0, 200)
    cids = await requester.send_all(inputs, "card")
    await requester.wait_for(cids)
    await asyncio.sleep(0.2)  # a duplicate would arrive now
    stats = await gateway.stop()

    scores = []
    for cid, raw in zip(cids, inputs, strict=True):
        reply = requester.only_reply(cid)  # exactly one, with the request's correlation id
        assert reply.status == "scored"
        assert reply.body[:RECORD] == MASKED(raw, "copybook"), \
            "the reply starts with the request's 120 bytes, unchanged but for the card number (masked)"
        fields = appended_fields(reply.body, appended)
        score = float(fields["fraud_score"])
        assert 0.0 <= score <= 1.0
        scores.append(score)
        assert fields["scored_by"] == "model" and fields["model_version"] == "1"
        assert fields["rule_id"] == "" and fields["reason"] == ""
        h = reply.headers
        assert h["lgw-scored-by"] == "model" and h["lgw-model"] == "fraud" and h["lgw-model-version"] == "1"
        assert h["lgw-contract"] == "card_txn" and h["lgw-contract-version"] == "1"
        assert h["lgw-id"] == f"msg-{cid}"  # the request's message_id: the stable id for de-duplication
        assert "lgw-rule-id" not in h and "lgw-error" not in h
        assert reply.content_type == "application/octet-stream"
    assert len(set(scores)) > 10, "the model scored each record on its own"
    assert set(requester.replies) == set(cids)  # nothing answered that was not asked
    assert stats["cards"] == {"messages": 200, "results": 200, "dead_letters": 0, "scored_by": {"model": 200},
                              "paused_batches": 0}
    # every request acknowledged: nothing ready again after the gateway closed its channel
    assert await ready_count(amqp, queue) == 0
    assert await ready_count(amqp, f"{queue}.dlq") == 0


# --------------------------------------------------------------------------- 2. JSON payload
async def test_json_request_reply(amqp: AbstractConnection, names: Names, tmp_path: Path, contract: Contract,
                                  requester_factory: Callable[[str], Awaitable[Requester]],
                                  serve: Callable[[GatewayConfig], Gateway]) -> None:
    queue = names.queue("json")
    requester = await requester_factory(queue)
    gateway = serve(gateway_config(tmp_path, names, {"cards_json": {"queue": queue, "payload": "json"}}))
    inputs = json_records(contract, 0, 50)
    cids = await requester.send_all(inputs, "js")
    await requester.wait_for(cids)
    stats = await gateway.stop()

    for cid, raw in zip(cids, inputs, strict=True):
        reply = requester.only_reply(cid)
        assert reply.content_type == "application/json" and reply.status == "scored"
        body = json.loads(reply.body)
        request = json.loads(raw)
        assert body["id"] == f"msg-{cid}"
        assert body["scored_by"] == "model" and body["model_name"] == "fraud"
        assert isinstance(body["fraud_score"], float) and 0.0 <= body["fraud_score"] <= 1.0
        assert body["contract"] == "card_txn" and body["contract_version"] == 1
        for key in ("TXN_ID", "MCC", "COUNTRY", "CHANNEL"):
            assert body[key] == request[key]
        assert body["TXN_PAN"] == request["TXN_PAN"][:6] + "******" + request["TXN_PAN"][-4:]
        assert reply.headers["lgw-scored-by"] == "model" and reply.headers["lgw-contract"] == "card_txn"
    assert stats["cards_json"]["results"] == 50 and stats["cards_json"]["dead_letters"] == 0
    assert await ready_count(amqp, queue) == 0


# --------------------------------------------------------------------------- 3. malformed requests
async def test_malformed_requests_are_dead_lettered_and_answered(
        amqp: AbstractConnection, channel: AbstractChannel, names: Names, tmp_path: Path, contract: Contract,
        requester_factory: Callable[[str], Awaitable[Requester]],
        serve: Callable[[GatewayConfig], Gateway]) -> None:
    cards_q, json_q = names.queue("cards"), names.queue("json")
    cards = await requester_factory(cards_q)
    js = await requester_factory(json_q)
    gateway = serve(gateway_config(tmp_path, names, {"cards": {"queue": cards_q},
                                                     "cards_json": {"queue": json_q, "payload": "json"}}))
    good = copybook_records(0, 20)
    pan_field = next(f for f in contract.layout.elementary() if f.key == "TXN_PAN")  # PIC X(16) at 13
    bad = {
        "short": good[0][:119],
        "pan-letters": with_field(good[1], pan_field.offset, "4532ABCD02084125"),
    }
    good_cids = await cards.send_all(good[2:], "good")
    bad_cids = {name: await cards.send(body, f"bad-{name}") for name, body in bad.items()}
    no_reply = await cards.send(good[2], "no-reply-to", reply=False)
    good_json = json_records(contract, 100, 5)
    json_cids = await js.send_all(good_json, "goodjs")
    broken = b'{"TXN_ID": "TX0000000101", '
    broken_cid = await js.send(broken, "bad-json")
    await cards.wait_for([*good_cids, *bad_cids.values()])
    await js.wait_for([*json_cids, broken_cid])
    # the request without reply_to has no answer to wait for: wait for its dead letter
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while await ready_count(amqp, f"{cards_q}.dlq") < len(bad) + 1:
        assert time.monotonic() < deadline, "the request without reply_to was not dead-lettered"
        await asyncio.sleep(0.05)
    stats = await gateway.stop()

    # scored requests got a scored reply; rejected ones a rejection naming the reason
    for cid in [*good_cids, *json_cids]:
        assert requester_of(cid, cards, js).only_reply(cid).status == "scored"
    short = cards.only_reply(bad_cids["short"])
    assert short.status == "rejected" and short.content_type == "application/json"
    body = json.loads(short.body)
    assert body["status"] == "rejected" and body["error"] == "decode"
    assert "119 bytes" in body["reason"] and "120" in body["reason"]
    assert short.headers["lgw-error"] == "decode" and "lgw-scored-by" not in short.headers

    letters = cards.only_reply(bad_cids["pan-letters"])
    body = json.loads(letters.body)
    assert letters.status == "rejected" and body["error"] == "validation"
    pan_reject_field = body["field"]
    assert pan_reject_field == letters.headers["lgw-field"] and "TXN_PAN" in pan_reject_field
    assert "TXN_PAN" in body["reason"] and "pattern" in body["reason"]

    broken_reply = js.only_reply(broken_cid)
    body = json.loads(broken_reply.body)
    assert broken_reply.status == "rejected" and body["error"] == "decode" and body["reason"]

    # the dead-letter queues hold the original bytes with the reasons
    dead = {m.correlation_id: m for m in await drain(channel, f"{cards_q}.dlq")}
    assert set(dead) == {bad_cids["short"], bad_cids["pan-letters"], no_reply}
    m = dead[bad_cids["short"]]
    assert m.body == MASKED(bad["short"], "copybook")
    assert m.headers["lgw-error"] == "decode" and "119 bytes" in str(m.headers["lgw-reason"])
    assert m.headers["lgw-contract"] == "card_txn"
    m = dead[bad_cids["pan-letters"]]
    assert m.body == MASKED(bad["pan-letters"], "copybook")
    assert m.headers["lgw-error"] == "validation" and m.headers["lgw-field"] == pan_reject_field
    assert m.headers["lgw-reason"] and m.headers["lgw-source"] == f"msg-{bad_cids['pan-letters']}"
    assert m.headers["lgw-field-offset"] == str(pan_field.offset)
    m = dead[no_reply]
    # the result nobody asked for: the request's bytes (card number masked), the scores appended
    assert m.body[:RECORD] == MASKED(good[2], "copybook") and m.headers["lgw-error"] == "no_reply_to"
    assert "reply_to" in str(m.headers["lgw-reason"])
    json_dead = await drain(channel, f"{json_q}.dlq")
    assert [d.correlation_id for d in json_dead] == [broken_cid] and json_dead[0].body == MASKED(broken, "json")
    assert json_dead[0].headers["lgw-error"] == "decode"

    # in = scored + rejected, per pipeline
    c, j = stats["cards"], stats["cards_json"]
    assert c["messages"] == len(good) - 2 + len(bad) + 1 == c["results"] + c["dead_letters"]
    assert c["dead_letters"] == len(bad)  # the request without reply_to was scored, then dead-lettered
    replies = sum(len(v) for v in cards.replies.values())
    assert replies == len(cards.sent) == len(good_cids) + len(bad_cids)
    assert j["messages"] == 6 and j["results"] == 5 and j["dead_letters"] == 1
    assert await ready_count(amqp, cards_q) == 0 and await ready_count(amqp, json_q) == 0


def requester_of(cid: str, *requesters: Requester) -> Requester:
    return next(r for r in requesters if cid in r.replies)


# --------------------------------------------------------------------------- 3b. poison requests
async def test_a_request_that_makes_the_pipeline_raise_is_dead_lettered_and_answered_not_requeued(
        amqp: AbstractConnection, channel: AbstractChannel, names: Names, tmp_path: Path, contract: Contract,
        requester_factory: Callable[[str], Awaitable[Requester]], serve: Callable[[GatewayConfig], Gateway],
        monkeypatch: pytest.MonkeyPatch) -> None:
    queue = names.queue("json")
    requester = await requester_factory(queue)
    inputs = json_records(contract, 0, 30)
    crash_on(monkeypatch, {json_amount(inputs[12])})
    gateway = serve(gateway_config(tmp_path, names, {"cards_json": {"queue": queue, "payload": "json"}}))
    cids = await requester.send_all(inputs, "js")
    await requester.wait_for(cids)
    await asyncio.sleep(0.3)  # a requeued request would be answered twice now
    stats = await gateway.stop()

    poison = cids[12]
    rejected = requester.only_reply(poison)
    body = json.loads(rejected.body)
    assert rejected.status == "rejected" and body["error"] == "crash"
    assert body["reason"] == ("record crashed the pipeline: RuntimeError: "
                              "index 3 is out of bounds for axis 0 with size 3")
    for cid in cids:
        if cid != poison:
            reply = requester.only_reply(cid)
            assert reply.status == "scored" and reply.scored_by == "model"
    (dead,) = await drain(channel, f"{queue}.dlq")
    assert dead.correlation_id == poison and dead.body == MASKED(inputs[12], "json")
    assert dead.headers["lgw-error"] == "crash" and dead.headers["lgw-source"] == f"msg-{poison}"
    assert stats["cards_json"] == {"messages": 30, "results": 29, "dead_letters": 1, "scored_by": {"model": 29},
                                   "paused_batches": 0}
    assert await ready_count(amqp, queue) == 0


async def test_a_model_answering_garbage_is_a_model_failure_requests_are_answered_by_the_rules(
        amqp: AbstractConnection, names: Names, tmp_path: Path, contract: Contract,
        requester_factory: Callable[[str], Awaitable[Requester]], serve: Callable[[GatewayConfig], Gateway],
        garbage_server: GarbageModelServer) -> None:
    garbage_server.set_mode("nan")
    queue = names.queue("json")
    requester = await requester_factory(queue)
    model = {"endpoint": {"backend": "kserve", "url": garbage_server.base_url, "model_name": "fraud"},
             "timeout_s": 5.0, "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
             "breaker": {"sliding_window_size": 10, "minimum_number_of_calls": 4, "wait_duration_in_open_s": 60}}
    gateway = serve(gateway_config(tmp_path, names, {"cards_json": {"queue": queue, "payload": "json"}},
                                   model=model))
    cids = await requester.send_all(json_records(contract, 0, 20), "js")
    await requester.wait_for(cids)
    await asyncio.sleep(0.3)
    stats = await gateway.stop()

    replies = [requester.only_reply(c) for c in cids]  # one each: nothing was requeued
    assert {(r.status, r.scored_by) for r in replies} == {("scored", "fallback")}
    assert stats["cards_json"] == {"messages": 20, "results": 20, "dead_letters": 0, "scored_by": {"fallback": 20},
                                   "paused_batches": 0}
    # the breaker opened after 4 failed calls (a few more were in flight together): without it
    # every request would have reached the server twice (two attempts)
    assert garbage_server.stats()["requests"] < len(cids)
    assert await ready_count(amqp, queue) == 0


# --------------------------------------------------------------------------- 4. ack after reply
async def test_stop_and_restart_loses_no_request(amqp: AbstractConnection, names: Names, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 requester_factory: Callable[[str], Awaitable[Requester]],
                                                 serve: Callable[[GatewayConfig], Gateway]) -> None:
    queue = names.queue()
    requester = await requester_factory(queue)
    seen = slow_scorer(monkeypatch, delay_s=0.02)  # ~8 requests in flight at any time
    cfg = gateway_config(tmp_path, names, {"cards": {"queue": queue, "prefetch": 8}})
    inputs = copybook_records(0, 300)
    cids = await requester.send_all(inputs, "r")
    first = serve(cfg)
    await requester.wait_for(cids, at_least=40)
    await until(lambda: seen["in_flight"] > 0, 5, "a request in flight", first)
    stats_1 = await first.stop()  # graceful: in-flight requests finish, the rest stay queued
    after_stop = len(requester.answered(cids))
    left = await ready_count(amqp, queue)
    assert after_stop < len(cids) and left > 0, "the gateway was stopped mid-stream"
    assert after_stop + left >= len(cids), "a request neither answered nor back in the queue"
    assert stats_1["cards"]["messages"] >= after_stop

    second = serve(cfg)
    await requester.wait_for(cids)
    await asyncio.sleep(0.2)
    stats_2 = await second.stop()

    for cid, raw in zip(cids, inputs, strict=True):
        got = requester.replies[cid]
        assert got, f"no reply to {cid}"
        assert all(r.body[:RECORD] == MASKED(raw, "copybook") and r.status == "scored" for r in got)
        # at-least-once: a duplicate is the same answer with the same stable id
        assert len({(r.body, r.headers["lgw-id"]) for r in got}) == 1
    handled = stats_1["cards"]["messages"] + stats_2["cards"]["messages"]
    assert handled >= len(cids) and stats_2["cards"]["messages"] > 0
    assert await ready_count(amqp, queue) == 0


# --------------------------------------------------------------------------- 5. model unavailable
@pytest.mark.slow
async def test_model_server_killed_mid_stream_then_back(amqp: AbstractConnection, names: Names, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        disposable_kserve_server: ModelServerProcess,
                                                        requester_factory: Callable[[str], Awaitable[Requester]],
                                                        serve: Callable[[GatewayConfig], Gateway],
                                                        appended: dict[str, int]) -> None:
    server = disposable_kserve_server
    queue = names.queue()
    requester = await requester_factory(queue)
    slow_scorer(monkeypatch, delay_s=0.01)  # paces the stream so that the kill lands in the middle of it
    # one probe in half-open: the first answer after the wait closes the breaker again
    model = {"endpoint": {"backend": "kserve", "url": server.base_url, "model_name": "fraud"},
             "timeout_s": 1.0, "max_concurrency": 4,
             "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.02},
             "breaker": {"sliding_window_size": 10, "minimum_number_of_calls": 4, "failure_rate_threshold": 50,
                         "wait_duration_in_open_s": 1.0, "permitted_calls_in_half_open": 1}}
    gateway = serve(gateway_config(tmp_path, names, {"cards": {"queue": queue, "prefetch": 8}}, model=model))
    counter = iter(range(1_000_000))

    async def send(count: int, prefix: str) -> list[str]:
        n = next(counter)  # distinct records and correlation ids for every round
        return await requester.send_all(copybook_records(n * 1000, count), f"{prefix}{n}")

    async def round_of(count: int, prefix: str) -> list[Reply]:
        cids = await send(count, prefix)
        await requester.wait_for(cids)
        return [requester.only_reply(c) for c in cids]

    before = await round_of(40, "up")
    assert {r.scored_by for r in before} == {"model"}

    # killed mid-stream, from inside the gateway once KILL_AT requests have started scoring:
    # what starts after that must be scored by the rules; the requests in flight at the
    # kill (prefetch bounds them) may go either way
    kill_at, entered, after_kill = 30, [0], set()
    paced = MicroBatchScorer.process

    async def kill_mid_stream(self: MicroBatchScorer, payloads: Sequence[bytes], ids: Sequence[str]) -> Outcome:
        entered[0] += 1
        if entered[0] == kill_at + 1:
            server.kill()
        if entered[0] > kill_at:
            after_kill.update(payloads)
        return await paced(self, payloads, ids)

    monkeypatch.setattr(MicroBatchScorer, "process", kill_mid_stream)
    bodies = copybook_records(next(counter) * 1000, 120)
    stream = await requester.send_all(bodies, "stream")
    await requester.wait_for(stream)
    during = [requester.only_reply(c) for c in stream]
    assert {r.scored_by for r in during} <= {"model", "fallback"}
    late = [r.scored_by for b, r in zip(bodies, during, strict=True) if b in after_kill]
    assert len(late) == len(stream) - kill_at and set(late) == {"fallback"}
    assert [r.scored_by for r in during[:kill_at - 8]] == ["model"] * (kill_at - 8)  # prefetch 8
    answered_at_kill = sum(r.scored_by == "model" for r in during)
    for r in during:
        if r.scored_by == "fallback":  # scored by the rules, the rule named in the record and the headers
            fields = appended_fields(r.body, appended)
            assert fields["scored_by"] == "fallback" and fields["reason"] and fields["rule_id"]
            assert r.headers["lgw-rule-id"] == fields["rule_id"] and "lgw-model-version" not in r.headers
    gateway.check_alive()

    # the server restarts (in a thread: the gateway keeps answering meanwhile, by the rules)
    while_down, down_for_sure = await server.rounds_while_restarting(lambda: round_of(5, "restarting"), 0.05)
    assert {r.scored_by for r in down_for_sure} == {"fallback"}
    assert {r.scored_by for r in while_down} <= {"fallback", "model"}
    # the breaker half-opens after its wait; the probe succeeds and it closes again
    deadline = time.monotonic() + 20
    probes: list[Reply] = []
    while not probes or probes[-1].scored_by != "model":
        assert time.monotonic() < deadline, "the model never scored again after the server came back"
        probes += await round_of(1, "probe")
        await asyncio.sleep(0.1)
    back = await round_of(40, "back")
    assert {r.scored_by for r in back} == {"model"}
    stats = await gateway.stop()

    total = len(before) + len(during) + len(while_down) + len(probes) + len(back)
    assert len(requester.sent) == total == len(requester.replies)  # nothing lost, nothing duplicated
    s = stats["cards"]
    assert s["messages"] == s["results"] == total and s["dead_letters"] == 0
    assert s["scored_by"]["model"] >= 80 + answered_at_kill and s["scored_by"]["fallback"] >= 20
    assert await ready_count(amqp, queue) == 0


# --------------------------------------------------------------------------- 6. prefetch
async def test_prefetch_bounds_the_requests_in_flight(amqp: AbstractConnection, names: Names, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      requester_factory: Callable[[str], Awaitable[Requester]],
                                                      serve: Callable[[GatewayConfig], Gateway]) -> None:
    queue = names.queue()
    requester = await requester_factory(queue)
    gate = asyncio.Event()
    seen = slow_scorer(monkeypatch, gate=gate)  # every request waits in the scorer until the gate opens
    cids = await requester.send_all(copybook_records(0, 10), "pf")
    gateway = serve(gateway_config(tmp_path, names, {"cards": {"queue": queue, "prefetch": 2}}))
    await until(lambda: seen["entered"] == 2, 15, "two requests in the scorer", gateway)
    await asyncio.sleep(0.5)  # time for a third delivery, if the broker were to send one
    assert seen["entered"] == 2 and seen["in_flight"] == 2
    # the broker agrees: two delivered (unacknowledged), eight still ready in the queue
    assert await ready_count(amqp, queue) == 8
    assert not requester.answered(cids)
    gate.set()
    await requester.wait_for(cids)
    await gateway.stop()
    assert seen["max_in_flight"] == 2 and seen["entered"] == 10
    assert all(len(requester.replies[c]) == 1 for c in cids)
    assert await ready_count(amqp, queue) == 0
