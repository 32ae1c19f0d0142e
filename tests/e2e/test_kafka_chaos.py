"""Kafka that recovers by itself (issue 6 item 10): kill -9 the broker under load, many times in a row.

A real `syncbus run` node takes orders through its ingress while the broker is
killed with SIGKILL and restarted on the same ports and data. Each round checks
what used to go wrong (3 of 51 runs): commits frozen after the restart, an
expelled member consuming on, ~900 orders delivered twice after the next node
restart, ingress holding requests for 16 s, 4,400 aiokafka ERROR lines.

Rounds: ``SYNCBUS_CHAOS_ROUNDS`` (default 3, as in CI; 20 passed in a row locally).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.harness import Node, order, wait_until
from tests.sinks.target_server import TargetServer
from tests.support.kafka import KafkaBroker, committed, end_offsets

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROUNDS = int(os.environ.get("SYNCBUS_CHAOS_ROUNDS", "3"))
PUBLISH_TIMEOUT = 3.0
MAX_IN_FLIGHT = 100
PARTITIONS = 4  # what the router's ensure_topics creates (DEFAULT_PARTITIONS)
AIOKAFKA_LINE = re.compile(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) aiokafka[\w.]*: ")
LATE_WRITES = re.compile(r"(\d+) record\(s\) whose publish had timed out .* were written after all")


@pytest.fixture
def bus_url(kafka_broker: KafkaBroker) -> str:
    """The node's bus: our restartable broker, with the publish timeout set through the URL."""
    return f"kafka://{kafka_broker.bootstrap}?publish_timeout={PUBLISH_TIMEOUT:g}s"


@dataclass
class Response:
    started: float
    seconds: float
    status: int            # 0: no HTTP answer (node down)
    retry_after: str | None = None


@dataclass
class Client:
    """One client posting orders as fast as the node takes them; retries what was refused, as clients do."""

    node: Node
    accepted: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Client:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self._post_all()
        except BaseException as exc:  # fails the test instead of becoming a thread warning
            self.errors.append(exc)

    def _post_all(self) -> None:
        i = 0
        with httpx.Client(timeout=30) as http:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    r = self.node.post(http, order(i, seq=i))
                except httpx.HTTPError:
                    self.responses.append(Response(started, time.monotonic() - started, 0))
                    time.sleep(0.2)
                    continue
                self.responses.append(Response(started, time.monotonic() - started, r.status_code,
                                               r.headers.get("retry-after")))
                if r.status_code == 202:
                    self.accepted.append(r.json()["id"])
                    i += 1
                elif r.status_code == 503:
                    time.sleep(0.2)
                else:
                    raise AssertionError(f"unexpected answer {r.status_code}: {r.text[:200]}")
                time.sleep(0.002)

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(60)
        assert not self.thread.is_alive(), "the client thread hangs"
        assert not self.errors, self.errors


def delivered(target: TargetServer) -> Counter[str]:
    """Record ids the target accepted, from the idempotency key ``<route>:<key>:<record id>``."""
    return Counter((r.header("idempotency-key") or "").rsplit(":", 1)[-1] for r in target.requests if r.status < 300)


def log_lines(node: Node) -> list[str]:
    assert node.log is not None
    return node.log.read_text("utf-8", "replace").splitlines()


def total(offsets: dict[int, int] | None) -> int:
    return -1 if offsets is None else sum(max(0, o) for o in offsets.values())


@pytest.fixture
def node(make_node) -> Iterator[Node]:
    # One process: each state change is then exactly one line (every worker process logs its own).
    yield make_node(extra_args=["--max-in-flight", str(MAX_IN_FLIGHT), "--workers", "1"])


@pytest.mark.parametrize("round_no", range(ROUNDS))
def test_broker_kill9_under_load_recovers_by_itself(round_no: int, node: Node, kafka_broker: KafkaBroker,
                                                     target: TargetServer, suffix: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap = kafka_broker.bootstrap
    topic, group = f"e2e.orders{suffix}", f"syncbus.orders-to-erp{suffix}"
    client = Client(node).start()
    try:
        wait_until(lambda: len(client.accepted) >= 300 and len(delivered(target)) >= 200, timeout=60,
                   what="the stream running")

        # -- the broker dies ---------------------------------------------------------------------
        mark = len(log_lines(node))
        killed = time.monotonic()
        kafka_broker.kill9()
        wait_until(lambda: sum(1 for r in client.responses if r.started > killed and r.status == 503) >= 3,
                   timeout=20, what="ingress refusing while the broker is down")
        kafka_broker.start()
        up = time.monotonic()
        outage = up - killed

        # -- commits resume: everything on the log when the broker came back gets committed -------
        ends_at_up = end_offsets(bootstrap, topic, PARTITIONS, timeout=20)
        assert ends_at_up is not None

        def caught_up() -> bool:
            got = committed(bootstrap, group, topic, PARTITIONS)
            return got is not None and all(got[p] >= ends_at_up[p] for p in range(PARTITIONS))

        wait_until(caught_up, timeout=45, interval=0.5, what="commits caught up after the restart")
        resumed = time.monotonic() - up
        outage_log = log_lines(node)[mark:]

        # -- ingress answered 503 quickly, not after 16 s ---------------------------------------------
        during = [r for r in client.responses if killed - 1 <= r.started <= up]
        refused = [r for r in during if r.status == 503]
        assert refused and all(r.retry_after for r in refused)
        slowest = max(r.seconds for r in during)
        assert slowest <= PUBLISH_TIMEOUT + 1.5, f"a request took {slowest:.1f}s during the outage"

        # -- a handful of log lines, one per state change -------------------------------------------------
        noise = [line for line in outage_log if AIOKAFKA_LINE.match(line)]
        assert len(noise) < 50, "\n".join(noise[:60])
        text = "\n".join(outage_log)
        assert text.count("broker unreachable") == 1 and text.count("broker reachable again") == 1, text[-3000:]

        # -- the node is killed mid-stream later: only what was in flight comes again --------------------
        accepted_before = len(client.accepted)
        wait_until(lambda: len(client.accepted) >= accepted_before + 300, timeout=60, what="the stream after")
        node.kill9()
        node.start()
        wait_until(lambda: len(client.accepted) >= accepted_before + 600, timeout=90, what="the stream after restart")
    finally:
        client.finish()

    accepted = set(client.accepted)
    wait_until(lambda: accepted <= set(delivered(target)), timeout=120, what="every accepted order delivered")
    got = delivered(target)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    # Delivered but never accepted: published although the client was told 503 (the idempotent producer wrote
    # them once the broker was back; the node must say so), or published just before the node was killed
    # (the client got no answer at all).
    late = set(got) - accepted
    reported = sum(int(m.group(1)) for m in LATE_WRITES.finditer("\n".join(log_lines(node))))
    unanswered = sum(1 for r in client.responses if r.status == 0)
    with capsys.disabled():
        print(f"\n[round {round_no}] outage {outage:.1f}s, commits caught up {resumed:.1f}s after the broker was "
              f"back, slowest ingress answer {slowest:.1f}s, {len(noise)} aiokafka lines, "
              f"{len(accepted)} accepted, {duplicates} delivered twice, {len(late)} late writes")
    assert resumed <= 30, "\n".join(line for line in outage_log if "syncbus.bus.kafka" in line)
    assert len(late) <= reported + unanswered, (len(late), reported, unanswered)
    # In flight at the broker kill (fenced after the session timeout, redelivered after the rejoin) and at the
    # node kill, each at most max_in_flight, plus what finished in the last commit interval (0.2 s) before each.
    assert duplicates <= 3 * MAX_IN_FLIGHT, duplicates
