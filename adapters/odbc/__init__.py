"""ODBC adapters: a table or query source with full, incrementing and timestamp reads
(watermarks in the state store, advanced on ack), and an upserting results sink with its
checkpoint in the target database. PostgreSQL (psqlODBC), MariaDB/MySQL (Connector/ODBC)
and SQLite (SQLite3 ODBC) are detected from the driver and each gets its own SQL."""

from adapters.odbc.connection import (
    ColumnInfo,
    OdbcConnection,
    OdbcConnectionConfig,
    OdbcDataError,
    OdbcError,
)
from adapters.odbc.identifiers import Dialect, IdentifierError, quote, validate_identifier
from adapters.odbc.sink import Checkpoint, OdbcSink
from adapters.odbc.source import OdbcSource, SchemaDriftError

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
