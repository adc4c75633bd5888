"""Who is calling: API tokens (a secret file of hashed tokens, and tokens an admin made
through the API, kept hashed in the state store) and OIDC bearer tokens.

A token is `lgw_` and 43 URL-safe characters (32 random bytes). Only its SHA-256 is kept:
a token is a random 256-bit secret, not a password, so a slow hash would add nothing but
latency (GitHub and PyPI keep theirs the same way). Lookups compare digests in constant
time.

OIDC, what we chose: the gateway verifies bearer JWTs against the configured issuer's
published keys (PyJWT's PyJWKClient fetches and caches the JWKS named by the discovery
document's `jwks_uri`); `iss`, `aud`, `exp`, `iat` and `sub` are required; only asymmetric
algorithms are accepted. There is no browser redirect login flow (authorization code):
it would need a client secret and a registered redirect URI per deployment and
server-side state for the code exchange, for a console a handful of operators use. The
console's login page accepts a token instead: operators paste one obtained from their
IdP's CLI, or use an API token. Roles come from one claim (`roles_claim`), mapped through
`role_map`; unknown roles are ignored, so a token with none of ours is authenticated but
may do nothing (403, not 401). A session made from an OIDC token ends when the token
expires.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Column, DateTime, String, Table, Text, select, update

from gateway.console.config import ROLES, ConsoleConfig, OidcConfig, is_loopback
from gateway.state import StateStore, metadata
from schemas.errors import ConfigError
from schemas.safefiles import NewFile, open_existing

log = logging.getLogger("lgw.console")

TOKEN_PREFIX = "lgw_"
TOKENS_FILE = "console-tokens.yaml"
ENV_TOKENS_FILE = "LGW_CONSOLE_TOKENS_FILE"

# What each permission needs: a caller holding any of the roles has it.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "operate": frozenset({"operator", "admin"}),  # kill switch, replay
    "review": frozenset({"reviewer", "admin"}),  # review decisions
    "admin": frozenset({"admin"}),  # tokens
}

console_tokens = Table(
    "console_tokens",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("roles", String(200), nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("created_by", String(240), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("note", Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `identity` is what audit records name."""

    name: str
    roles: frozenset[str]
    source: str  # "file", "store" or "oidc"
    # which token it logged in with (token_fingerprint of its digest; "" for OIDC): a
    # session ends when its name's token changes, not only when the name goes away
    token_id: str = field(default="", compare=False, repr=False)
    # when its credential expires (an OIDC token's `exp`, epoch seconds): no session outlives it
    expires_at: float | None = field(default=None, compare=False, repr=False)

    @property
    def identity(self) -> str:
        return f"{'oidc' if self.source == 'oidc' else 'token'}:{self.name}"

    def may(self, permission: str) -> bool:
        return bool(self.roles & PERMISSIONS[permission])


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_fingerprint(digest: str) -> str:
    """What a session cookie names its token by: derived from the stored digest, but
    neither the token nor the digest (neither may leave the server)."""
    return hashlib.sha256(b"lgw-console-session-token." + digest.encode()).hexdigest()[:32]


def _check_roles(roles: Iterable[str]) -> frozenset[str]:
    found = frozenset(roles)
    unknown = sorted(found - set(ROLES))
    if unknown or not found:
        raise ValueError(f"expected roles among {', '.join(ROLES)}, found {unknown or 'none'}")
    return found


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,119}$")
    roles: frozenset[str]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> frozenset[str]:
        if isinstance(value, str):
            value = [value]
        return _check_roles(value)


# ---------------------------------------------------------------------------- tokens file
def tokens_file_path(cfg: ConsoleConfig, base_dir: Path | None = None) -> Path:
    """LGW_CONSOLE_TOKENS_FILE, else `console.tokens_file` (beside gateway.yaml when
    relative), else console-tokens.yaml in the data directory."""
    from gateway.settings import data_dir, load_settings

    settings = load_settings()
    if settings.console_tokens_file is not None:
        return settings.console_tokens_file
    if cfg.tokens_file:
        p = Path(cfg.tokens_file)
        return p if p.is_absolute() or base_dir is None else base_dir / p
    return data_dir(settings) / TOKENS_FILE


def read_tokens_file(path: Path) -> list[TokenEntry]:
    """The entries of a tokens file; a file anyone may write, or one that is not a
    regular file, is refused (it would let anyone make themselves admin)."""
    try:
        with open_existing(path) as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return []
    if st.st_mode & 0o022:
        raise ConfigError(f"console tokens file {path}: expected writable by its owner only (mode 0600), "
                          f"found mode {st.st_mode & 0o777:04o}")
    try:
        raw = yaml.safe_load(data) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        raise ConfigError(f"console tokens file {path}: expected YAML, found an error at {where}") from None
    items = raw.get("tokens") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"console tokens file {path}: expected a mapping with a `tokens:` list, "
                          f"found {type(raw).__name__}")
    entries = []
    for i, item in enumerate(items):
        try:
            entries.append(TokenEntry.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise ConfigError(f"console tokens file {path}: tokens[{i}].{where}: "
                              f"{str(err['msg']).removeprefix('Value error, ')}") from None
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"console tokens file {path}: expected unique names, found {sorted(names)}")
    return entries


def add_to_tokens_file(path: Path, name: str, roles: Iterable[str]) -> str:
    """Adds a new token to the file (made 0600, never through a link) and returns it: the
    only time it is shown."""
    entries = read_tokens_file(path)
    if any(e.name == name for e in entries):
        raise ConfigError(f"console tokens file {path}: a token named {name!r} exists already; "
                          f"expected a new name (remove the old entry to replace it)")
    token = new_token()
    try:
        entry = TokenEntry(name=name, roles=frozenset(roles), sha256=token_digest(token))
    except ValidationError as exc:
        raise ConfigError(f"console token: {str(exc.errors()[0]['msg']).removeprefix('Value error, ')}") from None
    doc = {"tokens": [{"name": e.name, "roles": sorted(e.roles), "sha256": e.sha256} for e in [*entries, entry]]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with NewFile(path, mode=0o600) as new:
        new.write(b"# lgw console tokens: SHA-256 of each token, never the token itself\n")
        new.write(yaml.safe_dump(doc, sort_keys=False).encode())
        new.publish()
    return token


class TokenFile:
    """The tokens file, read again when it changes (an operator adds or removes a token by
    hand): looked at again at most once a second (`recheck_s`).

    At start-up a broken file is an error (`entries(strict=True)`); one that breaks while
    serving (malformed, made group- or world-writable) is logged once and then trusted for
    nothing: no file token authenticates until it is fixed (tokens of the state store and
    OIDC still do)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic, recheck_s: float = 1.0) -> None:
        self.path = path
        self.clock = clock
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._by_digest: dict[str, TokenEntry] = {}
        self._checked: float | None = None

    def exists(self) -> bool:
        return self.path.is_file()

    def entries(self, strict: bool = False) -> dict[str, TokenEntry]:
        now = self.clock()
        with self._lock:
            if not strict and self._checked is not None and now - self._checked < self.recheck_s:
                return self._by_digest
            self._checked = now
            try:
                st = self.path.stat()
                # a new file (an editor's or NewFile's rename) has a new inode even when the
                # size and the mtime's granularity would not tell
                stamp: tuple[int, int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp or strict:
                try:
                    self._by_digest = {e.sha256: e for e in read_tokens_file(self.path)} if stamp else {}
                except ConfigError as exc:
                    self._by_digest = {}
                    if strict:
                        self._stamp = None
                        raise
                    log.error("%s; its tokens are refused until it is fixed", exc)
                self._stamp = stamp
            return self._by_digest

    def lookup(self, digest: str) -> Principal | None:
        found = None
        for known, entry in self.entries().items():
            if hmac.compare_digest(known, digest):  # no early exit: the time does not tell which
                found = Principal(entry.name, entry.roles, "file", token_fingerprint(known))
        return found

    def has_name(self, name: str) -> bool:
        return any(e.name == name for e in self.entries().values())

    def current(self, name: str, token_id: str) -> Principal | None:
        """The file's token `name`, when it is still the one a session logged in with (its
        roles as the file says now)."""
        for digest, entry in self.entries().items():
            if entry.name == name and hmac.compare_digest(token_fingerprint(digest), token_id):
                return Principal(entry.name, entry.roles, "file", token_id)
        return None


# ---------------------------------------------------------------------------- stored tokens
class StoredToken(BaseModel):
    name: str
    roles: list[str]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    note: str = ""


class TokenStore:
    """Tokens an admin made through the API, hashed in the state store (every replica sees them)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def create(self, name: str, roles: Iterable[str], created_by: str, note: str = "") -> tuple[str, StoredToken]:
        try:
            entry = TokenEntry(name=name, roles=frozenset(roles), sha256="0" * 64)
        except ValidationError as exc:
            raise ConfigError(f"token: {str(exc.errors()[0]['msg']).removeprefix('Value error, ')}") from None
        token = new_token()
        row = {"name": entry.name, "roles": " ".join(sorted(entry.roles)), "sha256": token_digest(token),
               "created_by": created_by, "created_at": datetime.now(UTC), "revoked_at": None, "note": note}
        with self.store._connect() as conn, conn.begin():
            if conn.execute(select(console_tokens.c.name).where(console_tokens.c.name == entry.name)).first():
                raise ConfigError(f"token {entry.name!r} exists already; expected a new name")
            conn.execute(console_tokens.insert().values(**row))
        return token, _stored(row)

    def revoke(self, name: str) -> StoredToken:
        with self.store._connect() as conn, conn.begin():
            done = conn.execute(update(console_tokens).where(console_tokens.c.name == name,
                                                             console_tokens.c.revoked_at.is_(None))
                                .values(revoked_at=datetime.now(UTC)))
            row = conn.execute(select(console_tokens).where(console_tokens.c.name == name)).mappings().first()
        if row is None:
            raise KeyError(name)
        if done.rowcount == 0 and row["revoked_at"] is None:
            raise KeyError(name)
        return _stored(row)

    def list(self) -> list[StoredToken]:
        with self.store._connect() as conn:
            rows = conn.execute(select(console_tokens).order_by(console_tokens.c.created_at)).mappings().all()
        return [_stored(r) for r in rows]

    def lookup(self, digest: str) -> Principal | None:
        with self.store._connect() as conn:
            row = conn.execute(select(console_tokens).where(console_tokens.c.sha256 == digest,
                                                            console_tokens.c.revoked_at.is_(None))).mappings().first()
        if row is None or not hmac.compare_digest(row["sha256"], digest):
            return None
        return Principal(row["name"], frozenset(row["roles"].split()), "store", token_fingerprint(row["sha256"]))

    def active(self, name: str, token_id: str | None = None) -> Principal | None:
        """The token `name`, not revoked (and, given `token_id`, still the same token)."""
        with self.store._connect() as conn:
            row = conn.execute(select(console_tokens.c.sha256, console_tokens.c.roles).where(
                console_tokens.c.name == name, console_tokens.c.revoked_at.is_(None))).first()
        if row is None:
            return None
        fingerprint = token_fingerprint(row[0])
        if token_id is not None and not hmac.compare_digest(fingerprint, token_id):
            return None
        return Principal(name, frozenset(row[1].split()), "store", fingerprint)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _stored(row: Any) -> StoredToken:
    return StoredToken(name=row["name"], roles=row["roles"].split(), created_by=row["created_by"],
                       created_at=_utc(row["created_at"]) or datetime.now(UTC), revoked_at=_utc(row["revoked_at"]),
                       note=row["note"] or "")


# ---------------------------------------------------------------------------- OIDC
class OidcVerifier:
    """Bearer JWTs of one OpenID Connect issuer, verified here against its published keys.

    What we chose: the gateway is an OIDC *resource server*, not a relying party. It
    verifies the signature of a JWT (an access or ID token) against the issuer's JWKS
    (`jwks_uri` of its discovery document, or `jwks_url`), requires `iss`, `aud`, `exp`,
    `iat` and `sub`, and accepts only asymmetric algorithms (never `none`, never HS256 with
    the public key as the secret). It runs no browser redirect login (authorization code
    flow): that would need a client secret per deployment, a registered redirect URI per
    replica and server-side state for the code exchange, for a console a few operators
    use. The console's login page accepts a token instead: operators paste one they got
    from their IdP's CLI (`gcloud auth print-identity-token`, `az account get-access-token`,
    `kubectl oidc-login get-token`, ...), or use an API token (`lgw console token new`).

    The issuer is asked only for its discovery document and keys, never per request; they
    are fetched lazily with short timeouts, so an issuer down at start-up makes OIDC
    tokens fail (401) rather than the process, and a failed discovery is tried again
    after `retry_s`, not cached for ever nor repeated on every request."""

    connect_timeout_s = 3.0
    timeout_s = 5.0
    retry_s = 10.0

    def __init__(self, cfg: OidcConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.issuer = str(cfg.issuer).rstrip("/")
        self.clock = clock
        self._client: Any = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def _discover(self) -> str:
        import httpx

        timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
        response = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=timeout,
                             follow_redirects=False).raise_for_status()
        doc = response.json()
        if not isinstance(doc, dict):
            raise ValueError("discovery document: expected a JSON object")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise ValueError(f"discovery document: expected issuer {self.issuer}, found {doc.get('issuer')!r}")
        url = str(doc.get("jwks_uri", ""))
        parts = urlsplit(url)
        if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or ""))):
            raise ValueError(f"discovery document: expected an https jwks_uri, found {url!r}")
        return url

    def _jwks(self) -> Any:
        from jwt import PyJWKClient

        with self._lock:
            if self._client is None:
                if self._failed_at is not None and self.clock() - self._failed_at < self.retry_s:
                    raise ConnectionError("the issuer's discovery failed moments ago; not asking again yet")
                try:
                    url = str(self.cfg.jwks_url) if self.cfg.jwks_url else self._discover()
                except Exception as exc:
                    self._failed_at = self.clock()
                    log.warning("oidc: discovery at %s failed (%s); OIDC tokens are refused until it answers",
                                self.issuer, type(exc).__name__)
                    raise
                self._failed_at = None
                self._client = PyJWKClient(url, cache_keys=True, lifespan=300, timeout=self.timeout_s)
            return self._client

    def verify(self, token: str) -> Principal | None:
        """The principal a valid token names; None for any invalid one (why goes to the log,
        never the token)."""
        import jwt

        try:
            key = self._jwks().get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=self.cfg.algorithms, audience=self.cfg.audience,
                                issuer=[self.issuer, self.issuer + "/"],
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=30)
        except Exception as exc:  # PyJWT's errors, an unreachable issuer: the caller is not authenticated
            log.info("oidc token refused: %s", type(exc).__name__)
            return None
        raw = claims.get(self.cfg.roles_claim, [])
        values = raw.split() if isinstance(raw, str) else [str(v) for v in raw] if isinstance(raw, list) else []
        roles = frozenset(self.cfg.role_map.get(v, v) for v in values) & frozenset(ROLES)
        exp = claims.get("exp")
        return Principal(str(claims["sub"]), roles, "oidc",
                         expires_at=float(exp) if isinstance(exp, int | float) else None)


# ---------------------------------------------------------------------------- together
class Authenticator:
    """Bearer tokens in order: `lgw_` tokens (file, then store), then OIDC JWTs."""

    def __init__(self, cfg: ConsoleConfig, store: StateStore | None, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.file = TokenFile(tokens_file_path(cfg, base_dir))
        self.stored = TokenStore(store) if store is not None else None
        self.oidc = OidcVerifier(cfg.oidc) if cfg.oidc is not None else None

    @property
    def enabled(self) -> bool:
        """Someone can log in: a tokens file or an issuer."""
        return self.cfg.enabled and (self.file.exists() or self.oidc is not None)

    def check(self) -> None:
        """A broken tokens file is a start-up error, not a 401 on every call."""
        self.file.entries(strict=True)

    def bearer(self, token: str) -> Principal | None:
        if token.startswith(TOKEN_PREFIX):
            digest = token_digest(token)
            found = self.file.lookup(digest)
            if found is None and self.stored is not None:
                found = self.stored.lookup(digest)
            return found
        if self.oidc is not None and token.count(".") == 2:
            return self.oidc.verify(token)
        return None

    def in_memory(self, token: str) -> Principal | None:
        """The tokens file's answer, without a thread: its entries are in memory (the file
        is looked at again at most once a second). Store tokens and JWTs need `bearer`."""
        return self.file.lookup(token_digest(token)) if token.startswith(TOKEN_PREFIX) else None

    def session_principal(self, principal: Principal) -> Principal | None:
        """Who a session is now: None when its token was removed, replaced or revoked since
        it logged in; with the roles its token has now (a demoted token's sessions are
        demoted at once)."""
        if principal.source == "file":
            return self.file.current(principal.name, principal.token_id)
        if principal.source == "store":
            return self.stored.active(principal.name, principal.token_id) if self.stored is not None else None
        # an OIDC session keeps the token's roles for the token's own (short) lifetime
        return principal if principal.source == "oidc" else None

    def still_valid(self, principal: Principal) -> bool:
        return self.session_principal(principal) is not None


__all__ = ["PERMISSIONS", "Authenticator", "OidcVerifier", "Principal", "StoredToken", "TokenFile",
           "TokenStore", "add_to_tokens_file", "console_tokens", "new_token", "read_tokens_file", "token_digest",
           "token_fingerprint", "tokens_file_path"]
