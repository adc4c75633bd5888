"""The Kafka test infrastructure itself (tests/kafka_broker.py) against a real Tansu broker:
aiokafka and kcat round trips, and the fault-injection proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import socketserver
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from tests.kafka_broker import (
    CONSUMER_SETTINGS,
    HOST,
    PRODUCER_SETTINGS,
    BrokerStartError,
    ProxiedKafka,
    TansuBroker,
    TcpProxy,
    api_versions_without_tagged_fields,
    require_broker_binary,
    require_kcat,
    run,
    unique_group,
    unique_topic,
)

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0


def producer(bootstrap: str, **overrides: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **{**PRODUCER_SETTINGS, **overrides})


def consumer(bootstrap: str, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, **{**CONSUMER_SETTINGS, **overrides})


async def collect(c: AIOKafkaConsumer, sink: list[tuple[float, ConsumerRecord[bytes, bytes]]]) -> None:
    """Appends (arrival time, record) for everything `c` returns until cancelled."""
    while True:
        batches = await c.getmany(timeout_ms=100)
        now = time.monotonic()
        for records in batches.values():
            sink.extend((now, r) for r in records)


async def read_n(c: AIOKafkaConsumer, n: int, deadline_s: float = DEADLINE_S) -> list[ConsumerRecord[bytes, bytes]]:
    got: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records within {deadline_s:g}s"
        for records in (await c.getmany(timeout_ms=200)).values():
            got.extend(records)
    return got


# --------------------------------------------------------------------------- aiokafka
async def test_aiokafka_round_trip_through_a_consumer_group(kafka_broker: TansuBroker, fresh_topic: str) -> None:
    topic, group = fresh_topic, unique_group("roundtrip")
    consumers = [consumer(kafka_broker.bootstrap, topic, group_id=group) for _ in range(2)]
    p = producer(kafka_broker.bootstrap)
    await asyncio.gather(p.start(), *(c.start() for c in consumers))
    try:
        assert await p.partitions_for(topic) == {0, 1, 2}

        # Both members settle on disjoint shares that cover the 3 partitions.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            shares = [c.assignment() for c in consumers]
            if all(shares) and shares[0] | shares[1] == {TopicPartition(topic, i) for i in range(3)} \
                    and not shares[0] & shares[1]:
                break
            assert time.monotonic() < deadline, f"group never balanced: {shares}"
            for c in consumers:  # polling drives the rebalance
                await c.getmany(timeout_ms=50)

        sent = {}
        for i in range(60):
            key = f"k{i % 6}".encode()
            meta = await p.send_and_wait(topic, f"{i}".encode(), key=key)
            sent[(meta.partition, meta.offset)] = (key, f"{i}".encode())
        assert {partition for partition, _ in sent} == {0, 1, 2}

        sinks: list[list[tuple[float, ConsumerRecord[bytes, bytes]]]] = [[], []]
        tasks = [asyncio.create_task(collect(c, sink)) for c, sink in zip(consumers, sinks, strict=True)]
        deadline = time.monotonic() + DEADLINE_S
        while sum(map(len, sinks)) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for anything extra (a duplicate) to show up
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        received = {(r.partition, r.offset): (r.key, r.value) for sink in sinks for _, r in sink}
        assert sum(map(len, sinks)) == len(sent), "each record exactly once"
        assert received == sent
        for c, sink in zip(consumers, sinks, strict=True):
            assert {TopicPartition(topic, r.partition) for _, r in sink} <= c.assignment()
        by_key: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
        for (partition, _offset), (key, value) in sorted(received.items()):
            by_key[key].append((partition, int(value)))
        for key, placed in by_key.items():
            assert len({partition for partition, _ in placed}) == 1, f"key {key!r} spread over partitions"
            assert [v for _, v in placed] == sorted(v for _, v in placed), f"key {key!r} out of order"

        ends = {partition: max(o for q, o in sent if q == partition) + 1 for partition in range(3)}
        for c in consumers:
            await c.commit()
        for c in consumers:
            for tp in c.assignment():
                assert await c.committed(tp) == ends[tp.partition]
    finally:
        await asyncio.gather(p.stop(), *(c.stop() for c in consumers))


# --------------------------------------------------------------------------- kcat
async def test_kcat_produces_keyed_messages_that_aiokafka_reads(kafka_broker: TansuBroker, fresh_topic: str) -> None:
    kcat = require_kcat()
    lines = [(f"key-{i % 5}", f"value-{i}") for i in range(30)]
    code, _, err = await run(kcat, "-P", "-b", kafka_broker.bootstrap, "-t", fresh_topic, "-K:",
                             stdin="".join(f"{k}:{v}\n" for k, v in lines).encode())
    assert code == 0, err

    c = consumer(kafka_broker.bootstrap, fresh_topic, group_id=unique_group("kcat-in"))
    await c.start()
    try:
        records = await read_n(c, len(lines))
    finally:
        await c.stop()
    got = sorted(records, key=lambda r: (r.partition, r.offset))
    assert sorted((r.key.decode(), r.value.decode()) for r in got if r.key and r.value) == sorted(lines)
    for key in {k for k, _ in lines}:
        mine = [r for r in got if r.key == key.encode()]
        assert len({r.partition for r in mine}) == 1, f"{key} spread over partitions"
        sent_order = [v for k, v in lines if k == key]
        assert [r.value.decode() for r in mine if r.value] == sent_order


async def test_aiokafka_produces_what_kcat_consumes(kafka_broker: TansuBroker, fresh_topic: str) -> None:
    kcat = require_kcat()
    p = producer(kafka_broker.bootstrap)
    await p.start()
    try:
        expected = set()
        for i in range(30):
            meta = await p.send_and_wait(fresh_topic, f"payload {i}".encode(), key=f"k{i % 7}".encode())
            expected.add((meta.partition, meta.offset, f"k{i % 7}", f"payload {i}"))
    finally:
        await p.stop()

    # -e: exit once every partition is read to its end; a short fetch wait (Tansu waits it out).
    code, out, err = await run(kcat, "-C", "-b", kafka_broker.bootstrap, "-t", fresh_topic, "-o", "beginning",
                               "-e", "-q", "-X", "fetch.wait.max.ms=20", "-f", "%p\t%o\t%k\t%s\n")
    assert code == 0, err
    consumed = {(int(p_), int(o), k, s) for p_, o, k, s in (line.split("\t") for line in out.splitlines())}
    assert consumed == expected
    assert len(out.splitlines()) == len(expected)


async def test_kcat_metadata_lists_the_broker_and_topic(kafka_broker: TansuBroker, fresh_topic: str) -> None:
    code, out, err = await run(require_kcat(), "-L", "-b", kafka_broker.bootstrap, "-t", fresh_topic)
    assert code == 0, err
    assert f"at {kafka_broker.bootstrap}" in out
    assert f'topic "{fresh_topic}" with 3 partitions' in out


def _api_versions_v3_body(listener: str) -> bytes:
    host, port = listener.rsplit(":", 1)
    # request header v2 (client id + empty tag buffer); body: client software name and version
    client_id = b"lgw-tests"
    request = (struct.pack(">hhih", 18, 3, 7, len(client_id)) + client_id + b"\x00"
               + bytes([len(b"lgw") + 1]) + b"lgw" + bytes([len(b"0") + 1]) + b"0" + b"\x00")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        frame = sock.recv(size, socket.MSG_WAITALL)
    assert struct.unpack_from(">i", frame, 0)[0] == 7
    return frame[4:]


def test_api_versions_fix_keeps_the_versions_and_drops_the_tags(kafka_broker: TansuBroker) -> None:
    body = _api_versions_v3_body(kafka_broker.listener)
    fixed = api_versions_without_tagged_fields(body)
    assert fixed != body, "Tansu's ApiVersions v3 answer has tagged fields (the reason for the fix)"
    assert fixed.endswith(b"\x00") and len(fixed) < len(body)
    # Everything up to the tagged fields is unchanged: error code, the versions, throttle time.
    assert body.startswith(fixed[:-1])
    assert api_versions_without_tagged_fields(fixed) == fixed
    assert api_versions_without_tagged_fields(b"\x00\x23") == b"\x00\x23"  # an error answer passes as is


# --------------------------------------------------------------------------- the proxy
class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(4096):
                self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer((HOST, 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield HOST, int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _echo_once(port: int, payload: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(len(payload), socket.MSG_WAITALL)


def test_proxy_cut_resets_connections_and_refuses_until_restored(echo_server: tuple[str, int]) -> None:
    with TcpProxy(*echo_server) as proxy:
        assert _echo_once(proxy.port, b"hello") == b"hello"
        held = socket.create_connection((HOST, proxy.port), timeout=5)
        try:
            held.sendall(b"ping")
            assert held.recv(4, socket.MSG_WAITALL) == b"ping"
            deadline = time.monotonic() + 5
            while proxy.active < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)

            proxy.cut()
            assert proxy.is_cut and proxy.active == 0 and proxy.resets == 1
            with pytest.raises(ConnectionResetError):
                held.sendall(b"again")
                held.recv(5)
            with pytest.raises(ConnectionRefusedError):
                _echo_once(proxy.port, b"x")
        finally:
            held.close()

        port = proxy.port
        proxy.restore()
        assert not proxy.is_cut and proxy.port == port
        assert _echo_once(proxy.port, b"back") == b"back"
        assert proxy.accepted == 3
    with pytest.raises(ConnectionRefusedError):
        _echo_once(port, b"closed")


async def test_clients_ride_out_a_proxy_cut_without_losing_messages(kafka_behind_proxy: ProxiedKafka) -> None:
    broker, proxy = kafka_behind_proxy
    topic = broker.create_topic(unique_topic("cut"), partitions=3)
    p = producer(proxy.address)
    c = consumer(proxy.address, topic, group_id=unique_group("cut"))
    await asyncio.gather(p.start(), c.start())
    try:
        # The broker advertises the proxy: no client traffic can go around it.
        assert {b.port for b in p.client.cluster.brokers()} == {proxy.port}
        deadline = time.monotonic() + DEADLINE_S
        while len(c.assignment()) < 3:
            assert time.monotonic() < deadline, "the consumer got no assignment"
            await c.getmany(timeout_ms=50)

        received: list[tuple[float, ConsumerRecord[bytes, bytes]]] = []
        collector = asyncio.create_task(collect(c, received))
        sent: list[tuple[float, bytes, asyncio.Future[object]]] = []
        producing = True

        async def produce() -> None:
            i = 0
            while producing:
                value = f"m{i:05d}".encode()
                sent.append((time.monotonic(), value, await p.send(topic, value, key=f"k{i % 4}".encode())))
                i += 1
                await asyncio.sleep(0.02)

        producer_task = asyncio.create_task(produce())
        await asyncio.sleep(1.0)
        assert received, "nothing flowed before the cut"
        accepted_before = proxy.accepted

        cut_at = time.monotonic()
        proxy.cut()
        assert proxy.active == 0 and proxy.resets >= 2  # at least the producer's and the consumer's
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, proxy.port), timeout=2).close()
        await asyncio.sleep(3.0)
        restored_at = time.monotonic()
        proxy.restore()

        await asyncio.sleep(1.0)
        producing = False
        await producer_task
        metas = await asyncio.wait_for(asyncio.gather(*(f for _, _, f in sent)), DEADLINE_S)
        assert len(metas) == len(sent)
        assert any(cut_at < t < restored_at for t, _, _ in sent), "nothing was produced during the cut"

        sent_values = {v for _, v, _ in sent}
        deadline = time.monotonic() + DEADLINE_S
        while not sent_values <= {r.value for _, r in received} and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)

        missing = sent_values - {r.value for _, r in received}
        assert not missing, f"{len(missing)} of {len(sent_values)} messages lost, e.g. {sorted(missing)[:5]}"
        # Records fetched before the cut may still be handed out just after it; none after that.
        during = [r.value for t, r in received if cut_at + 0.5 < t < restored_at]
        assert not during, f"{len(during)} records arrived while the proxy was cut"
        assert proxy.accepted > accepted_before, "the clients did not reconnect through the proxy"
        # The log has no holes: every partition was read from offset 0 to its end.
        seen: dict[int, set[int]] = defaultdict(set)
        for _, r in received:
            seen[r.partition].add(r.offset)
        ends = await c.end_offsets([TopicPartition(topic, i) for i in range(3)])
        for tp, end in ends.items():
            assert seen[tp.partition] == set(range(end)), f"partition {tp.partition}: offsets missing"
    finally:
        await asyncio.gather(p.stop(), c.stop(), return_exceptions=True)


# --------------------------------------------------------------------------- lifecycle
def test_broker_stops_by_pid_and_its_ports_close(tmp_path: Path) -> None:
    broker = TansuBroker(require_broker_binary(), log_dir=tmp_path).start()
    pid, port, listener_port = broker.pid, broker.port, broker.listener_port
    assert pid is not None and broker.running
    broker.stop()
    assert not broker.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    for p in (port, listener_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOST, p), timeout=2).close()


def test_a_broker_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(BrokerStartError, match="exited with status 1") as info:
        TansuBroker("/bin/false", log_dir=tmp_path, startup_deadline_s=5).start()
    assert "=== start /bin/false broker" in str(info.value)
    with pytest.raises(BrokerStartError, match="cannot run"):
        TansuBroker(str(tmp_path / "no-such-binary"), log_dir=tmp_path).start()


def test_a_missing_binary_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CALF_TANSU_BIN"):
        require_broker_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="CALF_TANSU_BIN"):
        require_broker_binary()
