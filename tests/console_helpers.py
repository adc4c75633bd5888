"""A console to test against: a gateway.yaml of the test's own (its own tokens file, a
SQLite state store in the test's folder, never the shared LGW_DATA_DIR), a token per
role, and the real app (gateway.console.app.build_ops_app) behind a TestClient.

Clocks are injectable: `console.now` moves the failed-auth limiter's, the sessions' and
the tokens file's clocks together."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.config import load_config
from gateway.console.auth import add_to_tokens_file
from gateway.console.config import ROLES
from gateway.console.context import ConsoleContext, build_console
from gateway.console.security import FailureLimiter, Sessions
from gateway.ops_http import Readiness
from gateway.state import StateStore
from schemas.examples import contract_path, model_info

SESSION_KEY = "test-console-session-key-0123456789abcdef"


def gateway_yaml(folder: Path, state_url: str | None = None, pipeline: dict[str, Any] | None = None,
                 **console: Any) -> Path:
    """A gateway.yaml with one pipeline (card_txn: the bundled model, a drop folder in
    `folder`, `pipeline` over it), its state store and tokens file in `folder`."""
    info = model_info("fraud")
    doc = {
        "models": {"fraud": {"endpoint": {"backend": "onnx", "path": str(info["path"]), "sha256": info["sha256"],
                                          "version": str(info["version"])}}},
        "pipelines": {"card_txn": {"contract": str(contract_path("card_txn")), "model": "fraud",
                                   "source": {"inbox": str(folder / "inbox"), "outbox": str(folder / "outbox"),
                                              "glob": "*", "stable_for_s": 0}, **(pipeline or {})}},
        "state": {"url": state_url or f"sqlite:///{folder}/state.db"},
        "console": {"tokens_file": str(folder / "tokens.yaml"), **console},
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@dataclass
class Clock:
    t: float = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Console:
    client: TestClient
    ctx: ConsoleContext
    app: FastAPI  # the FastAPI app inside the security-headers middleware
    asgi: Any
    tokens_file: Path
    tokens: dict[str, str]  # role -> a token holding just that role
    now: Clock = field(default_factory=Clock)

    def bearer(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def client_for(self, base_url: str = "http://testserver") -> TestClient:
        return TestClient(self.asgi, base_url=base_url, follow_redirects=False)


def make_console(folder: Path, monkeypatch: pytest.MonkeyPatch, state_url: str | None = None,
                 **console: Any) -> Iterator[Console]:
    monkeypatch.setenv("LGW_CONSOLE_SESSION_KEY", SESSION_KEY)
    monkeypatch.delenv("LGW_CONSOLE_TOKENS_FILE", raising=False)
    config = gateway_yaml(folder, state_url, **console)
    tokens_file = folder / "tokens.yaml"
    tokens = {role: add_to_tokens_file(tokens_file, role, [role]) for role in ROLES}
    cfg = load_config(config)
    state = StateStore(cfg.state.url)
    ctx = build_console(cfg, state, process="console")
    assert ctx is not None
    clock = Clock()
    ctx.limiter = FailureLimiter(cfg.console.max_auth_failures, cfg.console.failure_window_s, clock=clock)
    ctx.sessions = Sessions(SESSION_KEY.encode(), cfg.console.session_minutes, clock=clock)
    ctx.auth.file.clock = clock
    readiness = Readiness()
    readiness.add_state_store(state)
    from gateway.console.app import build_ops_app

    asgi = build_ops_app(readiness, ctx)
    client = TestClient(asgi, follow_redirects=False)
    try:
        yield Console(client=client, ctx=ctx, app=asgi.app, asgi=asgi, tokens_file=tokens_file, tokens=tokens,
                      now=clock)
    finally:
        client.close()
        state.close()


__all__ = ["SESSION_KEY", "Clock", "Console", "gateway_yaml", "make_console"]
