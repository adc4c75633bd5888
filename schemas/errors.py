"""The one module of errors for the whole package, at the ground floor so that `schemas`,
`adapters` and `gateway` all raise from it and nothing imports upward to raise. The type
of an error decides where the record goes:

    GatewayError                  every error the gateway raises on purpose
    ├── ConfigError               stops the job before it starts, one line naming what was
    │   │                         expected and what was found
    │   ├── ContractError         a contract (or its copybook) is invalid
    │   │   ├── CopybookSyntaxError   a copybook line cannot be parsed; names the line
    │   │   └── LimitError        a layout or input line over `record.limits`, refused
    │   │                         before anything that size is allocated
    │   └── InputFormatError      the input file is not the shape the contract says
    ├── DataError                 one record is bad: rejects / DLQ with the reason; the
    │   │                         run goes on
    │   └── ModelRejected         the model refused these records' input (4xx)
    └── InfrastructureError       something outside the record failed: retried, counted by
        │                         the breaker, fallback applies; never rejects / DLQ
        ├── ModelUnavailable      connection refused or reset, 5xx, not ready
        │   ├── ModelServerError  the server answered 5xx (maybe one poison record)
        │   │   ├── SuspectBatch      5xx on a batch of several: split, not counted
        │   │   └── ModelOutputError  an answer that is not a usable answer
        │   └── ModelTimeout      no answer within the call's timeout
        ├── BreakerOpen           the breaker refused the call without trying the model
        └── BrokerUnavailable     a Kafka or AMQP broker cannot be reached or did not
                                  acknowledge: the batch is not acked and comes again

A score that breaks the contract's bounds (NaN, out of range) in an otherwise sound
answer is checked per record by the pipeline, not raised."""

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


class InfrastructureError(GatewayError):
    """Something outside the record failed; the same record may succeed later."""


class ModelUnavailable(InfrastructureError):
    """The model endpoint could not answer: connection refused or reset, 5xx, not ready."""


class ModelServerError(ModelUnavailable):
    """The model server answered 5xx. On a batch this may be one poison record rather than
    an outage: the pipeline splits the batch to find out before the breaker counts it."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SuspectBatch(ModelServerError):
    """A 5xx on a batch of several records: not counted by the breaker and not retried,
    so the pipeline can split the batch and tell a poison record from an outage."""


class ModelTimeout(ModelUnavailable):
    """The model did not answer within the call's timeout."""


class BreakerOpen(InfrastructureError):
    """The circuit breaker refused the call without trying the model."""


class ModelRejected(DataError):
    """The model refused the input (4xx): a problem with these records, not the model."""


class ModelOutputError(ModelServerError):
    """The model answered, but not with a usable answer: not JSON, NaN/Infinity tokens, the
    wrong shape or dtype, a missing output, a body over the size cap. That is the model
    failing, like a 5xx: counted by the breaker, retried, and on a batch of several records
    split by the pipeline until it is clear whether one record causes it."""


class StateStoreError(InfrastructureError):
    """The state store could not be reached or did not answer."""


class BrokerUnavailable(InfrastructureError):
    """A Kafka or AMQP broker could not be reached, or did not acknowledge a write: the
    batch is not acked (a file run stops and resumes; a stream redelivers it)."""


__all__ = [
    "BreakerOpen",
    "BrokerUnavailable",
    "ConfigError",
    "ContractError",
    "CopybookSyntaxError",
    "DataError",
    "GatewayError",
    "InfrastructureError",
    "InputFormatError",
    "LimitError",
    "ModelOutputError",
    "ModelRejected",
    "ModelServerError",
    "ModelTimeout",
    "ModelUnavailable",
    "StateStoreError",
    "SuspectBatch",
]

