"""`gateway.yaml`: the models, the pipelines and the state store. Environment variables
override it (`LGW_STATE_URL`, `LGW_MODEL_<NAME>_URL`) and carry secrets. With no file,
the embedded defaults run the bundled example: the in-process ONNX fraud model and
SQLite for state. Config is data (pydantic, validated before anything starts); the
runtime objects are built from it once."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from adapters.models.base import DEFAULT_MAX_RESPONSE_BYTES
from adapters.odbc.connection import OdbcConnectionConfig
from gateway.resilience.breaker import BreakerConfig
from gateway.resilience.retry import RetryPolicy
from schemas.errors import ConfigError
from schemas.yaml_loader import load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnnxModelConfig(_Strict):
    backend: Literal["onnx"] = "onnx"
    path: str
    sha256: str | None = None  # pinned: a different file refuses to load
    version: str = "1"


class KServeModelConfig(_Strict):
    backend: Literal["kserve"]
    url: str
    model_name: str
    version: str | None = None


class MlflowModelConfig(_Strict):
    backend: Literal["mlflow"]
    url: str
    version: str = "1"


class ModelConfig(_Strict):
    """One model endpoint and how the gateway guards it."""

    endpoint: Annotated[OnnxModelConfig | KServeModelConfig | MlflowModelConfig, Field(discriminator="backend")]
    timeout_s: float = Field(default=2.0, gt=0)
    max_concurrency: int = Field(default=4, ge=1)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    # HTTP backends: the most of one answer that is read; past it the answer is a model
    # failure (the rest is never received), so a runaway server cannot exhaust memory
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)


class Policy(StrEnum):
    FALLBACK = "fallback"  # score with the rules while the model is unavailable
    PAUSE = "pause"  # stop taking input until the breaker closes
    FALLBACK_AND_RESCORE = "fallback_and_rescore"  # rules now, the model's correction later


OutputFormat = Literal["csv", "jsonl", "fixed", "parquet"]


class DropFolderConfig(_Strict):
    """A drop folder: legacy systems put files into `inbox`; results appear in `outbox`,
    the input moves to `done` (or `failed`). Paths are relative to the config file.
    `done`, `failed` and `work` (where a file sits while it runs) default to siblings of
    the inbox. A file is taken when it is complete: NAME.done exists (`done_file`), or
    its size and times have not changed for `stable_for_s`."""

    type: Literal["dropfolder"] = "dropfolder"
    inbox: str
    glob: str = "*"
    stable_for_s: float = Field(default=5.0, ge=0)
    done_file: bool = False
    outbox: str
    format: OutputFormat = "jsonl"
    done: str | None = None
    failed: str | None = None
    work: str | None = None
    poll_s: float = Field(default=2.0, gt=0)  # `lgw run`: how often the inbox is scanned

    @field_validator("glob")
    @classmethod
    def _file_name_pattern(cls, v: str) -> str:
        # a pattern of names inside the inbox, never a path: no way out of the folder
        if not v or "/" in v or "\\" in v or "\0" in v or v in (".", "..") or v.startswith("."):
            raise ValueError(f"glob must be a file name pattern such as 'CARDTXN*.DAT' (no folders), found {v!r}")
        return v

    def folders(self, base: Path) -> dict[str, Path]:
        """inbox, outbox, done, failed, work: absolute, normalised (not yet resolved on disk)."""
        def at(path: str | None, default: str) -> Path:
            p = Path(path) if path else Path(self.inbox).parent / default
            return Path(os.path.abspath(p if p.is_absolute() else base / p))

        return {"inbox": at(self.inbox, ""), "outbox": at(self.outbox, ""), "done": at(self.done, "done"),
                "failed": at(self.failed, "failed"), "work": at(self.work, "work")}


class OdbcSourceConfig(_Strict):
    """Rows of a table (or query) reachable over ODBC. Secrets come from the environment
    through `${VAR}` placeholders in the connection."""

    type: Literal["odbc"]
    connection: OdbcConnectionConfig
    table: str | None = None
    query: str | None = None
    mode: Literal["full", "incrementing", "timestamp"] = "full"
    key: str | None = None
    timestamp: str | None = None
    lag_s: float = Field(default=0.0, ge=0)  # timestamp mode: rows this recent are left for the next run
    overlap_s: float = Field(default=0.0, ge=0)  # timestamp mode: re-read window for late commits
    batch_rows: int = Field(default=50_000, ge=1)


class OdbcSinkConfig(_Strict):
    """Results upserted by key into a table, each chunk in one transaction with its checkpoint."""

    type: Literal["odbc"] = "odbc"
    connection: OdbcConnectionConfig
    table: str
    key: list[str]
    columns: list[str] | None = None  # default: every input column, the outputs and the provenance
    rejects: str = "var/rejects"  # folder for the rejects (JSON Lines per run), relative to the config


class KafkaSourceConfig(_Strict):
    """Real time: records arrive on Kafka topics; results go to `result_topic` with the
    input key, dead letters (data errors only) to `dlq_topic` with the original bytes."""

    type: Literal["kafka"]
    topics: list[str] = Field(min_length=1)
    group_id: str
    payload: Literal["json", "copybook"] = "json"
    result_topic: str
    dlq_topic: str
    result_format: Literal["json", "fixed"] | None = None  # default: json for JSON, fixed for copybook
    max_records: int = Field(default=500, ge=1)  # micro-batch size
    max_wait_ms: int = Field(default=20, ge=1)  # how long a micro-batch may wait to fill


class AmqpSourceConfig(_Strict):
    """Real time over a legacy queue (AMQP 0-9-1): request/reply. A request names its
    `reply_to` queue and a `correlation_id`; the reply goes there with the same id.
    Rejected requests are published to `dead_letter_exchange` with the reason, and the
    requester gets a reply saying so."""

    type: Literal["amqp"]
    queue: str
    payload: Literal["json", "copybook"] = "copybook"
    result_format: Literal["json", "fixed"] | None = None
    prefetch: int = Field(default=64, ge=1)  # bounds the requests in flight
    dead_letter_exchange: str = "lgw.dlx"
    dead_letter_routing_key: str | None = None  # default: the queue's name


def _source_type(value: Any) -> str:
    """`type` picks the source; a drop folder may leave it out."""
    if isinstance(value, dict):
        return str(value.get("type", "dropfolder"))
    return str(getattr(value, "type", "dropfolder"))


class PipelineConfig(_Strict):
    contract: str
    model: str | None = None  # a key of `models`; None scores with the rules only
    policy: Policy = Policy.FALLBACK
    shadow: bool = False  # evaluate the rules beside the model and record agreement
    batch_size: int = Field(default=50_000, ge=1)
    # a file whose reject rate passes max_reject_rate (judged after reject_rate_after
    # records) stops early and goes to failed/; 1 never stops
    max_reject_rate: float = Field(default=0.5, ge=0, le=1)
    reject_rate_after: int = Field(default=1000, ge=1)
    require_records: bool = False  # a file without any record goes to failed/ (else: a warning)
    # batch mode: where the records come from (a drop folder or an ODBC table) and, for a
    # table, where the results go
    # real time: Kafka topics or an AMQP queue
    source: Annotated[Annotated[DropFolderConfig, Tag("dropfolder")] | Annotated[OdbcSourceConfig, Tag("odbc")]
                      | Annotated[KafkaSourceConfig, Tag("kafka")] | Annotated[AmqpSourceConfig, Tag("amqp")],
                      Discriminator(_source_type)] | None = None
    sink: OdbcSinkConfig | None = None

    @model_validator(mode="after")
    def _table_needs_sink(self) -> PipelineConfig:
        if isinstance(self.source, OdbcSourceConfig) and self.sink is None:
            raise ValueError("an ODBC source needs a `sink` (the results table)")
        if self.realtime and self.policy == Policy.FALLBACK_AND_RESCORE:
            raise ValueError("policy fallback_and_rescore is for batch sources; a real-time pipeline "
                             "takes fallback or pause")
        return self

    @property
    def realtime(self) -> bool:
        return isinstance(self.source, KafkaSourceConfig | AmqpSourceConfig)


class KafkaConfig(_Strict):
    """The Kafka cluster of the real-time pipelines (`LGW_KAFKA_BOOTSTRAP` overrides)."""

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "lgw"
    # Results and dead letters are acknowledged by all in-sync replicas before offsets
    # are committed. Idempotence needs broker support (Apache Kafka has it).
    acks: Literal["all"] = "all"
    enable_idempotence: bool = True
    # The results of a micro-batch go out as whole record batches, one per partition:
    # lingering would only hold them back (measured: p50 latency 107 -> 75 ms, 5 -> 0 ms).
    linger_ms: int = Field(default=0, ge=0)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    fetch_max_wait_ms: int = Field(default=100, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    graceful_timeout_s: float = Field(default=30.0, gt=0)  # shutdown: how long in-flight batches may take


class AmqpConfig(_Strict):
    """The AMQP 0-9-1 broker (RabbitMQ) of the legacy-queue pipelines (`LGW_AMQP_URL` overrides)."""

    url: str = "amqp://guest:guest@localhost:5672/"
    graceful_timeout_s: float = Field(default=30.0, gt=0)


class StateConfig(_Strict):
    url: str = "sqlite:///var/lgw-state.db"


class GatewayConfig(_Strict):
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    state: StateConfig = Field(default_factory=StateConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    amqp: AmqpConfig = Field(default_factory=AmqpConfig)
    # refuse an in-process model without a `sha256` pin (unpinned ones load with a warning)
    require_model_pins: bool = False
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    @model_validator(mode="after")
    def _pinned_models(self) -> GatewayConfig:
        if self.require_model_pins:
            for name, model in self.models.items():
                if isinstance(model.endpoint, OnnxModelConfig) and not model.endpoint.sha256:
                    raise ValueError(f"models.{name}.endpoint.sha256: require_model_pins is true, and model "
                                     f"{name} ({model.endpoint.path}) has no sha256 pin; add the file's sha256")
        return self

    @model_validator(mode="after")
    def _separate_folders(self) -> GatewayConfig:
        """Each drop folder's inbox, outbox, done, failed and work are distinct and none
        holds another (an outbox inside the inbox would feed outputs back in); no two
        pipelines share an inbox."""
        inboxes: dict[Path, str] = {}
        for name, pipe in self.pipelines.items():
            if not isinstance(pipe.source, DropFolderConfig):
                continue
            folders = pipe.source.folders(self.base_dir)
            for a, pa_ in folders.items():
                for b, pb in folders.items():
                    if a < b and (pa_ == pb or pa_ in pb.parents or pb in pa_.parents):
                        raise ValueError(f"pipelines.{name}.source: {a} ({pa_}) and {b} ({pb}) must be "
                                         "separate folders, neither inside the other")
            if folders["inbox"] in inboxes:
                raise ValueError(f"pipelines.{name}.source.inbox: {folders['inbox']} is also the inbox of "
                                 f"pipeline {inboxes[folders['inbox']]}")
            inboxes[folders["inbox"]] = name
        return self


def example_dropfolder_config(state_url: str, *, fmt: str = "jsonl", batch_size: int = 50_000,
                              **source: Any) -> dict[str, Any]:
    """gateway.yaml content for the bundled example fed by ./drop/inbox (relative to the
    file): the pinned ONNX model, the card-transaction contract, SQLite state at `state_url`."""
    from schemas.examples import contract_path, model_info

    info = model_info("fraud")
    return {
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {"card_txn": {
            "contract": str(contract_path()), "model": "fraud", "batch_size": batch_size,
            "source": {"inbox": "drop/inbox", "outbox": "drop/outbox", "glob": "*.DAT", "stable_for_s": 0,
                       "format": fmt, **source},
        }},
        "state": {"url": state_url},
    }


def embedded_defaults() -> GatewayConfig:
    """The bundled example: fraud model in process, card-transaction pipeline fed by a drop
    folder under ./var/drop, SQLite for state."""
    from schemas.examples import contract_path, model_info

    info = model_info("fraud")
    models = {"fraud": ModelConfig(endpoint=OnnxModelConfig(path=str(info["path"]), sha256=info["sha256"],
                                                            version=str(info["version"])))}
    # a drop folder under ./var/drop: inbox/, outbox/, and done/, failed/, work/ beside them
    drop = DropFolderConfig(inbox="var/drop/inbox", outbox="var/drop/outbox", glob="*")
    pipelines = {"card_txn": PipelineConfig(contract=str(contract_path("card_txn")), model="fraud", source=drop)}
    return _with_env(GatewayConfig(models=models, pipelines=pipelines))


def _with_env(cfg: GatewayConfig) -> GatewayConfig:
    url = os.environ.get("LGW_STATE_URL")
    if url:
        cfg.state.url = url
    cfg.kafka.bootstrap_servers = os.environ.get("LGW_KAFKA_BOOTSTRAP", cfg.kafka.bootstrap_servers)
    cfg.amqp.url = os.environ.get("LGW_AMQP_URL", cfg.amqp.url)
    for name, model in cfg.models.items():
        override = os.environ.get(f"LGW_MODEL_{name.upper()}_URL")
        if override and not isinstance(model.endpoint, OnnxModelConfig):
            model.endpoint.url = override
    return cfg


def _location(loc: tuple[Any, ...]) -> str:
    """The key path of a config error, without pydantic's union tags (source.dropfolder...)."""
    tags = ("dropfolder", "odbc", "kafka", "amqp")
    parts = [str(x) for i, x in enumerate(loc) if not (i and loc[i - 1] == "source" and x in tags)]
    return ".".join(parts)


def load_config(path: str | os.PathLike[str] | None) -> GatewayConfig:
    if path is None:
        return embedded_defaults()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p}: expected UTF-8 YAML text; byte {exc.start} is not UTF-8") from None
    raw: Any = load_yaml(text, str(p))
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with models, pipelines, state; found {type(raw).__name__}")
    try:
        cfg = GatewayConfig.model_validate({**raw, "base_dir": p.parent})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = _location(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid":  # pydantic's wording names our discriminator function
            ctx = first.get("ctx", {})
            msg = f"type: expected one of {ctx.get('expected_tags', '?')}; found {ctx.get('tag', '?')!r}"
        raise ConfigError(f"{p}: {loc}: {msg}" if loc else f"{p}: {msg}") from None
    for name, pipe in cfg.pipelines.items():
        if pipe.model is not None and pipe.model not in cfg.models:
            raise ConfigError(f"{p}: pipelines.{name}.model: no model named {pipe.model!r} "
                              f"(models: {', '.join(cfg.models) or 'none'})")
    return _with_env(cfg)
