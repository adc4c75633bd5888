from __future__ import annotations

import asyncio
import threading
import time

import pytest
from pydantic import ValidationError

from gateway.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from schemas.errors import BreakerOpen, DataError, ModelRejected, ModelTimeout, ModelUnavailable


class FakeClock:
    def __init__(self, yield_thread: bool = False) -> None:
        self.now = 1000.0
        self.yield_thread = yield_thread

    def __call__(self) -> float:
        if self.yield_thread:
            time.sleep(0)  # hand the GIL to another thread mid-decision, to expose races
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock | None = None, **config: float) -> tuple[CircuitBreaker, FakeClock]:
    clock = clock or FakeClock()
    settings = {"sliding_window_size": 10, "minimum_number_of_calls": 5, "wait_duration_in_open_s": 30, **config}
    return CircuitBreaker("fraud", BreakerConfig.model_validate(settings), clock=clock), clock


def record(breaker: CircuitBreaker, *outcomes: str, duration_s: float = 0.01) -> None:
    """'s' success, 'f' failure."""
    for outcome in outcomes:
        permit = breaker.acquire()
        if outcome == "s":
            permit.success(duration_s)
        else:
            permit.failure(duration_s, ModelUnavailable("down"))


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is BreakerState.CLOSED:
        record(breaker, "f")


async def ok() -> str:
    return "scored"


async def down() -> str:
    raise ModelUnavailable("connection refused")


# ---- closed: judging the window ---------------------------------------------------------


def test_opens_at_failure_rate_threshold_only_after_minimum_calls() -> None:
    breaker, _ = make(minimum_number_of_calls=5)
    record(breaker, "f", "f", "f", "f")
    assert breaker.state is BreakerState.CLOSED  # 100% failures, but only 4 calls
    assert breaker.snapshot()["failure_rate"] is None
    record(breaker, "s")
    assert breaker.state is BreakerState.OPEN  # 4/5 = 80% >= 50%


def test_failure_rate_exactly_at_threshold_opens_and_just_below_does_not() -> None:
    below, _ = make(minimum_number_of_calls=10)
    record(below, *"ffff", *"ssssss")
    assert below.state is BreakerState.CLOSED
    assert below.snapshot()["failure_rate"] == 40.0

    at, _ = make(minimum_number_of_calls=10)
    record(at, *"fffff", *"ssss")
    assert at.state is BreakerState.CLOSED
    record(at, "s")
    assert at.state is BreakerState.OPEN  # 5/10 = 50% >= 50%


def test_count_based_window_forgets_old_outcomes() -> None:
    breaker, _ = make(sliding_window_size=10, minimum_number_of_calls=10)
    record(breaker, *"ffff", *"ssssss")
    assert breaker.snapshot()["failure_rate"] == 40.0
    record(breaker, *"ssss")  # pushes the four failures out of the last ten
    snap = breaker.snapshot()
    assert (snap["failure_rate"], snap["failed_calls"], snap["buffered_calls"]) == (0.0, 0, 10)
    record(breaker, *"ffff")
    assert breaker.state is BreakerState.CLOSED
    record(breaker, "f")  # 5 of the last 10
    assert breaker.state is BreakerState.OPEN


def test_minimum_larger_than_window_is_capped_at_the_window() -> None:
    breaker, _ = make(sliding_window_size=4, minimum_number_of_calls=50)
    record(breaker, *"ffff")
    assert breaker.state is BreakerState.OPEN


@pytest.mark.asyncio
async def test_slow_calls_trip_the_slow_call_rule() -> None:
    breaker, clock = make(slow_call_duration_s=1.0, slow_call_rate_threshold=60, minimum_number_of_calls=5)

    async def slow() -> str:
        clock.advance(1.5)
        return "late but fine"

    for _ in range(3):
        assert await breaker.call(slow) == "late but fine"
    await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["failure_rate"] is None
    await breaker.call(slow)  # 4 of 5 slow = 80% >= 60%, no failure at all
    assert breaker.state is BreakerState.OPEN


def test_slow_failures_count_as_both_slow_and_failed() -> None:
    breaker, _ = make(sliding_window_size=100, minimum_number_of_calls=100, slow_call_duration_s=1.0)
    record(breaker, "f", "s", duration_s=5.0)
    record(breaker, "f", "s", duration_s=0.1)
    snap = breaker.snapshot()
    assert (snap["failed_calls"], snap["slow_calls"], snap["buffered_calls"]) == (2, 2, 4)


# ---- open --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_open_short_circuits_without_calling() -> None:
    breaker, clock = make()
    trip(breaker)
    calls = 0

    async def backend() -> str:
        nonlocal calls
        calls += 1
        return "x"

    for _ in range(5):
        with pytest.raises(BreakerOpen, match="circuit open"):
            await breaker.call(backend)
    clock.advance(29.9)
    with pytest.raises(BreakerOpen):
        breaker.acquire()
    assert calls == 0
    assert breaker.snapshot()["not_permitted_calls"] == 6
    assert breaker.snapshot()["retry_after_s"] == pytest.approx(0.1)


# ---- half-open ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_exactly_n_probes_are_admitted_among_concurrent_callers() -> None:
    breaker, clock = make(permitted_calls_in_half_open=3)
    trip(breaker)
    clock.advance(30)
    gate = asyncio.Event()
    reached = 0

    async def backend() -> str:
        nonlocal reached
        reached += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.ensure_future(breaker.call(backend)) for _ in range(20)]
    await asyncio.sleep(0)  # every task has tried to acquire by now
    assert reached == 3
    assert breaker.state is BreakerState.HALF_OPEN
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(r == "ok" for r in results) == 3
    assert sum(isinstance(r, BreakerOpen) for r in results) == 17
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.asyncio
async def test_probes_succeed_then_closed_with_a_fresh_window() -> None:
    breaker, clock = make()
    trip(breaker)
    clock.advance(30)
    for _ in range(3):
        await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    snap = breaker.snapshot()
    assert (snap["buffered_calls"], snap["failed_calls"]) == (0, 0)


@pytest.mark.asyncio
async def test_a_failing_probe_opens_again_for_a_full_wait() -> None:
    breaker, clock = make(permitted_calls_in_half_open=3)
    trip(breaker)
    clock.advance(30)
    await breaker.call(ok)
    with pytest.raises(ModelUnavailable):
        await breaker.call(down)
    assert breaker.state is BreakerState.HALF_OPEN  # judged once all three probes report
    with pytest.raises(ModelUnavailable):
        await breaker.call(down)
    assert breaker.state is BreakerState.OPEN  # 2/3 = 67% >= 50%
    clock.advance(29)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)


@pytest.mark.asyncio
async def test_half_open_below_threshold_closes() -> None:
    breaker, clock = make(permitted_calls_in_half_open=4)
    trip(breaker)
    clock.advance(30)
    for fn in (ok, ok, ok):
        await breaker.call(fn)
    with pytest.raises(ModelUnavailable):
        await breaker.call(down)
    assert breaker.state is BreakerState.CLOSED  # 1/4 = 25% < 50%


def test_listeners_see_every_transition() -> None:
    breaker, clock = make(permitted_calls_in_half_open=1)
    seen: list[tuple[str, str]] = []
    breaker.add_listener(lambda b, old, new: seen.append((old.value, new.value)))
    trip(breaker)
    clock.advance(30)
    record(breaker, "f")
    clock.advance(30)
    record(breaker, "s")
    breaker.force_open()
    breaker.reset()
    breaker.disable()
    assert seen == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "open"), ("open", "half_open"),
        ("half_open", "closed"), ("closed", "forced_open"), ("forced_open", "closed"), ("closed", "disabled"),
    ]


def test_a_failing_listener_does_not_break_the_breaker() -> None:
    breaker, _ = make()

    def broken(*_: object) -> None:
        raise RuntimeError("metrics exporter down")

    breaker.add_listener(broken)
    trip(breaker)
    assert breaker.state is BreakerState.OPEN


# ---- what counts -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_data_error_does_not_count() -> None:
    breaker, _ = make(minimum_number_of_calls=1)

    async def rejects() -> str:
        raise ModelRejected("422: feature 'amount' is negative")

    for _ in range(20):
        with pytest.raises(DataError):
            await breaker.call(rejects)
    snap = breaker.snapshot()
    assert (snap["state"], snap["buffered_calls"]) == ("closed", 0)


@pytest.mark.asyncio
async def test_a_data_error_in_half_open_gives_the_probe_slot_back() -> None:
    breaker, clock = make(permitted_calls_in_half_open=1)
    trip(breaker)
    clock.advance(30)

    async def rejects() -> str:
        raise ModelRejected("bad record")

    with pytest.raises(ModelRejected):
        await breaker.call(rejects)
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "scored"  # the slot was released, not leaked
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.asyncio
async def test_unexpected_exceptions_count_as_failures() -> None:
    breaker, _ = make(minimum_number_of_calls=2)

    async def bug() -> str:
        raise KeyError("outputs")

    for _ in range(2):
        with pytest.raises(KeyError):
            await breaker.call(bug)
    assert breaker.state is BreakerState.OPEN


@pytest.mark.asyncio
async def test_timeouts_inside_count_as_failures() -> None:
    breaker, _ = make(minimum_number_of_calls=2)

    async def hangs() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(ModelTimeout, match=r"no answer within 0\.005s"):
        await breaker.call(hangs, timeout_s=0.005)
    assert breaker.snapshot()["failed_calls"] == 1
    with pytest.raises(ModelTimeout):
        await breaker.call(hangs, timeout_s=0.005)
    assert breaker.state is BreakerState.OPEN


@pytest.mark.asyncio
async def test_a_timeout_raised_by_the_backend_itself_is_a_failure_too() -> None:
    breaker, _ = make()

    async def raises_timeout() -> str:
        raise TimeoutError("socket read timed out")

    with pytest.raises(TimeoutError, match="socket read"):
        await breaker.call(raises_timeout, timeout_s=5)
    assert breaker.snapshot()["failed_calls"] == 1


@pytest.mark.asyncio
async def test_outer_cancellation_does_not_corrupt_counts() -> None:
    breaker, _ = make(sliding_window_size=100, minimum_number_of_calls=4)
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            await breaker.call(down)

    async def hangs() -> str:
        await asyncio.sleep(10)
        return "never"

    task = asyncio.ensure_future(breaker.call(hangs, timeout_s=5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # An outer wait_for (a caller's own deadline) cancels the call the same way.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(breaker.call(hangs), 0.005)
    snap = breaker.snapshot()
    assert (snap["buffered_calls"], snap["failed_calls"], snap["state"]) == (3, 3, "closed")
    with pytest.raises(ModelUnavailable):
        await breaker.call(down)
    assert breaker.state is BreakerState.OPEN  # the three earlier failures still count


@pytest.mark.asyncio
async def test_a_cancelled_probe_releases_its_slot() -> None:
    breaker, clock = make(permitted_calls_in_half_open=1)
    trip(breaker)
    clock.advance(30)
    task = asyncio.ensure_future(breaker.call(asyncio.sleep, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED


def test_results_of_calls_started_before_a_transition_are_not_counted() -> None:
    breaker, clock = make(permitted_calls_in_half_open=2)
    late = [breaker.acquire() for _ in range(3)]  # in flight while the breaker trips
    trip(breaker)
    clock.advance(30)
    probe = breaker.acquire()
    for permit in late:
        permit.success(0.01)  # answers to the closed-era calls, not probes
    assert breaker.snapshot()["buffered_calls"] == 0
    probe.failure(0.01)
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_permit_reports_once() -> None:
    breaker, _ = make(sliding_window_size=100, minimum_number_of_calls=100)
    permit = breaker.acquire()
    permit.failure(0.01)
    permit.failure(0.01)
    permit.success(0.01)
    assert breaker.snapshot()["buffered_calls"] == 1


def test_permit_as_context_manager_classifies_exceptions() -> None:
    breaker, _ = make(sliding_window_size=100, minimum_number_of_calls=100)
    with breaker.acquire():
        pass
    with pytest.raises(ModelRejected), breaker.acquire():
        raise ModelRejected("bad row")
    with pytest.raises(ConnectionError), breaker.acquire():
        raise ConnectionError("reset by peer")
    snap = breaker.snapshot()
    assert (snap["buffered_calls"], snap["failed_calls"]) == (2, 1)


# ---- operator states ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_forced_open_rejects_until_reset_and_disabled_admits_without_recording() -> None:
    breaker, clock = make(minimum_number_of_calls=1)
    breaker.force_open()
    clock.advance(3600)
    with pytest.raises(BreakerOpen, match="forced open"):
        await breaker.call(ok)
    breaker.disable()
    for _ in range(10):
        with pytest.raises(ModelUnavailable):
            await breaker.call(down)
    assert breaker.snapshot()["buffered_calls"] == 0
    breaker.reset()
    assert await breaker.call(ok) == "scored"


def test_half_open_with_a_leaked_probe_reopens_after_max_wait() -> None:
    breaker, clock = make(permitted_calls_in_half_open=1, max_wait_in_half_open_s=10)
    trip(breaker)
    clock.advance(30)
    breaker.acquire()  # never reported
    clock.advance(10)
    with pytest.raises(BreakerOpen):
        breaker.acquire()
    assert breaker.state is BreakerState.OPEN


def test_config_rejects_unknown_and_out_of_range_fields() -> None:
    with pytest.raises(ValidationError):
        BreakerConfig(failure_rate_treshold=50)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        BreakerConfig(failure_rate_threshold=0)
    with pytest.raises(ValidationError):
        BreakerConfig(permitted_calls_in_half_open=0)


# ---- threads ------------------------------------------------------------------------------


def test_concurrent_threads_lose_no_outcome() -> None:
    threads, per_thread = 8, 2000
    size = threads * per_thread
    breaker = CircuitBreaker("t", BreakerConfig(sliding_window_size=size, minimum_number_of_calls=size))
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        start.wait()
        for n in range(per_thread):
            permit = breaker.acquire()
            if (n + i) % 4 == 0:
                permit.failure(0.0)
            else:
                permit.success(0.0)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    snap = breaker.snapshot()
    assert snap["buffered_calls"] == threads * per_thread
    assert snap["failed_calls"] == threads * per_thread // 4
    assert snap["failure_rate"] == 25.0


def test_concurrent_threads_get_exactly_n_half_open_permits() -> None:
    breaker, clock = make(FakeClock(yield_thread=True), permitted_calls_in_half_open=3)
    trip(breaker)
    clock.advance(30)
    callers = 32
    start = threading.Barrier(callers)
    admitted: list[object] = []
    rejected: list[object] = []
    lock = threading.Lock()

    def caller() -> None:
        start.wait()
        try:
            permit = breaker.acquire()
        except BreakerOpen as exc:
            with lock:
                rejected.append(exc)
        else:
            with lock:
                admitted.append(permit)

    pool = [threading.Thread(target=caller) for _ in range(callers)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert (len(admitted), len(rejected)) == (3, callers - 3)
    assert breaker.snapshot()["not_permitted_calls"] == callers - 3
