"""OpenTelemetry traces: one span per micro-batch (real time) or batch (batch runs), with
child spans for decode, score (the model call, or the rules) and publish/write; W3C trace
context read from and written to Kafka and AMQP headers.

Off by default, and then (almost) free: `span()` hands back a shared no-op context and
the drivers build no attribute and read no header. On (`tracing.enabled: true`), the
OpenTelemetry SDK of the `otel` extra records spans and exports them over OTLP/HTTP (or
not at all: `exporter: none`, for measuring the cost). The standard OTEL_* variables
override gateway.yaml, as LGW_* ones do: OTEL_SDK_DISABLED, OTEL_SERVICE_NAME,
OTEL_TRACES_EXPORTER (otlp|none), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER (+ _ARG); the exporter itself reads
OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _CERTIFICATE and the rest.

Propagation (W3C `traceparent`/`tracestate`, no hand parsing). A micro-batch holds
records from many traces, and a span has one parent, so:

- the micro-batch span's parent is the first input context of the batch, and it links
  to every other distinct one (at most MAX_LINKS; past those a record's context is not
  parsed, only passed on);
- each output (result, reply, dead letter) carries its own record's trace: the publish
  span's context when the record came in that trace or without any (its trace then
  starts at the gateway), else the record's input context unchanged, so a downstream
  consumer continues the record's trace and the gateway's hop is found by the link;
- with `propagate: traced` (the default) a micro-batch none of whose records came with a
  trace context writes no trace header: the gateway continues traces, it does not start
  one per result (that header is ~70 bytes more on every result, 4-5% of real-time
  throughput here); `propagate: all` stamps those too, `off` neither reads nor writes.
  A batch run always stamps what it publishes to a topic: the run is the trace's root.

Disabled, the gateway takes no part: it reads no trace header, and a result carries
none (a dead letter keeps the original message's headers, as it always did). Span
attributes name pipelines, counts, topics, partitions and offsets: never a record value.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field

from adapters.headers import TRACE_HEADERS, Headers
from gateway.extras import require
from schemas.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from adapters.base import SourceBatch

UNPARSED = -1  # an input context past the batch's parsing budget (see MicroBatch)
MAX_LINKS = 32  # a 500-record batch from 500 traces: links to the first 32 (a span's links are kept in memory)
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")
INSTRUMENTATION = "lgw"


class TracingConfig(BaseModel):
    """`tracing:` in gateway.yaml."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    exporter: Literal["otlp", "none"] = "otlp"  # none: spans are made (and cost what they cost), not sent
    endpoint: str | None = None  # OTLP/HTTP traces URL; default OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318
    service_name: str = "lgw"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of new traces; an input's sampled flag is followed
    # traced: read traceparent/tracestate from message headers, and write them on what a
    # micro-batch publishes when it continued an input's trace; all: on every output (a
    # trace starts at the gateway for untraced input: ~70 bytes more per result, 4-5% of
    # real-time throughput, bench/realtime.py); off: neither read nor write
    propagate: Literal["traced", "all", "off"] = "traced"


@dataclass(frozen=True)
class Effective:
    """What tracing runs with once the environment had its say (`lgw config check` shows it)."""

    enabled: bool
    exporter: str
    endpoint: str
    service_name: str
    sampler: str
    propagate: str


def _env_sampler(environ: Mapping[str, str], ratio: float) -> str:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name:
        return f"parentbased_traceidratio:{ratio:g}"
    if name not in SAMPLERS:
        raise ConfigError(f"OTEL_TRACES_SAMPLER={name!r}: expected one of {', '.join(SAMPLERS)}")
    if name.endswith("traceidratio"):
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(arg)
        except ValueError:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: expected a number from 0 to 1") from None
        if not 0 <= ratio <= 1:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: expected a number from 0 to 1")
        return f"{name}:{ratio:g}"
    return name


def effective(config: TracingConfig | None, environ: Mapping[str, str] | None = None) -> Effective:
    """`config` with the OTEL_* variables applied (they win, as LGW_* ones do)."""
    cfg = config or TracingConfig()
    env = os.environ if environ is None else environ
    enabled = cfg.enabled and env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or cfg.exporter
    if exporter not in ("otlp", "none"):
        if enabled:  # off, another program's OTEL_* settings are none of the gateway's business
            raise ConfigError(f"OTEL_TRACES_EXPORTER={exporter!r}: expected otlp or none")
        exporter = cfg.exporter
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        # the signal-less variable names the collector's base URL (OTLP exporter spec)
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + "/v1/traces"
    endpoint = endpoint or cfg.endpoint or DEFAULT_ENDPOINT
    service = env.get("OTEL_SERVICE_NAME", "").strip() or cfg.service_name
    sampler = _env_sampler(env if enabled else {}, cfg.sample_ratio)
    return Effective(enabled, exporter, endpoint, service, sampler, cfg.propagate)


# --------------------------------------------------------------------------- runtime
_tracer: trace.Tracer | None = None  # None: tracing is off (what the hot path tests)
_provider: TracerProvider | None = None
_propagate = False  # read input contexts, write output ones (propagate traced or all)
_stamp_untraced = False  # propagate all: a batch with no traced input stamps its outputs too
_PROPAGATOR = TraceContextTextMapPropagator()
_OFF: contextlib.nullcontext[Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def _sampler(spec: str) -> Any:
    from opentelemetry.sdk.trace import sampling

    name, _, arg = spec.partition(":")
    base = name.removeprefix("parentbased_")
    root: sampling.Sampler
    if base == "always_on":
        root = sampling.ALWAYS_ON
    elif base == "always_off":
        root = sampling.ALWAYS_OFF
    else:
        root = sampling.TraceIdRatioBased(float(arg or 1.0))
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def configure(config: TracingConfig | None, *, exporter: SpanExporter | None = None,
              environ: Mapping[str, str] | None = None) -> bool:
    """Starts tracing as `config` (and the environment) say; True when spans are recorded.
    `exporter` replaces the configured one (tests: the SDK's in-memory exporter), sending
    each span as it ends. Raises ConfigError, one line, when the otel extra is missing."""
    global _tracer, _provider, _propagate, _stamp_untraced
    shutdown()
    eff = effective(config, environ)
    if not eff.enabled:
        return False
    modules = ["opentelemetry.sdk.trace"]
    if exporter is None and eff.exporter == "otlp":
        modules.append("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    require("otel", "tracing (tracing.enabled in gateway.yaml)", *modules)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": eff.service_name}),
                              sampler=_sampler(eff.sampler))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif eff.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # batched off the event loop's thread: an export never holds up a micro-batch
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=eff.endpoint)))
    # The gateway's own provider, not the process-global one: a library that sets the
    # global one (or a test that configures twice) cannot take the gateway's spans away.
    _provider, _tracer = provider, provider.get_tracer(INSTRUMENTATION)
    _propagate, _stamp_untraced = eff.propagate != "off", eff.propagate == "all"
    return True


def shutdown() -> None:
    """Exports what is left and stops recording (the provider's atexit hook does this too)."""
    global _tracer, _provider, _propagate, _stamp_untraced
    provider, _provider, _tracer, _propagate, _stamp_untraced = _provider, None, None, False, False
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def span(name: str, kind: SpanKind = SpanKind.INTERNAL,
         attributes: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager[Span]:
    """A child of the current span; a shared no-op when tracing is off (check
    `is_recording()` before building attributes)."""
    if _tracer is None:
        return _OFF
    return _recording(_tracer, name, kind, attributes)


@contextlib.contextmanager
def _recording(tracer: trace.Tracer, name: str, kind: SpanKind,
               attributes: Mapping[str, Any] | None) -> Iterator[Span]:
    # not the SDK's own exception event: its message and traceback may quote a record value
    with tracer.start_as_current_span(name, kind=kind, attributes=attributes, record_exception=False,
                                      set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            record_error(current, exc)
            raise


def counts(target: Span, prefix: str, counter: Mapping[str, int]) -> None:
    """`lgw.scored_by.model = 12`-style attributes: bounded keys (model, fallback)."""
    for key, value in counter.items():
        target.set_attribute(f"{prefix}.{key}", int(value))


def record_error(target: Span, exc: BaseException) -> None:
    """The error's type only: its message may quote a record value (pii)."""
    if target.is_recording():
        target.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        target.set_attribute("error.type", type(exc).__name__)


# --------------------------------------------------------------------------- propagation
def _carrier(headers: Sequence[tuple[str, Any]] | None) -> dict[str, str] | None:
    """The trace headers of one message (a cheap scan: most carry a few headers)."""
    if not headers:
        return None
    found: dict[str, str] | None = None
    for key, value in headers:
        if key in TRACE_HEADERS:
            if found is None:
                found = {}
            found[key] = value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)
    return found


def extract(headers: Sequence[tuple[str, Any]] | None) -> SpanContext | None:
    """The valid remote span context in a message's headers, if it has one."""
    carrier = _carrier(headers)
    return _context_of(carrier) if carrier is not None else None


def _context_of(carrier: dict[str, str]) -> SpanContext | None:
    ctx = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return ctx if ctx.is_valid else None


def inject(target: Span) -> Headers:
    """`target`'s context as message headers."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(target))
    return [(k, v.encode("latin-1")) for k, v in carrier.items()]


def _header_lists(batch: SourceBatch) -> list[Sequence[tuple[str, Any]]]:
    messages = batch.messages
    if messages is None:
        return []
    lists = getattr(messages, "header_lists", None)  # the transport's own, without making InMessages
    return list(lists()) if callable(lists) else [m.headers for m in messages]


class MicroBatch:
    """The spans of one real-time micro-batch and the trace headers of what it publishes.
    `StreamDriver` makes one per batch (`micro_batch`), stamps its results before the
    sink prepares them and hands it the writes' future, which ends the publish span."""

    def __init__(self, tracer: trace.Tracer, pipeline: str, batch: SourceBatch) -> None:
        self.tracer = tracer
        self.pipeline = pipeline
        self.batch = batch
        # for each message that came with trace headers (most come without: the dicts stay
        # empty and the loop below is a truth test a message): the trace id of its input
        # context (0: invalid; UNPARSED: past the batch's budget) and the headers as they came
        self.inputs: dict[int, int] = {}
        self.carriers: dict[int, dict[str, str]] = {}
        parent: SpanContext | None = None
        links: dict[tuple[int, int], Link] = {}
        lists = _header_lists(batch) if _propagate else []
        if any(lists):  # at C speed: a batch without any header is not looked at twice
            known: dict[str, SpanContext | None] = {}  # by traceparent: a batch's records often share one
            for index, headers in enumerate(lists):
                carrier = _carrier(headers) if headers else None
                if carrier is None:
                    continue
                self.carriers[index] = carrier
                key = carrier.get("traceparent", "")
                if key in known:
                    ctx = known[key]
                elif len(known) <= MAX_LINKS:
                    # parsing costs ~4.5 us: beyond the parent and MAX_LINKS contexts a record's
                    # context is passed on as it came, unparsed (a 2000-record batch of 2000
                    # traces would otherwise spend 9 ms here)
                    ctx = known[key] = _context_of(carrier)
                else:
                    self.inputs[index] = UNPARSED
                    continue
                self.inputs[index] = ctx.trace_id if ctx is not None else 0
                if ctx is None:
                    continue
                if parent is None:
                    parent = ctx
                elif len(links) < MAX_LINKS and (ctx.trace_id, ctx.span_id) != (parent.trace_id, parent.span_id):
                    links.setdefault((ctx.trace_id, ctx.span_id), Link(ctx))
        context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else Context()
        messages = batch.messages or ()
        attributes: dict[str, Any] = {"lgw.pipeline": pipeline, "messaging.operation.type": "process",
                                      "messaging.batch.message_count": len(messages)}
        describe = getattr(messages, "trace_attributes", None)
        if callable(describe):
            attributes.update(describe())
        self.span = tracer.start_span("lgw.micro_batch", context=context, kind=SpanKind.CONSUMER,
                                      links=list(links.values()), attributes=attributes)
        self.trace_id = self.span.get_span_context().trace_id
        self.publish_span: Span | None = None
        self.outcome: Any = None
        self._own: Headers = []

    def headers_for(self, index: int) -> Headers:
        """The trace headers an output of message `index` carries (see the module doc)."""
        trace_id = self.inputs.get(index, 0)
        if trace_id != 0 and trace_id != self.trace_id:
            return [(k, v.encode("latin-1")) for k, v in self.carriers[index].items()]
        return self._own

    def scored(self, outcome: Any) -> None:
        """What the scorer made of the batch (its counts go on the span)."""
        self.outcome = outcome

    def stamp(self, outcome: Any) -> None:
        """Starts the publish span and puts each result's trace headers on it; the dead
        letters get theirs from `SourceBatch.trace` when the reject sink renders them."""
        self.publish_span = self.tracer.start_span(
            "lgw.publish", context=trace.set_span_in_context(self.span), kind=SpanKind.PRODUCER,
            attributes={"lgw.pipeline": self.pipeline, "messaging.operation.type": "send",
                        "lgw.results": len(outcome.results), "lgw.dead_letters": len(outcome.dead_letters)})
        if _propagate and (self.inputs or _stamp_untraced):
            own = self._own = inject(self.publish_span)
            if set(self.inputs.values()) - {0, self.trace_id}:  # records of other traces: each its own
                for result in outcome.results:
                    result.headers.extend(self.headers_for(result.index))
            else:  # the usual batch: every result in the batch's trace, one list shared
                for result in outcome.results:
                    result.headers.extend(own)
            self.batch.trace = self.headers_for

    def writing(self, written: Any) -> None:
        """The publish span ends when `written` (a future: the sink's and reject sink's
        writes) is done."""
        publish, self.publish_span = self.publish_span, None
        if publish is None:
            return

        def done(future: Any) -> None:
            if future.cancelled():
                publish.set_status(Status(StatusCode.ERROR, "cancelled"))
            elif future.exception() is not None:
                record_error(publish, future.exception())
            publish.end()

        written.add_done_callback(done)

    def finish(self, outcome: Any, exc: BaseException | None) -> None:
        if self.publish_span is not None:  # stamped, never written (the batch before failed)
            self.publish_span.set_attribute("lgw.written", False)
            self.publish_span.end()
        if exc is not None:
            record_error(self.span, exc)
        elif outcome is None:
            self.span.set_status(Status(StatusCode.ERROR, "scoring failed; the batch is delivered again"))
        else:
            self.span.set_attribute("lgw.results", len(outcome.results))
            self.span.set_attribute("lgw.dead_letters", len(outcome.dead_letters))
            self.span.set_attribute("lgw.paused", bool(outcome.paused))
            counts(self.span, "lgw.scored_by", outcome.scored_by)
        self.span.end()


class Off:
    """`MicroBatch` when tracing is off: every call is a no-op."""

    def scored(self, outcome: Any) -> None:
        return None

    def stamp(self, outcome: Any) -> None:
        return None

    def writing(self, written: Any) -> None:
        return None


OFF = Off()


@contextlib.contextmanager
def micro_batch(pipeline: str, batch: SourceBatch) -> Iterator[MicroBatch | Off]:
    """The span of one micro-batch, current inside the block (decode and score are its
    children); the block tells it the outcome (`scored`) for the span's counts."""
    if _tracer is None:
        yield OFF
        return
    traced = MicroBatch(_tracer, pipeline, batch)
    try:
        with trace.use_span(traced.span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield traced
    except BaseException as exc:
        traced.finish(None, exc)
        raise
    traced.finish(traced.outcome, None)


class BatchSpan:
    """The span of one batch of a batch run: from the start of its read (the source
    decodes as it reads) to its ack, with the decode span (made when the read is over:
    a read ahead runs while the batch before is scored), the score spans and the write."""

    def __init__(self, tracer: trace.Tracer, pipeline: str, label: str, batch: SourceBatch,
                 read: tuple[int, int]) -> None:
        attributes: dict[str, Any] = {"lgw.pipeline": pipeline, "lgw.run": label, "lgw.records": batch.records_in}
        for key, value in batch.position.items():
            if isinstance(value, str | int | float | bool):
                attributes[f"lgw.position.{key}"] = value
        self.span = tracer.start_span("lgw.batch", attributes=attributes, start_time=read[0], context=Context())
        decode = tracer.start_span("lgw.decode", context=trace.set_span_in_context(self.span), start_time=read[0],
                                   attributes={"lgw.records": batch.records_in,
                                               "lgw.rejected": len({r.record for r in batch.rejects})})
        decode.end(end_time=read[1])
        if _propagate:
            own = inject(self.span)
            batch.trace = lambda _index: own

    def current(self) -> contextlib.AbstractContextManager[Any]:
        return trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False)

    def end(self, delivery: Any = None, exc: BaseException | None = None) -> None:
        if exc is not None:
            record_error(self.span, exc)
        if delivery is not None:
            self.span.set_attribute("lgw.records_out", int(delivery.rows))
            self.span.set_attribute("lgw.rejected", len({r.record for r in delivery.rejects}))
        self.span.end()


class BatchOff:
    """`BatchSpan` when tracing is off."""

    def current(self) -> contextlib.AbstractContextManager[Any]:
        return _OFF

    def end(self, delivery: Any = None, exc: BaseException | None = None) -> None:
        return None


BATCH_OFF = BatchOff()


def clock() -> int:
    """Now, as span times are given (ns since the epoch)."""
    return time.time_ns()


def batch_span(pipeline: str, label: str, batch: SourceBatch, read: tuple[int, int]) -> BatchSpan | BatchOff:
    if _tracer is None:
        return BATCH_OFF
    return BatchSpan(_tracer, pipeline, label, batch, read)


def describe_score(target: Span, pipeline: Any, records: int, scored: Any) -> None:
    """The score span's attributes: the model, how many records each of model and
    fallback scored, how many the pipeline refused, whether it paused."""
    target.set_attribute("lgw.pipeline", pipeline.name)
    target.set_attribute("lgw.records", records)
    if pipeline.model is not None:
        target.set_attribute("lgw.model", pipeline.model_name)
    target.set_attribute("lgw.paused", bool(scored.paused))
    target.set_attribute("lgw.rejected", len(scored.rejects))
    if not scored.paused:
        counts(target, "lgw.scored_by", Counter(scored.counts()))


__all__ = [
    "BATCH_OFF",
    "MAX_LINKS",
    "OFF",
    "BatchOff",
    "BatchSpan",
    "Effective",
    "MicroBatch",
    "Off",
    "TracingConfig",
    "batch_span",
    "clock",
    "configure",
    "counts",
    "describe_score",
    "effective",
    "enabled",
    "extract",
    "inject",
    "micro_batch",
    "record_error",
    "shutdown",
    "span",
]
