"""What keeps a browser session safe: signed session cookies, CSRF tokens, a limit on
failed logins per client, and strict response headers.

- Session: the cookie `lgw_session` holds who logged in, until when, and a random CSRF
  nonce, signed with HMAC-SHA256 under the console key (LGW_CONSOLE_SESSION_KEY, else a
  key file in the data directory); HttpOnly, SameSite=Strict, Secure over https. It ends
  after `session_minutes`, or when the OIDC token it was made from expires. Nothing
  is kept server-side, so every replica sharing the key accepts it; each request checks
  again that the token behind it is still the same token (a removed, replaced or revoked
  token ends its sessions at once) and takes its roles as they are now.
- CSRF: a state-changing request authenticated by the cookie must carry the session's
  nonce in `X-CSRF-Token` (the console's script sends it) or a `csrf` form field, and an
  Origin, when the browser sends one, equal to the request's own (nor `Sec-Fetch-Site:
  cross-site`). The login form is held to the same origin rule (login CSRF). Bearer-token calls carry
  no ambient credential and need neither.
- Failed authentications: at most `max_auth_failures` per client address in
  `failure_window_s`, then 429 with Retry-After until the window has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.console.auth import Principal

SESSION_COOKIE = "lgw_session"
CSRF_HEADER = "x-csrf-token"
KEY_FILE = "console-session.key"
ENV_KEY = "LGW_CONSOLE_SESSION_KEY"

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cache-control", b"no-store"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def session_key() -> bytes:
    from gateway.secret_keys import machine_key
    from gateway.settings import load_settings, secret

    return machine_key(secret(load_settings().console_session_key), KEY_FILE, "console session key", ENV_KEY)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, key: bytes, minutes: int, clock: Callable[[], float] = time.time) -> None:
        self.key = key
        self.seconds = minutes * 60
        self.clock = clock

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self.key, b"lgw-session.v1." + body.encode(), hashlib.sha256).digest())

    def issue(self, principal: Principal) -> tuple[str, str]:
        """(cookie value, its CSRF nonce)."""
        nonce = secrets.token_urlsafe(24)
        expires = int(self.clock()) + self.seconds
        if principal.expires_at is not None:  # an OIDC token's own lifetime bounds its session's
            expires = min(expires, int(principal.expires_at))
        payload = {"n": principal.name, "r": sorted(principal.roles), "s": principal.source,
                   "k": principal.token_id, "e": expires, "c": nonce}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", nonce

    def read(self, cookie: str) -> tuple[Principal, str] | None:
        """The principal and CSRF nonce of a genuine, unexpired cookie; None otherwise."""
        body, _, signature = cookie.partition(".")
        if not body or not signature or len(cookie) > 4096:
            return None
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(_unb64(body))
            if int(payload["e"]) <= self.clock():
                return None
            roles = payload["r"]
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                return None
            return (Principal(str(payload["n"]), frozenset(roles), str(payload["s"]), str(payload.get("k", ""))),
                    str(payload["c"]))
        except (ValueError, KeyError, TypeError):
            return None


class FailureLimiter:
    """Failed authentications per client address in a sliding window."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max = max_failures
        self.window = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._failures.setdefault(client, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked_for(self, client: str) -> float:
        """Seconds until this client may try again (0: now)."""
        with self._lock:
            now = self.clock()
            q = self._recent(client, now)
            if len(q) < self.max:
                if not q:
                    self._failures.pop(client, None)
                return 0.0
            return max(0.0, q[0] + self.window - now)

    def failed(self, client: str) -> None:
        with self._lock:
            now = self.clock()
            q = self._recent(client, now)
            q.append(now)
            if len(self._failures) > 10_000:  # a flood of addresses cannot grow this without bound
                for stale in [c for c, d in self._failures.items() if not d or d[-1] <= now - self.window]:
                    del self._failures[stale]


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


class SecurityHeaders:
    """Pure ASGI middleware: the headers above on every response (HSTS over https)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in HEADERS if h[0] not in present]
                if https:
                    extra.append(HSTS)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["CSP", "CSRF_HEADER", "SESSION_COOKIE", "FailureLimiter", "SecurityHeaders", "Sessions", "csrf_ok",
           "session_key"]
