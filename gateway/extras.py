"""Optional dependencies (pyproject's extras): a command that needs one which is not
installed stops with one line naming the extra to install, not an ImportError traceback.

Checked before anything starts, from the config: the `type:` of each source, sink and
rejects part a command will build, and the state store's URL."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from schemas.errors import ConfigError

DISTRIBUTION = "legacy-gateway"

# what each extra must make importable, as the adapters import it
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "kafka": ("aiokafka",),
    "rabbit": ("faststream", "aio_pika"),
    "odbc": ("pyodbc",),
    "postgres": ("psycopg",),
}
# a component's `type:` in gateway.yaml, and the extra its adapter needs
COMPONENT_EXTRAS = {"kafka": "kafka", "amqp": "rabbit", "odbc": "odbc"}


def require(extra: str, command: str, *modules: str) -> None:
    """Raises ConfigError unless every one of `modules` imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"{command} needs the {extra} extra: "
                              f"pip install '{DISTRIBUTION}[{extra}]'") from None


def require_parts(command: str, parts: Iterable[Any]) -> None:
    """The extras the adapters of `parts` (source, sink and rejects configs; None
    skipped) need, checked in a fixed order so the line is the same on every run."""
    kinds = {part.type for part in parts if part is not None}
    for kind, extra in COMPONENT_EXTRAS.items():
        if kind in kinds:
            require(extra, command, *EXTRA_MODULES[extra])


def require_state(url: str) -> None:
    """A PostgreSQL state store needs psycopg (SQLAlchemy would import it on connect)."""
    if url.startswith(("postgresql+psycopg:", "postgresql+psycopg_async:")) and "psycopg2" not in url:
        require("postgres", "a PostgreSQL state store", *EXTRA_MODULES["postgres"])


__all__ = ["COMPONENT_EXTRAS", "DISTRIBUTION", "EXTRA_MODULES", "require", "require_parts", "require_state"]
