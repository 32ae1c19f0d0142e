"""The routes page's numbers, read straight from the node's metrics registry (no Prometheus needed).

The console must work where nobody has set up Prometheus yet, so it reads the
same samples ``/metrics`` exposes: route info (owner, version), delivered and
failed counts, the delivery-duration histogram (p95, interpolated within a
bucket the way PromQL's ``histogram_quantile`` does), consumer lag, pending
dead letters and the last success time. A counter gives totals only; the
rate per minute comes from samples this module keeps over the last minutes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

RATE_WINDOW = 60.0        # delivered/min is measured over (up to) the last minute…
MIN_RATE_SPAN = 5.0       # …but over at least this long, or it is not shown
KEEP_SAMPLES = 600.0


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile from cumulative bucket counts ``{upper bound: count}`` (``inf`` included); None if empty."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower            # above the largest finite bound: that bound is all we know
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


@dataclass
class RouteRow:
    """One line of the routes page."""

    route: str
    owner: str = ""
    version: str = ""
    delivered: float = 0.0
    per_minute: float | None = None
    failed_attempts: float = 0.0
    dead_lettered: float = 0.0
    p95_seconds: float | None = None
    lag: float | None = None
    pending: float = 0.0
    last_success: float | None = None


def _samples(registry: Any) -> Iterable[tuple[str, dict[str, str], float]]:
    for metric in registry.collect():
        for sample in metric.samples:
            yield sample.name, dict(sample.labels), float(sample.value)


def delivered_by_route(registry: Any) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, labels, value in _samples(registry):
        if name == "syncbus_records_delivered_total":
            out[labels.get("route", "")] += value
    return dict(out)


class RateTracker:
    """Delivered-count samples per route over the last minutes → records delivered per minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, dict[str, float]]] = deque()
        self._lock = threading.Lock()

    def sample(self, counts: Mapping[str, float]) -> None:
        now = self._clock()
        with self._lock:
            self._samples.append((now, dict(counts)))
            while self._samples and now - self._samples[0][0] > KEEP_SAMPLES:
                self._samples.popleft()

    def per_minute(self, counts: Mapping[str, float]) -> dict[str, float]:
        """Rates against the newest sample at least a minute old (or the oldest one, if that is ≥ 5 s old)."""
        now = self._clock()
        with self._lock:
            reference = None
            for at, old in self._samples:
                if now - at >= RATE_WINDOW or reference is None:
                    reference = (at, old)
            if reference is None or now - reference[0] < MIN_RATE_SPAN:
                return {}
            at, old = reference
        span = now - at
        return {route: max(0.0, n - old.get(route, 0.0)) * 60.0 / span for route, n in counts.items()}


def route_rows(registry: Any, routes: Mapping[str, tuple[int, str]], rates: RateTracker) -> list[RouteRow]:
    """Every route loaded (``routes``: name → (version, owner)) or seen in the metrics, sorted by name."""
    rows: dict[str, RouteRow] = {name: RouteRow(name, owner, str(version))
                                 for name, (version, owner) in routes.items()}
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    lag: dict[str, float] = defaultdict(float)

    def row(labels: dict[str, str]) -> RouteRow:
        name = labels.get("route", "")
        return rows.setdefault(name, RouteRow(name))

    for name, labels, value in _samples(registry):
        if name == "syncbus_route_info" and value:
            r = row(labels)
            r.owner, r.version = labels.get("owner", r.owner), labels.get("version", r.version)
        elif name == "syncbus_records_delivered_total":
            row(labels).delivered += value
        elif name == "syncbus_delivery_attempts_total" and labels.get("outcome") in ("retryable", "permanent"):
            row(labels).failed_attempts += value
        elif name == "syncbus_dead_letters_total":
            row(labels).dead_lettered += value
        elif name == "syncbus_delivery_duration_seconds_bucket":
            row(labels)
            buckets[labels.get("route", "")][float(labels.get("le", "inf"))] += value
        elif name == "syncbus_consumer_lag":
            row(labels)
            lag[labels.get("route", "")] += value
        elif name == "syncbus_dead_letters_pending":
            row(labels).pending = value
        elif name == "syncbus_last_success_timestamp_seconds" and value > 0:
            row(labels).last_success = value
    counts = {name: r.delivered for name, r in rows.items()}
    per_minute = rates.per_minute(counts)
    rates.sample(counts)
    for name, r in rows.items():
        r.per_minute = per_minute.get(name)
        r.p95_seconds = histogram_quantile(0.95, buckets[name]) if name in buckets else None
        r.lag = lag.get(name)
    return sorted(rows.values(), key=lambda r: r.route)
