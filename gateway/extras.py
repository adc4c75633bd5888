"""Optional dependencies (pyproject's extras): a command that needs one which is not
installed stops with one line naming the extra to install, not an ImportError traceback."""

from __future__ import annotations

import importlib

from schemas.errors import ConfigError

DISTRIBUTION = "legacy-gateway"


def require(extra: str, command: str, *modules: str) -> None:
    """Raises ConfigError unless every one of `modules` imports."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"{command} needs the {extra} extra: "
                              f"pip install '{DISTRIBUTION}[{extra}]'") from None
