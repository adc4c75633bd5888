"""ODBC adapters: a table or query source with full, incrementing and timestamp reads
(watermarks in the state store, advanced on ack), and an upserting results sink with its
checkpoint in the target database. PostgreSQL (psqlODBC), MariaDB/MySQL (Connector/ODBC)
and SQLite (SQLite3 ODBC) are detected from the driver and each gets its own SQL."""

import importlib
from typing import TYPE_CHECKING, Any

from adapters.odbc.connection import (
    ColumnInfo,
    OdbcConnection,
    OdbcConnectionConfig,
    OdbcDataError,
    OdbcError,
)
from adapters.odbc.identifiers import Dialect, IdentifierError, quote, validate_identifier

if TYPE_CHECKING:
    from adapters.odbc.sink import Checkpoint, OdbcSink
    from adapters.odbc.source import OdbcSource, SchemaDriftError

# the sink and source bring SQLAlchemy (~0.25 s): imported when first named, so that loading
# a config (which knows the ODBC components' settings) does not pay for them
_LAZY = {"Checkpoint": "adapters.odbc.sink", "OdbcSink": "adapters.odbc.sink",
         "OdbcSource": "adapters.odbc.source", "SchemaDriftError": "adapters.odbc.source"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Checkpoint",
    "ColumnInfo",
    "Dialect",
    "IdentifierError",
    "OdbcConnection",
    "OdbcConnectionConfig",
    "OdbcDataError",
    "OdbcError",
    "OdbcSink",
    "OdbcSource",
    "SchemaDriftError",
    "quote",
    "validate_identifier",
]
