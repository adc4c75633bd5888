"""TLS for every connection the gateway makes (Kafka, AMQP, HTTP model servers): one
config shape (`TLSConfig`) made into an `ssl.SSLContext` by the standard library, and the
translation of a failed handshake into one line an operator can act on.

A missing or unreadable file, or a file that holds no usable certificate or key, is one
ConfigError naming the field and the file, raised before anything connects. A private
key's password is read from the environment (or its `_FILE`) and never echoed.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from adapters.secrets import required_env
from schemas.errors import ConfigError


class TLSConfig(BaseModel):
    """`tls:` of a connection. Without `ca_file` the system's trust store verifies the
    server; `cert_file` (and `key_file`, unless the key is in the same PEM) is the client
    certificate a server asking for mutual TLS gets."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password_env: str | None = None  # the variable (or its _FILE) holding the key's password
    check_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self

    def resolved(self, base_dir: Path) -> TLSConfig:
        """The same config with relative file names taken from `base_dir` (the config file's folder)."""
        def fix(name: str | None) -> str | None:
            return name if name is None or Path(name).is_absolute() else str(base_dir / name)
        return self.model_copy(update={"ca_file": fix(self.ca_file), "cert_file": fix(self.cert_file),
                                       "key_file": fix(self.key_file)})


def _readable(field: str, path: str, where: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{where}.{field}: {path} cannot be read: {exc.strerror}") from None


def ssl_context(cfg: TLSConfig, *, where: str) -> ssl.SSLContext:
    """A client context verifying the server (its CA, its host name unless turned off) and
    presenting the client certificate when one is set. `where` names the config section
    in errors (`kafka.tls`)."""
    if cfg.ca_file:
        _readable("ca_file", cfg.ca_file, where)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cfg.ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}.ca_file: {cfg.ca_file} holds no usable CA certificate "
                          f"(expected PEM): {exc.reason or exc}") from None
    context.check_hostname = cfg.check_hostname
    if cfg.cert_file:
        _readable("cert_file", cfg.cert_file, where)
        if cfg.key_file:
            _readable("key_file", cfg.key_file, where)
        password = _key_password(cfg, where)
        try:
            context.load_cert_chain(cfg.cert_file, cfg.key_file, password=password)
        except ssl.SSLError as exc:
            files = cfg.cert_file + (f" and key_file {cfg.key_file}" if cfg.key_file else "")
            raise ConfigError(f"{where}.cert_file: {files} hold no usable certificate and private key "
                              f"(expected PEM, the key matching the certificate"
                              f"{', and key_password_env its password' if cfg.key_password_env else ''}): "
                              f"{exc.reason or exc}") from None
    return context


def _key_password(cfg: TLSConfig, where: str) -> str | None:
    if not cfg.key_password_env:
        return None
    return required_env(cfg.key_password_env, f"{where}.key_password_env", "the password of the client key")


def context_or_none(cfg: TLSConfig | None, *, where: str) -> ssl.SSLContext | None:
    """The context of an enabled `tls:`, else None (plaintext)."""
    return ssl_context(cfg, where=where) if cfg is not None and cfg.enabled else None


def connection_context(uses_tls: bool, cfg: TLSConfig | None, *, where: str) -> ssl.SSLContext | None:
    """The context of a connection whose protocol or URL asks for TLS (`uses_tls`): its
    `tls:` section's, or the system trust store's without one; None for plaintext."""
    if not uses_tls:
        return None
    return ssl.create_default_context() if cfg is None else ssl_context(cfg, where=where)


def handshake_error(exc: BaseException, *, system: str, address: str, cfg: TLSConfig | None) -> str | None:
    """One line saying why a TLS handshake with `address` failed and what was expected, or
    None when `exc` is no TLS failure."""
    if not isinstance(exc, ssl.SSLError):
        return None
    head = f"{system}: TLS handshake with {address} failed"
    ca = f"the CA in {cfg.ca_file}" if cfg is not None and cfg.ca_file else "a CA of the system trust store"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = exc.verify_message or exc.reason or "certificate verify failed"
        if exc.verify_code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            host = address.rsplit(":", 1)[0]
            return f"{head}: {message} (expected a certificate naming {host})"
        return f"{head}: certificate verify failed: {message} (expected a certificate signed by {ca})"
    reason = (exc.reason or str(exc)).lower().replace("_", " ")
    if "certificate required" in reason or ("handshake failure" in reason and not (cfg and cfg.cert_file)):
        return (f"{head}: the server wants a client certificate ({reason}); expected tls.cert_file and "
                "tls.key_file")
    if "unknown ca" in reason or "bad certificate" in reason:
        return f"{head}: the server refused the client certificate {cfg.cert_file if cfg else ''} ({reason})"
    if "eof" in reason:
        return _hung_up(system, address, cfg)
    if "wrong version number" in reason or "record layer failure" in reason:
        return f"{head}: {reason} (expected a TLS listener at {address}: is it plaintext?)"
    return f"{head}: {reason}"


def _hung_up(system: str, address: str, cfg: TLSConfig | None) -> str:
    head = f"{system}: TLS handshake with {address} failed: the server closed the connection"
    if cfg is not None and cfg.cert_file:
        return f"{head} (did it refuse the client certificate {cfg.cert_file}?)"
    return f"{head}; it may want a client certificate: expected tls.cert_file and tls.key_file"


async def probe_handshake(address: str, cfg: TLSConfig | None, *, system: str, where: str,
                          timeout_s: float = 5.0) -> str | None:
    """Connects to `address` (host:port) and shakes hands as the clients would: None when it
    works (or when the failure is not TLS's: the caller's own error stands then), else
    the line of `handshake_error`. Clients such as aiokafka log a handshake failure and
    report only that they could not connect; this says why."""
    context = context_or_none(cfg, where=where)
    if context is None:
        return None
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context, server_hostname=host)
        try:
            # under TLS 1.3 a server refuses a client certificate after the client's side of
            # the handshake is done: its alert (or its hanging up) comes with the first read
            if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                return _hung_up(system, address, cfg)
        except TimeoutError:
            pass
        finally:
            writer.close()
    except ssl.SSLError as exc:
        return handshake_error(exc, system=system, address=address, cfg=cfg)
    except (OSError, TimeoutError, ValueError):
        return None
    return None


__all__ = ["TLSConfig", "connection_context", "context_or_none", "handshake_error", "probe_handshake", "ssl_context"]
