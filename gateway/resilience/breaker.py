"""A circuit breaker with Resilience4j semantics (count-based sliding window, failure-rate and
slow-call-rate thresholds, a bounded number of half-open probes).

Why not the `circuitbreaker` package: 2.1.3 counts consecutive failures only, admits every
caller in half-open, has no locking, does not short-circuit its `call()`/`with` forms when
open, and treats the `CancelledError` of an outer `asyncio.wait_for` as a success that
resets the failure count.

The breaker is shared by asyncio tasks and threads: its state sits behind one lock that is
never held across an `await` (the guarded call runs outside it). Every permit carries the
epoch it was issued in; a result that arrives after the state changed is dropped, so a
late answer to a call started while CLOSED is never mistaken for a half-open probe.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import Enum, StrEnum
from types import TracebackType
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import BreakerOpen, DataError, ModelTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")


class BreakerConfig(BaseModel):
    """Names and defaults follow Resilience4j's CircuitBreakerConfig (rates in percent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_rate_threshold: float = Field(default=50.0, gt=0, le=100)
    slow_call_rate_threshold: float = Field(default=100.0, gt=0, le=100)
    slow_call_duration_s: float = Field(default=2.0, gt=0)
    sliding_window_size: int = Field(default=100, ge=1)
    minimum_number_of_calls: int = Field(default=10, ge=1)
    wait_duration_in_open_s: float = Field(default=30.0, ge=0)
    permitted_calls_in_half_open: int = Field(default=3, ge=1)
    # 0 waits for the probes forever (Resilience4j's default); > 0 re-opens a half-open
    # breaker whose probes have not all reported within this time (a leaked permit).
    max_wait_in_half_open_s: float = Field(default=0.0, ge=0)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"  # rejects everything until reset(): an operator's decision
    DISABLED = "disabled"  # admits everything, records nothing


class Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    SLOW_SUCCESS = "slow_success"
    SLOW_FAILURE = "slow_failure"


Listener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]
Verdict = Literal["failure", "ignore"]


def classify(exc: BaseException) -> Verdict:
    """Does this exception say something about the endpoint's health?

    A `DataError` is about the records (the model answered, it just did not like them) and
    cancellation/interrupts are about the caller: neither counts. Everything else —
    infrastructure errors, timeouts, OS/connection errors, unexpected bugs — is a failure.
    """
    if isinstance(exc, DataError) or not isinstance(exc, Exception):
        return "ignore"
    return "failure"


class _Window:
    """The last `size` call outcomes, with running totals (O(1) per record)."""

    def __init__(self, size: int) -> None:
        self._outcomes: deque[Outcome] = deque(maxlen=size)
        self.failed = 0
        self.slow = 0

    def __len__(self) -> int:
        return len(self._outcomes)

    def record(self, outcome: Outcome) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            self._count(self._outcomes[0], -1)  # the append below evicts it
        self._outcomes.append(outcome)
        self._count(outcome, +1)

    def _count(self, outcome: Outcome, step: int) -> None:
        if outcome in (Outcome.FAILURE, Outcome.SLOW_FAILURE):
            self.failed += step
        if outcome in (Outcome.SLOW_SUCCESS, Outcome.SLOW_FAILURE):
            self.slow += step

    def failure_rate(self) -> float:
        return 100.0 * self.failed / len(self._outcomes) if self._outcomes else 0.0

    def slow_rate(self) -> float:
        return 100.0 * self.slow / len(self._outcomes) if self._outcomes else 0.0


class Permit:
    """One admitted call. Report it exactly once: `success`, `failure` or `ignore` (later
    reports are no-ops). Durations default to the time since `acquire()`.

    Also a context manager for synchronous code: an exception leaving the block is
    classified like in `CircuitBreaker.call`, a clean exit is a success.
    """

    __slots__ = ("_breaker", "_done", "_epoch", "_started")

    def __init__(self, breaker: CircuitBreaker, epoch: int, started: float) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._started = started
        self._done = False

    def success(self, duration_s: float | None = None) -> None:
        self._report(False, duration_s)

    def failure(self, duration_s: float | None = None, exc: BaseException | None = None) -> None:
        self._report(True, duration_s)

    def ignore(self) -> None:
        """Release the permit without recording an outcome (data errors, cancellation)."""
        if not self._done:
            self._done = True
            self._breaker._release(self._epoch)

    def _report(self, failed: bool, duration_s: float | None) -> None:
        if self._done:
            return
        self._done = True
        if duration_s is None:
            duration_s = self._breaker._clock() - self._started
        self._breaker._record(self._epoch, failed, duration_s)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            self.success()
        elif classify(exc) == "failure":
            self.failure(exc=exc)
        else:
            self.ignore()


class CircuitBreaker:
    def __init__(
        self, name: str, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        # Re-entrant so that a listener may call snapshot() while being notified.
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._state = BreakerState.CLOSED
        self._epoch = 0
        self._window = _Window(self.config.sliding_window_size)
        self._entered_at = clock()
        self._probes_left = 0
        self._not_permitted = 0

    # ---- observing -------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The recorded state. OPEN turns HALF_OPEN lazily, on the first acquire after the
        wait (as in Resilience4j without automatic transition); see `snapshot()['retry_after_s']`."""
        return self._state

    def add_listener(self, listener: Listener) -> None:
        """`listener(breaker, old, new)` runs on every transition, under the breaker's lock
        and in transition order: keep it quick, never block or await in it."""
        with self._lock:
            self._listeners.append(listener)

    def snapshot(self) -> dict[str, Any]:
        """Figures for metrics and the CLI. Rates are percentages over the buffered calls,
        None until enough calls were buffered to judge. `not_permitted_calls` counts every
        rejection since the breaker was built (a monotonic counter)."""
        with self._lock:
            judged = len(self._window) >= self._minimum_calls()
            retry_after = None
            if self._state is BreakerState.OPEN:
                retry_after = max(0.0, self._entered_at + self.config.wait_duration_in_open_s - self._clock())
            return {
                "name": self.name,
                "state": self._state.value,
                "failure_rate": self._window.failure_rate() if judged else None,
                "slow_rate": self._window.slow_rate() if judged else None,
                "buffered_calls": len(self._window),
                "failed_calls": self._window.failed,
                "slow_calls": self._window.slow,
                "not_permitted_calls": self._not_permitted,
                "half_open_permits_left": self._probes_left if self._state is BreakerState.HALF_OPEN else None,
                "retry_after_s": retry_after,
            }

    # ---- guarding --------------------------------------------------------------------

    def acquire(self) -> Permit:
        """Admit one call or raise `BreakerOpen` without calling anything."""
        with self._lock:
            now = self._clock()
            state = self._state
            if state is BreakerState.OPEN and now - self._entered_at >= self.config.wait_duration_in_open_s:
                self._transition(BreakerState.HALF_OPEN)
                state = self._state
            if state in (BreakerState.CLOSED, BreakerState.DISABLED):
                return Permit(self, self._epoch, now)
            if state is BreakerState.HALF_OPEN:
                if self._probes_left > 0:
                    self._probes_left -= 1
                    return Permit(self, self._epoch, now)
                wait = self.config.max_wait_in_half_open_s
                if wait > 0 and now - self._entered_at >= wait:
                    self._transition(BreakerState.OPEN)
            self._not_permitted += 1
            raise BreakerOpen(self._rejection_message(now))

    async def call(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, timeout_s: float | None = None,
        ignore: tuple[type[BaseException], ...] = (), **kwargs: Any
    ) -> T:
        """Run `fn(*args, **kwargs)` as one guarded call.

        The timeout applies inside the guard (`asyncio.timeout`, the primitive `wait_for`
        is built on since 3.12, without wait_for's extra task): running out of time is a
        failure raised as `ModelTimeout`. A `CancelledError` from outside releases the
        permit without recording anything and propagates.
        """
        permit = self.acquire()
        started = self._clock()
        try:
            async with asyncio.timeout(timeout_s) as deadline:  # None: no limit
                result = await fn(*args, **kwargs)
        except TimeoutError as exc:
            permit.failure(self._clock() - started, exc)
            if deadline.expired():
                raise ModelTimeout(f"{self.name}: no answer within {timeout_s:g}s") from exc
            raise
        except BaseException as exc:
            if classify(exc) == "failure" and not isinstance(exc, ignore):
                permit.failure(self._clock() - started, exc)
            else:
                permit.ignore()
            raise
        permit.success(self._clock() - started)
        return result

    # ---- operator controls -------------------------------------------------------------

    def force_open(self) -> None:
        with self._lock:
            self._transition(BreakerState.FORCED_OPEN)

    def disable(self) -> None:
        with self._lock:
            self._transition(BreakerState.DISABLED)

    def reset(self) -> None:
        """Back to CLOSED with an empty window (also leaves FORCED_OPEN / DISABLED)."""
        with self._lock:
            self._transition(BreakerState.CLOSED)

    # ---- internals -------------------------------------------------------------------

    def _minimum_calls(self) -> int:
        if self._state is BreakerState.HALF_OPEN:
            return self.config.permitted_calls_in_half_open
        # Resilience4j caps the minimum at the window size, so a small window still judges.
        return min(self.config.minimum_number_of_calls, self.config.sliding_window_size)

    def _record(self, epoch: int, failed: bool, duration_s: float) -> None:
        slow = duration_s > self.config.slow_call_duration_s
        if failed:
            outcome = Outcome.SLOW_FAILURE if slow else Outcome.FAILURE
        else:
            outcome = Outcome.SLOW_SUCCESS if slow else Outcome.SUCCESS
        with self._lock:
            if epoch != self._epoch or self._state not in (BreakerState.CLOSED, BreakerState.HALF_OPEN):
                return  # issued before the last transition, or recording is off
            self._window.record(outcome)
            if len(self._window) < self._minimum_calls():
                return
            exceeded = (
                self._window.failure_rate() >= self.config.failure_rate_threshold
                or self._window.slow_rate() >= self.config.slow_call_rate_threshold
            )
            if exceeded:
                self._transition(BreakerState.OPEN)
            elif self._state is BreakerState.HALF_OPEN:
                self._transition(BreakerState.CLOSED)

    def _release(self, epoch: int) -> None:
        with self._lock:
            # An ignored probe gives its slot back, so a data error cannot stall half-open.
            if epoch == self._epoch and self._state is BreakerState.HALF_OPEN:
                self._probes_left += 1

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old is new and new is not BreakerState.CLOSED:
            return
        self._state = new
        self._epoch += 1
        self._entered_at = self._clock()
        probes = self.config.permitted_calls_in_half_open
        half_open = new is BreakerState.HALF_OPEN
        # Half-open judges its probes alone, on a window just large enough to hold them.
        self._window = _Window(probes if half_open else self.config.sliding_window_size)
        self._probes_left = probes if half_open else 0
        if old is new:
            return  # reset() of a closed breaker: fresh window, no event
        log.info("breaker %s: %s -> %s", self.name, old.value, new.value)
        for listener in list(self._listeners):
            try:
                listener(self, old, new)
            except Exception:
                log.exception("breaker %s: state listener failed", self.name)

    def _rejection_message(self, now: float) -> str:
        if self._state is BreakerState.OPEN:
            left = max(0.0, self._entered_at + self.config.wait_duration_in_open_s - now)
            return f"{self.name}: circuit open, next probe in {left:.1f}s"
        if self._state is BreakerState.HALF_OPEN:
            return f"{self.name}: circuit half-open, all {self.config.permitted_calls_in_half_open} probes in flight"
        return f"{self.name}: circuit forced open"


__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker", "Listener", "Outcome", "Permit", "classify"]
