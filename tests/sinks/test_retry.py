"""The retry policy: how many tries, how long between them, what counts as permanent."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError

from syncbus.errors import DeliveryError
from syncbus.sinks.retry import DeliveryFailed, RetryPolicy, RetrySpec


class Sleeps:
    """A fake sleep that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(*errors: BaseException | None) -> tuple[Callable[[], Awaitable[None]], list[int]]:
    """An attempt that raises the given errors in turn (None = succeed); counts its calls."""
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        error = errors[min(len(calls), len(errors)) - 1]
        if error is not None:
            raise error

    return attempt, calls


def retryable(msg: str = "HTTP 503", retry_after: float | None = None) -> DeliveryError:
    return DeliveryError(msg, retryable=True, retry_after=retry_after, status=503)


def permanent(msg: str = "HTTP 400") -> DeliveryError:
    return DeliveryError(msg, retryable=False, status=400)


# ----------------------------------------------------------------------------- spec


def test_spec_defaults_match_the_design() -> None:
    spec = RetrySpec()
    assert (spec.attempts, spec.backoff, spec.initial, spec.max, spec.jitter) == (4, "exponential", 0.5, 30.0, True)


def test_spec_parses_durations() -> None:
    spec = RetrySpec.model_validate({"attempts": 2, "backoff": "fixed", "initial": "250ms", "max": "1m"})
    assert (spec.attempts, spec.backoff, spec.initial, spec.max) == (2, "fixed", 0.25, 60.0)


@pytest.mark.parametrize(("data", "loc"), [
    ({"attempts": 0}, ("attempts",)),
    ({"backoff": "linear"}, ("backoff",)),
    ({"initial": "soon"}, ("initial",)),
    ({"tries": 3}, ("tries",)),
    ({"initial": "10s", "max": "1s"}, ()),
])
def test_spec_refuses(data: dict[str, object], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        RetrySpec.model_validate(data)
    assert info.value.errors()[0]["loc"] == loc


# ----------------------------------------------------------------------------- run


async def test_first_try_succeeds() -> None:
    sleeps = Sleeps()
    attempt, calls = failing(None)
    outcomes: list[str] = []
    n = await RetryPolicy(RetrySpec(), sleep=sleeps).run(attempt, lambda o, d, e: outcomes.append(o))
    assert (n, len(calls), outcomes, sleeps.waits) == (1, 1, ["ok"], [])


async def test_retryable_then_ok_reports_every_attempt() -> None:
    sleeps = Sleeps()
    attempt, calls = failing(retryable(), retryable(), None)
    seen: list[tuple[str, float, BaseException | None]] = []
    n = await RetryPolicy(RetrySpec(), sleep=sleeps).run(attempt, lambda o, d, e: seen.append((o, d, e)))
    assert n == 3 == len(calls)
    assert [o for o, _, _ in seen] == ["retryable", "retryable", "ok"]
    assert all(d >= 0 for _, d, _ in seen)
    assert isinstance(seen[0][2], DeliveryError) and seen[2][2] is None
    assert len(sleeps.waits) == 2


async def test_permanent_error_fails_fast() -> None:
    sleeps = Sleeps()
    attempt, calls = failing(permanent("HTTP 400 from http://erp/orders: bad VBELN"))
    outcomes: list[str] = []
    with pytest.raises(DeliveryFailed) as info:
        await RetryPolicy(RetrySpec(), sleep=sleeps).run(attempt, lambda o, d, e: outcomes.append(o))
    failed = info.value
    assert (failed.attempts, failed.permanent, len(calls), outcomes, sleeps.waits) == (1, True, 1, ["permanent"], [])
    assert failed.last_error.status == 400
    assert failed.reason == "permanent error after 1 attempt: HTTP 400 from http://erp/orders: bad VBELN"
    assert str(failed) == failed.reason


@pytest.mark.parametrize("attempts", [1, 2, 4])
async def test_exhausted_after_exactly_attempts(attempts: int) -> None:
    sleeps = Sleeps()
    attempt, calls = failing(retryable("HTTP 503 from http://erp"))
    outcomes: list[str] = []
    with pytest.raises(DeliveryFailed) as info:
        await RetryPolicy(RetrySpec(attempts=attempts), sleep=sleeps).run(
            attempt, lambda o, d, e: outcomes.append(o))
    assert len(calls) == attempts == info.value.attempts
    assert outcomes == ["retryable"] * attempts
    assert len(sleeps.waits) == attempts - 1
    assert not info.value.permanent
    assert info.value.reason.startswith(f"gave up after {attempts} attempt")


async def test_retryable_then_permanent_stops() -> None:
    attempt, calls = failing(retryable(), permanent())
    with pytest.raises(DeliveryFailed) as info:
        await RetryPolicy(RetrySpec(), sleep=Sleeps()).run(attempt)
    assert len(calls) == 2 and info.value.attempts == 2 and info.value.permanent


async def test_a_bug_in_the_sink_is_a_permanent_failure_not_a_crash() -> None:
    attempt, calls = failing(KeyError("VBELN"))
    seen: list[tuple[str, BaseException | None]] = []
    with pytest.raises(DeliveryFailed) as info:
        await RetryPolicy(RetrySpec(), sleep=Sleeps()).run(attempt, lambda o, d, e: seen.append((o, e)))
    assert len(calls) == 1 and info.value.permanent
    assert str(info.value.last_error) == "KeyError: 'VBELN'"
    assert isinstance(info.value.last_error.__cause__, KeyError)
    assert seen[0][0] == "permanent" and isinstance(seen[0][1], DeliveryError)


async def test_a_failing_metrics_hook_does_not_change_the_outcome() -> None:
    def broken_hook(outcome: str, duration: float, error: BaseException | None) -> None:
        raise RuntimeError("metrics down")

    attempt, _ = failing(retryable(), None)
    assert await RetryPolicy(RetrySpec(), sleep=Sleeps()).run(attempt, broken_hook) == 2


async def test_cancellation_passes_through() -> None:
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(RetryPolicy(RetrySpec()).run(attempt))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_concurrent_runs_do_not_share_state() -> None:
    """tenacity keeps iteration state on the retrying object; runs must not trip over each other."""
    policy = RetryPolicy(RetrySpec(attempts=3, initial=0.001, max=0.002))

    async def one(i: int) -> int:
        attempt, _ = failing(*([retryable()] * (i % 3)), None)
        return await policy.run(attempt)

    results = await asyncio.gather(*(one(i) for i in range(30)))
    assert results == [i % 3 + 1 for i in range(30)]


# ----------------------------------------------------------------------------- waits


async def test_exponential_without_jitter_doubles_up_to_max() -> None:
    sleeps = Sleeps()
    attempt, _ = failing(retryable())
    spec = RetrySpec(attempts=7, initial=0.5, max=4.0, jitter=False)
    with pytest.raises(DeliveryFailed):
        await RetryPolicy(spec, sleep=sleeps).run(attempt)
    assert sleeps.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_full_jitter_stays_between_zero_and_the_step() -> None:
    spec = RetrySpec(initial=0.5, max=4.0)
    calls: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        calls.append((low, high))
        return high

    policy = RetryPolicy(spec, uniform=uniform)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert calls == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 4.0)]
    real = RetryPolicy(spec)
    samples = [real.delay(3) for _ in range(200)]
    assert all(0.0 <= s <= 2.0 for s in samples)
    assert len(set(samples)) > 100  # really random


def test_fixed_backoff() -> None:
    assert RetryPolicy(RetrySpec(backoff="fixed", initial=2, jitter=False)).delay(5) == 2.0
    jittered = [RetryPolicy(RetrySpec(backoff="fixed", initial=2)).delay(n) for n in range(1, 50)]
    assert all(1.0 <= w <= 2.0 for w in jittered)


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert RetryPolicy(RetrySpec(jitter=False)).delay(5000) == 30.0


async def test_retry_after_wins_and_is_capped_at_max() -> None:
    sleeps = Sleeps()
    attempt, _ = failing(retryable(retry_after=3.0), retryable(retry_after=120.0), retryable(retry_after=0), None)
    await RetryPolicy(RetrySpec(initial=0.5, max=30.0, jitter=False), sleep=sleeps).run(attempt)
    assert sleeps.waits == [3.0, 30.0, 0.0]


async def test_real_delays() -> None:
    """With the real sleep: initial 10ms, no jitter -> 10 + 20 + 40 ms between the four tries."""
    stamps: list[float] = []

    async def attempt() -> None:
        stamps.append(time.monotonic())
        raise retryable()

    with pytest.raises(DeliveryFailed):
        await RetryPolicy(RetrySpec(attempts=4, initial="10ms", max="1s", jitter=False)).run(attempt)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, [0.010, 0.020, 0.040], strict=True):
        assert expected - 0.002 <= gap < expected + 0.5


async def test_real_delays_with_jitter_stay_bounded() -> None:
    stamps: list[float] = []

    async def attempt() -> None:
        stamps.append(time.monotonic())
        raise retryable()

    started = time.monotonic()
    with pytest.raises(DeliveryFailed):
        await RetryPolicy(RetrySpec(attempts=4, initial="10ms", max="20ms")).run(attempt)
    assert len(stamps) == 4
    assert time.monotonic() - started < 0.05 + 0.5  # at most 10+20+20 ms of waits, plus scheduling slack
