"""TLS servers the tests start with the certificates of tests/certs.py, each on a free
127.0.0.1 port and stopped by its PID:

- `Stunnel`: Debian's stunnel4 terminating TLS on a loopback port and forwarding to a
  plaintext one; with `require_client_cert` it asks for a client certificate signed by
  the test CA (mutual TLS). Tansu 0.6.0 cannot serve TLS itself (`--cert` and `--key`
  refuse to be given together), so the Kafka TLS tests put stunnel in front of it and
  start Tansu advertising the stunnel port: every client connection, the reconnections
  after Metadata included, goes through TLS.
- `RabbitTlsNode`: a second RabbitMQ node of the test's own (its own node name, ports,
  data and log folders, config with a TLS listener); the machine's RabbitMQ on 5672 is
  shared and left alone.
- `SecureModelServer`: tests/secure_model_server.py under uvicorn with TLS (optionally
  requiring a client certificate) and a bearer token.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.certs import Certs
from tests.helpers import unavailable
from tests.processes import LoggedProcess

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0


class TlsServerError(RuntimeError):
    """A TLS test server exited, or did not listen before its deadline."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _tls_answers(port: int, certs: Certs) -> bool:
    """True once a TLS handshake on `port` completes (with the client certificate, so a
    server requiring one answers too)."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    try:
        with socket.create_connection((HOST, port), timeout=1) as raw, \
                context.wrap_socket(raw, server_hostname=HOST):
            return True
    except (OSError, ssl.SSLError):
        return False


class _Server(LoggedProcess):
    port: int
    certs: Certs
    name = "server"

    def _wait_listening(self, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while not _tls_answers(self.port, self.certs):
            if self.process is not None and self.process.poll() is not None:
                raise TlsServerError(f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TlsServerError(f"{self.name} did not answer TLS on {HOST}:{self.port} within "
                                     f"{deadline_s:g}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _spawn(self, command: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env or dict(os.environ), start_new_session=True)

    def stop(self) -> None:
        self._terminate(GRACE_S)
        self.process = None


class Stunnel(_Server):
    """TLS on `port` forwarded to `HOST:target_port`."""

    name = "stunnel"

    def __init__(self, certs: Certs, target_port: int, *, folder: Path, port: int | None = None,
                 require_client_cert: bool = False) -> None:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        if binary is None:
            unavailable("stunnel4 is not installed (scripts/system-packages.sh)")
        self.binary = str(binary)
        self.certs = certs
        self.port = port or free_port()
        self.target_port = target_port
        self.require_client_cert = require_client_cert
        self.log_path = folder / f"stunnel-{self.port}.log"
        self.config = folder / f"stunnel-{self.port}.conf"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> Stunnel:
        verify = (f"CAfile = {self.certs.ca}\nverifyChain = yes\nrequireCert = yes\n"
                  if self.require_client_cert else "")
        self.config.write_text(
            f"foreground = yes\npid =\ndebug = 5\nsyslog = no\n\n[tls]\nclient = no\n"
            f"accept = {HOST}:{self.port}\nconnect = {HOST}:{self.target_port}\n"
            f"cert = {self.certs.server_cert}\nkey = {self.certs.server_key}\n{verify}")
        self._spawn([self.binary, str(self.config)])
        self._wait_listening(15)
        return self

    def __enter__(self) -> Stunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RabbitTlsNode(_Server):
    """A RabbitMQ node of its own with a TLS listener on `port` (and a plaintext one on
    `tcp_port`, both on 127.0.0.1); guest may log in from loopback."""

    name = "rabbitmq"
    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
    CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"

    def __init__(self, certs: Certs, *, folder: Path, require_client_cert: bool = False) -> None:
        if not Path(self.SERVER).exists():
            unavailable("rabbitmq-server is not installed")
        self.certs = certs
        self.port = free_port()
        self.tcp_port = free_port()
        self.dist_port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="lgw-rabbit-", dir=folder))
        self.node = f"lgwtls{self.port}@localhost"
        self.log_path = self.home / "stdout.log"
        self.require_client_cert = require_client_cert

    @property
    def url(self) -> str:
        return f"amqps://{HOST}:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": HOST, "RABBITMQ_NODE_PORT": str(self.tcp_port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.home / "log"), "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.home / "rabbit.pid"), "RABBITMQ_LOGS": "-"}

    def start(self) -> RabbitTlsNode:
        (self.home / "enabled_plugins").write_text("[].\n")  # no management listener on the shared 15672
        verify = "verify_peer" if self.require_client_cert else "verify_none"
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {HOST}:{self.tcp_port}\nlisteners.ssl.1 = {HOST}:{self.port}\n"
            f"ssl_options.cacertfile = {self.certs.ca}\nssl_options.certfile = {self.certs.server_cert}\n"
            f"ssl_options.keyfile = {self.certs.server_key}\nssl_options.verify = {verify}\n"
            f"ssl_options.fail_if_no_peer_cert = {'true' if self.require_client_cert else 'false'}\n")
        self._spawn([self.SERVER], env=self._env())
        self._wait_listening(90)
        return self

    def stop(self) -> None:
        if self.running:
            subprocess.run([self.CTL, "-n", self.node, "stop"], env=self._env(), capture_output=True, timeout=60,
                           check=False)
        super().stop()

    def __enter__(self) -> RabbitTlsNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SecureModelServer(_Server):
    """The V2 test model server over https on `port`; `token` is the bearer token it wants."""

    name = "model server"

    def __init__(self, certs: Certs, *, folder: Path, token: str | None = None,
                 require_client_cert: bool = False) -> None:
        self.certs = certs
        self.port = free_port()
        self.token = token
        self.require_client_cert = require_client_cert
        self.log_path = folder / f"model-{self.port}.log"

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    def start(self) -> SecureModelServer:
        command = [sys.executable, "-m", "uvicorn", "tests.secure_model_server:app", "--host", HOST,
                   "--port", str(self.port), "--log-level", "warning",
                   "--ssl-certfile", str(self.certs.server_cert), "--ssl-keyfile", str(self.certs.server_key),
                   "--ssl-ca-certs", str(self.certs.ca),
                   "--ssl-cert-reqs", str(int(ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_NONE))]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.token is not None:
            env["LGW_TEST_MODEL_TOKEN"] = self.token
        self._spawn(command, env=env)
        self._wait_listening(60)
        return self

    def __enter__(self) -> SecureModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
