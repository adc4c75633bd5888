"""Config of the Kafka components: the cluster, the topic source, the topic sink, the
dead-letter topic."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator

from adapters.config import ComponentConfig
from adapters.tls import TLSConfig


class SaslConfig(ComponentConfig):
    """`sasl:` of the Kafka cluster: the password is read from the variable
    `password_env` names (or its `_FILE`), never from gateway.yaml."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: str
    password_env: str


class KafkaConfig(ComponentConfig):
    """The Kafka cluster (`LGW_KAFKA_BOOTSTRAP` overrides). `security_protocol`, `tls` and
    `sasl` as Kafka names them; adapters/kafka/security.py makes them into client options."""

    bootstrap_servers: str = "localhost:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    tls: TLSConfig | None = None
    sasl: SaslConfig | None = None
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

    @model_validator(mode="after")
    def _security_fits(self) -> KafkaConfig:
        proto = self.security_protocol
        if proto.startswith("SASL") and self.sasl is None:
            raise ValueError(f"security_protocol {proto} needs `sasl:` (mechanism, username, password_env)")
        if not proto.startswith("SASL") and self.sasl is not None:
            raise ValueError(f"`sasl:` needs security_protocol SASL_SSL or SASL_PLAINTEXT; found {proto}")
        if proto.endswith("SSL") and self.tls is not None and not self.tls.enabled:
            raise ValueError(f"security_protocol {proto} needs TLS; found tls.enabled false")
        if not proto.endswith("SSL") and self.tls is not None and self.tls.enabled:
            raise ValueError(f"`tls:` needs security_protocol SSL or SASL_SSL; found {proto}")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")


class KafkaSourceConfig(ComponentConfig):
    """Real time: records arrive on Kafka topics. Unless the pipeline names a `sink` and
    `rejects`, results go to `result_topic` with the input key and dead letters (data
    errors only) to `dlq_topic` with the original bytes."""

    type: Literal["kafka"]
    topics: list[str] = Field(min_length=1)
    group_id: str
    payload: Literal["json", "copybook"] = "json"
    result_topic: str | None = None
    dlq_topic: str | None = None
    result_format: Literal["json", "fixed"] | None = None  # default: json for JSON, fixed for copybook
    # micro-batch size
    batch_size: int = Field(default=500, ge=1, validation_alias=AliasChoices("batch_size", "max_records"))
    max_wait_ms: int = Field(default=20, ge=1)  # how long a micro-batch may wait to fill


class KafkaSinkConfig(ComponentConfig):
    """Scored records published to `topic`, acknowledged by the brokers before the
    source is acked (at least once: a batch redelivered after a crash is published
    again, with the same `lgw-id` header). The message key is the input message's key
    (Kafka source) or the value of field `key`; `format` json (the record, outputs and
    provenance) or fixed (the record's bytes with the outputs appended)."""

    type: Literal["kafka"] = "kafka"
    topic: str
    format: Literal["json", "fixed"] | None = None  # default: json, fixed for a copybook Kafka source
    key: str | None = None


class KafkaRejectsConfig(ComponentConfig):
    """Dead letters published to `topic`: the original bytes (and key) with headers
    lgw-error, lgw-field, lgw-reason, lgw-field-offset, lgw-field-raw, lgw-source."""

    type: Literal["kafka"] = "kafka"
    topic: str
