"""The routes page's numbers from a real metrics registry: p95 from the histogram, rates from samples."""

from __future__ import annotations

import math

import pytest

from syncbus.console.metrics_view import RateTracker, histogram_quantile, route_rows
from syncbus.metrics import Metrics


def test_histogram_quantile_interpolates_like_promql():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.95, {1.0: 0.0, math.inf: 10.0}) == 1.0       # only above the last bound
    assert histogram_quantile(0.95, {1.0: 0.0, math.inf: 0.0}) is None


def test_route_rows_from_a_real_registry():
    m = Metrics()
    m.set_route("orders", 3, "sales-ops")
    m.set_route("idle", 1, "hr")
    for seconds in [0.02] * 90 + [0.4] * 10:
        m.duration_for("orders", "erp").observe(seconds)
    m.delivered_for("orders", "erp").inc(100)
    m.attempts_for("orders", "erp", "retryable").inc(4)
    m.attempts_for("orders", "erp", "permanent").inc(1)
    m.attempts_for("orders", "erp", "ok").inc(100)
    m.dead_for("orders", "delivery").inc(1)
    m.consumer_lag.labels("orders", "crm.orders").set(7)
    m.dead_letters_pending.labels("orders").set(1)
    m.last_success_for("orders").set(1_790_000_000)
    now = [0.0]
    rates = RateTracker(clock=lambda: now[0])
    rows = {r.route: r for r in route_rows(m.registry, {"orders": (3, "sales-ops"), "idle": (1, "hr")}, rates)}
    orders = rows["orders"]
    assert (orders.owner, orders.version, orders.delivered) == ("sales-ops", "3", 100)
    assert (orders.failed_attempts, orders.dead_lettered, orders.lag, orders.pending) == (5, 1, 7, 1)
    assert orders.last_success == 1_790_000_000
    assert orders.p95_seconds is not None and 0.25 < orders.p95_seconds <= 0.5
    assert orders.per_minute is None                               # one sample: no rate yet
    assert rows["idle"].p95_seconds is None and rows["idle"].lag is None
    now[0] = 30.0
    m.delivered_for("orders", "erp").inc(60)
    rows = {r.route: r for r in route_rows(m.registry, {"orders": (3, "sales-ops")}, rates)}
    assert rows["orders"].per_minute == pytest.approx(120.0)       # 60 in 30 s
    assert rows["idle"].per_minute == pytest.approx(0.0)           # still in the metrics
