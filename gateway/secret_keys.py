"""Keys this machine makes for itself once: random, 0600, never written through a planted
link, and taken from a variable instead when replicas must agree (the pii hash key, the
console's session key)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from schemas.errors import ConfigError
from schemas.safefiles import create_new, open_existing

log = logging.getLogger("lgw.keys")

KEY_BYTES = 32


def machine_key(configured: str | None, file_name: str, what: str, variable: str) -> bytes:
    """`configured` (a variable's value) when set, else the key file `file_name` in the data
    directory, made now if missing (another process making it first wins, and we take theirs)."""
    from gateway.settings import data_dir

    if configured:
        return configured.encode()
    path = Path(data_dir()) / file_name
    try:
        with open_existing(path) as f:
            data = f.read()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(KEY_BYTES)
        try:
            with create_new(path, 0o600) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            log.warning("%s from %s, made now; replicas on other machines need %s to agree", what, path, variable)
        except FileExistsError:
            with open_existing(path) as f:
                data = f.read()
    if len(data) < 16:
        raise ConfigError(f"{what} file {path}: expected at least 16 bytes, found {len(data)}")
    return data


__all__ = ["KEY_BYTES", "machine_key"]
