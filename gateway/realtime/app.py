"""One FastStream app for every real-time pipeline in gateway.yaml.

Each Kafka pipeline gets a batch subscriber (its consumer group and topics, micro-batches
of `max_records` waiting at most `max_wait_ms`); each AMQP pipeline a subscriber on its
request queue. A subscriber hands what it received to the pipeline's `StreamDriver`
(gateway.drivers.stream), which scores it and writes it to whatever sink and reject sink
the pipeline names: source, sink and rejects are built through `adapters.registry` from
`PipelineConfig.source`, `.output` and `.rejects_to`, so any registered sink serves a
Kafka or an AMQP source (a topic, an exchange, the replies, a table). The pipelines are
the same objects batch mode uses. The app's AsyncAPI document (`lgw asyncapi`)
describes every channel with the contract's JSON Schema as the payload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import chain
from types import MethodType
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.params import Context
from faststream.specification import AsyncAPI

from adapters import registry
from adapters.amqp.config import AmqpRejectsConfig, AmqpSinkConfig
from adapters.kafka.config import KafkaRejectsConfig, KafkaSinkConfig
from adapters.render import default_format
from gateway.assembly import build_pipeline
from gateway.config import AmqpSourceConfig, GatewayConfig, KafkaSourceConfig, PipelineConfig
from gateway.contract_scoring import load_scoring_contract as load_contract
from gateway.drivers.stream import StreamDriver
from gateway.governance.run import RunGovernance
from gateway.meters import StreamMeters
from gateway.pipeline import Pipeline
from gateway.realtime.core import MicroBatchScorer
from gateway.state import StateStore
from schemas.errors import ConfigError

log = logging.getLogger("lgw.realtime")

_MESSAGE = Context("message")  # FastStream injects the message (raw records, ack) here


@dataclass
class RealtimeApp:
    app: FastStream
    kafka_drivers: dict[str, StreamDriver] = field(default_factory=dict)  # the pipelines fed by Kafka
    amqp_drivers: dict[str, StreamDriver] = field(default_factory=dict)  # the pipelines fed by AMQP
    brokers: list[Any] = field(default_factory=list)
    # the Kafka subscribers and their topics, for the consumer-lag gauge
    kafka_subscribers: dict[str, tuple[Any, list[str]]] = field(default_factory=dict)
    kafka_broker: Any = None
    rabbit_broker: Any = None

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, d in {**self.kafka_drivers, **self.amqp_drivers}.items():
            s = d.scorer.stats
            out[name] = {"messages": s.messages, "results": s.results, "dead_letters": s.dead_letters,
                         "scored_by": dict(s.scored_by), "paused_batches": s.paused_batches}
        return out


def realtime_pipelines(cfg: GatewayConfig, only: str | None = None) -> dict[str, PipelineConfig]:
    picked = {n: p for n, p in cfg.pipelines.items() if p.realtime and (only is None or n == only)}
    if only is not None and only not in cfg.pipelines:
        raise ConfigError(f"no pipeline named {only!r} (pipelines: {', '.join(cfg.pipelines) or 'none'})")
    if not picked:
        kinds = sorted({type(p.source).__name__ for p in cfg.pipelines.values()})
        raise ConfigError("expected a real-time pipeline (source type kafka or amqp) in the config, found "
                          f"{', '.join(kinds) or 'no pipelines'}")
    return picked


@dataclass
class _Wired:
    """One pipeline's parts: its scorer, its source (a Flow too) and its driver."""

    scorer: MicroBatchScorer
    source: Any
    driver: StreamDriver


def _wire(name: str, pipe: PipelineConfig, cfg: GatewayConfig, state: StateStore | None,
          extras: dict[str, Any]) -> _Wired:
    """Source, sink and rejects built through the registry, and the driver between them."""
    from gateway.pipeline import fixed_columns

    src = pipe.source
    assert isinstance(src, KafkaSourceConfig | AmqpSourceConfig)
    contract = load_contract(cfg.resolve(pipe.contract))
    pipeline = build_pipeline(name, contract, cfg, model_name=pipe.model, policy=pipe.policy, shadow=pipe.shadow,
                              state=state, pii=pipe.pii,
                              review=pipe.review)
    output, rejects_to = pipe.output, pipe.rejects_to
    context = registry.BuildContext(pipeline=name, contract=contract, base_dir=cfg.base_dir, source=src,
                                    batch_size=pipe.batch_size, kafka=cfg.kafka, amqp=cfg.amqp, state=state,
                                    extras={**extras, "fixed_columns": fixed_columns(pipeline)})
    source = registry.component("source", src.type).build(src, context)
    sink = registry.component("sink", output.type).build(output, context)
    rejects = registry.component("rejects", rejects_to.type).build(rejects_to, context)
    # the scorer renders what a message sink publishes, in that sink's format; for a sink
    # that takes the scored table (a database) it renders nothing
    scorer = MicroBatchScorer(pipeline, src.payload, default_format(getattr(output, "format", None), src),
                              render=getattr(sink, "publishes_messages", False))
    meters = StreamMeters(name, src.type, rejects_to.type)
    return _Wired(scorer, source, StreamDriver(name, scorer, sink, rejects, flow=source, meters=meters,
                                               governance=stream_governance(name, pipe, cfg, pipeline, state)))


def stream_governance(name: str, pipe: PipelineConfig, cfg: GatewayConfig, pipeline: Pipeline,
                      state: StateStore | None) -> RunGovernance | None:
    """A streaming pipeline's audit trail, review queue and drift windows, when it has any;
    its decision records are named by message id, its windows by this process's start.
    None without a state store (an app built for its AsyncAPI document): the audit's
    operator actions, the review queue and the kill switch all live there."""
    from gateway.governance.wiring import build_governance, open_decision_log
    from gateway.runs import run_stamp

    if state is None:
        return None
    audit = open_decision_log(cfg, state)
    if audit is None and pipe.drift is None and pipe.review is None:
        return None
    started = run_stamp()
    source = getattr(pipe.source, "topics", None) or getattr(pipe.source, "queue", None) or name
    if isinstance(source, list):
        source = ",".join(source)
    return build_governance(pipeline, pipe, cfg, state, run=f"{name}@{started}", source=str(source), audit=audit,
                            windowed=True)


def build_realtime_app(cfg: GatewayConfig, *, only: str | None = None, state: StateStore | None = None,
                       title: str = "Legacy adapter gateway", for_docs: bool = False) -> RealtimeApp:
    """`for_docs`: FastStream renders the payload schemas from the handlers' signatures
    with its pydantic serializer; an app that serves runs without it, because the body
    is validated by the pipeline's codec, a micro-batch at a time, not cast per message."""
    serializer: dict[str, Any] = {} if for_docs else {"serializer": None}
    pipes = realtime_pipelines(cfg, only)
    rt = RealtimeApp(app=FastStream())
    parts = [p for pipe in pipes.values() for p in (pipe.source, pipe.output, pipe.rejects_to)]
    kafka_broker = _kafka_broker(cfg, serializer, secrets=not for_docs) if any(
        isinstance(p, KafkaSourceConfig | KafkaSinkConfig | KafkaRejectsConfig) for p in parts) else None
    rabbit = _rabbit_broker(cfg, serializer, secrets=not for_docs) if any(
        isinstance(p, AmqpSourceConfig | AmqpSinkConfig | AmqpRejectsConfig) for p in parts) else None
    publisher = None
    if any(isinstance(p, KafkaSinkConfig | KafkaRejectsConfig) for p in parts):
        from adapters.kafka import KafkaPublisher

        publisher = KafkaPublisher.for_cluster(cfg.kafka)  # one producer for every topic sink
    extras = {"kafka_publisher": publisher, "rabbit_broker": rabbit}
    for name, pipe in pipes.items():
        wired = _wire(name, pipe, cfg, state, extras)
        if isinstance(pipe.source, KafkaSourceConfig):
            assert kafka_broker is not None
            sub = _kafka_subscriber(kafka_broker, name, pipe, wired, cfg)
            rt.kafka_drivers[name] = wired.driver
            rt.kafka_subscribers[name] = (sub, list(pipe.source.topics))
        else:
            assert rabbit is not None
            _amqp_subscriber(rabbit, name, pipe, wired)
            rt.amqp_drivers[name] = wired.driver
        _document_outputs(name, pipe, wired.scorer, kafka_broker, rabbit)
    drivers = [*rt.kafka_drivers.values(), *rt.amqp_drivers.values()]

    async def start() -> None:  # before the subscribers consume: the sinks are up for the first batch
        if publisher is not None:
            await publisher.start()
        if rabbit is not None:
            await rabbit.connect()
        for d in drivers:
            await d.open()

    async def flush() -> None:  # before the subscribers stop: what is in flight is acked
        for d in drivers:
            await d.flush()

    async def stop() -> None:
        for d in drivers:
            await d.close()
        if publisher is not None:
            await publisher.stop()

    brokers = [b for b in (kafka_broker, rabbit) if b is not None]
    names = ", ".join(pipes)
    spec = AsyncAPI(*brokers, title=title, version="1.0.0",
                    description=f"Real-time scoring channels of the gateway (pipelines: {names}). Every result "
                                "carries its provenance in headers (lgw-scored-by, lgw-model, lgw-model-version, "
                                "lgw-rule-id, lgw-contract, lgw-contract-version) and a stable id (lgw-id).")
    rt.app = FastStream(*brokers, specification=spec, on_startup=[start], on_shutdown=[flush],
                        after_shutdown=[stop])
    rt.brokers = brokers
    rt.kafka_broker, rt.rabbit_broker = kafka_broker, rabbit
    return rt


# FastStream's own access logger writes coloured text to stdout; through ours its lines
# go to stderr in the format chosen (--log-format), and `lgw serve`'s stdout keeps only
# its JSON stats.
BROKER_LOG = logging.getLogger("lgw.faststream")


def _kafka_broker(cfg: GatewayConfig, serializer: dict[str, Any], *, secrets: bool = True) -> Any:
    from faststream.kafka import KafkaBroker

    from adapters.kafka.security import broker_security

    k = cfg.kafka
    return KafkaBroker(k.bootstrap_servers, client_id=k.client_id, graceful_timeout=k.graceful_timeout_s,
                       enable_idempotence=False, acks="all", security=broker_security(k, secrets=secrets),
                       logger=BROKER_LOG, log_level=logging.DEBUG,  # a line per batch is noise at 50k msg/s
                       **serializer)


def _rabbit_broker(cfg: GatewayConfig, serializer: dict[str, Any], *, secrets: bool = True) -> Any:
    from faststream.rabbit import RabbitBroker

    from adapters.amqp.security import broker_security

    return RabbitBroker(cfg.amqp.url, graceful_timeout=cfg.amqp.graceful_timeout_s,
                        security=broker_security(cfg.amqp, secrets=secrets),
                        logger=BROKER_LOG, log_level=logging.DEBUG, **serializer)


def _kafka_subscriber(broker: Any, name: str, pipe: PipelineConfig, wired: _Wired, cfg: GatewayConfig) -> Any:
    from faststream.kafka.message import KafkaMessage

    src = pipe.source
    assert isinstance(src, KafkaSourceConfig)
    k = cfg.kafka
    sub = broker.subscriber(
        *src.topics, batch=True, group_id=src.group_id, max_records=src.batch_size,
        batch_timeout_ms=src.max_wait_ms, auto_offset_reset=k.auto_offset_reset,
        fetch_max_wait_ms=k.fetch_max_wait_ms, session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms, max_poll_records=src.batch_size,
        listener=wired.source.rebalances,  # no commit while the group rebalances (adapters.kafka.source)
        ack_policy=AckPolicy.MANUAL, parser=_batch_parser, decoder=_raw_values,
        title=f"{name}:input", description=_input_doc(name, pipe))
    patch_batch_fetch(sub)
    model = wired.scorer.pipeline.contract.pydantic_model()
    sub(_kafka_handler(wired, sub, model, KafkaMessage))
    return sub


def _amqp_subscriber(broker: Any, name: str, pipe: PipelineConfig, wired: _Wired) -> None:
    from faststream.rabbit import Channel, RabbitQueue
    from faststream.rabbit.message import RabbitMessage

    src = pipe.source
    assert isinstance(src, AmqpSourceConfig)
    sub = broker.subscriber(RabbitQueue(src.queue, durable=True), channel=Channel(prefetch_count=src.prefetch),
                            ack_policy=AckPolicy.MANUAL, no_reply=True, decoder=_raw_body,
                            title=f"{name}:requests", description=_input_doc(name, pipe))
    model = wired.scorer.pipeline.contract.pydantic_model()
    sub(_amqp_handler(wired, model, RabbitMessage))


_DEAD_LETTER_HEADERS = ("lgw-field, lgw-reason, lgw-field-offset, lgw-field-raw (at most 64 bytes; "
                        "lgw-field-raw-length when cut), lgw-source, lgw-contract, lgw-contract-version")


def _document_outputs(name: str, pipe: PipelineConfig, scorer: MicroBatchScorer, kafka: Any, rabbit: Any) -> None:
    """The result and dead-letter channels of the AsyncAPI document (the sinks publish
    themselves; a table sink is no channel)."""
    from faststream.rabbit import RabbitExchange

    out, rej = pipe.output, pipe.rejects_to
    if isinstance(out, KafkaSinkConfig):
        kafka.publisher(out.topic, title=f"{name}:results", schema=result_schema(scorer),
                        description=f"Scored records of pipeline {name} ({scorer.result_format}), keyed like "
                                    "their input; provenance in headers.")
    elif isinstance(out, AmqpSinkConfig) and out.exchange is None:
        rabbit.publisher(routing_key="{reply_to}", title=f"{name}:replies", schema=result_schema(scorer),
                         description=f"Replies of pipeline {name} ({scorer.result_format}), to the default exchange "
                                     "with the request's reply_to as routing key and its correlation_id; "
                                     "header lgw-status is scored or rejected (then a JSON body with the "
                                     "error, reason and field); provenance in lgw-* headers.")
    elif isinstance(out, AmqpSinkConfig) and out.exchange is not None:
        rabbit.publisher(routing_key=out.routing_key, exchange=RabbitExchange(out.exchange, durable=True),
                         title=f"{name}:results", schema=result_schema(scorer),
                         description=f"Scored records of pipeline {name} ({scorer.result_format}); provenance in "
                                     "lgw-* headers.")
    if isinstance(rej, KafkaRejectsConfig):
        kafka.publisher(rej.topic, title=f"{name}:dead-letters", schema=bytes,
                        description=f"Messages of pipeline {name} that failed decoding or validation, or made "
                                    "the pipeline raise: the original bytes and key; headers lgw-error "
                                    f"(decode|validation|crash), {_DEAD_LETTER_HEADERS}.")
    elif isinstance(rej, AmqpRejectsConfig):
        src = pipe.source
        bound = f" Bound to queue {src.queue}.dlq." if isinstance(src, AmqpSourceConfig) else ""
        rabbit.publisher(routing_key=rej.routing_key or name, exchange=RabbitExchange(rej.exchange, durable=True),
                         title=f"{name}:dead-letters", schema=bytes,
                         description=f"Requests of pipeline {name} that failed decoding or validation or made "
                                     "the pipeline raise, and requests without reply_to: the original bytes and "
                                     "headers; lgw-error (decode|validation|crash|no_reply_to), "
                                     f"{_DEAD_LETTER_HEADERS}.{bound}")


def result_schema(scorer: MicroBatchScorer) -> Any:
    """What a result message holds: the stable id, the input record, the outputs and the
    provenance (JSON); or the input record's bytes with the outputs appended (fixed)."""
    from typing import Literal

    from pydantic import Field, create_model

    if scorer.result_format == "fixed":
        return bytes
    pipeline = scorer.pipeline
    types = {"float": float, "int": int, "string": str, "bool": bool}
    fields: dict[str, Any] = {"id": (str, Field(description="topic-partition-offset of the input: stable across "
                                                           "redeliveries, for de-duplication"))}
    for out_name, spec in pipeline.outputs.items():
        fields[out_name] = (types.get(spec.type, float), Field(description="model or rule output"))
    fields["scored_by"] = (Literal["model", "fallback"], ...)
    for opt in ("model_name", "model_version", "rule_id", "reason"):
        fields[opt] = (str | None, None)
    fields["contract"] = (str, ...)
    fields["contract_version"] = (int, ...)
    base = pipeline.contract.pydantic_model()
    return create_model(f"{base.__name__}Scored", __base__=base, **fields)


# Three places where FastStream's Kafka batch path costs more than the gateway can spend
# (measured on 500-record batches): its parser decodes every record's headers into a dict
# (~2.5 ms a batch; the gateway reads the records themselves), a plain-function decoder
# runs in a worker thread (~10 ms a batch), and after an empty poll its subscriber sleeps
# batch_timeout_ms before polling again, which adds that much latency to the first
# record after a quiet spell.

async def _batch_parser(records: Any, _default: Any) -> Any:
    from faststream.kafka.message import FAKE_CONSUMER, KafkaMessage

    from adapters.kafka import record_id

    return KafkaMessage(records, records, message_id=record_id(records[0]), correlation_id="",
                        consumer=FAKE_CONSUMER)


async def _raw_values(msg: Any) -> Any:
    """The payloads as they came: decoding is the pipeline's job, per micro-batch."""
    return msg.body


async def fetch_batch(self: Any, consumer: Any) -> tuple[Any, ...]:
    """FastStream's `BatchSubscriber.get_msg` without its sleep after an empty poll:
    `getmany` already waits up to batch_timeout_ms for the first record."""
    batches = await consumer.getmany(timeout_ms=self.batch_timeout_ms, max_records=self.max_records)
    return tuple(chain.from_iterable(batches.values()))


def patch_batch_fetch(subscriber: Any) -> None:
    """Replaces the subscriber's `get_msg` (FastStream's consume loop calls it for every
    poll) with `fetch_batch`. FastStream 0.7 offers no public hook for how a batch
    subscriber polls, so this leans on a private method: pyproject pins FastStream to the
    tested minor and tests/test_faststream_patch.py fails loudly if an upgrade moves it."""
    subscriber.get_msg = MethodType(fetch_batch, subscriber)


def _kafka_handler(wired: _Wired, subscriber: Any, model: Any, message_type: Any) -> Any:
    source, driver = wired.source, wired.driver

    async def handle(body: Any, message: Any = _MESSAGE) -> None:
        await driver.handle(source.batch(message.raw_message, subscriber.consumer))

    # for the AsyncAPI payload only (see build_realtime_app's for_docs)
    handle.__annotations__ = {"body": model, "message": message_type, "return": None}  # one record a message
    handle.__name__ = f"score_{driver.name}"
    return handle


async def _raw_body(msg: Any) -> bytes:
    return bytes(msg.body)


def _amqp_handler(wired: _Wired, model: Any, message_type: Any) -> Any:
    source, driver = wired.source, wired.driver

    async def handle(body: Any, message: Any = _MESSAGE) -> None:
        await driver.handle(source.batch(message))

    handle.__annotations__ = {"body": model, "message": message_type, "return": None}
    handle.__name__ = f"score_{driver.name}"
    return handle


def _input_doc(name: str, pipe: PipelineConfig) -> str:
    src = pipe.source
    assert isinstance(src, KafkaSourceConfig | AmqpSourceConfig)
    shape = ("JSON objects validated by the contract's schema" if src.payload == "json"
             else "fixed-width copybook records (the contract's layout and code page)")
    return (f"Input of pipeline {name}: {shape}; contract {pipe.contract}; model {pipe.model or 'none (rules)'}; "
            f"policy {pipe.policy.value} while the model is unavailable.")
