"""How the gateway connects to a Kafka cluster: the ONE place where `kafka:` of gateway.yaml
(`security_protocol`, `tls`, `sasl`) becomes client options.

- `client_options(cfg)`: keyword arguments for every aiokafka client (producer, consumer,
  admin client, a lag reader, a readiness ping): `AIOKafkaAdminClient(**client_options(cfg))`.
- `broker_security(cfg)`: the same as a FastStream security object for `KafkaBroker`.
- `connection_problem(cfg)`: why a client could not connect, as one line. aiokafka logs a
  failed TLS handshake or SASL exchange and reports only "Unable to bootstrap"; this
  connects once more the way the clients do and names what failed.

The SASL password is read when the options are made (from the variable `sasl.password_env`
names, or its `_FILE`) and never appears in an error.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from adapters.kafka.config import KafkaConfig
from adapters.secrets import required_env
from adapters.tls import TLSConfig, connection_context, handshake_error, probe_handshake
from schemas.errors import ConfigError


def sasl_password(cfg: KafkaConfig) -> str | None:
    if cfg.sasl is None:
        return None
    return required_env(cfg.sasl.password_env, "kafka.sasl.password_env", f"the SASL password of {cfg.sasl.username}")


def security_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Only the security keyword arguments of an aiokafka client."""
    options: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    context = connection_context(cfg.uses_tls, cfg.tls, where="kafka.tls")
    if context is not None:
        options["ssl_context"] = context
    if cfg.sasl is not None:
        options.update(sasl_mechanism=cfg.sasl.mechanism, sasl_plain_username=cfg.sasl.username,
                       sasl_plain_password=sasl_password(cfg))
    return options


def client_options(cfg: KafkaConfig, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client of the cluster: bootstrap servers, client
    id and security; `overrides` are added last (a producer's own client_id, acks...)."""
    return {"bootstrap_servers": cfg.bootstrap_servers, "client_id": cfg.client_id,
            **security_options(cfg), **overrides}


def broker_security(cfg: KafkaConfig, *, secrets: bool = True) -> Any:
    """A `faststream.security` object for `KafkaBroker(security=...)`, or None for PLAINTEXT.
    `secrets=False` (a broker that only documents its channels, `lgw asyncapi`) leaves the
    password out, so that the docs can be made where the secret is not mounted."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    # the docs need no certificate files either
    context = connection_context(cfg.uses_tls, cfg.tls, where="kafka.tls") if secrets else None
    if cfg.sasl is None:
        return BaseSecurity(ssl_context=context, use_ssl=True) if cfg.uses_tls else None
    kinds = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
    password = sasl_password(cfg) if secrets else None
    return kinds[cfg.sasl.mechanism](cfg.sasl.username, password or "", ssl_context=context,
                                     use_ssl=cfg.uses_tls)


async def connection_problem(cfg: KafkaConfig, *, timeout_s: float = 5.0) -> str | None:
    """One line naming why the first bootstrap server refuses the gateway's connection (TLS
    handshake, SASL), or None when a fresh connection works or fails for another reason."""
    from aiokafka import errors
    from aiokafka.conn import create_conn

    address = cfg.bootstrap_servers.split(",")[0].strip()
    host, _, port = address.rpartition(":")
    try:
        options = security_options(cfg)
    except ConfigError as exc:
        return str(exc)
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(host, int(port), client_id=cfg.client_id, **options)
            conn.close()
    except ssl.SSLError as exc:
        return handshake_error(exc, system="kafka", address=address, cfg=cfg.tls)
    except (errors.SaslAuthenticationFailed, errors.UnsupportedSaslMechanismError,
            errors.IllegalSaslStateError) as exc:
        assert cfg.sasl is not None
        return (f"kafka: SASL {cfg.sasl.mechanism} as {cfg.sasl.username} at {address} failed: "
                f"{_sasl_reason(exc)} (expected the broker to accept this user and password)")
    except errors.KafkaError as exc:
        if cfg.uses_tls:  # under TLS 1.3 a refused client certificate shows only as a closed connection
            refused = await probe_handshake(address, cfg.tls or TLSConfig(), system="kafka", where="kafka.tls")
            if refused is not None:
                return refused
        if cfg.sasl is not None:
            return (f"kafka: SASL {cfg.sasl.mechanism} as {cfg.sasl.username} at {address} failed: "
                    f"{type(exc).__name__} (is SASL enabled on that listener?)")
        return None
    except (OSError, TimeoutError, ValueError):
        return None
    return None


def _sasl_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


__all__ = ["broker_security", "client_options", "connection_problem", "sasl_password", "security_options"]
