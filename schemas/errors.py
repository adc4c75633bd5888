"""The error hierarchy. Routing depends on the type: a `DataError` sends a record to
rejects or the dead-letter topic; a `ConfigError` stops the job before it starts with
one line naming what was expected and what was found."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """A contract, copybook, option or file that cannot be used as given."""


class ContractError(ConfigError):
    """A contract (or its copybook) is invalid."""


class CopybookSyntaxError(ContractError):
    """A copybook line cannot be parsed; the message names the line."""

    def __init__(self, message: str, line: int | None = None, source: str | None = None) -> None:
        where = ""
        if source and line:
            where = f"{source}:{line}: "
        elif line:
            where = f"line {line}: "
        elif source:
            where = f"{source}: "
        super().__init__(f"{where}{message}")
        self.line = line


class LimitError(ContractError):
    """A layout, or a line of an input, is larger than the limits allow (`record.limits`):
    refused before anything that size is allocated."""


class InputFormatError(ConfigError):
    """The input file does not have the shape the contract or options say it has."""


class DataError(GatewayError):
    """One record is bad: it goes to rejects / DLQ with the reason, and the run goes on."""
