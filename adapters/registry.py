"""Every source, sink and reject sink the gateway can use, registered in one place.

A component is one module implementing `adapters.base.Source`, `Sink` or `RejectSink`,
one config class (its `type:` in gateway.yaml), and an entry here. `gateway.config`
builds the `source:`, `sink:` and `rejects:` choices from this table, the drivers build
components through `build`, and `lgw components` prints it: adding a component touches
no driver.

Modes: `batch` runs end (a file, a table scan) and publish their outputs at the end;
`stream` runs never end and ack per micro-batch. A sink or reject sink that only makes
sense for a run that ends (a file published whole) is batch-only; one that answers a
requester (an AMQP reply) needs a source that has requesters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.amqp.config import AmqpConfig, AmqpRejectsConfig, AmqpSinkConfig, AmqpSourceConfig
from adapters.config import ComponentConfig
from adapters.files.config import DropFolderConfig, FileRejectsConfig, FileSinkConfig
from adapters.kafka.config import KafkaConfig, KafkaRejectsConfig, KafkaSinkConfig, KafkaSourceConfig
from adapters.odbc.config import OdbcRejectsConfig, OdbcSinkConfig, OdbcSourceConfig
from schemas.errors import ConfigError

Role = Literal["source", "sink", "rejects"]
Mode = Literal["batch", "stream"]


@dataclass(frozen=True)
class Component:
    kind: str  # what `type:` says in gateway.yaml
    role: Role
    modes: frozenset[Mode]  # a source: the mode it drives; a sink: the modes it can serve
    config: type[ComponentConfig]
    builder: str  # "module:function", imported only when the component is built
    delivery: str  # what durable means and what a crash can repeat
    summary: str
    needs_source: frozenset[str] = field(default_factory=frozenset)  # empty: any source

    def build(self, config: ComponentConfig, context: BuildContext) -> Any:
        module, _, name = self.builder.partition(":")
        factory: Callable[[ComponentConfig, BuildContext], Any] = getattr(importlib.import_module(module), name)
        return factory(config, context)


@dataclass
class BuildContext:
    """What a component's builder may use besides its own config."""

    pipeline: str
    contract: Any  # schemas.contract.Contract
    base_dir: Path
    source: ComponentConfig  # the pipeline's source (sinks answering it take its details)
    batch_size: int = 50_000
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    state: Any = None  # gateway.state.StateStore: watermarks, checkpoints
    run_name: str | None = None  # a batch run: the stem its files are named after
    extras: dict[str, Any] = field(default_factory=dict)  # what a driver passes to its own components

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p


BATCH: frozenset[Mode] = frozenset({"batch"})
STREAM: frozenset[Mode] = frozenset({"stream"})
BOTH: frozenset[Mode] = frozenset({"batch", "stream"})

COMPONENTS: tuple[Component, ...] = (
    # ---- sources
    Component("dropfolder", "source", BATCH, DropFolderConfig, "adapters.files.source:build_source",
              "a file is acked (checkpoint) per chunk once its outputs are durable; done/ when the run ends",
              "files a legacy system drops into an inbox (fixed-width, EBCDIC, copybook, CSV, JSON Lines)"),
    Component("odbc", "source", BATCH, OdbcSourceConfig, "adapters.odbc.source:build_source",
              "the watermark advances per page once its outputs are durable",
              "rows of a table or query over ODBC: full, incrementing key, or timestamp with lag/overlap"),
    Component("kafka", "source", STREAM, KafkaSourceConfig, "adapters.kafka.source:build_source",
              "offsets are committed per micro-batch once its outputs are durable (at least once)",
              "records on Kafka topics (JSON or copybook payloads), a consumer group"),
    Component("amqp", "source", STREAM, AmqpSourceConfig, "adapters.amqp.source:build_source",
              "basic.ack per message once its outputs are durable (at least once)",
              "requests on an AMQP 0-9-1 queue (RabbitMQ), request/reply"),
    # ---- sinks
    Component("file", "sink", BATCH, FileSinkConfig, "adapters.files.sink:build_sink",
              "appended and fsynced per batch to a hidden file, renamed into place when the run is done",
              "one file per run: csv, jsonl, fixed (the record's bytes with the outputs appended), parquet"),
    Component("odbc", "sink", BOTH, OdbcSinkConfig, "adapters.odbc.sink:build_sink",
              "upserted by key in one transaction per batch: a batch written twice leaves one row per key",
              "a results table over ODBC (created when missing), upsert by key"),
    Component("kafka", "sink", BOTH, KafkaSinkConfig, "adapters.kafka.sink:build_sink",
              "acknowledged by all in-sync replicas per batch; a redelivered batch is published again "
              "(same lgw-id)", "a Kafka topic, JSON or fixed-width values, provenance in headers"),
    Component("amqp", "sink", BOTH, AmqpSinkConfig, "adapters.amqp.sink:build_sink",
              "publisher-confirmed per batch; a redelivered batch is published again (same message id)",
              "an AMQP exchange, or (without `exchange`) the reply to each request"),
    # ---- reject sinks
    Component("file", "rejects", BATCH, FileRejectsConfig, "adapters.files.sink:build_rejects",
              "appended and fsynced per batch, published with the run (kept when it fails)",
              "one JSON Lines file per run: record number, field, offsets, raw bytes, reason"),
    Component("odbc", "rejects", BOTH, OdbcRejectsConfig, "adapters.odbc.rejects:build_rejects",
              "inserted in one transaction per batch", "a rejects table over ODBC (created when missing)"),
    Component("kafka", "rejects", BOTH, KafkaRejectsConfig, "adapters.kafka.sink:build_rejects",
              "acknowledged by all in-sync replicas per batch",
              "a dead-letter topic: original bytes, reason in headers"),
    Component("amqp", "rejects", BOTH, AmqpRejectsConfig, "adapters.amqp.sink:build_rejects",
              "publisher-confirmed per batch", "a dead-letter exchange: original bytes, reason in headers"),
)


def components(role: Role | None = None) -> list[Component]:
    return [c for c in COMPONENTS if role is None or c.role == role]


def component(role: Role, kind: str) -> Component:
    for c in COMPONENTS:
        if c.role == role and c.kind == kind:
            return c
    raise ConfigError(f"no {role} of type {kind!r} (registered: {', '.join(c.kind for c in components(role))})")


def config_types(role: Role) -> tuple[type[ComponentConfig], ...]:
    return tuple(c.config for c in components(role))


def combination_problem(source: Component, sink: Component | None, rejects: Component | None,
                        *, sink_extra: ComponentConfig | None = None) -> str | None:
    """Why a source cannot feed this sink and reject sink (None: it can)."""
    (mode,) = source.modes
    for part, role in ((sink, "sink"), (rejects, "rejects")):
        if part is None:
            continue
        if mode not in part.modes:
            return (f"{role} type {part.kind} is written whole when a run ends, and the {source.kind} source "
                    "never ends (real time): use a kafka, amqp or odbc " + role)
    if isinstance(sink_extra, AmqpSinkConfig) and sink_extra.exchange is None and source.kind != "amqp":
        return (f"an amqp sink without `exchange` replies to each request's reply_to queue, and the {source.kind} "
                "source has no requesters: name the exchange to publish to")
    return None
