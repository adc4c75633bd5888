"""What the admin API and the console see of the gateway: one `ConsoleContext` per process.

In `lgw serve` and `lgw run` it holds the process's live pipelines (breaker, counters,
lag); `lgw console` has none of its own and shows what the replicas publish to the
state store (gateway.console.status), with everything the store itself keeps: kill
switches, runs and manifests, review queue, audit trail.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.console.auth import Authenticator
from gateway.console.security import FailureLimiter, Sessions, session_key

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.pipeline import Pipeline
    from gateway.state import StateStore

log = logging.getLogger("lgw.console")

# (pipeline, target, actor, reason) -> what the replay started (its run id, ...)
Replay = Callable[[str | None, str, str, str], Awaitable[dict[str, Any]]]


@dataclass
class ConsoleContext:
    cfg: GatewayConfig
    state: StateStore
    auth: Authenticator
    sessions: Sessions
    limiter: FailureLimiter
    pipelines: dict[str, Pipeline] = field(default_factory=dict)  # live, in this process
    replay: Replay | None = None
    process: str = "console"  # "serve", "run" or "console": what the overview says it is

    @property
    def secure_cookies(self) -> bool | None:
        return self.cfg.console.secure_cookies


def build_console(cfg: GatewayConfig, state: StateStore, *, process: str,
                  replay: Replay | None = None) -> ConsoleContext | None:
    """The console of this process, or None when nobody could log in (no tokens file and
    no issuer: then only /healthz, /readyz and /metrics are served, as before)."""
    console = cfg.console
    auth = Authenticator(console, state, cfg.base_dir)
    if not auth.enabled:
        if console.enabled:
            log.debug("console: off (no tokens file at %s and no oidc issuer; `lgw console token new "
                     "--role admin` makes one)", auth.file.path)
        return None
    auth.check()
    # every table the console reads, whichever command made the store (`lgw serve` never
    # imports the batch runs' tables, for one)
    import gateway.console.status
    import gateway.governance.review_queue
    import gateway.runs  # noqa: F401

    state.create_missing_tables()
    return ConsoleContext(cfg=cfg, state=state, auth=auth,
                          sessions=Sessions(session_key(), console.session_minutes),
                          limiter=FailureLimiter(console.max_auth_failures, console.failure_window_s),
                          replay=replay, process=process)


__all__ = ["ConsoleContext", "Replay", "build_console"]
