"""gateway.yaml for real-time pipelines (Kafka topics, an AMQP queue): they validate,
mistakes get one line naming the key, brokers come from the environment, and `lgw
asyncapi` documents their channels without any broker running."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import cli
from gateway.config import (
    AmqpSourceConfig,
    DropFolderConfig,
    GatewayConfig,
    KafkaSourceConfig,
    Policy,
    embedded_defaults,
    load_config,
)
from gateway.realtime.app import realtime_pipelines
from schemas.errors import ConfigError
from schemas.examples import contract_path, model_info

KAFKA = {"type": "kafka", "topics": ["card-txn"], "group_id": "lgw-card-txn", "result_topic": "card-txn-scored",
         "dlq_topic": "card-txn-dlq"}
AMQP = {"type": "amqp", "queue": "cardtxn.score.requests"}


def realtime_config(**pipelines: dict[str, Any]) -> dict[str, Any]:
    info = model_info("fraud")
    return {
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {name: {"contract": str(contract_path()), "model": "fraud", **p} for name, p in pipelines.items()},
    }


def write_yaml(tmp_path: Path, doc: dict[str, Any] | str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LGW_KAFKA_BOOTSTRAP", "LGW_AMQP_URL"):
        monkeypatch.delenv(var, raising=False)


# --------------------------------------------------------------------------- validation
def test_a_drop_folders_files_are_read_in_larger_batches_than_a_topic_unless_the_pipeline_says(
        tmp_path: Path) -> None:
    from schemas.records import DEFAULT_BATCH_SIZE

    cfg = load_config(write_yaml(tmp_path, realtime_config(
        files={"source": {"inbox": "a/inbox", "outbox": "a/outbox"}},
        sized={"source": {"inbox": "b/inbox", "outbox": "b/outbox"}, "batch_size": 5000},
        stream={"source": KAFKA},
    )))
    assert cfg.pipelines["files"].batch_size == DEFAULT_BATCH_SIZE == 75_000
    assert cfg.pipelines["sized"].batch_size == 5000
    assert cfg.pipelines["stream"].batch_size == 50_000  # a micro-batch's: the latency it was measured with


def test_kafka_and_amqp_pipelines_validate(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, realtime_config(
        stream={"source": {**KAFKA, "payload": "copybook", "result_format": "json", "max_records": 200},
                "policy": "pause"},
        mq={"source": AMQP},
    )))
    stream, mq = cfg.pipelines["stream"], cfg.pipelines["mq"]
    assert isinstance(stream.source, KafkaSourceConfig) and stream.realtime
    assert stream.source.topics == ["card-txn"] and stream.source.batch_size == 200
    assert (stream.source.payload, stream.source.result_format, stream.policy) == ("copybook", "json", Policy.PAUSE)
    assert isinstance(mq.source, AmqpSourceConfig) and mq.realtime
    assert (mq.source.payload, mq.source.result_format, mq.source.prefetch) == ("copybook", None, 64)
    assert mq.source.dead_letter_exchange == "lgw.dlx"
    # defaults: JSON on Kafka, the brokers on localhost
    assert KafkaSourceConfig.model_validate(KAFKA).payload == "json"
    assert cfg.kafka.bootstrap_servers == "localhost:9092"
    assert cfg.amqp.url.startswith("amqp://")
    assert set(realtime_pipelines(cfg)) == {"stream", "mq"}
    assert list(realtime_pipelines(cfg, "mq")) == ["mq"]


@pytest.mark.parametrize(("source", "key"), [
    ({k: v for k, v in KAFKA.items() if k != "topics"}, "topics"),
    ({k: v for k, v in KAFKA.items() if k != "group_id"}, "group_id"),
    ({"type": "amqp"}, "queue"),
])
def test_missing_source_key_is_one_line_naming_it(tmp_path: Path, source: dict[str, Any], key: str) -> None:
    path = write_yaml(tmp_path, realtime_config(x={"source": source}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"pipelines.x.source.{key}: Field required" in message
    for tag in ("kafka", "amqp", "dropfolder", "odbc"):  # no pydantic union tags in the location
        assert f"source.{tag}." not in message


@pytest.mark.parametrize(("key", "needs"), [("result_topic", "a `sink` or its `result_topic`"),
                                             ("dlq_topic", "`rejects` or its `dlq_topic`")])
def test_a_kafka_source_without_its_topics_needs_a_sink_and_rejects(tmp_path: Path, key: str, needs: str) -> None:
    source = {k: v for k, v in KAFKA.items() if k != key}
    with pytest.raises(ConfigError, match=r"gateway\.yaml: pipelines\.x: a Kafka source needs "
                                          rf"{re.escape(needs)}"):
        load_config(write_yaml(tmp_path, realtime_config(x={"source": source})))
    other = {"sink": {"type": "kafka", "topic": "out"}} if key == "result_topic" else {
        "rejects": {"type": "kafka", "topic": "dead"}}
    cfg = load_config(write_yaml(tmp_path, realtime_config(x={"source": source, **other})))
    assert cfg.pipelines["x"].output.type == "kafka" and cfg.pipelines["x"].rejects_to.type == "kafka"


@pytest.mark.parametrize(("source", "fragment"), [
    ({**KAFKA, "topics": []}, "pipelines.x.source.topics: List should have at least 1 item"),
    ({**KAFKA, "payload": "xml"}, "pipelines.x.source.payload: Input should be 'json' or 'copybook'"),
    ({**KAFKA, "max_records": 0}, "pipelines.x.source.max_records"),
    ({**AMQP, "exchange": "e"}, "pipelines.x.source.exchange: Extra inputs are not permitted"),
    ({**AMQP, "result_format": "csv"}, "pipelines.x.source.result_format"),
    ({**KAFKA, "type": "kafkaa"},
     "pipelines.x.source: type: expected one of 'dropfolder', 'odbc', 'kafka', 'amqp'; found 'kafkaa'"),
])
def test_wrong_source_values_name_the_key(tmp_path: Path, source: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, realtime_config(x={"source": source})))
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("source", [KAFKA, AMQP])
def test_fallback_and_rescore_is_refused_in_real_time(tmp_path: Path, source: dict[str, Any]) -> None:
    path = write_yaml(tmp_path, realtime_config(x={"source": source, "policy": "fallback_and_rescore"}))
    with pytest.raises(ConfigError, match=r"pipelines\.x: policy fallback_and_rescore is for batch sources; "
                                          r"a real-time pipeline takes fallback or pause"):
        load_config(path)


def test_fallback_and_rescore_is_refused_for_a_batch_pipeline(tmp_path: Path) -> None:
    drop = {"inbox": "in", "outbox": "out"}
    with pytest.raises(ConfigError, match=r"pipelines\.x: policy fallback_and_rescore is for `lgw score` .*"
                                          r"a dropfolder pipeline takes fallback or pause"):
        load_config(write_yaml(tmp_path, realtime_config(x={"source": drop, "policy": "fallback_and_rescore"})))


# --------------------------------------------------------------------------- environment
def test_env_overrides_the_brokers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = realtime_config(stream={"source": KAFKA})
    doc["kafka"] = {"bootstrap_servers": "from-file:9092"}
    doc["amqp"] = {"url": "amqp://guest:guest@from-file:5672/"}
    path = write_yaml(tmp_path, doc)
    cfg = load_config(path)
    assert cfg.kafka.bootstrap_servers == "from-file:9092" and "from-file" in cfg.amqp.url
    monkeypatch.setenv("LGW_KAFKA_BOOTSTRAP", "k1:19092,k2:19092")
    monkeypatch.setenv("LGW_AMQP_URL", "amqp://app:s3cret@mq.internal:5672/lgw")
    cfg = load_config(path)
    assert cfg.kafka.bootstrap_servers == "k1:19092,k2:19092"
    assert cfg.amqp.url == "amqp://app:s3cret@mq.internal:5672/lgw"
    defaults = embedded_defaults()  # no file: the environment still applies
    assert defaults.kafka.bootstrap_servers == "k1:19092,k2:19092"
    assert defaults.amqp.url == "amqp://app:s3cret@mq.internal:5672/lgw"


# --------------------------------------------------------------------------- realtime_pipelines
def test_no_real_time_pipeline_is_a_config_error() -> None:
    cfg = embedded_defaults()  # the bundled example: a drop folder only
    assert all(isinstance(p.source, DropFolderConfig) for p in cfg.pipelines.values())
    with pytest.raises(ConfigError, match=r"expected a real-time pipeline \(source type kafka or amqp\)"):
        realtime_pipelines(cfg)
    with pytest.raises(ConfigError, match="expected a real-time pipeline"):
        realtime_pipelines(GatewayConfig())
    with pytest.raises(ConfigError, match="expected a real-time pipeline"):
        realtime_pipelines(cfg, "card_txn")  # a batch pipeline named


def test_unknown_pipeline_name_is_a_config_error(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path, realtime_config(stream={"source": KAFKA})))
    with pytest.raises(ConfigError, match=r"no pipeline named 'nope' \(pipelines: stream\)"):
        realtime_pipelines(cfg, "nope")


# --------------------------------------------------------------------------- lgw asyncapi
def _payload_schema(doc: dict[str, Any], channel: str) -> dict[str, Any]:
    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            at: Any = doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                at = at[part]
            node = at
        return node

    [message] = doc["channels"][channel]["messages"].values()
    return resolve(resolve(message)["payload"])


def _check_document(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    channels = doc["channels"]
    assert {"stream:input", "stream:results", "stream:dead-letters", "mq:requests"} <= set(channels)
    assert channels["stream:input"]["address"] == "card-txn"
    assert channels["stream:results"]["address"] == "card-txn-scored"
    assert channels["stream:dead-letters"]["address"] == "card-txn-dlq"
    assert channels["mq:requests"]["address"] == "cardtxn.score.requests"
    result = _payload_schema(doc, "stream:results")
    assert {"id", "fraud_score", "scored_by", "contract", "contract_version"} <= set(result["properties"])
    assert {"fraud_score", "scored_by"} <= set(result["required"])
    assert result["properties"]["scored_by"]["enum"] == ["model", "fallback"]
    assert "TXN_AMOUNT" in result["properties"]  # the input record's fields, too
    request = _payload_schema(doc, "mq:requests")
    assert "TXN_ID" in request["properties"]


def test_asyncapi_command_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_AMQP_URL", "amqp://app:s3cret@mq.internal:5672/")
    path = write_yaml(tmp_path, realtime_config(stream={"source": KAFKA}, mq={"source": AMQP},
                                    batch={"source": {"inbox": "in", "outbox": "out"}}))
    assert cli.main(["asyncapi", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    _check_document(doc)
    assert not any(name.startswith("batch:") for name in doc["channels"])  # batch pipelines are not channels
    assert "s3cret" not in out  # the broker URL's password stays out of the document
    assert {s["protocol"] for s in doc["servers"].values()} == {"kafka", "amqp"}

    assert cli.main(["asyncapi", "--config", str(path), "--pipeline", "mq"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert set(only["channels"]) == {"mq:requests", "mq:replies", "mq:dead-letters"}


def test_asyncapi_command_without_real_time_pipelines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml(tmp_path, realtime_config(batch={"source": {"inbox": "in", "outbox": "out"}}))
    assert cli.main(["asyncapi", "--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("lgw: error: ") and "expected a real-time pipeline" in err


def test_lgw_asyncapi_subprocess(tmp_path: Path, lgw_cmd: list[str]) -> None:
    path = write_yaml(tmp_path, realtime_config(stream={"source": KAFKA}, mq={"source": AMQP}))
    out = tmp_path / "docs" / "asyncapi.json"
    proc = subprocess.run([*lgw_cmd, "asyncapi", "--config", str(path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_document(json.loads(out.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- source x sink combinations
DROP = {"inbox": "in", "outbox": "out"}
TABLE = {"type": "odbc", "connection": {"dsn": "CORE"}, "table": "CARD_TXN"}
SINKS: dict[str, dict[str, Any]] = {
    "file": {"type": "file", "folder": "results"},
    "odbc": {"type": "odbc", "connection": {"dsn": "CORE"}, "table": "SCORES", "key": ["TXN_ID"]},
    "kafka": {"type": "kafka", "topic": "scores"},
    "amqp-exchange": {"type": "amqp", "exchange": "scores"},
    "amqp-reply": {"type": "amqp"},
}
REJECTS: dict[str, dict[str, Any]] = {
    "file": {"type": "file", "folder": "rejects"}, "odbc": {"type": "odbc", "connection": {"dsn": "CORE"},
                                                            "table": "REJECTS"},
    "kafka": {"type": "kafka", "topic": "dead"}, "amqp": {"type": "amqp", "exchange": "dead"},
}
REFUSED = {  # (source, sink or rejects) -> why, as the one error line says it
    ("kafka", "sink:file"): "sink type file is written whole when a run ends, and the kafka source never ends",
    ("amqp", "sink:file"): "sink type file is written whole when a run ends, and the amqp source never ends",
    ("kafka", "rejects:file"): "rejects type file is written whole when a run ends, and the kafka source never ends",
    ("amqp", "rejects:file"): "rejects type file is written whole when a run ends, and the amqp source never ends",
    ("dropfolder", "sink:amqp-reply"): "an amqp sink without `exchange` replies to each request's reply_to queue, "
                                       "and the dropfolder source has no requesters",
    ("odbc", "sink:amqp-reply"): "an amqp sink without `exchange` replies to each request's reply_to queue, "
                                 "and the odbc source has no requesters",
    ("kafka", "sink:amqp-reply"): "an amqp sink without `exchange` replies to each request's reply_to queue, "
                                  "and the kafka source has no requesters",
}


@pytest.mark.parametrize("source", ["dropfolder", "odbc", "kafka", "amqp"])
@pytest.mark.parametrize("part", [f"sink:{k}" for k in SINKS] + [f"rejects:{k}" for k in REJECTS])
def test_every_source_takes_every_sink_that_makes_sense_and_refuses_the_rest_with_a_reason(
        tmp_path: Path, source: str, part: str) -> None:
    role, kind = part.split(":")
    src = {"dropfolder": DROP, "odbc": TABLE, "kafka": KAFKA, "amqp": AMQP}[source]
    pipe: dict[str, Any] = {"source": src, role: (SINKS if role == "sink" else REJECTS)[kind]}
    if source == "odbc" and role == "rejects":
        pipe["sink"] = SINKS["odbc"]
    path = write_yaml(tmp_path, realtime_config(x=pipe))
    why = REFUSED.get((source, part))
    if why is None:
        cfg = load_config(path)
        chosen = cfg.pipelines["x"].output if role == "sink" else cfg.pipelines["x"].rejects_to
        assert chosen.type == kind.split("-")[0]
        return
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: pipelines.x: {why}") and "\n" not in str(info.value)
