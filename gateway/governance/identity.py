"""Who is acting: an identity the kernel vouches for, never `$LOGNAME` or `$USER` (any
process can set those to anything before it starts `lgw`).

`operator_identity()` is the real uid of this process resolved through the password
database, as `unix:NAME(uid=N)@HOST`. A caller that authenticated someone else (an API
token, a later issue) passes that identity instead.
"""

from __future__ import annotations

import os
import pwd
import socket

from schemas.errors import ConfigError


def operator_identity(explicit: str | None = None) -> str:
    """`explicit` when given (an identity the caller authenticated), else this process's
    real uid: `unix:alice(uid=1000)@host`; a uid without a passwd entry is `unix:?(uid=N)@host`."""
    if explicit is not None:
        if not explicit.strip():
            raise ConfigError("operator identity: expected a name, found an empty string")
        return explicit.strip()
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a container run with an arbitrary uid
        name = "?"
    return f"unix:{name}(uid={uid})@{socket.gethostname()}"


__all__ = ["operator_identity"]
