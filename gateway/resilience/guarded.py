"""A model backend behind the resilience layers, innermost first:

    backend.predict  <-  timeout  <-  breaker  <-  concurrency slot  <-  retry

The timeout sits inside the breaker so that running out of time counts as a failure. The
concurrency slot sits outside it, so time spent queueing for a slot is never mistaken for
a slow model, and a slot is held for one attempt only, never across a backoff pause. Each
attempt is one breaker call, so a batch retried three times is three outcomes in the
window, and an open breaker ends the retries at once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Mapping

import numpy as np

from adapters.models.base import ModelBackend, ModelInfo
from gateway.outputs import OutputSpec, check_answer
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.retry import RetryPolicy, retry
from schemas.errors import ModelServerError, ModelUnavailable, SuspectBatch

log = logging.getLogger(__name__)


class GuardedModel:
    """Implements `ModelBackend` itself, so callers need not know it is guarded.

    With `outputs` (the contract's), every answer is checked as a whole inside the guarded
    call (`gateway.outputs.check_answer`): a missing output, the wrong shape or dtype is
    the model failing, and the breaker counts it like a 5xx."""

    def __init__(
        self,
        backend: ModelBackend,
        *,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        timeout_s: float | None,
        max_concurrency: int,
        retry_on: tuple[type[BaseException], ...] = (ModelUnavailable,),
        outputs: Mapping[str, OutputSpec] | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.backend = backend
        self.breaker = breaker
        self.retry_policy = retry
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self._retry_on = retry_on
        self.outputs = outputs
        self._slots = asyncio.Semaphore(max_concurrency)

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        return await retry(
            lambda: self._attempt(features), self.retry_policy, retry_on=self._retry_on, on_retry=self._log_retry
        )

    async def _attempt(self, features: np.ndarray) -> dict[str, np.ndarray]:
        async with self._slots:
            if len(features) <= 1:
                return await self.breaker.call(self._answer, features, timeout_s=self.timeout_s)
            try:
                # A 5xx or a garbage answer on several records may be one poison record: leave
                # it to the caller to split the batch before anything counts against the endpoint.
                return await self.breaker.call(self._answer, features, timeout_s=self.timeout_s,
                                               ignore=(ModelServerError,))
            except ModelServerError as exc:
                raise SuspectBatch(str(exc), status=exc.status) from exc

    async def _answer(self, features: np.ndarray) -> dict[str, np.ndarray]:
        try:
            answer = await self.backend.predict(features)
        except ModelServerError as exc:
            # The pipeline keeps this error while it splits the batch, and its traceback
            # keeps the backend's frames: their locals (an answer of up to
            # max_response_bytes, parsed or not) must not stay alive with it.
            traceback.clear_frames(exc.__traceback__)
            raise
        if self.outputs is not None:
            check_answer(self.outputs, answer, len(features), model=self.info.name)
        return answer

    def _log_retry(self, failed_attempts: int, exc: BaseException, delay_s: float) -> None:
        name = self.info.name
        log.warning("model %s: attempt %d failed (%s); retrying in %.3fs", name, failed_attempts, exc, delay_s)

    async def ready(self) -> bool:
        """The backend's own readiness; not guarded, so a health probe never trips the
        breaker and an open breaker does not hide a recovered endpoint."""
        try:
            return await self.backend.ready()
        except Exception as exc:
            log.info("model %s: not ready: %s", self.info.name, exc)
            return False

    async def close(self) -> None:
        await self.backend.close()


__all__ = ["GuardedModel"]
