"""HTTP plumbing shared by the remote model backends (KServe V2, MLflow): one pooled
httpx client, a deadline per call, JSON both ways, and the mapping of failures onto the
gateway's errors, which decides where a record goes:

    timeout (connect, read, write, waiting for a pooled connection, whole call) -> ModelTimeout
    connection refused / reset, protocol error                                  -> ModelUnavailable
    5xx                                                                         -> ModelServerError
    401 403 404 408 429 (auth, model not loaded, overload: not the records)     -> ModelUnavailable
    any other 4xx (the server refused these inputs)                             -> ModelRejected
    2xx that is no usable answer: over the size cap, undecodable, not JSON
    (NaN / Infinity tokens included: they are not JSON)                         -> ModelOutputError

The body is streamed and read only up to a cap (`max_bytes`, the model's
`max_response_bytes` in gateway.yaml): a server that answers without end costs at most
that much memory, never the whole answer. An error answer is read only as far as its
excerpt in the message needs.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import httpx

from adapters.models.base import DEFAULT_MAX_RESPONSE_BYTES
from adapters.tls import TLSConfig, handshake_error, probe_handshake
from schemas.errors import ModelOutputError, ModelRejected, ModelServerError, ModelTimeout, ModelUnavailable

try:  # orjson is optional: it writes float32 arrays without a Python float per value
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

# 4xx answers that say nothing about the records: the same batch can succeed later, so
# they must reach the breaker and fallback, never the rejects.
_NOT_THE_RECORDS = {401, 403, 404, 408, 429}
_EXCERPT = 300
_ERROR_BODY_BYTES = _EXCERPT * 4  # what `excerpt` reads of an error answer


def make_client(base_url: str, *, timeout_s: float, max_connections: int, headers: dict[str, str] | None = None,
                verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """`headers` (an Authorization header) go with every request; `verify`: the TLS context
    (CA, client certificate) for https, else the system's trust store."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=httpx.Timeout(timeout_s), limits=limits,
                             headers={"accept": "application/json", **(headers or {})},
                             verify=verify if verify is not None else True)


async def _transport_detail(exc: httpx.TransportError, what: str, tls: TLSConfig | None) -> str:
    """A failed TLS handshake as `handshake_error` words it; any other failure as before.
    A server that refuses the client's certificate (or its absence) under TLS 1.3 only
    drops the connection as httpx sees it: a fresh handshake then tells why."""
    address = _address(exc)
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    line = handshake_error(cause, system=what, address=address, cfg=tls) if cause is not None else None
    dropped = isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError)
    if line is None and tls is not None and dropped and _is_https(exc):
        line = await probe_handshake(address, tls, system=what, where="tls")
    return line or f"{what}: {type(exc).__name__}: {exc or 'connection failed'}"


def _is_https(exc: httpx.TransportError) -> bool:
    try:
        return exc.request.url.scheme == "https"
    except RuntimeError:  # an error made without its request
        return False


def _address(exc: httpx.TransportError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:  # an error made without its request
        return "the server"
    return f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"


def dumps(payload: Any) -> bytes:
    """JSON bytes; numpy arrays inside `payload` are written as (nested) lists."""
    if _orjson is not None:
        return _orjson.dumps(payload, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(payload, default=_numpy_default, separators=(",", ":")).encode()


def _numpy_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if tolist is None:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return tolist()


def loads(body: bytes, *, what: str) -> Any:
    """Strict JSON (RFC 8259): NaN and Infinity tokens, which some servers write for
    non-finite floats, make the answer unusable like any other non-JSON."""
    try:
        return _orjson.loads(body) if _orjson is not None else json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", None)
        if pos is not None and body[pos:pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
            exc = ValueError(f"a non-finite number at char {pos}: NaN and Infinity are not JSON")
        raise ModelOutputError(f"{what}: answer is not JSON ({exc}): {excerpt(body)}") from None


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def excerpt(body: bytes) -> str:
    text = " ".join(body[: _EXCERPT * 4].decode("utf-8", "replace").split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


async def call(client: httpx.AsyncClient, method: str, url: str, *, timeout_s: float, what: str,
               content: bytes | None = None, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
               tls: TLSConfig | None = None) -> bytes:
    """One request with a deadline for the whole call (body included); the body of a
    success, read up to `max_bytes`; failures mapped (module docstring)."""
    headers = {"content-type": "application/json"} if content is not None else None
    try:
        # httpx's timeouts bound each phase (connect, each read...); the outer deadline
        # bounds the call as a whole, which is what the caller's latency budget means.
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, url, content=content, headers=headers,
                                     timeout=httpx.Timeout(timeout_s)) as response:
                status = response.status_code
                if status < 400:
                    return await _read_capped(response, max_bytes, what=what)
                body = await _read_head(response, _ERROR_BODY_BYTES)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ModelTimeout(f"{what}: no answer within {timeout_s:g}s ({type(exc).__name__})") from exc
    except httpx.DecodingError as exc:  # a Content-Encoding the body does not follow
        raise ModelOutputError(f"{what}: answer cannot be decoded: {exc}") from exc
    except httpx.TransportError as exc:
        raise ModelUnavailable(await _transport_detail(exc, what, tls)) from exc
    detail = f"{what}: HTTP {status}: {excerpt(body)}"
    if status in (401, 403):
        detail += " (expected the token of auth.bearer_token_env, or a client certificate the server accepts)"
    if status >= 500:
        raise ModelServerError(detail, status=status)
    if status == 408:
        raise ModelTimeout(detail)
    if status in _NOT_THE_RECORDS:
        raise ModelUnavailable(detail)
    raise ModelRejected(detail)


async def _read_capped(response: httpx.Response, max_bytes: int, *, what: str) -> bytes:
    """The whole body, or ModelOutputError as soon as it is known to be over `max_bytes`
    (leaving the stream unread closes the connection: the rest is never received)."""
    over = f"{what}: answer is over the cap of {max_bytes:,} bytes (max_response_bytes)"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ModelOutputError(f"{over}: Content-Length {int(declared):,}")
    body = await _read_head(response, max_bytes + 1)
    if len(body) > max_bytes:
        raise ModelOutputError(f"{over}; stopped reading after {len(body):,}")
    return body


async def _read_head(response: httpx.Response, limit: int) -> bytes:
    """The body's first `limit` bytes at most; the rest is never read."""
    head = bytearray()
    async for chunk in response.aiter_bytes():
        head += chunk
        if len(head) >= limit:
            break
    return bytes(head[:limit])


async def probe(client: httpx.AsyncClient, url: str, *, timeout_s: float) -> bool:
    """True when GET `url` answers 200; any failure (refused, timeout, non-200) is False."""
    try:
        async with asyncio.timeout(timeout_s):
            # the status is the answer: the body is never read
            async with client.stream("GET", url, timeout=httpx.Timeout(timeout_s)) as response:
                return response.status_code == 200
    except (TimeoutError, httpx.HTTPError):
        return False
