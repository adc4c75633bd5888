"""`console:` in gateway.yaml: who may use the admin API and the console, and how."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

ROLES: tuple[str, ...] = ("viewer", "operator", "reviewer", "admin")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OidcConfig(BaseModel):
    """Bearer tokens (JWTs) an OpenID Connect issuer signed: verified against the issuer's
    published keys (its discovery document's `jwks_uri`), never by asking it per request."""

    model_config = ConfigDict(extra="forbid")

    issuer: HttpUrl
    audience: str
    roles_claim: str = "roles"  # a list of role names, or one space-separated string
    # a claim value -> a gateway role, for issuers whose groups have names of their own
    role_map: dict[str, str] = Field(default_factory=dict)
    jwks_url: HttpUrl | None = None  # None: the discovery document's jwks_uri
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _https(cls, value: HttpUrl | None) -> HttpUrl | None:
        # keys fetched over plain http could be swapped on the way: anyone could mint tokens
        if value is not None and value.scheme != "https" and not is_loopback(value.host or ""):
            raise ValueError(f"expected an https URL (http only on this host's loopback), found {value}")
        return value

    @field_validator("role_map")
    @classmethod
    def _known_roles(cls, value: dict[str, str]) -> dict[str, str]:
        for claim, role in value.items():
            if role not in ROLES:
                raise ValueError(f"role_map[{claim!r}]: expected one of {', '.join(ROLES)}, found {role!r}")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        # a symmetric algorithm would let anyone holding the "public" key mint tokens
        bad = [a for a in value if not a.startswith(("RS", "ES", "PS", "Ed"))]
        if bad or not value:
            raise ValueError(f"expected asymmetric JWT algorithms (RS256, ES256, PS256, EdDSA), found {bad or value}")
        return value


class ConsoleConfig(BaseModel):
    """The admin API and console on the ops address of `lgw serve`, `lgw run` and `lgw console`.

    They are on when someone can log in: a tokens file exists (`lgw console token new`
    makes one) or an OIDC issuer is configured. Then every endpoint but /healthz and
    /readyz needs a token, /metrics included (a viewer token in Prometheus'
    `authorization.credentials_file`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tokens_file: str | None = None  # None: LGW_CONSOLE_TOKENS_FILE, else console-tokens.yaml in the data dir
    oidc: OidcConfig | None = None
    session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    # Secure cookies: "auto" sets them when the request came over https (or a proxy said so)
    secure_cookies: bool | None = None
    max_auth_failures: int = Field(default=10, ge=1)  # per client address and window, then 429
    failure_window_s: float = Field(default=60.0, gt=0)


__all__ = ["ROLES", "ConsoleConfig", "OidcConfig"]
