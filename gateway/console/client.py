"""The CLI's `--api URL --token-file FILE`: state-changing commands (kill switch, review
decisions, replays, tokens) through a running gateway's admin API, so an operator needs
a token, not database credentials, and the audit trail names the token (`token:NAME`).

The token file holds the bearer token alone (surrounding whitespace ignored); a file
others may read is refused, as ssh refuses such a key. Every failure is one line (a
ConfigError) naming the HTTP status and the API's `detail`.
"""

from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import quote

from schemas.errors import ConfigError

TIMEOUT_S = 30.0
_EXPLAIN = {
    401: "the token is unknown, revoked or malformed (check --token-file)",
    403: "the token's roles do not allow this",
    429: "too many failed authentications from this address; wait and try again",
}


def read_token_file(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"--token-file {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"--token-file {p}: expected a regular file")
        if st.st_mode & 0o007:
            raise ConfigError(f"--token-file {p}: anyone on this machine may read it (mode "
                              f"{st.st_mode & 0o777:04o}); expected 0600 (chmod 600 {p})")
        data = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    token = data.decode("utf-8", errors="replace").strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {p}: expected one bearer token and nothing else")
    return token


class ApiClient:
    """JSON calls to the admin API with a bearer token; every method returns the JSON body."""

    def __init__(self, base_url: str, token: str, *, timeout: float = TIMEOUT_S) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"--api {base_url}: expected an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        api = getattr(args, "api", None)
        token_file = getattr(args, "token_file", None)
        if not api:
            raise ConfigError("expected --api URL (a running gateway's admin API)")
        if not token_file:
            raise ConfigError("--api needs --token-file FILE: a file holding your bearer token "
                              "(`lgw console token new` prints one)")
        return cls(api, read_token_file(token_file))

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self._call("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self._call("POST", path, json=body)

    def put(self, path: str, body: Any = None) -> Any:
        return self._call("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ConfigError(f"API {self.base_url}: {method} {path}: {type(exc).__name__}: {exc}") from None
        if response.is_success:
            if response.status_code == 204 or not response.content:
                return {}
            try:
                return response.json()
            except ValueError:
                raise ConfigError(f"API {self.base_url}: {method} {path}: HTTP {response.status_code} but "
                                  "the body is not JSON (is --api the gateway's ops address?)") from None
        detail = _detail(response)
        why = _EXPLAIN.get(response.status_code)
        raise ConfigError(f"API {method} {path}: HTTP {response.status_code}: {detail}"
                          + (f" ({why})" if why else ""))


def _detail(response: Any) -> str:
    try:
        doc = response.json()
    except ValueError:
        return (response.text.strip().splitlines() or [response.reason_phrase])[0][:300]
    detail = doc.get("detail") if isinstance(doc, dict) else doc
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # a validation error
        first = detail[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return f"{where}: {first.get('msg', '')}".strip(": ")
    return " ".join(str(detail).split())[:500]


def path_part(value: str) -> str:
    """One path segment, quoted (a pipeline or token name, a run id)."""
    return quote(str(value), safe="")


__all__ = ["ApiClient", "path_part", "read_token_file"]
