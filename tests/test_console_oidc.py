"""OIDC bearer tokens against a real issuer process (tests/oidc_issuer.py on a free
loopback port, serving its discovery document and the JWKS of an RSA key made here),
tokens signed with PyJWT, through the real app: roles and role_map, every kind of bad
token is a 401, a token with none of our roles a 403, an issuer down a 401 (not a 500)
until it answers."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.console.security import SESSION_COOKIE
from tests.console_helpers import Console, make_console
from tests.model_servers import free_port

AUDIENCE = "lgw-console"
HERE = Path(__file__).parent


class Issuer:
    """The issuer process and the key it publishes."""

    def __init__(self, folder: Path, port: int = 0, key: rsa.RSAPrivateKey | None = None) -> None:
        self.key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_file = folder / "jwks.json"
        jwk = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks_file.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
        self.log = open(folder / "issuer.stderr", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([sys.executable, str(HERE / "oidc_issuer.py"), str(self.jwks_file), str(port)],
                                        stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()  # the script prints it once it listens
        if not line.startswith("issuer: "):
            self.stop()
            pytest.fail(f"oidc issuer did not start: {line!r} {(folder / 'issuer.stderr').read_text()}")
        self.url = line.split(" ", 1)[1].strip()

    def token(self, sub: str = "alice", key: Any = None, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[Issuer]:
    started = Issuer(tmp_path)
    yield started
    started.stop()


def oidc_console(folder: Path, monkeypatch: pytest.MonkeyPatch, issuer_url: str, **oidc: Any) -> Iterator[Console]:
    for c in make_console(folder, monkeypatch, max_auth_failures=1000,
                          oidc={"issuer": issuer_url, "audience": AUDIENCE, **oidc}):
        assert c.ctx.auth.oidc is not None
        c.ctx.auth.oidc.clock = c.now
        yield c


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, issuer: Issuer) -> Iterator[Console]:
    yield from oidc_console(tmp_path, monkeypatch, issuer.url, role_map={"lgw-ops": "operator"})


def call(c: Console, token: str, path: str = "/api/v1/whoami") -> Any:
    return c.client.get(path, headers={"Authorization": f"Bearer {token}"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    head = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{head}.{_b64(sign(head.encode())) if sign else ''}"


def test_a_valid_token_gives_its_roles(console: Console, issuer: Issuer) -> None:
    r = call(console, issuer.token(roles=["operator", "viewer", "not-ours"]))
    assert r.status_code == 200
    assert r.json() == {"identity": "oidc:alice", "name": "alice", "roles": ["operator", "viewer"], "source": "oidc"}
    r = console.client.put("/api/v1/pipelines/card_txn/kill-switch", json={"mode": "pause", "reason": "INC-7"},
                           headers={"Authorization": f"Bearer {issuer.token(roles=['operator'])}"})
    assert r.status_code == 200 and r.json()["set_by"] == "oidc:alice"


def test_role_map_and_a_space_separated_claim(console: Console, issuer: Issuer) -> None:
    assert call(console, issuer.token(roles=["lgw-ops"])).json()["roles"] == ["operator"]
    assert call(console, issuer.token(roles="lgw-ops viewer")).json()["roles"] == ["operator", "viewer"]


def test_roles_claim_of_another_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, issuer: Issuer) -> None:
    for c in oidc_console(tmp_path, monkeypatch, issuer.url, roles_claim="groups",
                          role_map={"ops-admins": "admin"}):
        assert call(c, issuer.token(groups=["ops-admins"], roles=["viewer"])).json()["roles"] == ["admin"]


def test_a_token_with_none_of_our_roles_is_403_on_reads(console: Console, issuer: Issuer) -> None:
    token = issuer.token(roles=["billing"])
    assert call(console, token).json()["roles"] == []  # authenticated: who it is
    r = call(console, token, "/api/v1/pipelines")
    assert r.status_code == 403 and "oidc:alice may not read (roles: none)" in r.json()["detail"]
    assert call(console, issuer.token(roles=None), "/api/v1/pipelines").status_code == 403


def test_bad_tokens_are_401(console: Console, issuer: Issuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300, "roles": ["admin"]}
    pem = issuer.public_pem()

    def hs256(data: bytes) -> bytes:
        import hashlib
        import hmac

        return hmac.new(pem, data, hashlib.sha256).digest()

    bad = {
        "wrong audience": issuer.token(aud="someone-else", roles=["admin"]),
        "wrong issuer": issuer.token(iss="http://127.0.0.1:1", roles=["admin"]),
        "expired": issuer.token(exp=now - 120, iat=now - 600, roles=["admin"]),
        "no exp": issuer.token(exp=None, roles=["admin"]),
        "no sub": issuer.token(sub=None, roles=["admin"]),  # type: ignore[arg-type]
        "unsigned (alg none)": hand_made({"alg": "none", "typ": "JWT", "kid": "k1"}, claims),
        "HS256 with the public key as secret": hand_made({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims, hs256),
        "unknown kid": issuer.token(key=other, kid="k2", roles=["admin"]),
        "known kid, another key": issuer.token(key=other, kid="k1", roles=["admin"]),
        "no kid": jwt.encode(claims, issuer.key, algorithm="RS256"),
        "signature of another token": issuer.token(roles=["admin"]).rsplit(".", 1)[0] + "."
                                      + issuer.token(roles=["viewer"]).rsplit(".", 1)[1],
        "garbage": "a.b.c",
    }
    assert call(console, issuer.token(roles=["admin"])).status_code == 200
    for what, token in bad.items():
        r = call(console, token)
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
        assert token not in r.text


def test_issuer_down_at_start_is_401_until_it_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    for c in oidc_console(tmp_path, monkeypatch, url):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # published nowhere yet
        claims = {"iss": url, "aud": AUDIENCE, "sub": "bob", "roles": ["viewer"], "iat": int(time.time()),
                  "exp": int(time.time()) + 300}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        assert call(c, token).status_code == 401  # not a 500, and not a hang
        live = Issuer(tmp_path, port=port, key=key)
        try:
            # a failed discovery is not asked again on every request...
            assert call(c, token).status_code == 401
            # ...but it is after a while: not cached for ever
            c.now.t += 11
            r = call(c, token)
            assert r.status_code == 200 and r.json()["identity"] == "oidc:bob"
        finally:
            live.stop()


def test_an_oidc_session_ends_when_its_token_expires(console: Console, issuer: Issuer) -> None:
    console.now.t = time.time()
    principal = console.ctx.auth.bearer(issuer.token(roles=["viewer"], exp=int(time.time()) + 120))
    assert principal is not None
    cookie, _ = console.ctx.sessions.issue(principal)
    console.client.cookies.set(SESSION_COOKIE, cookie)
    assert console.client.get("/api/v1/whoami").json()["identity"] == "oidc:alice"
    console.now.t += 121
    assert console.client.get("/api/v1/whoami").status_code == 401


def test_keys_are_fetched_once_not_per_request(console: Console, issuer: Issuer, tmp_path: Path) -> None:
    for _ in range(5):
        assert call(console, issuer.token(roles=["viewer"])).status_code == 200
    issuer.log.flush()
    requests = (tmp_path / "issuer.stderr").read_text()
    assert requests.count("GET /.well-known/openid-configuration") == 1
    assert requests.count("GET /jwks") == 1


def test_an_issuer_over_plain_http_beyond_loopback_is_refused(tmp_path: Path) -> None:
    from gateway.config import load_config
    from schemas.errors import ConfigError
    from tests.console_helpers import gateway_yaml

    for field in ("issuer", "jwks_url"):
        oidc = {"issuer": "https://idp.example", "audience": AUDIENCE, field: "http://idp.example/keys"}
        with pytest.raises(ConfigError) as err:
            load_config(gateway_yaml(tmp_path, oidc=oidc))
        assert "\n" not in str(err.value) and f"console.oidc.{field}: expected an https URL" in str(err.value)
