"""The operations endpoints of `lgw serve` and `lgw run`: /healthz, /readyz and /metrics.

A Starlette app served by a uvicorn `Server` on the command's own event loop, on a
loopback address by default (127.0.0.1:9464, the port Prometheus' exporter list gives
OpenTelemetry's Prometheus exporter; `--ops-address`, LGW_OPS_ADDRESS, `ops.address`).

- /healthz: the process is alive and its loop answers (200).
- /readyz: every dependency the command uses answers now: the Kafka and AMQP brokers, the
  state store, the model endpoints (503 naming those that do not). A pipeline that the
  breaker, the kill switch or its policy paused is reported in the body but stays ready:
  restarting the pod would not bring the model back, and it would drop the pause.
- /metrics: gateway.metrics.REGISTRY in the Prometheus text format.

Why not FastStream's AsgiFastStream and make_ping_asgi: `lgw run` serves drop folders
without any FastStream app or broker; AsgiFastStream starts the brokers inside the ASGI
lifespan, so /healthz would not answer until every broker was reached; make_ping_asgi
answers 204/500 with an empty body for one broker only, while /readyz must name the state
store and the model endpoints too. Its Prometheus middleware counts messages per handler
under `faststream_*` names, with no pipeline, scored_by or reason label: the gateway's
figures are counted per micro-batch in gateway.meters instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from adapters.secrets import env_value
from gateway.settings import DEFAULT_OPS_ADDRESS, load_settings, ops_host_port
from schemas.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn

    from gateway.config import GatewayConfig
    from gateway.console.context import ConsoleContext
    from gateway.console.status import StatusPublisher
    from gateway.pipeline import Pipeline
    from gateway.resilience.guarded import GuardedModel
    from gateway.state import StateStore

log = logging.getLogger("lgw.ops")

DEFAULT_ADDRESS = DEFAULT_OPS_ADDRESS
ENV_ADDRESS = "LGW_OPS_ADDRESS"
CHECK_TIMEOUT_S = 2.0  # a probe that waits longer than this for one dependency says "not ready"

Check = Callable[[], Awaitable[bool]]


class OpsConfig(BaseModel):
    """`ops:` in gateway.yaml."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None  # HOST:PORT; None: LGW_OPS_ADDRESS or 127.0.0.1:9464
    enabled: bool = True


def parse_address(text: str, origin: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) -> (host, port); port 0 takes a free port."""
    try:
        return ops_host_port(text.strip())
    except ValueError:
        raise ConfigError(f"{origin}: expected HOST:PORT (e.g. {DEFAULT_ADDRESS}; port 0 for a free one), "
                          f"found {text!r}") from None


def format_address(address: tuple[str, int] | None) -> str:
    """(host, port) as HOST:PORT ([HOST]:PORT for IPv6); "off" for None."""
    if address is None:
        return "off"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ops_address(cfg: GatewayConfig, flag: str | None, environ: Mapping[str, str] | None = None
                ) -> tuple[str, int] | None:
    """Where the endpoints listen: the flag, else LGW_OPS_ADDRESS, else `ops.address`, else
    the default; None when `ops.enabled` is false and no flag asks for them."""
    if flag is not None:
        return parse_address(flag, "--ops-address")
    ops: OpsConfig = getattr(cfg, "ops", None) or OpsConfig()
    if not ops.enabled:
        return None
    env = env_value(ENV_ADDRESS, environ) if environ is not None else load_settings().ops_address
    if env is not None:
        return parse_address(env, ENV_ADDRESS)
    if ops.address is not None:
        return parse_address(ops.address, "ops.address")
    return parse_address(DEFAULT_ADDRESS, "default")


# ---------------------------------------------------------------------------- readiness
@dataclass
class Readiness:
    """What /readyz asks: named dependency checks, and the pipelines whose pauses it reports."""

    checks: dict[str, Check] = field(default_factory=dict)
    pipelines: dict[str, Pipeline] = field(default_factory=dict)

    def add_state_store(self, store: StateStore | None) -> None:
        if store is not None:
            self.checks["state_store"] = lambda: asyncio.to_thread(_store_answers, store)

    def add_model(self, name: str, model: GuardedModel | None) -> None:
        if model is not None and f"model:{name}" not in self.checks:
            self.checks[f"model:{name}"] = model.ready

    def add_broker(self, name: str, broker: Any) -> None:
        """A FastStream broker: its own ping (a metadata request to Kafka, the connection to AMQP)."""
        async def ping() -> bool:
            return bool(await broker.ping(CHECK_TIMEOUT_S))

        self.checks[name] = ping

    def add_endpoints(self, name: str, addresses: list[tuple[str, int]]) -> None:
        """A broker the command reaches through clients of its own (`lgw run`'s topic and
        queue sinks): ready when one of its addresses accepts a TCP connection."""
        async def connect() -> bool:
            for host, port in addresses:
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CHECK_TIMEOUT_S)
                except (OSError, TimeoutError):
                    continue
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True
            return False

        self.checks[name] = connect

    def add_pipeline(self, pipeline: Pipeline) -> None:
        self.pipelines[pipeline.name] = pipeline
        if pipeline.model is not None:
            self.add_model(pipeline.model_name or pipeline.model.info.name, pipeline.model)

    async def report(self) -> tuple[bool, dict[str, Any]]:
        names = list(self.checks)
        answers = await asyncio.gather(*(_bounded(self.checks[n]) for n in names))
        checks = {n: ("ok" if ok else "unreachable") for n, ok in zip(names, answers, strict=True)}
        pipelines = {name: await _pipeline_state(p) for name, p in self.pipelines.items()}
        not_ready = [n for n, ok in zip(names, answers, strict=True) if not ok]
        body: dict[str, Any] = {"status": "ready" if not not_ready else "not ready", "checks": checks,
                                "pipelines": pipelines}
        if not_ready:
            body["not_ready"] = not_ready
        return not not_ready, body


def run_brokers(readiness: Readiness, cfg: GatewayConfig, pipelines: list[str]) -> None:
    """The brokers `lgw run`'s pipelines write to (a topic or queue sink or reject sink)."""
    from adapters.amqp.security import address as amqp_address

    kinds = {part.type for name in pipelines for part in (cfg.pipelines[name].output, cfg.pipelines[name].rejects_to)}
    if "kafka" in kinds:
        servers = [s.strip() for s in cfg.kafka.bootstrap_servers.split(",") if s.strip()]
        readiness.add_endpoints("kafka", [(h, int(p)) for h, _, p in (s.rpartition(":") for s in servers)
                                          if p.isdigit()])
    if "amqp" in kinds:  # only host and port: the URL may carry a password
        host, _, port = amqp_address(cfg.amqp).rpartition(":")
        readiness.add_endpoints("amqp", [(host, int(port))])


async def _bounded(check: Check) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), CHECK_TIMEOUT_S))
    except Exception as exc:  # a probe reports; only its type, the text may hold a URL with a password
        log.debug("readiness check failed: %s", type(exc).__name__)
        return False


def _store_answers(store: StateStore) -> bool:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return True


async def _pipeline_state(pipeline: Pipeline) -> dict[str, Any]:
    """A pipeline's pauses, as /readyz reports them (never a reason to be unready)."""
    state: dict[str, Any] = {"paused": pipeline.paused, "policy": pipeline.policy.value}
    if pipeline.kill_switch is not None:
        with contextlib.suppress(Exception):  # the store's own check says when it is away
            state["kill_switch"] = (await pipeline.kill_switch.acurrent()).mode
    if pipeline.model is not None:
        state["breaker"] = pipeline.model.breaker.state.value
    return state


# ---------------------------------------------------------------------------- the app
def build_app(readiness: Readiness, console: ConsoleContext | None = None) -> Any:
    from gateway.console.app import build_ops_app

    return build_ops_app(readiness, console)


def _listening_socket(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """A TCP listening socket made with proto IPPROTO_TCP: asyncio turns Nagle off only on
    connections whose socket says so (`socket.create_server` says 0), and with Nagle on,
    every answer on a kept-alive connection waited 40 ms for the client's delayed ACK."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class OpsServer:
    """The endpoints on the running loop: `bind()` first (a port in use is a ConfigError
    before anything else starts), then `start()`, and `stop()` on the way out."""

    def __init__(self, address: tuple[str, int], readiness: Readiness | None = None,
                 console: ConsoleContext | None = None) -> None:
        self.host, self.port = address
        self.readiness = readiness or Readiness()
        # the admin API and console (gateway.console), on the same address; their view of
        # this process's pipelines is the readiness list, filled before start()
        self.console = console
        self._status: StatusPublisher | None = None
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> OpsServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            self._socket = _listening_socket(self.host, self.port, family)
        except OSError as exc:
            why = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ConfigError(f"ops endpoints: cannot listen on {self.host}:{self.port}: {why}; expected a free "
                              f"address in --ops-address, {ENV_ADDRESS} or ops.address") from None
        self.port = int(self._socket.getsockname()[1])
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        import uvicorn

        if self._socket is None:
            self.bind()
        # No log config of its own: its lines go through the gateway's handlers (JSON
        # when asked), and no lifespan: the app has nothing to start.
        if self.console is not None:
            from gateway.console.status import StatusPublisher

            self.console.pipelines = self.readiness.pipelines
            self._status = StatusPublisher(self.console.cfg, self.console.state, self.readiness.pipelines,
                                           self.console.process)
            self._status.start()
        config = uvicorn.Config(build_app(self.readiness, self.console), log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        config.load()
        server = self._server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # what serve() sets up before startup()
        # startup and main_loop, not serve(): serve() would take over SIGTERM/SIGINT,
        # which belong to the command's graceful stop
        await server.startup(sockets=[self._socket])  # type: ignore[list-item]
        self._task = asyncio.get_running_loop().create_task(server.main_loop())
        log.info("ops: serving /healthz /readyz /metrics on %s", self.url)
        if self.console is not None:
            log.info("console: serving %s/console and the admin API at %s/api/v1", self.url, self.url)

    async def stop(self) -> None:
        if self._status is not None:
            await self._status.stop()
            self._status = None
        server, task = self._server, self._task
        self._server = self._task = None
        if server is not None:
            server.should_exit = True
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await server.shutdown(sockets=[self._socket] if self._socket else None)
        if self._socket is not None:
            self._socket.close()
            self._socket = None


__all__ = ["DEFAULT_ADDRESS", "ENV_ADDRESS", "OpsConfig", "OpsServer", "Readiness", "build_app", "ops_address",
           "parse_address", "run_brokers"]
