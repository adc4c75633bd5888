"""ODBC connections: the connection string, the dialect behind it, its catalog, its errors.

A connection is configured as a DSN (`DSN=CORE;Uid=…`), a full connection string, or a
driver with server, port and database; `${NAME}` anywhere in it is replaced from the
environment when the connection opens, so secrets live in the environment, never in
gateway.yaml. The dialect (postgresql, mariadb, sqlite) is read from the driver with
SQLGetInfo(SQL_DBMS_NAME): the SQL the adapters write (quoting, upsert, casts, parameter
limits) follows it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.odbc.identifiers import Dialect, split_table
from adapters.secrets import env_value
from schemas.errors import ConfigError, DataError, InfrastructureError

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEYS = re.compile(r"(?i)\b(pwd|password)=(\{(?:[^}]|\}\})*\}|[^;]*)")
_SQLSTATE = re.compile(r"State: ([0-9A-Z]{5})")
# The SQLite3 ODBC driver reports every engine error as HY000 with SQLite's result code
# at the end: 19 SQLITE_CONSTRAINT, 20 SQLITE_MISMATCH, 18 SQLITE_TOOBIG, 25 SQLITE_RANGE.
_SQLITE_DATA = re.compile(r"\[SQLite\].*\((?:18|19|20|25)\)\s*$")


class OdbcError(InfrastructureError):
    """The database could not be reached, or failed a statement for a reason outside the data."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class OdbcDataError(DataError):
    """The database refused the data (SQLSTATE class 22 data exception, 23 constraint)."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class OdbcConnectionConfig(BaseModel):
    """Where the database is: exactly one of `dsn`, `connection_string` or `driver`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str | None = None
    connection_string: str | None = None
    driver: str | None = None  # as registered in odbcinst.ini, e.g. "PostgreSQL Unicode"
    server: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    database: str | None = None
    user: str | None = None
    password: str | None = None  # normally "${LGW_ODBC_PASSWORD}": resolved from the environment
    options: dict[str, str] = Field(default_factory=dict)  # extra driver attributes
    login_timeout_s: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> OdbcConnectionConfig:
        given = [k for k in ("dsn", "connection_string", "driver") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("an ODBC connection needs exactly one of dsn, connection_string or driver, "
                             f"found {', '.join(given) or 'none'}")
        if self.connection_string and (self.server or self.port or self.database or self.options):
            raise ValueError("connection_string already says everything: drop server/port/database/options")
        return self

    def template(self) -> str:
        """The connection string with its `${NAME}` placeholders still in place."""
        if self.connection_string:
            return self.connection_string
        pairs: list[tuple[str, str | int | None]] = [
            ("DSN", self.dsn), ("Driver", self.driver), ("Server", self.server), ("Port", self.port),
            ("Database", self.database), ("Uid", self.user), ("Pwd", self.password), *self.options.items(),
        ]
        # Driver names are braced by convention ("Driver={PostgreSQL Unicode}").
        return "".join(f"{k}={{{v}}};" if k == "Driver" else f"{k}={_attribute(str(v))};"
                       for k, v in pairs if v is not None)


def _attribute(value: str) -> str:
    """An attribute value as the ODBC connection-string grammar wants it: braced when it
    holds a separator or brace (a closing brace doubled inside), plain otherwise."""
    if value.startswith("${") and value.endswith("}") and _PLACEHOLDER.fullmatch(value):
        return value  # braced (if needed) after resolution, see resolve_placeholders
    if any(c in value for c in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


def resolve_placeholders(template: str, environ: dict[str, str] | None = None) -> str:
    """Replaces `${NAME}` (or `${NAME:-default}`) with the environment variable's value, or
    the content of the file `NAME_FILE` names; a missing variable without a default is a
    configuration error naming it."""
    env = os.environ if environ is None else environ

    def value(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        found = env_value(name, env)
        if found is not None:
            return _attribute(found)
        if default is not None:
            return _attribute(default)
        raise ConfigError(f"ODBC connection string needs the environment variable {name} (or {name}_FILE), "
                          "which is not set")

    return _PLACEHOLDER.sub(value, template)


def placeholders(template: str) -> list[tuple[str, bool]]:
    """The `${NAME}` placeholders of a template: each variable's name, and whether it has
    a `:-default` (so that `lgw config check` can say which are set without showing them)."""
    return [(m.group(1), m.group(2) is not None) for m in _PLACEHOLDER.finditer(template)]


def redact(connection_string: str) -> str:
    return _SECRET_KEYS.sub(lambda m: f"{m.group(1)}=***", connection_string)


def detect_dialect(dbms_name: str) -> Dialect:
    """SQLGetInfo(SQL_DBMS_NAME) -> dialect: 'PostgreSQL', 'MariaDB' / 'MySQL', 'SQLite'."""
    name = dbms_name.lower()
    if "postgres" in name:
        return Dialect.POSTGRESQL
    if "mariadb" in name or "mysql" in name:
        return Dialect.MARIADB
    if "sqlite" in name:
        return Dialect.SQLITE
    raise ConfigError(f"ODBC data source reports DBMS {dbms_name!r}; supported: PostgreSQL, MariaDB/MySQL, SQLite")


@dataclass(frozen=True)
class ServerInfo:
    dialect: Dialect
    dbms_name: str
    dbms_version: str
    driver: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", self.dbms_version)[:3])


class OdbcConnection:
    """One configured data source. Opens pyodbc connections (autocommit off: callers own
    their transactions) and arrow-odbc connections (bulk reads and array inserts)."""

    def __init__(self, config: OdbcConnectionConfig | str, *, environ: dict[str, str] | None = None) -> None:
        if isinstance(config, str):
            config = OdbcConnectionConfig(connection_string=config)
        self.config = config
        self._environ = environ
        self.info: ServerInfo | None = None

    def __repr__(self) -> str:
        return f"OdbcConnection({self.display!r})"

    @property
    def display(self) -> str:
        """The connection string as configured, placeholders unresolved and passwords masked."""
        return redact(self.config.template())

    @property
    def dialect(self) -> Dialect:
        if self.info is None:
            raise RuntimeError("OdbcConnection.dialect is known once a connection has been opened")
        return self.info.dialect

    def connection_string(self) -> str:
        return resolve_placeholders(self.config.template(), self._environ)

    def open(self) -> Any:
        """A pyodbc connection with autocommit off; the server's dialect is detected once."""
        import pyodbc

        try:
            conn = pyodbc.connect(self.connection_string(), autocommit=False, timeout=self.config.login_timeout_s)
        except pyodbc.Error as exc:
            raise translate(exc, f"cannot connect to {self.display}") from exc
        if self.info is None:
            self.info = ServerInfo(
                dialect=detect_dialect(conn.getinfo(pyodbc.SQL_DBMS_NAME)),
                dbms_name=conn.getinfo(pyodbc.SQL_DBMS_NAME), dbms_version=conn.getinfo(pyodbc.SQL_DBMS_VER),
                driver=conn.getinfo(pyodbc.SQL_DRIVER_NAME))
        return conn

    def open_arrow(self, *, autocommit: bool = True) -> Any:
        """An arrow-odbc connection (columnar fetches and array inserts, no Python per row)."""
        import arrow_odbc

        try:
            return arrow_odbc.connect(self.connection_string(), autocommit=autocommit,
                                      login_timeout_sec=self.config.login_timeout_s)
        except arrow_odbc.Error as exc:
            raise translate(exc, f"cannot connect to {self.display}") from exc


def translate(exc: BaseException, what: str) -> OdbcError | OdbcDataError:
    """A driver exception as a gateway error: SQLSTATE class 22/23 (the data) is a data
    error, everything else (connection, syntax, permissions, deadlock) infrastructure."""
    sqlstate = _sqlstate(exc)
    detail = _first_line(exc)
    if sqlstate and detail.startswith(f"[{sqlstate}]"):
        detail = detail[len(sqlstate) + 2:].lstrip()
    message = f"{what}: {detail}" if sqlstate is None else f"{what}: [{sqlstate}] {detail}"
    if (sqlstate and sqlstate[:2] in ("22", "23")) or _SQLITE_DATA.search(detail):
        return OdbcDataError(message, sqlstate)
    return OdbcError(message, sqlstate)


def _sqlstate(exc: BaseException) -> str | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str) and re.fullmatch(r"[0-9A-Z]{5}", args[0]):
        return args[0]  # pyodbc: (sqlstate, message)
    m = _SQLSTATE.search(str(exc))  # arrow-odbc: "... State: 23505, Native error: ..."
    return m.group(1) if m else None


def _first_line(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = args[1] if len(args) > 1 and isinstance(args[1], str) else str(exc)
    m = re.search(r"Message: (.*)", text)  # arrow-odbc: the driver's message after a preamble
    text = m.group(1) if m else text
    text = re.sub(r"\s*\(SQL\w+\)\s*$", "", text.strip())
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------ catalog
# ODBC SQL data type codes (sql.h / sqlext.h) by family.
_FAMILIES: dict[int, str] = {
    1: "text", 12: "text", -1: "text", -8: "text", -9: "text", -10: "text",
    -6: "integer", 5: "integer", 4: "integer", -5: "integer",
    2: "decimal", 3: "decimal",
    6: "float", 7: "float", 8: "float",
    93: "timestamp", 11: "timestamp", 91: "date", 9: "date", 92: "time", 10: "time",
    -7: "boolean", 16: "boolean",
    -2: "binary", -3: "binary", -4: "binary",
}
_DECLARED_DECIMAL = re.compile(r"(?i)^\s*(?:decimal|numeric)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?")


@dataclass(frozen=True)
class ColumnInfo:
    """A column as the database describes it, reduced to what the contract check needs."""

    name: str
    family: str  # text | integer | decimal | float | timestamp | date | time | boolean | binary | other
    type_name: str
    size: int | None = None  # characters for text
    precision: int | None = None
    scale: int | None = None
    nullable: bool = True

    @property
    def shown(self) -> str:
        if self.family == "decimal" and self.precision is not None:
            return f"{self.type_name}({self.precision},{self.scale or 0})"
        if self.family == "text" and self.size and self.type_name.lower() not in ("text", "longtext"):
            return f"{self.type_name}({self.size})"
        return self.type_name


def sqlite_family(declared: str) -> str:
    """SQLite's type affinity rules (sqlite.org/datatype3.html, 3.1) on the declared type,
    refined: DECIMAL/NUMERIC, DATE, TIMESTAMP/DATETIME and BOOLEAN keep their meaning."""
    t = declared.upper()
    if "INT" in t:
        return "integer"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "text"
    if "BLOB" in t or not t:
        return "binary" if t else "other"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "float"
    if "TIMESTAMP" in t or "DATETIME" in t:
        return "timestamp"
    if t.startswith("DATE"):
        return "date"
    if "BOOL" in t:
        return "boolean"
    if "DEC" in t or "NUMERIC" in t:
        return "decimal"
    return "other"


def table_columns(conn: Any, table: str, dialect: Dialect) -> list[ColumnInfo]:
    """The table's columns from SQLColumns, in table order; [] when there is no such table.
    The table name is a catalog pattern (`_` matches any character), so rows are filtered
    to the exact name, compared without case (unquoted names fold differently per DBMS)."""
    schema, name = split_table(table)
    cur = conn.cursor()
    kwargs: dict[str, str] = {}
    if schema:
        kwargs["catalog" if dialect == Dialect.MARIADB else "schema"] = schema
    rows: list[Any] = []
    for candidate in dict.fromkeys([name, name.lower(), name.upper()]):
        rows = [r for r in cur.columns(table=candidate, **kwargs).fetchall() if r.table_name.lower() == name.lower()]
        if rows:
            break
    cur.close()
    out = []
    for r in rows:
        if dialect == Dialect.SQLITE:
            family = sqlite_family(r.type_name or "")
            m = _DECLARED_DECIMAL.match(r.type_name or "")
            precision = int(m.group(1)) if m and m.group(1) else None
            scale = int(m.group(2) or 0) if m and m.group(1) else None
            size = r.column_size if family == "text" and r.column_size else None
        else:
            family = _FAMILIES.get(r.data_type, "other")
            precision = r.column_size if family == "decimal" else None
            scale = r.decimal_digits if family == "decimal" else None
            size = r.column_size if family == "text" else None
        out.append(ColumnInfo(r.column_name, family, (r.type_name or "").split("(")[0], size, precision, scale,
                              bool(r.nullable)))
    return out


_PY_FAMILIES = {"str": "text", "int": "integer", "Decimal": "decimal", "float": "float", "datetime": "timestamp",
                "date": "date", "time": "time", "bool": "boolean", "bytes": "binary", "bytearray": "binary"}


def query_columns(conn: Any, query: str) -> list[ColumnInfo]:
    """The columns a query returns (its cursor description, without fetching a row)."""
    cur = conn.cursor()
    try:
        cur.execute(f"SELECT * FROM ({query}) lgw_q WHERE 1 = 0")
        desc = cur.description
    finally:
        cur.close()
        conn.rollback()
    out = []
    for name, pytype, _display, size, precision, scale, nullable in desc:
        family = _PY_FAMILIES.get(getattr(pytype, "__name__", ""), "other")
        out.append(ColumnInfo(name, family, getattr(pytype, "__name__", "?"), size if family == "text" else None,
                              precision if family == "decimal" else None, scale if family == "decimal" else None,
                              bool(nullable)))
    return out


__all__ = [
    "ColumnInfo", "OdbcConnection", "OdbcConnectionConfig", "OdbcDataError", "OdbcError", "ServerInfo",
    "detect_dialect", "query_columns", "redact", "resolve_placeholders", "sqlite_family", "table_columns",
    "translate",
]
