"""How the gateway authenticates to an HTTP model server (KServe V2, MLflow): a bearer
token read from the environment (or its `_FILE`) and `tls:` (a CA for the server's
certificate, a client certificate for mutual TLS), made into httpx's client arguments in
this one place. The token goes into the Authorization header and nowhere else: never a
log line, an error or `lgw config check`'s output."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adapters.secrets import required_env
from adapters.tls import TLSConfig, context_or_none


class HttpAuthConfig(BaseModel):
    """`auth:` of a model endpoint: the variable holding the bearer token."""

    model_config = ConfigDict(extra="forbid")

    bearer_token_env: str


def bearer_token(auth: HttpAuthConfig, *, where: str) -> str:
    return required_env(auth.bearer_token_env, f"{where}.auth.bearer_token_env", "the model server's bearer token")


def client_security(auth: HttpAuthConfig | None, tls: TLSConfig | None, *, where: str) -> dict[str, Any]:
    """Keyword arguments for the HTTP model backends: `headers` (Authorization), `verify`
    (the TLS context) and `tls` (named in handshake errors)."""
    out: dict[str, Any] = {}
    if auth is not None:
        out["headers"] = {"authorization": f"Bearer {bearer_token(auth, where=where)}"}
    context = context_or_none(tls, where=f"{where}.tls")
    if context is not None:
        out["verify"] = context
        out["tls"] = tls
    return out


__all__ = ["HttpAuthConfig", "bearer_token", "client_security"]
