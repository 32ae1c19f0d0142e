"""The needs-fix guard (which replays would fail the same way) and the replay token bucket."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from syncbus.dlq.policy import replay_blocker
from syncbus.dlq.ratelimit import RateError, TokenBucket, parse_rate
from syncbus.state.models import utcnow
from tests.dlq.conftest import make_letter


@pytest.mark.parametrize("reason", ["schema", "mapping", "decode"])
def test_unfixed_schema_mapping_and_decode_failures_are_blocked(store, reason: str):
    dl_id = store.add(make_letter(1, reason=reason, version=3))
    blocker = replay_blocker(store, store.get(dl_id), {"orders": 3})
    assert blocker is not None and blocker.reason == reason
    text = blocker.explain("--force")
    assert dl_id in text and "still runs mapping version 3" in text and text.endswith("with --force.")


def test_delivery_failures_are_never_blocked(store):
    dl_id = store.add(make_letter(1, reason="delivery"))
    assert replay_blocker(store, store.get(dl_id), {}) is None


def test_a_newer_mapping_version_unblocks(store):
    dl_id = store.add(make_letter(1, reason="mapping", version=3))
    assert replay_blocker(store, store.get(dl_id), {"orders": 4}) is None
    unknown = replay_blocker(store, store.get(dl_id), {})
    assert unknown is not None and "not loaded here" in unknown.explain("x")


def test_an_edit_after_the_failure_unblocks_but_a_later_failure_blocks_again(store):
    failed = utcnow() - timedelta(minutes=5)
    dl_id = store.add(make_letter(1, reason="mapping", at=failed))
    store.edit(dl_id, b'{"order_id": "SO-1", "amount": 1}', "alice", "typo")
    assert replay_blocker(store, store.get(dl_id), {"orders": 1}) is None
    # the same record fails again while the letter is pending (re-processed after a crash): merged,
    # with a later failure time -- the edit no longer counts
    again = make_letter(1, reason="mapping", at=utcnow() + timedelta(seconds=1))
    assert store.add(again) == dl_id
    assert replay_blocker(store, store.get(dl_id), {"orders": 1}) is not None


@pytest.mark.parametrize(("text", "per_second"), [("50/s", 50.0), ("600/m", 10.0), ("3600/h", 1.0), ("2.5", 2.5),
                                                  ("120 / min", 2.0)])
def test_parse_rate(text: str, per_second: float):
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["0/s", "fast", "-1/s", "10/d", "1e9/s"])
def test_bad_rates_are_refused(text: str):
    with pytest.raises(RateError):
        parse_rate(text)


async def test_token_bucket_spaces_acquisitions_on_a_fake_clock():
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(10.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(6):
        await bucket.acquire()
    # two from the burst, then one every 0.1 s
    assert now[0] == pytest.approx(0.4)
    assert len(slept) == 4


async def test_token_bucket_holds_the_rate_in_real_time():
    bucket = TokenBucket(40.0)          # burst 4
    started = time.monotonic()
    for _ in range(24):
        await bucket.acquire()
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, elapsed   # (24 - 4) / 40 = 0.5 s
    await asyncio.sleep(0)
