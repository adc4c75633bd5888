"""`gateway.yaml`: the models, the pipelines and the state store. Environment variables
override it (`LGW_STATE_URL`, `LGW_MODEL_<NAME>_URL`, ...: gateway.settings) and carry
secrets. With no file, the embedded defaults run the bundled example in the data
directory: the in-process ONNX fraud model and SQLite for state. Config is data
(pydantic, validated before anything starts); the runtime objects are built from it once."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from adapters import registry
from adapters.amqp.config import AmqpConfig, AmqpRejectsConfig, AmqpSinkConfig, AmqpSourceConfig
from adapters.files.config import DropFolderConfig, FileRejectsConfig, FileSinkConfig
from adapters.files.formats import Format
from adapters.kafka.config import KafkaConfig, KafkaRejectsConfig, KafkaSinkConfig, KafkaSourceConfig
from adapters.models.base import DEFAULT_MAX_RESPONSE_BYTES
from adapters.models.security import HttpAuthConfig
from adapters.odbc.config import OdbcRejectsConfig, OdbcSinkConfig, OdbcSourceConfig
from adapters.tls import TLSConfig
from gateway.console.config import ConsoleConfig
from gateway.governance.audit import AuditConfig
from gateway.governance.monitor import DriftConfig
from gateway.governance.review import ReviewConfig
from gateway.metrics_push import PushgatewayConfig
from gateway.ops_http import OpsConfig
from gateway.resilience.breaker import BreakerConfig
from gateway.resilience.retry import RetryPolicy
from gateway.settings import (
    data_dir,
    default_state_url,
    load_settings,
    model_url,
    resolve_state_url,
    secret,
    settings_problems,
)
from gateway.tracing import TracingConfig
from schemas.contract import PiiAction
from schemas.errors import ConfigError
from schemas.records import DEFAULT_BATCH_SIZE
from schemas.yaml_loader import load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OnnxModelConfig(_Strict):
    backend: Literal["onnx"] = "onnx"
    path: str
    sha256: str | None = None  # pinned: a different file refuses to load
    version: str = "1"


class _HttpEndpoint(_Strict):
    """A model server over HTTP: `auth` (a bearer token from the environment) and `tls`
    (CA, client certificate for mutual TLS) as adapters/models/security.py applies them."""

    url: str
    auth: HttpAuthConfig | None = None
    tls: TLSConfig | None = None


class KServeModelConfig(_HttpEndpoint):
    backend: Literal["kserve"]
    model_name: str
    version: str | None = None


class MlflowModelConfig(_HttpEndpoint):
    backend: Literal["mlflow"]
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


OutputFormat = Format

def _choice(role: registry.Role, default: str) -> Any:
    """The `source:`/`sink:`/`rejects:` config type: one of the registered components'
    configs, picked by `type` (`default` where it is left out, as configs written before
    the other types existed do)."""
    def pick(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("type", default))
        return str(getattr(value, "type", default))

    tagged = tuple(Annotated[c.config, Tag(c.kind)] for c in registry.components(role))
    return Annotated[Union[tagged], Discriminator(pick)]  # noqa: UP007 - built from the registry


if TYPE_CHECKING:  # what the registry holds today, for the type checker
    SourceConfig = DropFolderConfig | OdbcSourceConfig | KafkaSourceConfig | AmqpSourceConfig
    SinkConfig = FileSinkConfig | OdbcSinkConfig | KafkaSinkConfig | AmqpSinkConfig
    RejectsConfig = FileRejectsConfig | OdbcRejectsConfig | KafkaRejectsConfig | AmqpRejectsConfig
else:
    SourceConfig = _choice("source", "dropfolder")
    SinkConfig = _choice("sink", "odbc")
    RejectsConfig = _choice("rejects", "file")


class PipelineConfig(_Strict):
    contract: str
    model: str | None = None  # a key of `models`; None scores with the rules only
    policy: Policy = Policy.FALLBACK
    shadow: bool = False  # evaluate the rules beside the model and record agreement
    # records a batch (a source may set its own); left out: 50,000, and a drop folder's
    # files schemas.records.DEFAULT_BATCH_SIZE (`_file_chunks`)
    batch_size: int = Field(default=50_000, ge=1)
    # a file whose reject rate passes max_reject_rate (judged after reject_rate_after
    # records) stops early and goes to failed/; 1 never stops
    max_reject_rate: float = Field(default=0.5, ge=0, le=1)
    reject_rate_after: int = Field(default=1000, ge=1)
    require_records: bool = False  # a file without any record goes to failed/ (else: a warning)
    # per field, what the contract's pii policy becomes for this pipeline's outputs
    # (`{TXN-PAN: clear}`: the legacy side needs the key back); gateway.governance.pii
    pii: dict[str, PiiAction] = Field(default_factory=dict)
    # compare every run (every window of a stream) with a reference profile; thresholds and
    # the action on a breach (gateway.governance.monitor)
    drift: DriftConfig | None = None
    # where records come from, where the scored ones go, where rejects go: any registered
    # component of each role (`lgw components`); sink and rejects default to what the
    # source implies (a drop folder's outbox, a Kafka source's result and DLQ topics, an
    # AMQP source's replies and dead-letter exchange)
    source: SourceConfig | None = None
    sink: SinkConfig | None = None
    rejects: RejectsConfig | None = None
    review: ReviewConfig | None = None  # records a person looks at (gateway.governance.review)

    @model_validator(mode="after")
    def _file_chunks(self) -> PipelineConfig:
        """A file is read in larger chunks than a table page or a topic's micro-batch: those
        keep the 50,000 that their latency and their servers were measured with."""
        if "batch_size" not in self.model_fields_set and isinstance(self.source, DropFolderConfig):
            self.batch_size = DEFAULT_BATCH_SIZE
        return self

    @model_validator(mode="after")
    def _hold_is_for_batches(self) -> PipelineConfig:
        if self.review is not None and self.review.hold and isinstance(self.source, KafkaSourceConfig
                                                                        | AmqpSourceConfig):
            raise ValueError(f"review.hold: true holds records back until a reviewer decides, which a "
                             f"{self.source.type} source cannot wait for (its consumers and requesters expect a "
                             "result now): use hold: false (the result carries review: pending)")
        return self

    @model_validator(mode="after")
    def _parts_fit(self) -> PipelineConfig:
        if self.source is None:
            if self.sink is not None or self.rejects is not None:
                raise ValueError("`sink` and `rejects` need a `source` to feed them")
            return self
        src = self.source
        if isinstance(src, OdbcSourceConfig) and self.sink is None:
            raise ValueError("an ODBC source needs a `sink` (where the results go: a table, a file, a topic)")
        if isinstance(src, KafkaSourceConfig):
            if self.sink is None and not src.result_topic:
                raise ValueError("a Kafka source needs a `sink` or its `result_topic`")
            if self.rejects is None and not src.dlq_topic:
                raise ValueError("a Kafka source needs `rejects` or its `dlq_topic` (where dead letters go)")
        if self.realtime and self.policy == Policy.FALLBACK_AND_RESCORE:
            raise ValueError("policy fallback_and_rescore is for batch sources; a real-time pipeline "
                             "takes fallback or pause")
        if not self.realtime and self.policy == Policy.FALLBACK_AND_RESCORE:
            raise ValueError(f"policy fallback_and_rescore is for `lgw score` (its corrections file stands "
                             f"beside the output it corrects); a {src.type} pipeline takes fallback or pause")
        problem = registry.combination_problem(
            registry.component("source", src.type), registry.component("sink", self.output.type),
            registry.component("rejects", self.rejects_to.type), sink_extra=self.output)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def realtime(self) -> bool:
        return isinstance(self.source, KafkaSourceConfig | AmqpSourceConfig)

    @property
    def output(self) -> SinkConfig:
        """Where scored records go: `sink`, or what the source implies."""
        if self.sink is not None:
            return self.sink
        src = self.source
        if isinstance(src, DropFolderConfig):
            return FileSinkConfig(folder=src.outbox, format=src.format)
        if isinstance(src, KafkaSourceConfig):
            assert src.result_topic is not None  # checked at load
            return KafkaSinkConfig(topic=src.result_topic, format=src.result_format)
        if isinstance(src, AmqpSourceConfig):
            return AmqpSinkConfig(format=src.result_format)
        raise ValueError("this pipeline has no sink")

    @property
    def rejects_to(self) -> RejectsConfig:
        """Where rejects and dead letters go: `rejects`, or what the source implies."""
        if self.rejects is not None:
            return self.rejects
        src = self.source
        if isinstance(src, DropFolderConfig):
            return FileRejectsConfig(folder=src.outbox)
        if isinstance(src, KafkaSourceConfig):
            assert src.dlq_topic is not None  # checked at load
            return KafkaRejectsConfig(topic=src.dlq_topic)
        if isinstance(src, AmqpSourceConfig):
            return AmqpRejectsConfig(exchange=src.dead_letter_exchange,
                                     routing_key=src.dead_letter_routing_key or src.queue)
        folder = self.sink.rejects if isinstance(self.sink, OdbcSinkConfig) else "var/rejects"
        return FileRejectsConfig(folder=folder)


class StateConfig(_Strict):
    # Unset: SQLite beside gateway.yaml, or in the data directory (gateway.settings);
    # load_config fills it in, this default serves configs built in code.
    url: str = Field(default_factory=lambda: default_state_url(None))
    # A batch run whose owner has not renewed its lease for this long may be taken over by
    # another replica (the owner renews it every lease_s / 4). Shorter: a dead replica's
    # run resumes sooner; too short: a replica stalled longer than that (a long GC pause,
    # a slow model call) loses its run and stops. Every replica should use the same value.
    lease_s: float = Field(default=120.0, gt=0)


class GatewayConfig(_Strict):
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    state: StateConfig = Field(default_factory=StateConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    amqp: AmqpConfig = Field(default_factory=AmqpConfig)
    pushgateway: PushgatewayConfig = Field(default_factory=PushgatewayConfig)  # where `lgw batch run` pushes
    ops: OpsConfig = Field(default_factory=OpsConfig)  # /healthz, /readyz, /metrics of `lgw serve` and `lgw run`
    tracing: TracingConfig = Field(default_factory=TracingConfig)  # OpenTelemetry spans (gateway.tracing)
    audit: AuditConfig = Field(default_factory=AuditConfig)  # decisions and operator actions (gateway.governance)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)  # admin API and console, with auth
    # refuse an in-process model without a `sha256` pin (unpinned ones load with a warning)
    require_model_pins: bool = False
    base_dir: Path = Field(default=Path("."), exclude=True)

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else (self.base_dir / p)

    @model_validator(mode="after")
    def _tls_files_beside_config(self) -> GatewayConfig:
        """Relative TLS file names are taken from the config file's folder, as every other path."""
        if self.kafka.tls is not None:
            self.kafka.tls = self.kafka.tls.resolved(self.base_dir)
        if self.amqp.tls is not None:
            self.amqp.tls = self.amqp.tls.resolved(self.base_dir)
        for model in self.models.values():
            ep = model.endpoint
            if not isinstance(ep, OnnxModelConfig) and ep.tls is not None:
                ep.tls = ep.tls.resolved(self.base_dir)
        return self

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


def example_dropfolder_config(state_url: str, *, fmt: str = "jsonl", batch_size: int = DEFAULT_BATCH_SIZE,
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
    folder in the data directory (gateway.settings.data_dir), SQLite for state there too."""
    from schemas.examples import contract_path, model_info

    info = model_info("fraud")
    models = {"fraud": ModelConfig(endpoint=OnnxModelConfig(path=str(info["path"]), sha256=info["sha256"],
                                                            version=str(info["version"])))}
    # a drop folder under <data dir>/drop: inbox/, outbox/, and done/, failed/, work/ beside them
    home = data_dir()
    drop = DropFolderConfig(inbox=str(home / "drop" / "inbox"), outbox=str(home / "drop" / "outbox"), glob="*")
    pipelines = {"card_txn": PipelineConfig(contract=str(contract_path("card_txn")), model="fraud", source=drop)}
    return _with_env(GatewayConfig(models=models, pipelines=pipelines, base_dir=home), None)


def _with_env(cfg: GatewayConfig, config_dir: Path | None) -> GatewayConfig:
    """The `LGW_*` overrides (gateway.settings: each may come from a `_FILE` instead, as
    they may carry credentials), and the state store's place: the config's own URL (a
    relative SQLite path taken from `config_dir`), else beside the config, else in the
    data directory."""
    settings = load_settings()
    if "url" in cfg.state.model_fields_set and config_dir is not None:
        cfg.state.url = resolve_state_url(cfg.state.url, config_dir)
    elif "url" not in cfg.state.model_fields_set:
        cfg.state.url = default_state_url(config_dir, settings)
    cfg.state.url = secret(settings.state_url) or cfg.state.url
    cfg.kafka.bootstrap_servers = settings.kafka_bootstrap or cfg.kafka.bootstrap_servers
    cfg.amqp.url = secret(settings.amqp_url) or cfg.amqp.url
    for name, model in cfg.models.items():
        override = model_url(name)
        if override and not isinstance(model.endpoint, OnnxModelConfig):
            model.endpoint.url = override
    return cfg


def _location(loc: tuple[Any, ...]) -> str:
    """The key path of a config error, without pydantic's union tags (source.dropfolder...)."""
    tags = {c.kind for c in registry.components()}
    parts = [str(x) for i, x in enumerate(loc)
             if not (i and loc[i - 1] in ("source", "sink", "rejects") and x in tags)]
    return ".".join(parts)


def _read_mapping(p: Path) -> dict[str, Any]:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p}: expected UTF-8 YAML text; byte {exc.start} is not UTF-8") from None
    raw: Any = load_yaml(text, str(p))
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping with models, pipelines, state; found {type(raw).__name__}")
    return raw


def _error_line(p: Path, error: Any) -> str:
    """One pydantic error as `PATH: LOCATION: message`."""
    loc = _location(error["loc"])
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":  # pydantic's wording names our discriminator function
        ctx = error.get("ctx", {})
        msg = f"type: expected one of {ctx.get('expected_tags', '?')}; found {ctx.get('tag', '?')!r}"
    return f"{p}: {loc}: {msg}" if loc else f"{p}: {msg}"


def _reference_problems(p: Path, cfg: GatewayConfig) -> list[str]:
    """What validation cannot see on its own: names that point at other sections."""
    return [f"{p}: pipelines.{name}.model: no model named {pipe.model!r} "
            f"(models: {', '.join(cfg.models) or 'none'})"
            for name, pipe in cfg.pipelines.items()
            if pipe.model is not None and pipe.model not in cfg.models]


def _review_problems(p: Path, cfg: GatewayConfig) -> list[str]:
    """Each pipeline's `review:` against its contract (the band within the judged output's
    min/max, `when` compiled on the record's fields); fills in the judged output's name.
    A contract that is not there is reported as a missing file (or when the run starts)."""
    from gateway.contract_scoring import load_scoring_contract
    from gateway.governance.review import check_review

    problems: list[str] = []
    for name, pipe in cfg.pipelines.items():
        if pipe.review is None or not cfg.resolve(pipe.contract).is_file():
            continue
        try:
            contract = load_scoring_contract(cfg.resolve(pipe.contract))
        except ConfigError as exc:
            problems.append(f"{p}: pipelines.{name}.contract: {exc}")
            continue
        try:
            pipe.review = check_review(pipe.review, contract)
        except ConfigError as exc:
            problems.append(f"{p}: pipelines.{name}.{exc}")
    return problems


def load_config(path: str | os.PathLike[str] | None) -> GatewayConfig:
    if path is None:
        return embedded_defaults()
    p = Path(path)
    raw = _read_mapping(p)
    try:
        cfg = GatewayConfig.model_validate({**raw, "base_dir": p.parent})
    except ValidationError as exc:
        raise ConfigError(_error_line(p, exc.errors()[0])) from None
    problems = _reference_problems(p, cfg) or _review_problems(p, cfg)
    if problems:
        raise ConfigError(problems[0])
    return _with_env(cfg, p.parent)


def check_config(path: str | os.PathLike[str] | None) -> tuple[GatewayConfig | None, list[str]]:
    """The config and every problem found in it and in the environment that overrides
    it (`lgw config check`), where `load_config` stops at the first; None for the config
    when any. An unreadable file is still a ConfigError: there is nothing to list
    problems of."""
    if path is None:
        env = settings_problems()
        return (None, env) if env else (embedded_defaults(), [])
    p = Path(path)
    raw = _read_mapping(p)
    models = raw.get("models")
    env = settings_problems(models if isinstance(models, dict) else ())
    try:
        cfg = GatewayConfig.model_validate({**raw, "base_dir": p.parent})
    except ValidationError as exc:
        # the names that point at other sections are checked on the raw mapping, so that
        # a wrong model name is listed together with the validation errors
        return None, (env + [_error_line(p, e) for e in exc.errors()] + _raw_reference_problems(p, raw)
                      + _missing_files(p, raw))
    problems = env + _reference_problems(p, cfg) + _missing_files(p, raw) + _review_problems(p, cfg)
    return (None, problems) if problems else (_with_env(cfg, p.parent), [])


def _raw_reference_problems(p: Path, raw: dict[str, Any]) -> list[str]:
    models = raw.get("models") if isinstance(raw.get("models"), dict) else {}
    pipelines = raw.get("pipelines") if isinstance(raw.get("pipelines"), dict) else {}
    assert isinstance(models, dict) and isinstance(pipelines, dict)
    return [f"{p}: pipelines.{name}.model: no model named {pipe['model']!r} (models: {', '.join(models) or 'none'})"
            for name, pipe in pipelines.items()
            if isinstance(pipe, dict) and isinstance(pipe.get("model"), str) and pipe["model"] not in models]


def _missing_files(p: Path, raw: dict[str, Any]) -> list[str]:
    """Contracts and in-process model files that are not there (relative to the config,
    as the gateway resolves them), found now rather than when a run starts."""
    wanted: list[tuple[str, Any]] = []
    for section, key, where in (("pipelines", "contract", "contract"), ("models", "endpoint", "endpoint.path")):
        entries = raw.get(section)
        for name, entry in (entries.items() if isinstance(entries, dict) else ()):
            value = entry.get(key) if isinstance(entry, dict) else None
            if key == "endpoint":
                value = value.get("path") if isinstance(value, dict) and value.get("backend") == "onnx" else None
            if isinstance(value, str):
                wanted.append((f"{section}.{name}.{where}", value))
    return [f"{p}: {loc}: expected a file, found nothing at {p.parent / value}" for loc, value in wanted
            if not (p.parent / value).is_file()]
