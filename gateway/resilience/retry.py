"""Retries with exponential backoff and full jitter (AWS Architecture Blog, "Exponential
Backoff and Jitter": sleep = uniform(0, min(cap, base * 2**attempt))), so that replicas
that failed together do not retry together.

Only what can succeed on a second try is retried: infrastructure errors named in
`retry_on`. A `DataError` fails the same way every time, and a `BreakerOpen` means the
breaker already decided the endpoint is down, so neither is ever retried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import BreakerOpen, DataError, ModelUnavailable, SuspectBatch

T = TypeVar("T")

_MAX_EXPONENT = 62  # 2**62 * any sane base delay is far past any cap; avoids float overflow
_shared_rng = random.Random()

OnRetry = Callable[[int, BaseException, float], None]


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1)  # attempts in all, the first one included
    base_delay_s: float = Field(default=0.05, ge=0)
    max_delay_s: float = Field(default=2.0, ge=0)
    jitter: Literal["full", "none"] = "full"

    def delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        """The pause after the `failed_attempts`-th failure (1 = after the first)."""
        exponent = min(max(failed_attempts - 1, 0), _MAX_EXPONENT)
        cap = min(self.max_delay_s, self.base_delay_s * 2**exponent)
        return rng.uniform(0.0, cap) if self.jitter == "full" else cap


def is_retryable(exc: BaseException, retry_on: tuple[type[BaseException], ...]) -> bool:
    if not isinstance(exc, Exception):  # cancellation, interrupts
        return False
    if isinstance(exc, DataError | BreakerOpen | SuspectBatch):  # retrying cannot help these
        return False
    return isinstance(exc, retry_on)


async def retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retry_on: tuple[type[BaseException], ...] = (ModelUnavailable,),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """Await `fn()` up to `policy.max_attempts` times; re-raise the last error.

    `on_retry(failed_attempts, exc, delay_s)` runs before each pause (for logs, metrics).
    """
    rng = rng or _shared_rng
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if attempt >= policy.max_attempts or not is_retryable(exc, retry_on):
                if attempt > 1:
                    exc.add_note(f"gave up after {attempt} attempts")
                raise
            delay = policy.delay_s(attempt, rng)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await sleep(delay)
            attempt += 1


__all__ = ["OnRetry", "RetryPolicy", "is_retryable", "retry"]
