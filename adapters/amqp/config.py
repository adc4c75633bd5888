"""Config of the AMQP 0-9-1 components: the broker, the queue source, the reply or
exchange sink, the dead-letter exchange."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from adapters.config import ComponentConfig
from adapters.tls import TLSConfig


class AmqpConfig(ComponentConfig):
    """The AMQP 0-9-1 broker (RabbitMQ) (`LGW_AMQP_URL` overrides). An `amqps://` URL or
    `tls:` (CA, client certificate) connects over TLS; `username` with `password_env`
    (the variable holding the password, or its `_FILE`) keeps the password out of the URL."""

    url: str = "amqp://guest:guest@localhost:5672/"
    tls: TLSConfig | None = None
    username: str | None = None
    password_env: str | None = None
    graceful_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _credentials_pair(self) -> AmqpConfig:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together (the password is read from that variable)")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.url.lower().startswith("amqps://") or (self.tls is not None and self.tls.enabled)


class AmqpSourceConfig(ComponentConfig):
    """Real time over a legacy queue: request/reply. A request names its `reply_to`
    queue and a `correlation_id`; unless the pipeline names another `sink`, the reply
    goes there with the same id. Rejected requests are published to
    `dead_letter_exchange` with the reason, and the requester gets a reply saying so."""

    type: Literal["amqp"]
    queue: str
    payload: Literal["json", "copybook"] = "copybook"
    result_format: Literal["json", "fixed"] | None = None
    prefetch: int = Field(default=64, ge=1)  # bounds the requests in flight
    dead_letter_exchange: str = "lgw.dlx"
    dead_letter_routing_key: str | None = None  # default: the queue's name


class AmqpSinkConfig(ComponentConfig):
    """Scored records published to `exchange` with `routing_key` (publisher-confirmed
    before the source is acked); without an exchange, each result is the reply to its
    request (`reply_to`, `correlation_id`): only an AMQP source has requesters."""

    type: Literal["amqp"] = "amqp"
    exchange: str | None = None
    routing_key: str = ""
    format: Literal["json", "fixed"] | None = None


class AmqpRejectsConfig(ComponentConfig):
    """Dead letters published to `exchange` with the original bytes and the reason in headers."""

    type: Literal["amqp"] = "amqp"
    exchange: str = "lgw.dlx"
    routing_key: str | None = None  # default: the pipeline's name
