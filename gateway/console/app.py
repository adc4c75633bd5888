"""The ASGI app of the ops address: /healthz and /readyz (no auth), /metrics, the admin
API under /api/v1 and the console under /console (a token or a session for each).

FastAPI for the API: its routes are typed with pydantic models, which gives the OpenAPI
document (/api/openapi.json, itself behind auth) that clients and the fuzzer use. Its
Swagger and ReDoc pages are off: they load scripts from a CDN.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from gateway.console.auth import Principal
from gateway.console.security import CSRF_HEADER, SESSION_COOKIE, SecurityHeaders, csrf_ok

if TYPE_CHECKING:
    from gateway.console.context import ConsoleContext
    from gateway.ops_http import Readiness

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_VERSION = "1"


class NotLoggedIn(HTTPException):
    """401 for the API; the console's pages turn it into a redirect to the login page."""


def context(request: Request) -> ConsoleContext:
    ctx: ConsoleContext = request.app.state.console
    return ctx


def known_pipeline(ctx: ConsoleContext, name: str | None) -> str | None:
    """`name` when gateway.yaml has that pipeline (or None for none asked); 404 otherwise."""
    if name is not None and name not in ctx.cfg.pipelines:
        raise HTTPException(404, f"no pipeline {name!r}; expected one of {', '.join(ctx.cfg.pipelines) or 'none'}")
    return name


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def same_origin(request: Request) -> bool:
    """The request did not come from another site's page: Sec-Fetch-Site, when the browser
    sends it, says same-origin (or none: typed by the user), and Origin (else Referer),
    when sent, is this host. `Origin: null` (a sandboxed or privacy-stripped origin) is refused."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin in (f"http://{host}", f"https://{host}")
    referer = request.headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return parts.scheme in ("http", "https") and parts.netloc == host
    return True  # not a browser's cross-site request (those send Origin on every POST)


def _not_blocked(request: Request) -> str:
    """The client's address; 429 with Retry-After while it has failed too often."""
    client = client_address(request)
    wait = context(request).limiter.blocked_for(client)
    if wait > 0:
        raise HTTPException(429, "too many failed authentications from this address; try again later",
                            headers={"Retry-After": str(int(wait) + 1)})
    return client


async def check_token(request: Request, token: str) -> Principal:
    """Who a token (an API token or an OIDC JWT) names, under the failed-authentication
    limit: 429 while this address is blocked, 401 (and a failure counted) for a bad token.
    The bearer header and the login form both come through here."""
    ctx = context(request)
    client = _not_blocked(request)
    token = token.strip()
    principal = None
    if token and len(token) <= 16384:
        # a file token answers on the loop; a thread (a wait for the busy loop, twice) only
        # for what needs the store or the issuer's keys
        principal = ctx.auth.in_memory(token) or await asyncio.to_thread(ctx.auth.bearer, token)
    if principal is None:
        ctx.limiter.failed(client)
        raise NotLoggedIn(401, "invalid or unknown token", headers={"WWW-Authenticate": "Bearer"})
    return principal


def start_session(request: Request, response: Response, principal: Principal) -> str:
    """Logs `principal` in on `response` (the login form's answer): sets the signed session
    cookie (HttpOnly, SameSite=Strict, Secure over https or when `console.secure_cookies`)
    and returns its CSRF nonce. A login posted from another site's page is refused (403):
    it would log the browser in as someone else (login CSRF)."""
    ctx = context(request)
    if not same_origin(request):
        raise HTTPException(403, "a login from another site's page; log in from the console's own")
    cookie, nonce = ctx.sessions.issue(principal)
    secure = ctx.secure_cookies if ctx.secure_cookies is not None else request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, cookie, max_age=ctx.sessions.seconds, path="/", secure=secure,
                        httponly=True, samesite="strict")
    return nonce


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


async def authenticate(request: Request) -> Principal:
    """The caller: a bearer token, else a session cookie. Too many failures from one
    address: 429 before the token is even looked at."""
    ctx = context(request)
    _not_blocked(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        caller = await check_token(request, token if scheme.lower() == "bearer" else "")
        request.state.via = "bearer"
        return caller
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = ctx.sessions.read(cookie)
        principal = None
        if session is not None:
            principal = (ctx.auth.session_principal(session[0]) if session[0].source == "file"
                         else await asyncio.to_thread(ctx.auth.session_principal, session[0]))
        if session is None or principal is None:
            raise NotLoggedIn(401, "session expired or ended; log in again", headers={"WWW-Authenticate": "Bearer"})
        nonce = session[1]
        request.state.via = "session"
        request.state.csrf = nonce
        if request.method in UNSAFE:
            given = request.headers.get(CSRF_HEADER)
            if given is None and request.headers.get("content-type", "").startswith(
                    ("application/x-www-form-urlencoded", "multipart/form-data")):
                given = str((await request.form()).get("csrf") or "")
            if not csrf_ok(nonce, given) or not same_origin(request):
                raise HTTPException(403, "missing or wrong CSRF token (reload the page)")
        return principal
    raise NotLoggedIn(401, "authentication required: a bearer token or a console session",
                      headers={"WWW-Authenticate": "Bearer"})


def require(permission: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold `permission` (403 otherwise)."""
    async def check(principal: Principal = Depends(authenticate)) -> Principal:  # noqa: B008
        if not principal.may(permission):
            raise HTTPException(403, f"{principal.identity} may not {permission} (roles: "
                                f"{', '.join(sorted(principal.roles)) or 'none'})")
        return principal

    return check


def build_ops_app(readiness: Readiness, console: ConsoleContext | None = None) -> Any:
    """/healthz, /readyz, /metrics; with a console, the API and pages too, and /metrics
    behind a token."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from gateway.metrics import REGISTRY

    app = FastAPI(title="lgw admin API", version=API_VERSION, docs_url=None, redoc_url=None, openapi_url=None,
                  description="Pipelines, runs, rejects, review queue, drift and the kill switch of the "
                              "legacy adapter gateway. Bearer tokens: `lgw console token new`, or OIDC.")
    app.state.console = console

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"], summary="Every dependency answers",
             responses={503: {"description": "a dependency does not answer"}})
    async def readyz() -> JSONResponse:
        ready, body = await readiness.report()
        return JSONResponse(body, status_code=200 if ready else 503)

    metrics_deps = [Depends(require("read"))] if console is not None else []

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", dependencies=metrics_deps,
             response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    if console is not None:
        from gateway.console import api

        app.include_router(api.router)

        @app.get("/api/openapi.json", include_in_schema=False, dependencies=[Depends(require("read"))])
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        from gateway.console import pages

        pages.mount(app)
    return SecurityHeaders(app)


__all__ = [
    "API_VERSION",
    "NotLoggedIn",
    "authenticate",
    "build_ops_app",
    "check_token",
    "client_address",
    "context",
    "end_session",
    "known_pipeline",
    "require",
    "same_origin",
    "start_session",
]
