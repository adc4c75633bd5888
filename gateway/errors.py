"""Errors by where the record goes. `DataError` (decode, validation, a model that rejects
one record's input) sends the record to rejects / the DLQ. `InfrastructureError` (model
server down, slow, or answering garbage; broker, database) never does: the call is
retried, the circuit breaker counts it, and the fallback policy applies. A score that
breaks the contract's bounds (NaN, out of range) in an otherwise sound answer is checked
per record by the pipeline, not raised."""

from __future__ import annotations

from schemas.errors import ConfigError, ContractError, DataError, GatewayError, InputFormatError


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


__all__ = [
    "BreakerOpen",
    "ConfigError",
    "ContractError",
    "DataError",
    "GatewayError",
    "InfrastructureError",
    "InputFormatError",
    "ModelOutputError",
    "ModelRejected",
    "ModelServerError",
    "ModelTimeout",
    "ModelUnavailable",
    "SuspectBatch",
]
