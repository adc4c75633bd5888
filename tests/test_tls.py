"""Secured connections against real servers with certificates the test makes
(tests/certs.py): Kafka over mutual TLS (Tansu behind stunnel, tests/tls_servers.py),
AMQP over TLS (a RabbitMQ node of the test's own), a model server over mutual TLS with a
bearer token; a wrong CA, a missing client certificate, a SASL attempt the broker
refuses and a wrong token each give one line saying what was expected. Secrets never
appear in what the gateway prints."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from adapters.amqp.config import AmqpConfig
from adapters.amqp.publisher import AmqpPublisher, OutMessage
from adapters.amqp.security import broker_security as amqp_security
from adapters.kafka.config import KafkaConfig
from adapters.kafka.security import broker_security, client_options, connection_problem
from adapters.tls import TLSConfig, ssl_context
from gateway.assembly import build_model
from gateway.config import GatewayConfig, load_config
from gateway.realtime.serve import run_until
from schemas.errors import ConfigError, ModelUnavailable
from schemas.examples import contract_path, model_info
from tests.certs import Certs, make_certs
from tests.kafka_broker import (
    CONSUMER_SETTINGS,
    HOST,
    BrokerStartError,
    TansuBroker,
    free_port,
    require_broker_binary,
    unique_group,
    unique_topic,
)
from tests.realtime_data import json_records
from tests.tls_servers import RabbitTlsNode, SecureModelServer, Stunnel

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0
SASL_PASSWORD = "sasl-pw-4f9c1e"  # a test secret that must never be printed
TOKEN = "tok-8d2a77c0"  # likewise


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


class TlsKafka:
    """Tansu advertising the stunnel port; stunnel terminating mutual TLS in front of it."""

    def __init__(self, broker: TansuBroker, tunnel: Stunnel) -> None:
        self.broker = broker
        self.tunnel = tunnel

    @property
    def bootstrap(self) -> str:
        return self.tunnel.address


@pytest.fixture(scope="module")
def tls_kafka(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsKafka]:
    folder = tmp_path_factory.mktemp("tls-kafka")
    listener, tls_port = free_port(), free_port()
    broker = TansuBroker(require_broker_binary(), log_dir=folder, listener_port=listener, advertised_port=tls_port)
    with Stunnel(certs, listener, folder=folder, port=tls_port, require_client_cert=True) as tunnel:
        try:
            broker.start()
        except BrokerStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield TlsKafka(broker, tunnel)
        finally:
            broker.stop()


def kafka_section(bootstrap: str, certs: Certs, **tls: Any) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap, "security_protocol": "SSL",
            "tls": {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                    "key_file": str(certs.client_key), **tls},
            "enable_idempotence": False, "fetch_max_wait_ms": 20, "session_timeout_ms": 3000,
            "heartbeat_interval_ms": 500, "auto_offset_reset": "earliest", "graceful_timeout_s": 15}


def gateway_yaml(folder: Path, kafka: dict[str, Any], topics: tuple[str, str, str], group: str) -> Path:
    info = model_info("fraud")
    doc = {
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {"cards": {"contract": str(contract_path("card_txn")), "model": "fraud",
                                "source": {"type": "kafka", "topics": [topics[0]], "group_id": group,
                                           "result_topic": topics[1], "dlq_topic": topics[2], "max_wait_ms": 20}}},
        "kafka": kafka,
        "state": {"url": f"sqlite:///{folder / 'state.db'}"},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def lgw(lgw_cmd: list[str], *args: str, env: dict[str, str] | None = None,
        timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*lgw_cmd, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})}, stdin=subprocess.DEVNULL)


def one_line(stderr: str) -> str:
    """The one line of `stderr` besides the ops endpoints' announcement (they listen before
    the brokers are reached, so /healthz answers while they are not)."""
    lines = [line for line in stderr.splitlines() if line.strip() and " INFO lgw.ops: ops: serving " not in line]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr}"
    return lines[0]


# --------------------------------------------------------------------------- TLS config
def test_a_missing_ca_file_is_one_config_error_naming_the_field_and_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        ssl_context(TLSConfig(ca_file=str(tmp_path / "nope.pem")), where="kafka.tls")
    assert str(err.value) == f"kafka.tls.ca_file: {tmp_path / 'nope.pem'} cannot be read: No such file or directory"


def test_a_file_that_is_no_certificate_is_one_config_error(tmp_path: Path, certs: Certs) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^kafka\.tls\.ca_file: .*junk\.pem holds no usable CA certificate"):
        ssl_context(TLSConfig(ca_file=str(junk)), where="kafka.tls")
    with pytest.raises(ConfigError, match=r"^amqp\.tls\.cert_file: .*junk\.pem and key_file .*client\.key hold no "
                                          r"usable certificate and private key"):
        ssl_context(TLSConfig(cert_file=str(junk), key_file=str(certs.client_key)), where="amqp.tls")


def test_relative_tls_files_are_taken_from_the_config_files_folder(tmp_path: Path, certs: Certs) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"security_protocol": "SSL", "tls": {"ca_file": "certs/ca.pem"}}}))
    assert load_config(path).kafka.tls == TLSConfig(ca_file=str(tmp_path / "certs" / "ca.pem"))


def test_security_protocol_and_sections_must_agree(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="security_protocol SASL_SSL needs `sasl:`"):
        KafkaConfig(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="`tls:` needs security_protocol SSL or SASL_SSL; found PLAINTEXT"):
        KafkaConfig(tls=TLSConfig(ca_file="ca.pem"))


def test_an_encrypted_client_key_is_opened_with_the_password_from_its_variable(
        tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    locked = tmp_path / "client-locked.key"
    locked.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"key-pw")))
    tls = TLSConfig(cert_file=str(certs.client_cert), key_file=str(locked), key_password_env="LGW_TEST_KEY_PW")
    monkeypatch.setenv("LGW_TEST_KEY_PW", "key-pw")
    assert isinstance(ssl_context(tls, where="kafka.tls"), ssl.SSLContext)
    monkeypatch.setenv("LGW_TEST_KEY_PW", "wrong")
    with pytest.raises(ConfigError, match=r"^kafka\.tls\.cert_file: .* hold no usable certificate and private key"):
        ssl_context(tls, where="kafka.tls")
    monkeypatch.delenv("LGW_TEST_KEY_PW")
    with pytest.raises(ConfigError, match=r"^kafka\.tls\.key_password_env: LGW_TEST_KEY_PW is not set"):
        ssl_context(tls, where="kafka.tls")


# --------------------------------------------------------------------------- Kafka mapping
@pytest.mark.parametrize("mechanism,security", [("PLAIN", "SASLPlaintext"), ("SCRAM-SHA-256", "SASLScram256"),
                                                ("SCRAM-SHA-512", "SASLScram512")])
def test_sasl_maps_onto_aiokafka_and_faststream_with_the_password_from_a_file(
        tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch, mechanism: str, security: str) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(SASL_PASSWORD + "\n")
    monkeypatch.setenv("KAFKA_PASSWORD_FILE", str(secret))
    cfg = KafkaConfig(bootstrap_servers="k:9093", security_protocol="SASL_SSL", tls=TLSConfig(ca_file=str(certs.ca)),
                      sasl={"mechanism": mechanism, "username": "alice", "password_env": "KAFKA_PASSWORD"})
    options = client_options(cfg, client_id="lag-reader")
    assert isinstance(options.pop("ssl_context"), ssl.SSLContext)
    assert options == {"bootstrap_servers": "k:9093", "client_id": "lag-reader", "security_protocol": "SASL_SSL",
                       "sasl_mechanism": mechanism, "sasl_plain_username": "alice",
                       "sasl_plain_password": SASL_PASSWORD}
    sec = broker_security(cfg)
    assert type(sec).__name__ == security and sec.use_ssl and sec.username == "alice"
    assert sec.password == SASL_PASSWORD


def test_a_sasl_password_variable_that_is_not_set_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_PW", raising=False)
    monkeypatch.delenv("NOT_SET_PW_FILE", raising=False)
    cfg = KafkaConfig(security_protocol="SASL_PLAINTEXT",
                      sasl={"mechanism": "PLAIN", "username": "alice", "password_env": "NOT_SET_PW"})
    with pytest.raises(ConfigError, match=r"^kafka\.sasl\.password_env: NOT_SET_PW is not set \(nor NOT_SET_PW_FILE\)"):
        client_options(cfg)


# --------------------------------------------------------------------------- Kafka over mutual TLS
async def produce(cfg: KafkaConfig, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(cfg, client_id="test-producer"), enable_idempotence=False)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=f"k{i}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(cfg: KafkaConfig, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(**client_options(cfg, client_id="test-reader"), group_id=None,
                                enable_auto_commit=False,
                                **{**CONSUMER_SETTINGS, "session_timeout_ms": 10_000, "heartbeat_interval_ms": 3000})
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_lgw_serve_scores_a_topic_over_mutual_tls(tls_kafka: TlsKafka, certs: Certs, tmp_path: Path) -> None:
    topics = tuple(tls_kafka.broker.create_topic(unique_topic(p), partitions=3) for p in ("tls-in", "tls-out",
                                                                                          "tls-dlq"))
    cfg = load_config(gateway_yaml(tmp_path, kafka_section(tls_kafka.bootstrap, certs), topics,  # type: ignore[arg-type]
                                   unique_group("tls")))
    from schemas.contract import load_contract

    values = json_records(load_contract(contract_path("card_txn")), 0, 50)
    stop = asyncio.Event()
    serving = asyncio.create_task(run_until(cfg, stop))
    try:
        await produce(cfg.kafka, topics[0], values)
        results = await read_all(cfg.kafka, topics[1], len(values))
    finally:
        stop.set()
        stats = await asyncio.wait_for(serving, 45)
    assert len(results) == len(values)
    assert {dict(r.headers)["lgw-scored-by"] for r in results} == {b"model"}
    assert all(0 <= json.loads(r.value)["fraud_score"] <= 1 for r in results)
    assert stats["cards"]["results"] == len(values)


def serve_fails(lgw_cmd: list[str], tmp_path: Path, kafka: dict[str, Any],
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    config = gateway_yaml(tmp_path, kafka, ("in", "out", "dlq"), "g")
    done = lgw(lgw_cmd, "serve", "--config", str(config), env=env)
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_a_wrong_ca_is_one_clear_error_line(lgw_cmd: list[str], tls_kafka: TlsKafka, certs: Certs,
                                           tmp_path: Path) -> None:
    done = serve_fails(lgw_cmd, tmp_path, kafka_section(tls_kafka.bootstrap, certs, ca_file=str(certs.wrong_ca)))
    assert one_line(done.stderr) == (
        f"lgw: error: kafka: TLS handshake with {tls_kafka.bootstrap} failed: certificate verify failed: "
        f"self-signed certificate in certificate chain (expected a certificate signed by the CA in {certs.wrong_ca})")


def test_a_missing_client_certificate_is_one_clear_error_line(lgw_cmd: list[str], tls_kafka: TlsKafka, certs: Certs,
                                                             tmp_path: Path) -> None:
    kafka = kafka_section(tls_kafka.bootstrap, certs)
    kafka["tls"] = {"ca_file": str(certs.ca)}
    line = one_line(serve_fails(lgw_cmd, tmp_path, kafka).stderr)
    assert line.startswith(f"lgw: error: kafka: TLS handshake with {tls_kafka.bootstrap} failed: ")
    assert "expected tls.cert_file and tls.key_file" in line


def test_sasl_against_a_broker_without_sasl_is_one_line_and_never_shows_the_password(
        lgw_cmd: list[str], tls_kafka: TlsKafka, certs: Certs, tmp_path: Path) -> None:
    # Tansu 0.6.0 keeps users in memory only and creates them over an authenticated
    # connection: no SASL login can succeed against it, so the refusal is what is tested.
    kafka = {**kafka_section(tls_kafka.bootstrap, certs), "security_protocol": "SASL_SSL",
             "sasl": {"mechanism": "SCRAM-SHA-512", "username": "alice", "password_env": "LGW_TEST_SASL_PW"}}
    done = serve_fails(lgw_cmd, tmp_path, kafka, env={"LGW_TEST_SASL_PW": SASL_PASSWORD})
    line = one_line(done.stderr)
    assert line.startswith(f"lgw: error: kafka: SASL SCRAM-SHA-512 as alice at {tls_kafka.bootstrap} failed: ")
    assert SASL_PASSWORD not in done.stderr + done.stdout


async def test_connection_problem_is_none_when_the_connection_works(tls_kafka: TlsKafka, certs: Certs) -> None:
    cfg = KafkaConfig.model_validate(kafka_section(tls_kafka.bootstrap, certs))
    assert await connection_problem(cfg) is None


# --------------------------------------------------------------------------- AMQP over TLS
@pytest.fixture(scope="module")
def rabbit_tls(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitTlsNode]:
    with RabbitTlsNode(certs, folder=tmp_path_factory.mktemp("rabbit"), require_client_cert=True) as node:
        yield node


def amqp_config(node: RabbitTlsNode, certs: Certs, **tls: Any) -> AmqpConfig:
    return AmqpConfig(url=node.url, username="guest", password_env="LGW_TEST_AMQP_PW",
                      tls=TLSConfig(**{"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                                       "key_file": str(certs.client_key), **tls}))


async def test_amqp_publishes_and_reads_back_over_mutual_tls(rabbit_tls: RabbitTlsNode, certs: Certs,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import aio_pika

    monkeypatch.setenv("LGW_TEST_AMQP_PW", "guest")
    cfg = amqp_config(rabbit_tls, certs)
    publisher = AmqpPublisher(cluster=cfg)
    await publisher.start()
    try:
        await publisher.declare("lgw.tls", queue="lgw.tls.results", routing_key="r")
        await publisher.publish([OutMessage(b"scored-1", "r", "lgw.tls", {"lgw-id": "1"})])
    finally:
        await publisher.stop()
    sec = amqp_security(cfg)
    connection = await aio_pika.connect(rabbit_tls.url, login="guest", password="guest",
                                        ssl_context=sec.ssl_context)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("lgw.tls.results")
        message = await queue.get(timeout=10)
        assert message is not None and message.body == b"scored-1"
        await message.ack()


async def test_amqp_with_a_wrong_ca_is_one_clear_line(rabbit_tls: RabbitTlsNode, certs: Certs,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.amqp.sink import AmqpExchangeSink
    from adapters.render import MessageRenderer
    from schemas.errors import BrokerUnavailable

    monkeypatch.setenv("LGW_TEST_AMQP_PW", "guest")
    cfg = amqp_config(rabbit_tls, certs, ca_file=str(certs.wrong_ca))
    from schemas.contract import load_contract

    renderer = MessageRenderer("json", pipeline="p", contract=load_contract(contract_path("card_txn")))
    sink = AmqpExchangeSink("lgw.tls", "r", renderer, AmqpPublisher(cluster=cfg))
    with pytest.raises(BrokerUnavailable) as err:
        await asyncio.wait_for(sink.open(), 60)
    assert str(err.value) == (
        f"amqp: TLS handshake with 127.0.0.1:{rabbit_tls.port} failed: certificate verify failed: "
        f"self-signed certificate in certificate chain (expected a certificate signed by the CA in {certs.wrong_ca})")


async def test_lgw_serve_answers_amqp_requests_over_mutual_tls(rabbit_tls: RabbitTlsNode, certs: Certs,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aio_pika

    from schemas.contract import load_contract

    monkeypatch.setenv("LGW_TEST_AMQP_PW", "guest")
    info = model_info("fraud")
    cfg = GatewayConfig.model_validate({
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {"ask": {"contract": str(contract_path("card_txn")), "model": "fraud",
                              "source": {"type": "amqp", "queue": "lgw.tls.requests", "payload": "json",
                                         "result_format": "json"}}},
        "amqp": {"url": rabbit_tls.url, "username": "guest", "password_env": "LGW_TEST_AMQP_PW",
                 "tls": {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                         "key_file": str(certs.client_key)}, "graceful_timeout_s": 10},
        "state": {"url": f"sqlite:///{tmp_path / 'state.db'}"}, "base_dir": tmp_path})
    stop = asyncio.Event()
    serving = asyncio.create_task(run_until(cfg, stop))
    context = amqp_security(cfg.amqp).ssl_context
    connection = await aio_pika.connect(rabbit_tls.url, login="guest", password="guest", ssl_context=context)
    try:
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue("lgw.tls.requests", durable=True)
            replies = await channel.declare_queue(exclusive=True, auto_delete=True)
            record = json_records(load_contract(contract_path("card_txn")), 0, 1)[0]
            await channel.default_exchange.publish(
                aio_pika.Message(record, reply_to=replies.name, correlation_id="42"), routing_key="lgw.tls.requests")
            reply = None
            deadline = time.monotonic() + DEADLINE_S
            while reply is None and time.monotonic() < deadline and not serving.done():
                reply = await replies.get(fail=False)
                await asyncio.sleep(0.05)
            assert reply is not None, "no reply over TLS"
            assert reply.correlation_id == "42" and reply.headers["lgw-status"] == "scored"
            assert 0 <= json.loads(reply.body)["fraud_score"] <= 1
    finally:
        stop.set()
        stats = await asyncio.wait_for(serving, 45)
    assert stats["ask"]["results"] == 1


# --------------------------------------------------------------------------- model server: token and mTLS
@pytest.fixture(scope="module")
def secure_model(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureModelServer]:
    with SecureModelServer(certs, folder=tmp_path_factory.mktemp("model"), token=TOKEN,
                           require_client_cert=True) as server:
        yield server


def model_config(tmp_path: Path, server: SecureModelServer, certs: Certs, *, tls: dict[str, Any] | None = None
                 ) -> GatewayConfig:
    endpoint = {"backend": "kserve", "url": server.url, "model_name": "fraud",
                "auth": {"bearer_token_env": "LGW_TEST_MODEL_TOKEN"},
                "tls": tls if tls is not None else {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
                                                    "key_file": str(certs.client_key)}}
    return GatewayConfig.model_validate({"models": {"fraud": {"endpoint": endpoint}}, "base_dir": tmp_path})


async def score_once(cfg: GatewayConfig) -> np.ndarray:
    from schemas.contract import load_contract

    backend = build_model("fraud", cfg.models["fraud"], load_contract(contract_path("card_txn")), cfg).backend
    try:
        return (await backend.predict(np.zeros((3, len(backend.info.inputs)), dtype=np.float32)))["fraud_score"]
    finally:
        await backend.close()


async def test_a_model_over_mutual_tls_with_a_bearer_token_scores(
        secure_model: SecureModelServer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("LGW_TEST_MODEL_TOKEN_FILE", str(token_file))
    scores = await score_once(model_config(tmp_path, secure_model, certs))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


async def test_a_wrong_token_is_one_line_without_the_token(
        secure_model: SecureModelServer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_TEST_MODEL_TOKEN", "not-" + TOKEN)
    with pytest.raises(ModelUnavailable) as err:
        await score_once(model_config(tmp_path, secure_model, certs))
    message = str(err.value)
    assert message.startswith(f"model fraud at {secure_model.url}: HTTP 401: ")
    assert "bearer_token_env" in message and TOKEN not in message and "\n" not in message


async def test_a_model_without_its_client_certificate_is_one_clear_line(
        secure_model: SecureModelServer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_TEST_MODEL_TOKEN", TOKEN)
    with pytest.raises(ModelUnavailable) as err:
        await score_once(model_config(tmp_path, secure_model, certs, tls={"ca_file": str(certs.ca)}))
    assert str(err.value) == (
        f"model fraud at {secure_model.url}: TLS handshake with {HOST}:{secure_model.port} failed: the server "
        "closed the connection; it may want a client certificate: expected tls.cert_file and tls.key_file")


async def test_a_model_server_signed_by_another_ca_is_one_clear_line(
        secure_model: SecureModelServer, certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGW_TEST_MODEL_TOKEN", TOKEN)
    tls = {"ca_file": str(certs.wrong_ca), "cert_file": str(certs.client_cert), "key_file": str(certs.client_key)}
    with pytest.raises(ModelUnavailable) as err:
        await score_once(model_config(tmp_path, secure_model, certs, tls=tls))
    assert str(err.value) == (
        f"model fraud at {secure_model.url}: TLS handshake with {HOST}:{secure_model.port} failed: certificate "
        f"verify failed: self-signed certificate in certificate chain (expected a certificate signed by the CA in "
        f"{certs.wrong_ca})")


# --------------------------------------------------------------------------- lgw config check
def test_config_check_shows_each_connections_security_and_secrets_only_as_set_or_not(
        lgw_cmd: list[str], certs: Certs, tmp_path: Path) -> None:
    (tmp_path / "certs").symlink_to(certs.ca.parent)
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({
        "models": {"fraud": {"endpoint": {
            "backend": "kserve", "url": "https://models:8443", "model_name": "fraud",
            "auth": {"bearer_token_env": "LGW_TEST_MODEL_TOKEN"},
            "tls": {"ca_file": "certs/ca.pem", "cert_file": "certs/client.pem", "key_file": "certs/client.key"}}}},
        "kafka": {"bootstrap_servers": "k1:9093", "security_protocol": "SASL_SSL", "tls": {"ca_file": "certs/nope.pem"},
                  "sasl": {"mechanism": "SCRAM-SHA-512", "username": "lgw", "password_env": "LGW_TEST_SASL_PW"}},
        "amqp": {"url": "amqps://rabbit:5671/", "username": "lgw", "password_env": "LGW_TEST_AMQP_PW",
                 "tls": {"ca_file": "certs/ca.pem"}},
    }))
    done = lgw(lgw_cmd, "config", "check", "--config", str(tmp_path / "gateway.yaml"),
               env={"LGW_TEST_SASL_PW": SASL_PASSWORD, "LGW_TEST_MODEL_TOKEN": TOKEN, "LGW_TEST_AMQP_PW": ""})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    ca = tmp_path / "certs" / "ca.pem"
    assert "      bearer_token: LGW_TEST_MODEL_TOKEN [set]" in lines
    assert (f"      tls: ca_file={ca} check_hostname=True cert_file={tmp_path / 'certs' / 'client.pem'} "
            f"key_file={tmp_path / 'certs' / 'client.key'}") in lines
    assert "  security: SASL_SSL" in lines
    assert f"    tls: ca_file={tmp_path / 'certs' / 'nope.pem'} [NOT READABLE] check_hostname=True" in lines
    assert "    sasl: mechanism=SCRAM-SHA-512 username=lgw password=LGW_TEST_SASL_PW [set]" in lines
    assert "  security: TLS" in lines and f"    tls: ca_file={ca} check_hostname=True" in lines
    assert "    login: username=lgw password=LGW_TEST_AMQP_PW [NOT SET]" in lines
    assert SASL_PASSWORD not in done.stdout and TOKEN not in done.stdout


def test_asyncapi_docs_need_neither_the_secrets_nor_the_certificate_files(lgw_cmd: list[str], tmp_path: Path) -> None:
    kafka = {"bootstrap_servers": "k1:9093", "security_protocol": "SASL_SSL", "tls": {"ca_file": "not-mounted.pem"},
             "sasl": {"mechanism": "SCRAM-SHA-256", "username": "lgw", "password_env": "LGW_TEST_UNSET_PW"}}
    config = gateway_yaml(tmp_path, kafka, ("in", "out", "dlq"), "g")
    done = lgw(lgw_cmd, "asyncapi", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["servers"]
