"""How the gateway connects to an AMQP broker: `amqp:` of gateway.yaml (`url`, `tls`,
`username`, `password_env`) as FastStream's security object for `RabbitBroker`, made in
this one place for the real-time app's broker and a publisher's own. The password is read
from the environment (or its `_FILE`) when the broker is made and never appears in an
error; a failed TLS handshake becomes one line (`connection_problem`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from adapters.amqp.config import AmqpConfig
from adapters.secrets import required_env
from adapters.tls import connection_context, probe_handshake


def password(cfg: AmqpConfig) -> str | None:
    if cfg.password_env is None:
        return None
    return required_env(cfg.password_env, "amqp.password_env", f"the password of {cfg.username}")


def broker_security(cfg: AmqpConfig, *, secrets: bool = True) -> Any:
    """A `faststream.security` object for `RabbitBroker(security=...)`, or None when the URL
    says everything (plain amqp:// with its own credentials). `secrets=False`: without the
    password (a broker that only documents its channels)."""
    from faststream.security import BaseSecurity, SASLPlaintext

    # the docs need no certificate files either
    context = connection_context(cfg.uses_tls, cfg.tls, where="amqp.tls") if secrets else None
    if cfg.username is not None:
        secret = password(cfg) if secrets else None
        return SASLPlaintext(cfg.username, secret or "", ssl_context=context, use_ssl=cfg.uses_tls)
    return BaseSecurity(ssl_context=context, use_ssl=True) if cfg.uses_tls else None


def address(cfg: AmqpConfig) -> str:
    parts = urlsplit(cfg.url)
    port = parts.port or (5671 if cfg.uses_tls else 5672)
    return f"{parts.hostname or 'localhost'}:{port}"


async def connection_problem(cfg: AmqpConfig) -> str | None:
    """One line naming why the TLS handshake with the broker fails, or None (plaintext, or
    the handshake works: the client's own error stands)."""
    if not cfg.uses_tls:
        return None
    from adapters.tls import TLSConfig

    return await probe_handshake(address(cfg), cfg.tls or TLSConfig(), system="amqp", where="amqp.tls")


__all__ = ["address", "broker_security", "connection_problem", "password"]
