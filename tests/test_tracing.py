"""OpenTelemetry traces: the spans of a micro-batch and of a batch run, W3C trace context
from Kafka and AMQP headers to what the gateway publishes, the off switch, the
environment, the missing extra, and the trace ids in JSON log lines.

Spans are caught by the SDK's in-memory exporter (`tracing.configure(..., exporter=)`);
the brokers are real: a Tansu broker (tests/kafka_broker.py) and RabbitMQ at
LGW_AMQP_URL. The gateway runs in process, as in test_realtime_kafka.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import tracing
from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.logs import ContextFilter, JsonFormatter
from gateway.tracing import TracingConfig
from schemas.contract import Contract
from schemas.errors import ConfigError
from tests.kafka_broker import TansuBroker
from tests.realtime_data import Gateway, copybook_records, json_records
from tests.test_realtime_amqp import Names, Requester, amqp, channel, names, requester_factory  # noqa: F401
from tests.test_realtime_amqp import gateway_config as amqp_config
from tests.test_realtime_kafka import TopicReader, Topics, gateway_config, headers_of, produce, readers  # noqa: F401

TRACE_A = "0af7651916cd43dd8448eb211c80319c"
TRACE_B = "4bf92f3577b34da6a3ce929d0e0e4736"


def traceparent(trace_id: str, span_id: str = "b7ad6b7169203331") -> bytes:
    return f"00-{trace_id}-{span_id}-01".encode()


def parse(value: str | bytes) -> tuple[str, str]:
    """(trace id, parent span id) of a traceparent header."""
    text = value.decode() if isinstance(value, bytes) else value
    version, trace_id, span_id, flags = text.split("-")
    assert version == "00" and int(flags, 16) & 1, f"{text}: not sampled"  # 0x02: a random trace id (W3C level 2)
    return trace_id, span_id


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def named(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def all_attribute_text(spans: tuple[ReadableSpan, ...]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in spans], default=str)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span in memory; off again after the test."""
    exporter = InMemorySpanExporter()
    assert tracing.configure(TracingConfig(enabled=True, exporter="none"), exporter=exporter, environ={})
    yield exporter
    tracing.shutdown()


@pytest.fixture
def tracing_off() -> Iterator[None]:
    tracing.shutdown()
    yield
    tracing.shutdown()


# --------------------------------------------------------------------------- configuration
def test_tracing_is_off_by_default_and_the_otel_variables_override_gateway_yaml() -> None:
    assert GatewayConfig().tracing == TracingConfig()
    off = tracing.effective(None, environ={})
    assert (off.enabled, off.service_name, off.endpoint, off.propagate) == (
        False, "lgw", "http://localhost:4318/v1/traces", "traced")
    cfg = TracingConfig(enabled=True, endpoint="http://collector:4318/v1/traces", sample_ratio=0.25)
    assert tracing.effective(cfg, environ={}).sampler == "parentbased_traceidratio:0.25"
    env = {"OTEL_SERVICE_NAME": "scoring-eu", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/",
           "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}
    eff = tracing.effective(cfg, environ=env)
    assert (eff.enabled, eff.service_name, eff.endpoint, eff.sampler) == (
        True, "scoring-eu", "http://otel:4318/v1/traces", "traceidratio:0.5")
    # the signal's own variable is used as it is
    assert tracing.effective(cfg, environ={**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}
                             ).endpoint == "http://t:1/x"
    assert not tracing.effective(cfg, environ={"OTEL_SDK_DISABLED": "true"}).enabled
    assert tracing.effective(cfg, environ={"OTEL_TRACES_EXPORTER": "none"}).exporter == "none"
    with pytest.raises(ConfigError, match=r"^OTEL_TRACES_SAMPLER='sometimes': expected one of always_on"):
        tracing.effective(cfg, environ={"OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(ConfigError, match=r"^OTEL_TRACES_EXPORTER='jaeger': expected otlp or none$"):
        tracing.effective(cfg, environ={"OTEL_TRACES_EXPORTER": "jaeger"})
    # tracing off: another program's OTEL_* settings in the environment are not the gateway's error
    assert not tracing.effective(TracingConfig(), environ={"OTEL_TRACES_EXPORTER": "jaeger",
                                                           "OTEL_TRACES_SAMPLER": "sometimes"}).enabled


def test_tracing_enabled_without_the_otel_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str],
                                                            tracing_off: None) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # its import fails as if not installed
    with pytest.raises(ConfigError) as caught:
        tracing.configure(TracingConfig(enabled=True), environ={})
    assert str(caught.value) == ("tracing (tracing.enabled in gateway.yaml) needs the otel extra: "
                                 "pip install 'legacy-gateway[otel]'")
    # through the command line: exit 2, one line on stderr, no traceback
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"tracing": {"enabled": True},
                                  "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}}))
    assert main(["batch", "run", "nothing", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["lgw: error: tracing (tracing.enabled in gateway.yaml) needs the otel "
                                        "extra: pip install 'legacy-gateway[otel]'"]
    assert not tracing.enabled()


def test_config_check_names_the_tracing_it_would_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "scoring")
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"tracing": {"enabled": True, "endpoint": "http://user:secret@collector:4318/v1/traces"}}))
    assert main(["config", "check", "--config", str(config)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tracing:")]
    assert lines == ["tracing: http://user:***@collector:4318/v1/traces (service scoring, sampler "
                     "parentbased_traceidratio:1, propagate traced)"]
    config.write_text("{}")
    assert main(["config", "check", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tracing"]["enabled"] is False


# --------------------------------------------------------------------------- logs
def test_json_log_lines_inside_a_recorded_span_carry_its_trace_and_span_ids(spans: InMemorySpanExporter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    log = logging.getLogger("lgw.test.tracing")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("before")
        with tracing.span("lgw.test") as span:
            log.info("inside")
        log.info("after")
    finally:
        log.removeHandler(handler)
    before, inside, after = (json.loads(line) for line in out.getvalue().splitlines())
    trace_id, span_id = hex_ids(named(spans.get_finished_spans(), "lgw.test")[0])
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)
    assert format(span.get_span_context().trace_id, "032x") == trace_id
    assert "trace_id" not in before and "trace_id" not in after


def test_json_log_lines_carry_no_trace_ids_when_tracing_is_off(tracing_off: None) -> None:
    record = logging.LogRecord("lgw", logging.INFO, __file__, 0, "hello", None, None)
    with tracing.span("lgw.test") as span:
        assert not span.is_recording()
        ContextFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello" and "trace_id" not in entry and "span_id" not in entry


# --------------------------------------------------------------------------- Kafka
def tagged(values: list[bytes], headers: list[list[tuple[str, bytes]]]) -> list[tuple[bytes | None, bytes,
                                                                                      list[tuple[str, bytes]]]]:
    return [(f"k{i}".encode(), v, h) for i, (v, h) in enumerate(zip(values, headers, strict=True))]


async def produce_with_headers(bootstrap: str, topic: str,
                               items: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> list[str]:
    """Each record with headers of its own, all to partition 0 (one micro-batch); their ids."""
    ids = []
    for key, value, headers in items:
        sent = await produce(bootstrap, topic, [(key, value)], headers=headers or None, partition=0)
        ids.append(sent[0].id)
    return ids


@pytest.mark.integration
async def test_a_record_is_followed_from_its_kafka_input_to_the_result_topic(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, readers: Any,  # noqa: F811
        serve: Callable[[GatewayConfig], Gateway], spans: InMemorySpanExporter) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "trace", partitions=1)
    results, dlq = await readers(bootstrap, t.results), await readers(bootstrap, t.dlq)
    values = json_records(contract, 0, 4)
    bad = b'{"TXN_ID": "not a record"'
    a, b = [("traceparent", traceparent(TRACE_A)), ("tracestate", b"vendor=1")], [("traceparent", traceparent(TRACE_B))]
    # one micro-batch: a record of trace A, one of trace B, two without a trace, a bad one of trace A
    ids = await produce_with_headers(bootstrap, t.input, tagged([*values, bad], [a, b, [], [], a]))
    gateway = serve(gateway_config(tmp_path, bootstrap, {"cards": t.source(max_records=100)}))
    await results.wait_for(ids[:4], gateway=gateway)
    await dlq.wait_for(ids[4:], header="lgw-source", gateway=gateway)
    await gateway.stop()

    finished = spans.get_finished_spans()
    batches = named(finished, "lgw.micro_batch")
    assert len(batches) == 1, [s.name for s in finished]
    batch = batches[0]
    trace_id, batch_id = hex_ids(batch)
    assert trace_id == TRACE_A, "the batch continues its first input's trace"
    assert batch.parent is not None and batch.parent.is_remote and parent_id(batch) == "b7ad6b7169203331"
    assert [format(link.context.trace_id, "032x") for link in batch.links] == [TRACE_B]
    attrs = dict(batch.attributes or {})
    assert attrs["messaging.system"] == "kafka" and attrs["messaging.destination.name"] == t.input
    assert attrs["messaging.batch.message_count"] == 5 and attrs["lgw.pipeline"] == "cards"
    assert attrs["lgw.kafka.offsets"] == f"{t.input}-0:0-4"
    assert (attrs["lgw.results"], attrs["lgw.dead_letters"], attrs["lgw.scored_by.model"]) == (4, 1, 4)
    children = {s.name: s for s in finished if s.parent is not None and parent_id(s) == batch_id}
    assert set(children) == {"lgw.decode", "lgw.score", "lgw.publish"}
    assert all(hex_ids(s)[0] == TRACE_A for s in children.values())
    assert dict(children["lgw.score"].attributes or {})["lgw.scored_by.model"] == 4
    publish_id = hex_ids(children["lgw.publish"])[1]

    by_id = results.by_id()
    out = [headers_of(by_id[i][0]) for i in ids[:4]]
    # trace A's record: the publish span is its parent downstream, its tracestate kept
    assert parse(out[0]["traceparent"]) == (TRACE_A, publish_id) and out[0]["tracestate"] == "vendor=1"
    # trace B's record goes on in its own trace, from where it came (the batch links to it)
    assert out[1]["traceparent"] == traceparent(TRACE_B).decode() and "tracestate" not in out[1]
    # records that came without a trace are in the batch's
    assert parse(out[2]["traceparent"]) == parse(out[3]["traceparent"]) == (TRACE_A, publish_id)
    # the dead letter of trace A's bad record: its trace once, at the publish span
    dead = dlq.by_id("lgw-source")[ids[4]][0]
    assert [k for k, _ in dead.headers].count("traceparent") == 1
    assert parse(headers_of(dead)["traceparent"]) == (TRACE_A, publish_id)
    # no record value in any span: the pii card number least of all
    text = all_attribute_text(finished)
    for value in values:
        record = json.loads(value)
        assert str(record["TXN_PAN"]) not in text and str(record["TXN_ID"]) not in text


@pytest.mark.integration
async def test_tracing_off_adds_no_trace_headers_and_dead_letters_keep_the_inputs(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, readers: Any,  # noqa: F811
        serve: Callable[[GatewayConfig], Gateway], tracing_off: None) -> None:
    bootstrap = kafka_broker.bootstrap
    t = Topics.create(kafka_broker, "untraced", partitions=1)
    results, dlq = await readers(bootstrap, t.results), await readers(bootstrap, t.dlq)
    a = [("traceparent", traceparent(TRACE_A))]
    ids = await produce_with_headers(bootstrap, t.input, tagged([json_records(contract, 0, 1)[0], b"{"], [a, a]))
    gateway = serve(gateway_config(tmp_path, bootstrap, {"cards": t.source()}))
    await results.wait_for(ids[:1], gateway=gateway)
    await dlq.wait_for(ids[1:], header="lgw-source", gateway=gateway)
    await gateway.stop()
    assert not tracing.enabled()
    assert "traceparent" not in headers_of(results.records[0]), "off: the gateway takes no part in the trace"
    # a dead letter is its input message with reasons added: the input's headers as they came
    assert headers_of(dlq.records[0])["traceparent"] == traceparent(TRACE_A).decode()


@pytest.mark.integration
@pytest.mark.parametrize("propagate", ["traced", "all"])
async def test_untraced_input_gets_a_trace_header_only_with_propagate_all(
        kafka_broker: TansuBroker, tmp_path: Path, contract: Contract, readers: Any,  # noqa: F811
        serve: Callable[[GatewayConfig], Gateway], propagate: str) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure(TracingConfig(enabled=True, exporter="none", propagate=propagate),  # type: ignore[arg-type]
                             exporter=exporter, environ={})
    try:
        bootstrap = kafka_broker.bootstrap
        t = Topics.create(kafka_broker, f"plain-{propagate}", partitions=1)
        results = await readers(bootstrap, t.results)
        ids = await produce_with_headers(bootstrap, t.input, tagged(json_records(contract, 0, 3), [[], [], []]))
        gateway = serve(gateway_config(tmp_path, bootstrap, {"cards": t.source()}))
        await results.wait_for(ids, gateway=gateway)
        await gateway.stop()
        batch = named(exporter.get_finished_spans(), "lgw.micro_batch")
        assert batch, "the micro-batch is traced either way"
        stamped = {"traceparent" in headers_of(r) for r in results.records}
        if propagate == "traced":
            assert stamped == {False}, "no input came traced: no trace is started per result"
        else:
            assert stamped == {True}
            assert {parse(headers_of(r)["traceparent"])[0] for r in results.records} == {hex_ids(batch[0])[0]}
    finally:
        tracing.shutdown()


# --------------------------------------------------------------------------- AMQP
@pytest.mark.integration
async def test_an_amqp_request_and_its_reply_are_in_one_trace(
        names: Names, tmp_path: Path, requester_factory: Callable[[str], Awaitable[Requester]],  # noqa: F811
        serve: Callable[[GatewayConfig], Gateway], spans: InMemorySpanExporter) -> None:
    import aio_pika

    queue = names.queue()
    requester = await requester_factory(queue)
    gateway = serve(amqp_config(tmp_path, names, {"cards": {"queue": queue, "prefetch": 4}}))
    assert requester.reply_queue is not None
    cids = []
    for body, parent in ((copybook_records(0, 1)[0], traceparent(TRACE_A)), (b"short", traceparent(TRACE_B))):
        cid = uuid.uuid4().hex
        cids.append(cid)
        await requester.channel.default_exchange.publish(
            aio_pika.Message(body, correlation_id=cid, message_id=f"msg-{cid}", reply_to=requester.reply_queue.name,
                             headers={"traceparent": parent.decode()}), routing_key=queue)
        requester.sent.append(cid)
    await requester.wait_for(cids)
    await gateway.stop()

    finished = spans.get_finished_spans()
    batches = {hex_ids(s)[0]: s for s in named(finished, "lgw.micro_batch")}
    assert set(batches) == {TRACE_A, TRACE_B}, "one delivery a batch, each in its request's trace"
    for trace_id, cid, status in ((TRACE_A, cids[0], "scored"), (TRACE_B, cids[1], "rejected")):
        batch = batches[trace_id]
        attrs = dict(batch.attributes or {})
        assert attrs["messaging.system"] == "rabbitmq" and attrs["messaging.destination.name"] == queue
        assert attrs["messaging.message.id"] == f"msg-{cid}" and attrs["messaging.message.conversation_id"] == cid
        assert parent_id(batch) == "b7ad6b7169203331"
        publish = [s for s in named(finished, "lgw.publish") if parent_id(s) == hex_ids(batch)[1]]
        assert len(publish) == 1
        reply = requester.only_reply(cid)
        assert reply.status == status
        assert parse(reply.headers["traceparent"]) == (trace_id, hex_ids(publish[0])[1])


# --------------------------------------------------------------------------- batch runs
def test_a_batch_run_has_a_span_per_batch_with_decode_score_and_write(tmp_path: Path,
                                                                     spans: InMemorySpanExporter) -> None:
    from gateway.batch import BatchDriver, build_runtime
    from gateway.config import example_dropfolder_config, load_config
    from gateway.state import StateStore
    from schemas.examples import generate_card_file

    cfg_path = tmp_path / "gateway.yaml"
    cfg_path.write_text(json.dumps(example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}", fmt="jsonl",
                                                             batch_size=400)))
    inbox = tmp_path / "drop" / "inbox"
    inbox.mkdir(parents=True)
    generate_card_file(inbox / "CARDTXN.DAT", records=1000, seed=5, bad_every=250)
    cfg = load_config(cfg_path)
    rt = build_runtime("card_txn", cfg, StateStore(cfg.state.url))

    async def go() -> Any:
        try:
            return await BatchDriver(rt).run_once()
        finally:
            await rt.close()

    results = asyncio.run(go())
    assert len(results) == 1 and results[0].summary["records_out"] > 0
    finished = spans.get_finished_spans()
    batches = named(finished, "lgw.batch")
    assert len(batches) >= 3  # 1000 details, a header and a trailer in batches of 400
    assert sum(dict(b.attributes or {})["lgw.records_out"] for b in batches) == results[0].summary["records_out"]
    for batch in batches:
        assert batch.parent is None, "a batch run starts its own trace"
        trace_id, batch_id = hex_ids(batch)
        children = sorted(s.name for s in finished if parent_id(s) == batch_id and hex_ids(s)[0] == trace_id)
        assert children == ["lgw.decode", "lgw.score", "lgw.write"]
        assert dict(batch.attributes or {})["lgw.pipeline"] == "card_txn"
    assert sum(dict(b.attributes or {})["lgw.rejected"] for b in batches) == results[0].summary["rejected"]


def test_a_batch_of_many_traces_links_a_bounded_number_and_each_result_keeps_its_own_trace(
        spans: InMemorySpanExporter) -> None:
    import pyarrow as pa

    from adapters.base import InMessage, SourceBatch
    from gateway.realtime.core import Outcome, Result

    n = tracing.MAX_LINKS + 20
    inputs = [traceparent(f"{i + 1:032x}") for i in range(n)]
    batch = SourceBatch(pa.table({}), messages=[InMessage(b"{}", f"m{i}", headers=[("traceparent", tp)])
                                                for i, tp in enumerate(inputs)])
    outcome = Outcome(results=[Result(i, b"{}", [("lgw-id", f"m{i}".encode())]) for i in range(n)])
    with tracing.micro_batch("cards", batch) as traced:
        traced.scored(outcome)
        traced.stamp(outcome)
    (span,) = named(spans.get_finished_spans(), "lgw.micro_batch")
    (publish,) = named(spans.get_finished_spans(), "lgw.publish")
    assert hex_ids(span)[0] == f"{1:032x}" and len(span.links) == tracing.MAX_LINKS
    assert dict(publish.attributes or {})["lgw.written"] is False, "stamped, never written: ended with the batch"
    first = dict(outcome.results[0].headers)
    assert parse(first["traceparent"]) == (f"{1:032x}", hex_ids(publish)[1])
    for result, sent in zip(outcome.results[1:], inputs[1:], strict=True):
        assert dict(result.headers)["traceparent"] == sent, "another trace's record goes on in its own trace"
    assert batch.trace is not None and batch.trace(n - 1) == [("traceparent", inputs[-1])]


def test_a_failing_span_names_the_error_type_not_its_message(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), tracing.span("lgw.score"):
        raise ValueError("TXN_PAN 4111111111111111 is not allowed")  # a message may quote a record value
    (span,) = spans.get_finished_spans()
    assert span.status.description == "ValueError" and dict(span.attributes or {})["error.type"] == "ValueError"
    # the whole value: a fragment such as "4111" turns up by chance in the span's random resource ids
    assert not span.events and "4111111111111111" not in json.dumps(span.to_json())


@pytest.mark.integration
async def test_a_batch_run_to_kafka_puts_each_batch_span_on_its_records_and_dead_letters(
        kafka_broker: TansuBroker, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    from gateway.batch import BatchDriver, build_runtime
    from gateway.config import load_config
    from gateway.state import StateStore
    from schemas.examples import generate_card_file
    from tests.kafka_broker import unique_topic
    from tests.test_batch_to_kafka import collect, write_config

    results = kafka_broker.create_topic(unique_topic("traced"), partitions=3)
    dead = kafka_broker.create_topic(unique_topic("traced-dlq"), partitions=3)
    cfg = load_config(write_config(tmp_path, kafka_broker.bootstrap, results, dead, batch_size=400))
    generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=1000, seed=3, bad_every=300)
    rt = build_runtime("card_txn", cfg, StateStore(cfg.state.url))
    try:
        (result,) = await BatchDriver(rt).run_once()
    finally:
        await rt.close()
    summary = result.summary
    scored, rejected = await TopicReader(kafka_broker.bootstrap, results).start(), \
        await TopicReader(kafka_broker.bootstrap, dead).start()
    try:
        await collect(scored, summary["records_out"])
        await collect(rejected, summary["rejected"], header="lgw-source")
    finally:
        await scored.stop()
        await rejected.stop()
    batches = {hex_ids(s) for s in named(spans.get_finished_spans(), "lgw.batch")}
    assert len(batches) >= 3
    carried = {parse(headers_of(r)["traceparent"]) for r in [*scored.records, *rejected.records]}
    assert carried <= batches and len(carried) >= 3, "each record carries the span of the batch it was in"


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (a thread of the test): the span names and
    the resource's service names of every export request it was sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        received: list[tuple[str, str]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = next(a.value.string_value for a in resource.resource.attributes
                                   if a.key == "service.name")
                    received.extend((service, s.name) for scope in resource.scope_spans for s in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def __enter__(self) -> OtlpReceiver:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_lgw_batch_run_exports_its_spans_over_otlp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tracing_off: None) -> None:
    from gateway.config import example_dropfolder_config
    from schemas.examples import generate_card_file

    for var in ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nightly-cards")
    with OtlpReceiver() as receiver:
        cfg = example_dropfolder_config(f"sqlite:///{tmp_path / 'state.db'}", batch_size=600)
        cfg["tracing"] = {"enabled": True, "endpoint": receiver.url}
        config = tmp_path / "gateway.yaml"
        config.write_text(json.dumps(cfg))
        (tmp_path / "drop" / "inbox").mkdir(parents=True)
        generate_card_file(tmp_path / "drop" / "inbox" / "CARDTXN.DAT", records=1000, seed=7, bad_every=0)
        assert main(["batch", "run", "card_txn", "--config", str(config), "--no-progress"]) == 0
        assert tracing.enabled()
        tracing.shutdown()  # what the provider's exit hook does: export what is left
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["records_out"] == 1000
    services = {service for service, _ in receiver.received}
    exported = [name for _, name in receiver.received]
    assert services == {"nightly-cards"}
    batches = exported.count("lgw.batch")
    assert batches == 2 and exported.count("lgw.decode") == exported.count("lgw.write") == batches  # 1002 / 600


def test_spans_are_no_ops_and_cost_no_attributes_when_tracing_is_off(tracing_off: None) -> None:
    with tracing.span("lgw.anything") as span:
        assert not span.is_recording()
        assert span is trace.INVALID_SPAN
    assert tracing.span("a") is tracing.span("b"), "one shared no-op, nothing made per call"
