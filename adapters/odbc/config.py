"""Config of the ODBC components: the table source, the upsert sink, the rejects table."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from adapters.config import ComponentConfig
from adapters.odbc.connection import OdbcConnectionConfig


class OdbcSourceConfig(ComponentConfig):
    """Rows of a table (or query) reachable over ODBC. Secrets come from the environment
    through `${VAR}` placeholders in the connection."""

    type: Literal["odbc"]
    connection: OdbcConnectionConfig
    table: str | None = None
    query: str | None = None
    mode: Literal["full", "incrementing", "timestamp"] = "full"
    key: str | None = None
    timestamp: str | None = None
    lag_s: float = Field(default=0.0, ge=0)  # timestamp mode: rows this recent are left for the next run
    overlap_s: float = Field(default=0.0, ge=0)  # timestamp mode: re-read window for late commits
    # rows per page; the pipeline's batch_size when not given
    batch_size: int | None = Field(default=None, ge=1, validation_alias=AliasChoices("batch_size", "batch_rows"))


class OdbcSinkConfig(ComponentConfig):
    """Results upserted by key into a table, each batch in one transaction (with the
    checkpoint of a table source): a batch written twice leaves one row per key."""

    type: Literal["odbc"] = "odbc"
    connection: OdbcConnectionConfig
    table: str
    key: list[str] = Field(min_length=1)
    columns: list[str] | None = None  # default: every input column, the outputs and the provenance
    # where a table run's rejects go unless the pipeline names `rejects:` (kept from before
    # `rejects:` existed): a folder of JSON Lines files, relative to the config
    rejects: str = "var/rejects"


class OdbcRejectsConfig(ComponentConfig):
    """Rejects appended to a table (created when missing): pipeline, run, record number,
    field, offset, reason and the raw bytes in hex, one row per problem, committed with
    the batch."""

    type: Literal["odbc"] = "odbc"
    connection: OdbcConnectionConfig
    table: str
