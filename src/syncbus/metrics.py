"""Prometheus metrics, exactly the names and labels of DESIGN §8.

One ``Metrics`` object per running bus, each with its own registry, so tests
(and a process embedding two buses) never collide on the global registry.
Label children are cached per (route, sink) because ``.labels()`` costs a few
microseconds and runs for every record.

Workers (``syncbus run --workers N``, issue 11): the parent process sets
``PROMETHEUS_MULTIPROC_DIR`` for its workers, so every worker writes its
samples to files there and ``/metrics``, whichever worker answers it, shows
the node: counters and histograms summed over the workers, each gauge
combined as its meaning asks (``GAUGE_MODES``: the node's last success is the
latest of the workers', its dead-letter backlog the same number every worker
reads from the store). A reload happens in every worker, so its failures are
counted by worker 0 only.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

import orjson
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
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Workers write their samples to files in this folder (prometheus_client's multi-process mode).
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
# How each gauge of several workers combines ("live": only workers that are running count).
GaugeMode = Literal["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent",
                    "livemostrecent"]
GAUGE_MODES: dict[str, GaugeMode] = {
    "syncbus_dead_letters_pending": "livemax",    # every worker reads the same count from the store
    "syncbus_consumer_lag": "livesum",            # each worker its partitions (embedded bus: worker 0)
    "syncbus_last_success_timestamp_seconds": "max",
    "syncbus_bus_up": "livemin",                  # down for one worker: down
    "syncbus_commit_stalled": "livemax",
    "syncbus_source_up": "livemin",
    "syncbus_dead_letter_oldest_pending_timestamp_seconds": "livemax",
}


def _primary_worker() -> bool:
    """Not a worker, or worker 0 of ``syncbus run --workers N`` (``SYNCBUS_WORKER=i/N``)."""
    return os.environ.get("SYNCBUS_WORKER", "0/1").split("/", 1)[0] in ("", "0")


class _EveryFamily:
    """The workers' samples, plus HELP and TYPE of the metrics nobody has a sample of yet.

    One process lists every metric it defines, sample or not; the workers' files
    only hold metrics that were touched. A scrape (and the API spec's check of
    /metrics) must see the same names either way.
    """

    def __init__(self, collector: Any, local: CollectorRegistry, skip: tuple[str, ...]) -> None:
        self.collector = collector
        self.local = local
        self.skip = skip

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for family in self.collector.collect():
            seen.add(family.name)
            yield family
        for family in self.local.collect():
            if family.name not in seen and not family.name.startswith(self.skip):
                yield Metric(family.name, family.documentation, family.type)


class _NotCounted:
    """A counter that counts nothing: node-wide events every worker sees, counted by worker 0 only."""

    def inc(self, amount: float = 1) -> None:
        return None

    def labels(self, *args: Any, **kwargs: Any) -> _NotCounted:
        return self

class RouteInfo(Collector):
    """``syncbus_route_info`` from the routes that run now (issue 9, hot reload).

    A collector, not a Gauge: with workers (multi-process mode) a Gauge lives in
    files the workers share, and prometheus_client cannot remove a series from
    them, so a reloaded route kept showing its old version beside the new one.
    Instead each worker keeps its own list in ``route_info_<pid>.json`` there,
    and a scrape, whichever worker answers it, shows the union over the live
    workers: each worker reloads for itself (a file watcher each), so while
    a reload is half done the node runs both versions and shows both -- "only
    the new version" means every worker swapped.
    """

    def __init__(self, routes: dict[str, tuple[str, str, str]], folder: str | None = None) -> None:
        self.routes = routes  # route -> (route, version, owner), kept by Metrics.set_route/remove_route
        self.folder = folder

    def changed(self) -> None:
        """Publish this worker's list for the others' scrapes (written whole: a reader never sees half)."""
        if self.folder is None:
            return
        path = Path(self.folder) / f"route_info_{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(orjson.dumps(sorted(self.routes.values())))
            os.replace(tmp, path)

    def _node(self) -> set[tuple[str, str, str]]:
        rows = set(self.routes.values())
        if self.folder is None:
            return rows
        for path in Path(self.folder).glob("route_info_*.json"):
            pid = path.stem.rsplit("_", 1)[1]
            if not pid.isdigit() or int(pid) == os.getpid() or not os.path.exists(f"/proc/{pid}"):
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError, TypeError, ValueError):
                rows.update((str(r), str(v), str(o)) for r, v, o in orjson.loads(path.read_bytes()))
        return rows

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("syncbus_route_info", "Loaded routes (value 1).",
                                   labels=["route", "version", "owner"])
        for labels in sorted(self._node()):
            family.add_metric(list(labels), 1)
        yield family


class NodeProcesses(Collector):
    """``process_*`` of a node that runs as workers (issue 9): its live processes, combined.

    prometheus_client's ProcessCollector describes one process, and a scrape
    reaches whichever worker the kernel picks: CPU time would jump between
    workers. Here every live worker (one samples file per pid in the
    multi-process folder) and the parent are read from /proc and summed;
    the start time is the earliest, the descriptor limit the lowest.
    """

    _LOWEST = frozenset({"process_start_time_seconds", "process_max_fds"})

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def pids(self) -> list[int]:
        pids = {int(m[1]) for m in (re.search(r"_(\d+)\.db$", n) for n in os.listdir(self.folder)) if m}
        parent = os.environ.get("SYNCBUS_WORKER_PARENT", "")
        if parent.isdigit():
            pids.add(int(parent))
        return sorted(p for p in pids if os.path.exists(f"/proc/{p}"))

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():  # type: ignore[misc]
                have = merged.get(family.name)
                if have is None:
                    merged[family.name] = family
                    continue
                combine = min if family.name in self._LOWEST else operator.add
                have.samples = [a._replace(value=combine(a.value, b.value))
                                for a, b in zip(have.samples, family.samples, strict=False)]
        yield from merged.values()


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
                                          ["route"], registry=r,
                                          multiprocess_mode=GAUGE_MODES["syncbus_dead_letters_pending"])
        self.delivery_duration = Histogram("syncbus_delivery_duration_seconds",
                                           "Time of one delivery attempt.", ["route", "sink"],
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("syncbus_end_to_end_seconds", "Received at ingress to delivered.",
                                    ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = Gauge("syncbus_consumer_lag", "Records on the bus not yet done by a route.",
                                  ["route", "topic"], registry=r,
                                  multiprocess_mode=GAUGE_MODES["syncbus_consumer_lag"])
        self._route_info_labels: dict[str, tuple[str, str, str]] = {}
        self.route_info = RouteInfo(self._route_info_labels, MULTIPROCESS_DIR)  # issue 9: see RouteInfo
        r.register(self.route_info)
        self.last_success = Gauge("syncbus_last_success_timestamp_seconds",
                                  "Unix time of the route's last successful delivery.", ["route"], registry=r,
                                  multiprocess_mode=GAUGE_MODES["syncbus_last_success_timestamp_seconds"])
        self.ingress_rejected = Counter("syncbus_ingress_rejected", "Ingress requests refused, by reason.",
                                        ["source", "reason"], registry=r)
        self.duplicates_dropped = Counter("syncbus_duplicates_dropped", "Records dropped as duplicates by key.",
                                          ["route"], registry=r)
        self.config_reload_failures = Counter("syncbus_config_reload_failures",
                                              "Config reloads refused (the old version keeps running).",
                                              registry=r)
        if MULTIPROCESS_DIR is not None and not _primary_worker():
            self.config_reload_failures = _NotCounted()  # type: ignore[assignment]  # counted by worker 0
        self.shadow_results = Counter("syncbus_shadow_results", "Shadow route outputs compared with the live route.",
                                      ["route", "outcome"], registry=r)
        # Not in DESIGN §8 but needed by the shipped alerts: the bus reachable (1/0), and a route whose
        # offset commits have not succeeded for a while although it has finished records (1/0).
        self.bus_up = Gauge("syncbus_bus_up", "1 when the bus answered the last health check, else 0.",
                            registry=r,
                            multiprocess_mode=GAUGE_MODES["syncbus_bus_up"])
        self.commit_stalled = Gauge("syncbus_commit_stalled", "1 while a route's offset commits keep failing.",
                                    ["route"], registry=r,
                                    multiprocess_mode=GAUGE_MODES["syncbus_commit_stalled"])
        self.source_up = Gauge("syncbus_source_up", "1 when a poll source's last run succeeded, else 0.",
                               ["source"], registry=r,
                               multiprocess_mode=GAUGE_MODES["syncbus_source_up"])
        self.oldest_pending = Gauge("syncbus_dead_letter_oldest_pending_timestamp_seconds",
                                    "Unix time the oldest pending dead letter of the route first failed.",
                                    ["route"], registry=r,
                                    multiprocess_mode=GAUGE_MODES[
                                        "syncbus_dead_letter_oldest_pending_timestamp_seconds"])
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
        self._route_info_labels[route] = (route, str(version), owner)
        self.route_info.changed()

    def remove_route(self, route: str) -> None:
        """A route that no longer runs here must not keep reporting (reload, rebalance)."""
        if self._route_info_labels.pop(route, None) is not None:
            self.route_info.changed()

    def exposition(self) -> bytes:
        if MULTIPROCESS_DIR is not None:  # every worker's samples (module docstring)
            from prometheus_client.multiprocess import MultiProcessCollector

            merged = CollectorRegistry()
            merged.register(_EveryFamily(MultiProcessCollector(None, path=MULTIPROCESS_DIR), self.registry,
                                         skip=("syncbus_route_info", "process_", "python_")))
            merged.register(self.route_info)  # issue 9: this worker's routes, see RouteInfo
            merged.register(NodeProcesses(MULTIPROCESS_DIR))  # issue 9: process_* of the whole node
            PlatformCollector(registry=merged)
            return generate_latest(merged)
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, Any] | None = None) -> float:
        """A sample's current value (tests and the CLI read metrics without HTTP)."""
        got = self.registry.get_sample_value(name, {k: str(v) for k, v in (labels or {}).items()})
        return got or 0.0
