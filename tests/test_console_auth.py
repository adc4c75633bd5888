"""Authentication and authorization of the admin API and the console, against the real
app (gateway.console.app.build_ops_app) with a real SQLite state store (and PostgreSQL
for the stored tokens): the tokens file, tokens in the store, auth on every route, the
roles matrix, the failed-auth limit, sessions and CSRF, security headers, and that no
token or hash ever leaves the server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import Depends, Form, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from gateway.cli import main as lgw_main
from gateway.config import load_config
from gateway.console.app import require
from gateway.console.auth import (
    PERMISSIONS,
    Principal,
    TokenStore,
    add_to_tokens_file,
    read_tokens_file,
    token_digest,
)
from gateway.console.config import ROLES
from gateway.console.context import build_console
from gateway.console.pages import back_to, render
from gateway.console.security import CSRF_HEADER, SESSION_COOKIE
from gateway.state import StateStore
from schemas.errors import ConfigError
from tests.console_helpers import Console, gateway_yaml, make_console
from tests.helpers import postgres_schema

KILL = "/api/v1/pipelines/card_txn/kill-switch"
SWITCH = {"mode": "force_fallback", "reason": "INC-1: model drifts"}

# Routes that answer without credentials: health, and what the login page itself needs.
PUBLIC_PATHS = {"/healthz", "/readyz", "/console/login"}
PUBLIC_MOUNTS = {"/console/static"}  # the login page's own script and style sheet


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    yield from make_console(tmp_path, monkeypatch)


def probe_routes(c: Console) -> None:
    """One route per permission, a page and a form, so the matrix covers every permission
    even where main has no route needing it yet."""
    for permission in PERMISSIONS:
        async def probe(principal: Principal = Depends(require(permission))) -> dict[str, str]:  # noqa: B008
            return {"identity": principal.identity}

        c.app.add_api_route(f"/api/v1/probe/{permission}", probe, methods=["GET", "POST"], include_in_schema=False)

    async def page(request: Request, principal: Principal = Depends(require("read"))) -> Response:  # noqa: B008
        return render(request, "base.html", principal)

    async def form(request: Request, note: str = Form(""),
                   principal: Principal = Depends(require("operate"))) -> Response:  # noqa: B008
        return back_to(request, "/", f"done by {principal.identity}")

    c.app.add_api_route("/console/probe-page", page, methods=["GET"], include_in_schema=False)
    c.app.add_api_route("/console/probe-form", form, methods=["POST"], include_in_schema=False)


def login(c: Console, role: str) -> str:
    """A session cookie for `role`'s token on the client (as the login form would set); its CSRF nonce."""
    principal = c.ctx.auth.bearer(c.tokens[role])
    assert principal is not None
    cookie, nonce = c.ctx.sessions.issue(principal)
    c.client.cookies.set(SESSION_COOKIE, cookie)
    return nonce


# ---------------------------------------------------------------------------- tokens file
def test_tokens_file_holds_hashes_only_and_is_owner_only(console: Console) -> None:
    raw = console.tokens_file.read_text()
    assert console.tokens_file.stat().st_mode & 0o777 == 0o600
    for token in console.tokens.values():
        assert token.startswith("lgw_") and token not in raw
        assert token_digest(token) in raw
    assert {e.name for e in read_tokens_file(console.tokens_file)} == set(ROLES)


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_group_or_world_writable_tokens_file_is_refused_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: int) -> None:
    monkeypatch.setenv("LGW_CONSOLE_SESSION_KEY", "k" * 32)
    config = gateway_yaml(tmp_path)
    add_to_tokens_file(tmp_path / "tokens.yaml", "admin", ["admin"])
    (tmp_path / "tokens.yaml").chmod(mode)
    with pytest.raises(ConfigError) as err:
        read_tokens_file(tmp_path / "tokens.yaml")
    assert "\n" not in str(err.value) and f"found mode {mode:04o}" in str(err.value)
    cfg = load_config(config)
    with StateStore(cfg.state.url) as state, pytest.raises(ConfigError):
        build_console(cfg, state, process="console")
    for argv in (["console", "token", "list"], ["console", "--address", "127.0.0.1:0"]):
        assert lgw_main([*argv, "--config", str(config)]) != 0
        err_lines = capsys.readouterr().err.strip().splitlines()
        assert len(err_lines) == 1 and "expected writable by its owner only" in err_lines[0], err_lines


@pytest.mark.parametrize(("content", "says"), [
    ("tokens: [\n", "expected YAML"),
    ("- just a list\n", "expected a mapping with a `tokens:` list"),
    ("tokens:\n- {name: a, roles: [admin]}\n", "tokens[0].sha256"),
    ("tokens:\n- {name: a, roles: [root], sha256: '" + "0" * 64 + "'}\n", "expected roles among"),
    ("tokens:\n- {name: a, roles: admin, sha256: '" + "0" * 64 + "', extra: 1}\n", "tokens[0].extra"),
])
def test_malformed_tokens_file_is_one_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as err:
        read_tokens_file(path)
    assert "\n" not in str(err.value) and says in str(err.value)


def test_tokens_file_changes_are_picked_up_and_a_broken_file_fails_closed(
        console: Console, caplog: pytest.LogCaptureFixture) -> None:
    c = console
    assert c.client.get("/api/v1/whoami", headers=c.bearer("viewer")).status_code == 200
    late = add_to_tokens_file(c.tokens_file, "late", ["operator"])
    c.now.t += 2
    assert c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {late}"}).json()["identity"] == \
        "token:late"
    # made writable by others while serving: no file token is trusted until it is fixed
    c.tokens_file.chmod(0o666)
    c.now.t += 2
    with caplog.at_level(logging.ERROR, "lgw.console"):
        assert c.client.get("/api/v1/whoami", headers=c.bearer("viewer")).status_code == 401
    assert [r.getMessage() for r in caplog.records if "refused until it is fixed" in r.getMessage()]
    c.tokens_file.chmod(0o600)
    c.now.t += 2
    assert c.client.get("/api/v1/whoami", headers=c.bearer("viewer")).status_code == 200
    # removed by hand: refused at once (after the recheck interval)
    doc = yaml.safe_load(c.tokens_file.read_text())
    doc["tokens"] = [t for t in doc["tokens"] if t["name"] != "late"]
    c.tokens_file.write_text(yaml.safe_dump(doc))
    c.now.t += 2
    assert c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {late}"}).status_code == 401


def test_replacing_a_file_token_ends_the_sessions_of_the_old_one(console: Console) -> None:
    c = console
    login(c, "operator")
    assert c.client.get("/api/v1/whoami").status_code == 200
    doc = yaml.safe_load(c.tokens_file.read_text())
    doc["tokens"] = [t for t in doc["tokens"] if t["name"] != "operator"]
    c.tokens_file.write_text(yaml.safe_dump(doc))
    new = add_to_tokens_file(c.tokens_file, "operator", ["operator"])  # the leaked one's replacement
    c.now.t += 2
    assert c.client.get("/api/v1/whoami").status_code == 401
    assert c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {c.tokens['operator']}"}
                        ).status_code == 401
    assert c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_a_demoted_file_token_demotes_its_sessions_at_once(console: Console) -> None:
    c = console
    nonce = login(c, "operator")
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: nonce}).status_code == 200
    doc = yaml.safe_load(c.tokens_file.read_text())
    for entry in doc["tokens"]:
        if entry["name"] == "operator":
            entry["roles"] = ["viewer"]
    c.tokens_file.write_text(yaml.safe_dump(doc))
    c.now.t += 2
    assert c.client.get("/api/v1/whoami").json()["roles"] == ["viewer"]
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: nonce}).status_code == 403


# ---------------------------------------------------------------------------- stored tokens
def _store_lifecycle(c: Console) -> None:
    store = TokenStore(c.ctx.state)
    token, made = store.create("ci-bot", ["operator"], created_by="token:admin", note="pipeline")
    assert made.name == "ci-bot" and made.roles == ["operator"] and made.revoked_at is None
    with pytest.raises(ConfigError):
        store.create("ci-bot", ["viewer"], created_by="token:admin")
    with pytest.raises(ConfigError):
        store.create("bad name!", ["viewer"], created_by="token:admin")
    with pytest.raises(ConfigError):
        store.create("x", ["root"], created_by="token:admin")
    listed = {t.name: t for t in store.list()}
    assert listed["ci-bot"].created_by == "token:admin" and "sha256" not in listed["ci-bot"].model_dump()
    bearer = {"Authorization": f"Bearer {token}"}
    assert c.client.get("/api/v1/whoami", headers=bearer).json()["identity"] == "token:ci-bot"
    assert c.client.put(KILL, json=SWITCH, headers=bearer).status_code == 200
    principal = c.ctx.auth.bearer(token)
    assert principal is not None
    cookie, _ = c.ctx.sessions.issue(principal)
    c.client.cookies.set(SESSION_COOKIE, cookie)
    assert c.client.get("/api/v1/whoami").status_code == 200
    revoked = store.revoke("ci-bot")
    assert revoked.revoked_at is not None
    assert c.client.get("/api/v1/whoami", headers=bearer).status_code == 401  # at once: no cache
    assert c.client.get("/api/v1/whoami").status_code == 401  # its session ends too
    assert store.revoke("ci-bot").revoked_at == revoked.revoked_at  # again: the same, no error
    with pytest.raises(KeyError):
        store.revoke("nobody")
    assert {t.name: t.revoked_at is not None for t in store.list()} == {"ci-bot": True}


def test_store_tokens_create_list_revoke(console: Console) -> None:
    _store_lifecycle(console)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema("console") as url:
        yield url


def test_store_tokens_on_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    for c in make_console(tmp_path, monkeypatch, state_url=pg_url):
        assert c.ctx.state.engine.dialect.name == "postgresql"
        _store_lifecycle(c)


# ---------------------------------------------------------------------------- auth everywhere
@dataclass(frozen=True)
class Served:
    path: str  # as routed, with {params}
    methods: frozenset[str]
    route: Any  # the APIRoute (or Mount) as written

    def filled(self) -> str:
        """The path with each parameter given a plausible value (auth comes before validation)."""
        path = self.path
        for param in self.route.dependant.path_params:
            value = "1" if param.field_info.annotation is int else "card_txn"
            path = re.sub(r"\{" + param.name + r"(:[a-z]+)?\}", value, path)
        return path


def served(app: Any) -> list[Served]:
    """Every route the app serves, with the prefixes of the routers it includes."""
    found = []
    for ctx in iter_route_contexts(app.routes):
        route = ctx.original_route
        found.append(Served(str(ctx.path_format or ctx.path), frozenset(ctx.methods or ()), route))
    return found


def test_every_route_but_health_needs_credentials(console: Console) -> None:
    c = console
    probe_routes(c)
    seen = set()
    routes = served(c.app)
    assert len(routes) > 8
    for route in routes:
        if isinstance(route.route, Mount):
            assert route.route.path in PUBLIC_MOUNTS, f"{route.path}: a mounted app is served without auth"
            continue
        assert isinstance(route.route, APIRoute), f"{route}: expected FastAPI routes only (their auth is checked)"
        if route.path in PUBLIC_PATHS:
            continue
        path = route.filled()
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            seen.add(route.path)
            r = c.client.request(method, path)
            if route.path.startswith("/console/"):
                assert r.status_code == 303, f"{method} {path}: {r.status_code}"
                assert r.headers["location"].startswith("/console/login?next="), f"{method} {path}"
            else:
                assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text[:200]}"
                assert r.headers["www-authenticate"] == "Bearer"
            # wrong credentials are no better than none
            r = c.client.request(method, path, headers={"Authorization": "Bearer lgw_" + "A" * 43})
            assert r.status_code in (401, 303), f"{method} {path} with a made-up token: {r.status_code}"
            c.ctx.limiter._failures.clear()
    assert {"/metrics", "/api/openapi.json", "/api/v1/pipelines", KILL.replace("card_txn", "{name}"),
            "/console/probe-page"} <= seen
    for public in ("/healthz", "/readyz"):
        assert c.client.get(public).status_code == 200


def test_partial_fetch_and_api_get_401_not_a_redirect(console: Console) -> None:
    probe_routes(console)
    r = console.client.get("/console/probe-page", headers={"X-Console-Partial": "1"})
    assert r.status_code == 401


# ---------------------------------------------------------------------------- roles
@dataclass(frozen=True)
class Case:
    """A route and the permission it needs. Add a row for every state-changing route (the
    test below fails until there is one); a row whose route the app does not serve (yet)
    is not run. `succeeds`: a caller allowed gets a 2xx (else: anything but 401/403, e.g.
    the 404 of an item that does not exist: the permission is what is tested)."""

    method: str
    path: str
    permission: str
    json: dict[str, Any] | None = None
    succeeds: bool = True


ROLE_CASES = [
    Case("GET", "/api/v1/pipelines", "read"),
    Case("GET", "/api/v1/pipelines/card_txn", "read"),
    Case("GET", "/api/v1/whoami", "read"),
    Case("GET", "/metrics", "read"),
    Case("GET", "/api/openapi.json", "read"),
    Case("PUT", KILL, "operate", SWITCH),
    Case("PUT", KILL, "operate", {"mode": "off", "reason": "INC-1 resolved"}),
    # review helper's routes
    Case("GET", "/api/v1/review", "read"),
    Case("POST", "/api/v1/review/card_txn:1/decision", "review", {"decision": "approve", "reason": "ok"},
         succeeds=False),
    Case("GET", "/api/v1/audit/actions", "read"),
    Case("GET", "/api/v1/tokens", "admin"),
    Case("POST", "/api/v1/tokens", "admin", {"name": "matrix-bot", "roles": ["viewer"]}, succeeds=False),
    Case("DELETE", "/api/v1/tokens/nobody", "admin", succeeds=False),
    # runs helper's routes
    Case("GET", "/api/v1/runs", "read"),
    Case("POST", "/api/v1/runs/no-such-run/replay", "operate", {"reason": "INC-2 rerun"}, succeeds=False),
    Case("GET", "/api/v1/rejects", "read"),
    *[Case(m, f"/api/v1/probe/{p}", p) for p in PERMISSIONS for m in ("GET", "POST")],
]


def _pattern(path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return re.compile("^" + "".join((".+" if p.endswith(":path}") else "[^/]+") if p.startswith("{")
                                    else re.escape(p) for p in parts) + "$")


def _served_case(app: Any, case: Case) -> bool:
    return any(case.method in r.methods and _pattern(r.path).match(case.path) for r in served(app))


@pytest.mark.parametrize("role", ROLES)
def test_roles_matrix(console: Console, role: str) -> None:
    probe_routes(console)
    cases = [case for case in ROLE_CASES if _served_case(console.app, case)]
    assert len(cases) >= 7 + 2 * len(PERMISSIONS)
    for case in cases:
        r = console.client.request(case.method, case.path, json=case.json, headers=console.bearer(role))
        allowed = role in PERMISSIONS[case.permission]
        if allowed:
            ok = r.status_code < 300 if case.succeeds else r.status_code not in (401, 403)
        else:
            ok = r.status_code == 403 and f"token:{role} may not {case.permission}" in r.json()["detail"]
        assert ok, f"{role} {case.method} {case.path}: {r.status_code} {r.text[:200]}"


def test_permissions_are_what_the_issue_says() -> None:
    assert {p: sorted(r) for p, r in PERMISSIONS.items()} == {
        "read": sorted(ROLES), "operate": ["admin", "operator"], "review": ["admin", "reviewer"], "admin": ["admin"]}


def test_every_state_changing_api_route_is_in_the_roles_matrix(console: Console) -> None:
    """A new PUT/POST/PATCH/DELETE route must get a ROLE_CASES row (saying which permission it needs)."""
    missing = [(m, r.path) for r in served(console.app) if r.path.startswith("/api/")
               for m in r.methods & {"POST", "PUT", "PATCH", "DELETE"}
               if not any(c.method == m and _pattern(r.path).match(c.path) for c in ROLE_CASES)]
    assert missing == []


def test_a_kill_switch_flip_names_the_token_in_the_audit_trail(console: Console) -> None:
    r = console.client.put(KILL, json=SWITCH, headers=console.bearer("operator"))
    assert r.status_code == 200 and r.json()["set_by"] == "token:operator"
    assert console.ctx.state.get_kill_switch("card_txn").set_by == "token:operator"


# ---------------------------------------------------------------------------- rate limit
def test_eleventh_failure_is_429_until_the_window_passes(console: Console) -> None:
    c = console
    for _ in range(10):
        r = c.client.get("/api/v1/pipelines", headers={"Authorization": "Bearer lgw_wrong"})
        assert r.status_code == 401
    r = c.client.get("/api/v1/pipelines", headers={"Authorization": "Bearer lgw_wrong"})
    assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 61
    assert r.headers["x-content-type-options"] == "nosniff"
    r = c.client.get("/api/v1/pipelines", headers=c.bearer("admin"))
    assert r.status_code == 429  # even a good token, while blocked
    c.now.t += 30
    assert c.client.get("/api/v1/pipelines", headers=c.bearer("admin")).status_code == 429
    c.now.t += 31
    assert c.client.get("/api/v1/pipelines", headers=c.bearer("admin")).status_code == 200
    # a non-bearer scheme is a failure too
    assert c.client.get("/api/v1/pipelines", headers={"Authorization": "Basic YTpi"}).status_code == 401


# ---------------------------------------------------------------------------- sessions
def test_session_cookie_tampered_or_expired_is_401(console: Console) -> None:
    c = console
    login(c, "viewer")
    assert c.client.get("/api/v1/whoami").json()["identity"] == "token:viewer"
    cookie = c.client.cookies[SESSION_COOKIE]
    body, sig = cookie.split(".")
    # claim admin with the viewer's signature
    import base64
    import json

    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**payload, "r": ["admin"]}).encode()).rstrip(b"=").decode()
    for bad in (f"{forged}.{sig}", f"{body}.{sig[:-2]}AA", body, "x" * 5000, f"{body}.{sig}.x"):
        c.client.cookies.set(SESSION_COOKIE, bad)
        assert c.client.get("/api/v1/whoami").status_code == 401, bad[:40]
    c.client.cookies.set(SESSION_COOKIE, cookie)
    assert c.client.get("/api/v1/whoami").status_code == 200
    c.now.t += c.ctx.sessions.seconds
    assert c.client.get("/api/v1/whoami").status_code == 401


def test_cookie_writes_need_the_csrf_token_and_same_origin(console: Console) -> None:
    c = console
    probe_routes(c)
    nonce = login(c, "operator")
    assert c.client.put(KILL, json=SWITCH).status_code == 403
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: "wrong"}).status_code == 403
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: ""}).status_code == 403
    foreign = {CSRF_HEADER: nonce, "Origin": "https://evil.example"}
    assert c.client.put(KILL, json=SWITCH, headers=foreign).status_code == 403
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: nonce, "Origin": "null"}).status_code == 403
    cross = {CSRF_HEADER: nonce, "Sec-Fetch-Site": "cross-site"}
    assert c.client.put(KILL, json=SWITCH, headers=cross).status_code == 403
    assert c.ctx.state.get_kill_switch("card_txn").mode == "off"
    same = {CSRF_HEADER: nonce, "Origin": "http://testserver"}
    r = c.client.put(KILL, json=SWITCH, headers=same)
    assert r.status_code == 200 and r.json()["set_by"] == "token:operator"
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: nonce}).status_code == 200
    same_site = {CSRF_HEADER: nonce, "Sec-Fetch-Site": "same-origin"}
    assert c.client.put(KILL, json=SWITCH, headers=same_site).status_code == 200
    # a form: the csrf field
    assert c.client.post("/console/probe-form", data={"note": "x"}).status_code == 403
    assert c.client.post("/console/probe-form", data={"csrf": "nope"}).status_code == 403
    r = c.client.post("/console/probe-form", data={"csrf": nonce, "note": "x"})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/")
    # another session's nonce is no good
    other = c.ctx.sessions.issue(Principal("operator", frozenset({"operator"}), "file"))[1]
    assert c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: other}).status_code == 403


def test_bearer_calls_need_no_csrf(console: Console) -> None:
    r = console.client.put(KILL, json=SWITCH, headers={**console.bearer("operator"), "Origin": "https://x.example"})
    assert r.status_code == 200


def test_start_session_sets_a_strict_http_only_cookie(console: Console) -> None:
    # the console's own login form (gateway.console.pages_overview) logs in through
    # check_token and start_session
    r = console.client.post("/console/login", data={"token": console.tokens["viewer"]}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert r.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    https = console.client_for("https://testserver")
    r = https.post("/console/login", data={"token": console.tokens["viewer"]}, follow_redirects=False)
    assert "secure" in r.headers["set-cookie"].lower()
    # login CSRF: another site's page posting its own token into this browser
    for foreign in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        r = console.client.post("/console/login", data={"token": console.tokens["viewer"]}, headers=foreign)
        assert r.status_code == 403 and "set-cookie" not in r.headers
    for _ in range(10):
        assert console.client.post("/console/login", data={"token": "nope"}).status_code in (401, 303)
    assert console.client.post("/console/login", data={"token": console.tokens["viewer"]}).status_code == 429


# ---------------------------------------------------------------------------- headers
def _strict(r: Any, https: bool = False) -> None:
    h = r.headers
    csp = {d.split()[0]: d.split()[1:] for d in h["content-security-policy"].split(";") if d.strip()}
    assert csp["script-src"] == ["'self'"] and csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert not any("unsafe" in v for values in csp.values() for v in values)
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    # a console page says same-origin: with no-referrer Chromium posts its own forms with
    # `Origin: null`, which the CSRF check refuses; the API and everything else say no-referrer
    page = "text/html" in h.get("content-type", "") and r.status_code == 200
    assert h["referrer-policy"] == ("same-origin" if page else "no-referrer")
    assert h["cache-control"] == "no-store"
    assert ("strict-transport-security" in h) == https
    if https:
        assert h["strict-transport-security"].startswith("max-age=31536000")


def test_security_headers_on_api_page_and_error_responses(console: Console) -> None:
    probe_routes(console)
    for https in (False, True):
        client = console.client_for("https://testserver" if https else "http://testserver")
        admin = console.bearer("admin")
        responses = [
            client.get("/api/v1/pipelines", headers=admin),  # API
            client.get("/console/probe-page", headers=admin),  # page
            client.get("/console/probe-page"),  # redirect to login
            client.get("/console/static/console.js"),  # static
            client.get("/api/v1/pipelines"),  # 401
            client.get("/api/v1/probe/admin", headers=console.bearer("viewer")),  # 403
            client.get("/api/v1/pipelines/nope", headers=admin),  # 404
            client.get("/no/such/path"),  # 404 of no route
            client.put(KILL, json={"mode": "bogus"}, headers=admin),  # 422
            client.get("/healthz"),
            client.get("/metrics", headers=admin),
        ]
        assert [r.status_code for r in responses] == [200, 200, 303, 200, 401, 403, 404, 404, 422, 200, 200]
        assert "text/html" in responses[1].headers["content-type"]
        for r in responses:
            _strict(r, https)


def test_security_headers_on_an_unhandled_error(console: Console) -> None:
    async def broken(principal: Principal = Depends(require("read"))) -> dict[str, str]:  # noqa: B008
        raise RuntimeError("a bug")

    console.app.add_api_route("/api/v1/probe/broken", broken, methods=["GET"], include_in_schema=False)
    client = TestClient(console.asgi, raise_server_exceptions=False)
    r = client.get("/api/v1/probe/broken", headers=console.bearer("viewer"))
    assert r.status_code == 500 and "a bug" not in r.text
    _strict(r)


# ---------------------------------------------------------------------------- secrets stay in
def test_no_token_or_hash_in_any_response_or_log_line(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    c = console
    probe_routes(c)
    secrets_ = [*c.tokens.values(), *(token_digest(t) for t in c.tokens.values())]
    store_token, _ = TokenStore(c.ctx.state).create("bot", ["admin"], created_by="token:admin")
    secrets_ += [store_token, token_digest(store_token)]
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for role in ROLES:
            for case in ROLE_CASES:
                r = c.client.request(case.method, case.path, json=case.json, headers=c.bearer(role))
                seen.append(str(r.headers) + r.text)
        for token in (store_token, c.tokens["admin"][:-1] + "x", c.tokens["admin"] + "x", store_token.upper()):
            r = c.client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            seen.append(str(r.headers) + r.text)
        nonce = login(c, "admin")
        r = c.client.put(KILL, json=SWITCH, headers={CSRF_HEADER: nonce})
        seen.append(str(r.headers) + r.text + str(c.client.cookies.get(SESSION_COOKIE)))
        cookie = c.client.cookies[SESSION_COOKIE]
        import base64

        seen.append(base64.urlsafe_b64decode(cookie.split(".")[0] + "==").decode())
        c.tokens_file.chmod(0o606)
        c.now.t += 2
        seen.append(c.client.get("/api/v1/whoami", headers=c.bearer("admin")).text)
        TokenStore(c.ctx.state).revoke("bot")
    seen += [r.getMessage() for r in caplog.records]
    seen += [str(r.args) for r in caplog.records]
    assert len(seen) > 40
    for text_ in seen:
        for secret in secrets_:
            assert secret not in text_
