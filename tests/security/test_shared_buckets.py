"""Rate limits of a node with workers are the node's: buckets in memory every worker maps.

Unit tests of ``shared_buckets.py`` (a fake clock, real processes on one file),
then a real ``syncbus run --workers 2`` whose connections land on both workers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from syncbus.ingress.security.ratelimit import KeyedLimiter, RateBucket
from syncbus.ingress.security.shared_buckets import SharedBuckets, node_buckets
from syncbus.workers import ENV_NODE_DIR
from tests.e2e.harness import wait_until
from tests.security.node import SecureNode, write_secure_config


def test_a_shared_bucket_refuses_with_the_wait_like_a_local_one(tmp_path: Path) -> None:
    now = [100.0]
    shared = SharedBuckets(tmp_path / "b")
    bucket = RateBucket(2.0, clock=lambda: now[0], shared=shared, key="source:crm")
    twin = RateBucket(2.0, clock=lambda: now[0], shared=SharedBuckets(tmp_path / "b"), key="source:crm")
    assert bucket.take() == 0 and twin.take() == 0          # one bucket of 2, seen through two mappings
    assert bucket.take() == pytest.approx(0.5) and twin.take() == pytest.approx(0.5)
    now[0] += 0.5
    assert twin.take() == 0 and bucket.take() > 0
    other = RateBucket(2.0, clock=lambda: now[0], shared=shared, key="source:hr")
    assert other.take() == 0                                # another key, another bucket


def test_keyed_limiter_on_shared_buckets_is_per_key(tmp_path: Path) -> None:
    now = [0.0]
    limiter = KeyedLimiter(1.0, clock=lambda: now[0], shared=SharedBuckets(tmp_path / "b"), prefix="admin:")
    assert limiter.take("a") == 0 and limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0
    now[0] += 1.0
    assert limiter.take("a") == 0


def test_a_full_table_takes_over_the_row_refilled_longest_ago(tmp_path: Path) -> None:
    table = SharedBuckets(tmp_path / "b", slots=2)
    assert table.take("a", 1.0, 1.0, now=0.0) == 0 and table.take("a", 1.0, 1.0, now=0.1) > 0
    assert table.take("b", 1.0, 1.0, now=0.2) == 0 and table.take("b", 1.0, 1.0, now=0.3) > 0
    assert table.take("c", 1.0, 1.0, now=0.4) == 0          # takes "a"'s row: "a" refilled longest ago
    assert table.take("b", 1.0, 1.0, now=0.5) > 0           # "b" kept its (empty) bucket
    assert table.take("a", 1.0, 1.0, now=0.6) == 0          # "a" was forgotten: a full bucket again


def test_level_peeks_and_forget_refills_in_a_file_or_in_memory(tmp_path: Path) -> None:
    for table in (SharedBuckets(tmp_path / "b"), SharedBuckets(None)):
        assert table.level("login:a", 0.5, 2.0, now=0.0) == 2.0          # a new key: full, nothing taken
        table.take("login:a", 0.5, 2.0, now=0.0)
        table.take("login:a", 0.5, 2.0, now=0.0)
        assert table.level("login:a", 0.5, 2.0, now=0.0) == 0.0
        assert table.level("login:a", 0.5, 2.0, now=1.0) == pytest.approx(0.5)  # refilling
        table.forget("login:a")
        assert table.level("login:a", 0.5, 2.0, now=1.0) == 2.0
        table.forget("login:never-seen")                                   # nothing to forget: no error


def test_two_workers_see_the_same_login_failures(tmp_path: Path) -> None:
    from syncbus.console.sessions import LoginThrottle

    now = [0.0]
    mine, theirs = (LoginThrottle(clock=lambda: now[0], window=300, limit=3, table=SharedBuckets(tmp_path / "b"))
                    for _ in range(2))
    mine.failed("10.0.0.1")
    theirs.failed("10.0.0.1")
    assert not mine.blocked("10.0.0.1")
    theirs.failed("10.0.0.1")
    assert mine.blocked("10.0.0.1") and theirs.blocked("10.0.0.1") and not mine.blocked("10.0.0.2")
    now[0] += 100                                                          # one failure's worth refilled
    assert not mine.blocked("10.0.0.1")
    theirs.failed("10.0.0.1")
    assert mine.blocked("10.0.0.1")


def test_one_mapping_per_process_and_none_without_workers(tmp_path: Path) -> None:
    assert node_buckets({}) is None
    env = {ENV_NODE_DIR: str(tmp_path)}
    assert node_buckets(env) is node_buckets(dict(env)) is not None
    assert (tmp_path / "rate_limits").stat().st_size > 0


_HAMMER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from syncbus.ingress.security.shared_buckets import SharedBuckets
    table = SharedBuckets(Path(sys.argv[1]))
    start = float(sys.argv[2])
    while time.monotonic() < start:
        time.sleep(0.001)
    granted = 0
    while time.monotonic() < start + 1.0:
        granted += table.take("source:limited", 50.0, 50.0, time.monotonic()) == 0
    print(granted)
    """)


def test_processes_on_one_file_share_one_budget(tmp_path: Path) -> None:
    """Three processes take as fast as they can for one second: together they get one bucket's worth."""
    start = time.monotonic() + 3.0  # all three have started (imports take a while on a busy machine)
    procs = [subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path / "b"), repr(start)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    granted = [int(p.communicate(timeout=30)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # one bucket: 50 at once, then 50 per second (each process alone would get the same, so 3x on its own)
    assert 95 <= sum(granted) <= 102, granted
    assert all(g > 0 for g in granted), granted


# -- a real node with two workers -------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[SecureNode]:
    root = write_secure_config(tmp_path, rate="5/s")
    node = SecureNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db",
                      extra_args=["--workers", "2"],
                      extra_env={"SYNCBUS_ADMIN_KEYS": "ops:ops-key-81c2", "SYNCBUS_ADMIN_RATE_LIMIT": "4/s"})
    node.start()
    # /readyz answers once worker 0 listens; the start-up line comes once both do
    assert node.log is not None
    wait_until(lambda: "routes, bus " in node.log.read_text("utf-8", "replace"), timeout=60, what="both workers")
    yield node
    assert node.stop() == 0, node.tail()


def _burst(node: SecureNode, path: str, n: int, headers: dict[str, str] | None = None) -> tuple[list[int], float]:
    """``n`` requests, each on a new connection (so the kernel spreads them over the workers)."""
    started = time.monotonic()
    codes = []
    for i in range(n):
        with httpx.Client(base_url=node.url, timeout=10, headers=headers) as client:
            if path.startswith("/ingress/"):
                codes.append(client.post(path, json={"order_id": f"W{i}"}).status_code)
            else:
                codes.append(client.get(path).status_code)
    return codes, time.monotonic() - started


def test_a_source_limit_holds_for_the_node_not_for_each_worker(two_workers: SecureNode) -> None:
    codes, took = _burst(two_workers, "/ingress/limited", 60)
    accepted = codes.count(202)
    assert set(codes) <= {202, 429}, codes
    # 5 at once and 5 per second for the node; each worker on its own would let about twice that through
    assert 5 <= accepted <= 5 + 5 * took + 1, (accepted, took)
    assert two_workers.metric("syncbus_ingress_rejected_total", source="limited", reason="rate_limited") \
        == codes.count(429)


def test_an_admin_key_limit_holds_for_the_node(two_workers: SecureNode) -> None:
    codes, took = _burst(two_workers, "/ledger", 40, headers={"X-API-Key": "ops-key-81c2"})
    allowed = sum(c == 200 for c in codes)
    assert set(codes) <= {200, 429}, codes
    assert 4 <= allowed <= 4 + 4 * took + 1, (allowed, took)
