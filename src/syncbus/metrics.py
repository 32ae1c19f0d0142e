"""Prometheus metrics, exactly the names and labels of DESIGN §8.

One ``Metrics`` object per running bus, each with its own registry, so tests
(and a process embedding two buses) never collide on the global registry.
Label children are cached per (route, sink) because ``.labels()`` costs a few
microseconds and runs for every record.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        if registry is None:  # issue 9: process_* (CPU, RSS, fds, start time), python_info, python_gc_*;
            # read from /proc and gc.get_stats() at scrape time only. A registry passed in may have them.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.received = Counter("syncbus_records_received", "Records accepted onto the bus, per source.",
                                ["source"], registry=r)
        self.skipped = Counter("syncbus_records_skipped", "Records filtered out by a route's `when`.",
                               ["route"], registry=r)
        self.delivered = Counter("syncbus_records_delivered", "Records delivered to a sink.",
                                 ["route", "sink"], registry=r)
        self.attempts = Counter("syncbus_delivery_attempts", "Delivery attempts by outcome.",
                                ["route", "sink", "outcome"], registry=r)
        self.dead_letters = Counter("syncbus_dead_letters", "Records dead-lettered, by reason.",
                                    ["route", "reason"], registry=r)
        self.dead_letters_pending = Gauge("syncbus_dead_letters_pending", "Dead letters awaiting action.",
                                          ["route"], registry=r)
        self.delivery_duration = Histogram("syncbus_delivery_duration_seconds",
                                           "Time of one delivery attempt.", ["route", "sink"],
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("syncbus_end_to_end_seconds", "Received at ingress to delivered.",
                                    ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("syncbus_consumer_lag", "Records on the bus not yet done by a route.",
                                  ["route", "topic"], registry=r)
        self.route_info = Gauge("syncbus_route_info", "Loaded routes (value 1).",
                                ["route", "version", "owner"], registry=r)
        self.last_success = Gauge("syncbus_last_success_timestamp_seconds",
                                  "Unix time of the route's last successful delivery.", ["route"], registry=r)
        self.ingress_rejected = Counter("syncbus_ingress_rejected", "Ingress requests refused, by reason.",
                                        ["source", "reason"], registry=r)
        self.duplicates_dropped = Counter("syncbus_duplicates_dropped", "Records dropped as duplicates by key.",
                                          ["route"], registry=r)
        self.config_reload_failures = Counter("syncbus_config_reload_failures",
                                              "Config reloads refused (the old version keeps running).",
                                              registry=r)
        self.shadow_results = Counter("syncbus_shadow_results", "Shadow route outputs compared with the live route.",
                                      ["route", "outcome"], registry=r)
        # Not in DESIGN §8 but needed by the shipped alerts: the bus reachable (1/0), and a route whose
        # offset commits have not succeeded for a while although it has finished records (1/0).
        self.bus_up = Gauge("syncbus_bus_up", "1 when the bus answered the last health check, else 0.",
                            registry=r)
        self.commit_stalled = Gauge("syncbus_commit_stalled", "1 while a route's offset commits keep failing.",
                                    ["route"], registry=r)
        self.source_up = Gauge("syncbus_source_up", "1 when a poll source's last run succeeded, else 0.",
                               ["source"], registry=r)
        self.oldest_pending = Gauge("syncbus_dead_letter_oldest_pending_timestamp_seconds",
                                    "Unix time the oldest pending dead letter of the route first failed.",
                                    ["route"], registry=r)
        self._route_info_labels: dict[str, tuple[str, str, str]] = {}
        # cached children: .labels() is too slow to call per record
        self.received_for = cache(lambda source: self.received.labels(source))
        self.skipped_for = cache(lambda route: self.skipped.labels(route))
        self.delivered_for = cache(lambda route, sink: self.delivered.labels(route, sink))
        self.attempts_for = cache(lambda route, sink, outcome: self.attempts.labels(route, sink, outcome))
        self.duration_for = cache(lambda route, sink: self.delivery_duration.labels(route, sink))
        self.e2e_for = cache(lambda route: self.end_to_end.labels(route))
        self.dead_for = cache(lambda route, reason: self.dead_letters.labels(route, reason))
        self.last_success_for = cache(lambda route: self.last_success.labels(route))
        self.duplicates_dropped_for = cache(lambda route: self.duplicates_dropped.labels(route))
        self.rejected_for = cache(lambda source, reason: self.ingress_rejected.labels(source, reason))

    def set_route(self, route: str, version: int, owner: str) -> None:
        """Publish route info; a reload with a new version replaces the old series."""
        old = self._route_info_labels.get(route)
        new = (route, str(version), owner)
        if old and old != new:
            self.route_info.remove(*old)
        self.route_info.labels(*new).set(1)
        self._route_info_labels[route] = new

    def remove_route(self, route: str) -> None:
        """A route that no longer runs here must not keep reporting (reload, rebalance)."""
        old = self._route_info_labels.pop(route, None)
        if old:
            self.route_info.remove(*old)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float:
        """A sample's current value (tests and the CLI read metrics without HTTP)."""
        got = self.registry.get_sample_value(name, {k: str(v) for k, v in (labels or {}).items()})
        return got or 0.0
