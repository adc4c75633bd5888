"""SQL identifiers: validated against a strict pattern, then quoted for the dialect.

Values never go into SQL text (they travel as parameters); identifiers cannot, so every
table and column name is checked against `^[A-Za-z_][A-Za-z0-9_]{0,62}$` (63 characters:
PostgreSQL's NAMEDATALEN - 1, the tightest of the three databases) before it is quoted.
A name that passes contains no quote character, so quoting cannot be escaped out of.
"""

from __future__ import annotations

import re
from enum import StrEnum

from schemas.errors import ConfigError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Dialect(StrEnum):
    POSTGRESQL = "postgresql"
    MARIADB = "mariadb"  # MariaDB and MySQL
    SQLITE = "sqlite"


class IdentifierError(ConfigError):
    """A table or column name that is not a plain SQL identifier."""


def validate_identifier(name: str, *, qualified: bool = False) -> str:
    """`name` if it is a plain identifier (`schema.table` too when `qualified`), else an error."""
    parts = name.split(".") if qualified else [name]
    if not isinstance(name, str) or len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        what = "a name or schema.name" if qualified else "a name"
        raise IdentifierError(f"{name!r} is not a valid SQL identifier: expected {what} matching "
                              f"{_NAME.pattern} (letters, digits, underscore; 63 characters at most)")
    return name


def quote(name: str, dialect: Dialect, *, qualified: bool = False) -> str:
    """The validated identifier quoted for the dialect: "name" (ANSI) or `name` (MariaDB)."""
    validate_identifier(name, qualified=qualified)
    q = "`" if dialect == Dialect.MARIADB else '"'
    return ".".join(f"{q}{part}{q}" for part in name.split("."))


def quote_table(name: str, dialect: Dialect) -> str:
    return quote(name, dialect, qualified=True)


def split_table(name: str) -> tuple[str | None, str]:
    """(schema, table) of a validated, possibly qualified table name."""
    validate_identifier(name, qualified=True)
    schema, _, table = name.rpartition(".")
    return (schema or None), table


__all__ = ["Dialect", "IdentifierError", "quote", "quote_table", "split_table", "validate_identifier"]
