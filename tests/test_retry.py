from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from pydantic import ValidationError

from adapters.models.base import ModelBackend, ModelInfo
from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from gateway.resilience.guarded import GuardedModel
from gateway.resilience.retry import RetryPolicy, retry
from schemas.errors import BreakerOpen, InfrastructureError, ModelRejected, ModelTimeout, ModelUnavailable


class Sleeps:
    """Records the pauses instead of taking them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


Scripted = tuple[Callable[[], Awaitable[str]], dict[str, int]]


def failing(times: int, exc: BaseException, result: str = "scored") -> Scripted:
    calls = {"n": 0}

    async def fn() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise exc
        return result

    return fn, calls


# ---- retry ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_retries_an_unavailable_model_until_it_answers() -> None:
    fn, calls = failing(2, ModelUnavailable("503"))
    sleeps = Sleeps()
    assert await retry(fn, RetryPolicy(max_attempts=3), sleep=sleeps) == "scored"
    assert calls["n"] == 3
    assert len(sleeps.delays) == 2


@pytest.mark.asyncio
async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    fn, calls = failing(10, ModelTimeout("no answer within 2s"))
    with pytest.raises(ModelTimeout) as info:
        await retry(fn, RetryPolicy(max_attempts=4), sleep=Sleeps())
    assert calls["n"] == 4
    assert "gave up after 4 attempts" in info.value.__notes__


@pytest.mark.asyncio
@pytest.mark.parametrize("exc", [ModelRejected("422"), BreakerOpen("fraud: circuit open")])
async def test_never_retries_data_errors_or_an_open_breaker(exc: Exception) -> None:
    fn, calls = failing(1, exc)
    with pytest.raises(type(exc)):
        # Even when the caller asks for every exception to be retried.
        await retry(fn, RetryPolicy(max_attempts=5), retry_on=(Exception,), sleep=Sleeps())
    assert calls["n"] == 1


@pytest.mark.asyncio
async def test_does_not_retry_what_is_not_listed() -> None:
    fn, calls = failing(1, ValueError("bug"))
    with pytest.raises(ValueError):
        await retry(fn, RetryPolicy(), sleep=Sleeps())
    assert calls["n"] == 1


@pytest.mark.asyncio
async def test_retry_on_widens_to_other_infrastructure_errors() -> None:
    fn, calls = failing(2, ConnectionResetError("peer reset"))
    assert await retry(fn, RetryPolicy(), retry_on=(InfrastructureError, OSError), sleep=Sleeps()) == "scored"
    assert calls["n"] == 3


@pytest.mark.asyncio
async def test_cancellation_is_never_retried() -> None:
    fn, calls = failing(1, asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry(fn, RetryPolicy(), retry_on=(BaseException,), sleep=Sleeps())
    assert calls["n"] == 1


@pytest.mark.asyncio
async def test_full_jitter_stays_under_the_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.1, max_delay_s=1.0)
    fn, _ = failing(7, ModelUnavailable("down"))
    sleeps = Sleeps()
    await retry(fn, policy, sleep=sleeps, rng=random.Random(42))
    caps = [min(1.0, 0.1 * 2**k) for k in range(7)]
    assert all(0.0 <= d <= cap for d, cap in zip(sleeps.delays, caps, strict=True))
    assert len(set(sleeps.delays)) == 7  # jittered, not a fixed schedule


@pytest.mark.asyncio
async def test_same_seed_same_delays_and_no_jitter_is_plain_exponential() -> None:
    async def run(policy: RetryPolicy, seed: int) -> list[float]:
        fn, _ = failing(4, ModelUnavailable("down"))
        sleeps = Sleeps()
        await retry(fn, policy, sleep=sleeps, rng=random.Random(seed))
        return sleeps.delays

    jittered = RetryPolicy(max_attempts=5, base_delay_s=0.1, max_delay_s=0.5)
    assert await run(jittered, 7) == await run(jittered, 7)
    plain = RetryPolicy(max_attempts=5, base_delay_s=0.1, max_delay_s=0.5, jitter="none")
    assert await run(plain, 7) == pytest.approx([0.1, 0.2, 0.4, 0.5])


def test_delay_of_a_huge_attempt_number_is_capped_without_overflow() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=30.0, jitter="none")
    assert policy.delay_s(10_000, random.Random()) == 30.0


@pytest.mark.asyncio
async def test_on_retry_sees_each_failed_attempt() -> None:
    fn, _ = failing(2, ModelUnavailable("503"))
    seen: list[tuple[int, str]] = []
    await retry(fn, RetryPolicy(), sleep=Sleeps(), on_retry=lambda n, exc, _d: seen.append((n, str(exc))))
    assert seen == [(1, "503"), (2, "503")]


def test_policy_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(max_attemps=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RetryPolicy(max_attempts=0)


# ---- GuardedModel -------------------------------------------------------------------------


class ScriptedModel:
    """A backend whose n-th predict raises `script[n]` (or answers when it is None)."""

    info = ModelInfo(name="fraud", version="3", inputs=["amount"], outputs=["fraud_score"])

    def __init__(self, script: list[BaseException | None] | None = None, hold: asyncio.Event | None = None) -> None:
        self.script = list(script or [])
        self.hold = hold
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            step = self.script.pop(0) if self.script else None
            if self.hold is not None:
                await self.hold.wait()
            if step is not None:
                raise step
            return {"fraud_score": np.full(len(features), 0.1, dtype=np.float32)}
        finally:
            self.in_flight -= 1

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self.closed = True


def guarded(backend: ScriptedModel, **overrides: object) -> GuardedModel:
    options: dict[str, object] = {
        "breaker": CircuitBreaker("fraud", BreakerConfig(sliding_window_size=10, minimum_number_of_calls=10)),
        "retry": RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0),
        "timeout_s": 1.0,
        "max_concurrency": 4,
    }
    options.update(overrides)
    return GuardedModel(backend, **options)  # type: ignore[arg-type]


FEATURES = np.ones((5, 1), dtype=np.float32)


@pytest.mark.asyncio
async def test_guarded_model_is_a_model_backend() -> None:
    backend = ScriptedModel()
    model = guarded(backend)
    assert isinstance(model, ModelBackend)
    assert model.info.name == "fraud"
    assert await model.ready()
    await model.close()
    assert backend.closed


@pytest.mark.asyncio
async def test_each_attempt_is_one_breaker_call() -> None:
    backend = ScriptedModel([ModelUnavailable("503"), ModelUnavailable("503"), None])
    model = guarded(backend)
    scores = await model.predict(FEATURES)
    assert scores["fraud_score"].shape == (5,)
    snap = model.breaker.snapshot()
    assert (backend.calls, snap["buffered_calls"], snap["failed_calls"]) == (3, 3, 2)


@pytest.mark.asyncio
async def test_a_timeout_inside_is_retried_and_counted() -> None:
    hang = asyncio.Event()  # never set: the first attempt hangs until its timeout

    class HangsOnce(ScriptedModel):
        async def predict(self, features: np.ndarray) -> dict[str, np.ndarray]:
            if self.calls == 0:
                self.calls += 1
                await hang.wait()
            return await super().predict(features)

    backend = HangsOnce()
    model = guarded(backend, timeout_s=0.005)
    await model.predict(FEATURES)
    assert model.breaker.snapshot()["failed_calls"] == 1


@pytest.mark.asyncio
async def test_an_open_breaker_ends_the_retries_without_calling_the_model() -> None:
    backend = ScriptedModel()
    model = guarded(backend)
    model.breaker.force_open()
    with pytest.raises(BreakerOpen):
        await model.predict(FEATURES)
    assert backend.calls == 0


@pytest.mark.asyncio
async def test_the_breaker_opening_mid_retry_stops_the_retries() -> None:
    backend = ScriptedModel([ModelUnavailable("503")] * 5)
    breaker = CircuitBreaker("fraud", BreakerConfig(sliding_window_size=2, minimum_number_of_calls=2))
    model = guarded(backend, breaker=breaker, retry=RetryPolicy(max_attempts=5, base_delay_s=0, max_delay_s=0))
    with pytest.raises(BreakerOpen):
        await model.predict(FEATURES)
    assert backend.calls == 2
    assert breaker.state is BreakerState.OPEN


@pytest.mark.asyncio
async def test_a_rejected_batch_is_neither_retried_nor_counted() -> None:
    backend = ScriptedModel([ModelRejected("422: bad input")])
    model = guarded(backend)
    with pytest.raises(ModelRejected):
        await model.predict(FEATURES)
    assert backend.calls == 1
    assert model.breaker.snapshot()["buffered_calls"] == 0


@pytest.mark.asyncio
async def test_concurrency_is_bounded_per_endpoint() -> None:
    gate = asyncio.Event()
    backend = ScriptedModel(hold=gate)
    model = guarded(backend, max_concurrency=2)
    tasks = [asyncio.ensure_future(model.predict(FEATURES)) for _ in range(10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert backend.in_flight == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert (backend.calls, backend.max_in_flight) == (10, 2)


@pytest.mark.asyncio
async def test_time_queued_for_a_slot_is_not_a_slow_call() -> None:
    gate = asyncio.Event()
    backend = ScriptedModel(hold=gate)
    # A call slower than 50 ms counts as slow; waiting for a slot must not.
    breaker = CircuitBreaker("fraud", BreakerConfig(slow_call_duration_s=0.05, sliding_window_size=10,
                                                    minimum_number_of_calls=10))
    model = guarded(backend, breaker=breaker, max_concurrency=1)
    first = asyncio.ensure_future(model.predict(FEATURES))
    queued = asyncio.ensure_future(model.predict(FEATURES))
    await asyncio.sleep(0.06)  # the queued call waits while the first one is held
    backend.hold = None  # the queued call answers at once when it gets the slot
    gate.set()
    await asyncio.gather(first, queued)
    assert breaker.snapshot()["slow_calls"] == 1  # the held call only


def test_guarded_model_validates_its_limits() -> None:
    with pytest.raises(ValueError):
        guarded(ScriptedModel(), max_concurrency=0)
    with pytest.raises(ValueError):
        guarded(ScriptedModel(), timeout_s=0)
