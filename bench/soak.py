"""`make soak`: a node under a fixed load for minutes; RSS and latency per minute (issue 11, item 7).

Starts the bare HTTP target (bench/http_target.py) and one ``syncbus run``
with the reference route (bench/runtime_bench.py's config), on the embedded
bus by default, and sends orders open loop at ``--rate`` per second for
``--minutes`` (bench/loadgen.py, one run per minute, so each minute's
latency is its own). Every second it samples the resident memory of the
node -- every process of it, so with ``--workers`` the parent and all
workers -- and prints per minute: orders accepted and delivered, p50/p99/max
end-to-end latency (from when an order was due to its delivery at the
target), RSS at the end of the minute and its peak, and the node's CPU. The
last line says whether RSS stayed flat (last minute within ``--flat-mb`` of
the second) and under ``--rss-limit``. Not part of ``make test``::

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 1000] [--bus embedded|kafka] [--workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

import runtime_bench as rb

tree_rss_mb = rb.tree_rss_mb
tree_cpu = rb.tree_cpu


class RssSampler(threading.Thread):
    """Samples the node's RSS every second, in the background."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(Exception):
                self.samples.append((time.monotonic(), tree_rss_mb(self.pid)))
            self.done.wait(1.0)


def minute(bench: rb.Bench, runner: rb.Runner, target: rb.Target, n: int, args: argparse.Namespace,
           work: Path) -> dict[str, Any]:
    target.reset()
    out = work / f"minute-{n}.json"
    cpu0 = tree_cpu(runner.pid)
    t0 = time.monotonic()
    gen = bench.loadgen(runner, out, mode="paced", rate=args.rate, seconds=args.seconds, tag=f"soak{n}",
                        connections=args.connections, record=True)
    gen.wait(args.seconds + 120)
    report = orjson.loads(out.read_bytes())
    deadline = time.monotonic() + 10
    while target.count() < report["accepted"] and time.monotonic() < deadline:
        time.sleep(0.1)
    arrivals = target.arrivals()
    lat = sorted((arrivals[rid] - sent) * 1000 for rid, sent in report["sends"] if rid in arrivals)
    wall = time.monotonic() - t0

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {"minute": n, "accepted": report["accepted"], "delivered": len(lat), "errors": report["errors"],
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": lat[-1] if lat else float("nan"),
            "cpu_percent": 100 * (tree_cpu(runner.pid) - cpu0) / wall, "t_end": time.monotonic()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of one 'minute' (shorter: a quick run)")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--bus", choices=("embedded", "kafka"), default="embedded")
    parser.add_argument("--variant", choices=("reference", "no-schema"), default="reference")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runner-args", default="", type=lambda s: s.split())
    parser.add_argument("--rss-limit", type=float, default=80.0, help="MB the node should stay under")
    parser.add_argument("--flat-mb", type=float, default=10.0, help="last minute vs second minute, MB")
    parser.add_argument("--out", default=str(rb.ROOT / "var" / "bench-soak.json"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="syncbus-soak-"))
    env = {**os.environ, "BENCH_KEYS": rb.API_KEY}
    target = rb.Target.start()
    broker = None
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"args": vars(args), "loadavg_before": rb.loadavg(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        bench = rb.Bench(argparse.Namespace(runner_args=[*args.runner_args, "--workers", str(args.workers)]),
                         work, target, env)
        if args.bus == "kafka":
            started = rb.start_kafka(work)
            if started is None:
                print("no Kafka broker", file=sys.stderr)
                return 2
            broker, bootstrap = started
            bench.kafka = rb.KafkaTool(bootstrap)
        runner = bench.runner(args.bus, variant=args.variant, topic="bench.soak", sinks=rb.http_sinks(target.url),
                              source=True)
        runner.start()
        sampler = RssSampler(runner.pid)
        sampler.start()
        try:
            print(f"soak: {args.minutes} × {args.seconds:.0f} s at {args.rate:,.0f} orders/s, {args.bus} bus, "
                  f"{args.workers} worker(s), load average {rb.loadavg()}", flush=True)
            print("minute  accepted  delivered   p50 ms   p99 ms   max ms   RSS MB  peak MB  CPU %", flush=True)
            t_prev = time.monotonic()
            for n in range(1, args.minutes + 1):
                row = minute(bench, runner, target, n, args, work)
                window = [r for t, r in sampler.samples if t_prev <= t <= row["t_end"]]
                t_prev = row["t_end"]
                row["rss_mb"] = window[-1] if window else tree_rss_mb(runner.pid)
                row["peak_rss_mb"] = max(window) if window else row["rss_mb"]
                rows.append(row)
                print(f"{n:>6}  {row['accepted']:>8,}  {row['delivered']:>9,}  {row['p50_ms']:>7.1f}  "
                      f"{row['p99_ms']:>7.1f}  {row['max_ms']:>7.0f}  {row['rss_mb']:>7.1f}  "
                      f"{row['peak_rss_mb']:>7.1f}  {row['cpu_percent']:>5.0f}", flush=True)
        finally:
            sampler.done.set()
            runner.stop()
    finally:
        target.stop()
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()
        if bench.kafka is not None:
            bench.kafka.close()
        shutil.rmtree(work, ignore_errors=True)
    result["minutes"] = rows
    result["loadavg_after"] = rb.loadavg()
    flat = len(rows) < 2 or rows[-1]["rss_mb"] - rows[min(1, len(rows) - 1)]["rss_mb"] <= args.flat_mb
    under = all(r["peak_rss_mb"] < args.rss_limit for r in rows)
    result.update({"rss_flat": flat, "rss_under_limit": under,
                   "p99_ms_median": statistics.median(r["p99_ms"] for r in rows) if rows else None})
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(f"RSS {'flat' if flat else 'GROWING'} (last minute {rows[-1]['rss_mb']:.1f} MB vs second "
          f"{rows[min(1, len(rows) - 1)]['rss_mb']:.1f} MB), {'under' if under else 'OVER'} {args.rss_limit:.0f} MB; "
          f"median p99 {result['p99_ms_median']:.1f} ms; load average {result['loadavg_after']}" if rows else "no data")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
