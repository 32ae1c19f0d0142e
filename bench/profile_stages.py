"""Where a record's CPU goes: py-spy against a running ``syncbus run`` under load, split by stage.

Starts the bare HTTP target and one ``syncbus run`` (the reference route, or
``--variant no-schema``) on the embedded bus (or ``--bus kafka`` with a
private broker), drives it with bench/loadgen.py (closed loop, 64
connections), and after the warm-up samples the runner with py-spy (all
threads that are running, not only the one holding the GIL: SQLite work on
the bus and store threads is CPU too). Each sampled stack is charged to ONE
stage, by its innermost frame that belongs to a stage (so a metrics call made
from the router counts as metrics, an aiohttp frame under the router as
deliver):

=========  ============================================================
ingress    uvicorn/httptools, Starlette/FastAPI, ingress/*, security/*
bus write  bus/embedded.py publishing (group commit, SQLite writer),
           aiokafka producer when the bus is Kafka, sources/publisher.py
consume    bus fetch (SQLite reader / aiokafka consumer), offsets,
           router loop and outcome storage before commits
map        mapping/*, formats/* (decode, schema, when, map, encode)
deliver    sinks/* (HTTP client, retry), aiohttp
trace      tracing.py, state/trace.py
metrics    metrics.py, prometheus_client
event loop the main thread inside uvloop's C code (socket reads and writes
           of both the ingress and the sink side, callbacks, timers)
other      GC, anything unclassified
=========  ============================================================

CPU is measured per thread from /proc/<pid>/task (exact), and each thread's
CPU is shared out over the stages by that thread's py-spy samples (samples of
a thread waiting in a queue are dropped: py-spy's idle detection misses them).

The CPU per record is measured from /proc over the same window (user +
system of the runner, divided by records delivered), so the table reads as
"µs of CPU per record spent in each stage". py-spy pauses the process to
sample it (``--nonblocking`` is used to keep that small), so the rate under
the profiler is a little lower than without it::

    .venv/bin/python bench/profile_stages.py [--bus embedded|kafka] [--seconds 20] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import runtime_bench as rb

# (stage, substrings of a frame "function (file:line)"); the first stage whose pattern matches the
# innermost matching frame wins, so more specific patterns come first.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("trace", ("syncbus/tracing.py", "state/trace.py")),
    ("metrics", ("prometheus_client/", "syncbus/metrics.py")),
    ("map", ("syncbus/mapping/", "syncbus/formats/", "jsonschema", "referencing/", "celpy", "<syncbus mapping",
             "rpds", "fastjsonschema", "xmlgen")),
    ("deliver", ("syncbus/sinks/", "aiohttp/", "multidict", "yarl/", "aiohappyeyeballs", "tenacity")),
    ("bus write", ("bus/embedded.py:_write_batch", "_write_batch (", "_flush (", "publish_once (",
                   "sources/publisher.py", "aiokafka/producer", "_submit (")),
    ("consume", ("_read_records (", "fetch (", "bus/offsets.py", "aiokafka/consumer", "aiokafka/conn",
                 "aiokafka/record", "aiokafka/protocol", "aiokafka/client", "state/outcomes.py",
                 "record_outcomes (", "_commit (", "router.py", "bus/kafka.py", "state/")),
    ("ingress", ("uvicorn/", "httptools", "starlette/", "fastapi/", "syncbus/ingress/", "pydantic", "anyio/",
                 "h11/")),
]
# Frames that say nothing about the stage (the loop, generic helpers): skipped when looking for one.
NEUTRAL = ("asyncio/", "threading.py", "concurrent/futures", "contextlib.py", "typing.py", "functools.py",
           "<frozen", "dataclasses.py", "uvloop", "selectors.py", "queue.py", "sqlalchemy/", "sqlite3")


def classify(frames: list[str]) -> str:
    """The stage of one stack (root first): its innermost frame that matches a stage's pattern."""
    for frame in reversed(frames):
        if any(n in frame for n in NEUTRAL):
            continue
        for stage, patterns in STAGES:
            if any(p in frame for p in patterns):
                return stage
    # Threads running only neutral frames: the SQLite writer/reader threads and to_thread workers.
    joined = ";".join(frames)
    if "_write_batch" in joined:
        return "bus write"
    if "add_trace_rows" in joined:
        return "trace"
    if "record_outcomes" in joined or "_read_records" in joined:
        return "consume"
    return "other"


# Leaf frames of a thread that is waiting, not running: py-spy's idle detection misses these.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)", "Condition.wait", "Event.wait", "Queue.get",
               "time.sleep", "sleep (")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per thread of ``pid`` so far, from /proc (exact, unlike sampling)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / rb.CLK_TCK
    return out


def parse_raw(path: Path) -> dict[int, tuple[str, Counter[str], Counter[str]]]:
    """Per thread id: (thread name, samples per stage, samples per leaf frame), idle samples left out.

    Reads py-spy's raw output of ``record --threads``: ``thread (TID): NAME;frame;...;frame COUNT``.
    """
    threads: dict[int, tuple[str, Counter[str], Counter[str]]] = {}
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        parts = stack.split(";")
        m = re.match(r"thread \((\d+)\): ?(.*)", parts[0])
        tid, name = (int(m.group(1)), m.group(2)) if m else (0, "?")
        frames = [f for f in parts[1:] if not f.startswith(("process ", "thread "))]
        if frames and any(idle in frames[-1] for idle in IDLE_LEAVES):
            continue
        if frames and frames[-1].startswith("Runner.run ("):
            stage = "event loop"  # the main thread inside uvloop's C code: socket I/O, callbacks
        else:
            stage = classify(frames)
        entry = threads.setdefault(tid, (name, Counter(), Counter()))
        entry[1][stage] += int(n)
        if frames:
            entry[2][frames[-1]] += int(n)
    return threads


def split_cpu(threads: dict[int, tuple[str, Counter[str], Counter[str]]], cpu: dict[int, float],
              ) -> tuple[Counter[str], Counter[str], dict[str, float]]:
    """Each thread's exact CPU shared out over the stages by its (non-idle) samples."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    per_thread: dict[str, float] = {}
    for tid, seconds in cpu.items():
        name, by_stage, by_leaf = threads.get(tid, ("unsampled", Counter({"other": 1}), Counter()))
        per_thread[f"{name or 'thread'} ({tid})"] = seconds
        total = sum(by_stage.values()) or 1
        for stage, n in by_stage.items():
            stages[stage] += seconds * n / total
        for leaf, n in by_leaf.items():
            leaves[leaf] += seconds * n / total
    return stages, leaves, per_thread


def profile(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="syncbus-profile-"))
    env = {**os.environ, "BENCH_KEYS": rb.API_KEY}
    target = rb.Target.start()
    broker = None
    results: dict[str, Any] = {"loadavg_before": rb.loadavg(), "bus": args.bus, "variant": args.variant}
    try:
        bench = rb.Bench(argparse.Namespace(runner_args=args.runner_args), work, target, env)
        if args.bus == "kafka":
            started = rb.start_kafka(work)
            if started is None:
                raise SystemExit("no Kafka broker")
            broker, bootstrap = started
            bench.kafka = rb.KafkaTool(bootstrap)
        runner = bench.runner(args.bus, variant=args.variant, topic="bench.profile", sinks=rb.http_sinks(target.url),
                              source=True)
        runner.start()
        try:
            time.sleep(1.0)
            out = work / "load.json"
            gen = bench_loadgen(runner, out, args)
            time.sleep(args.warmup)
            raw = work / "profile.txt"
            c0, cpu0, th0 = target.count(), rb.proc_cpu(runner.pid), thread_cpu(runner.pid)
            t0 = time.monotonic()
            spy = subprocess.Popen([rb.PY_SPY, "record", "--pid", str(runner.pid), "-d", str(args.seconds), "-r",
                                    str(args.rate), "-f", "raw", "--threads", "--nonblocking", "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spy.wait(args.seconds + 60)
            c1, cpu1, th1 = target.count(), rb.proc_cpu(runner.pid), thread_cpu(runner.pid)
            t1 = time.monotonic()
            rb.stop_process(gen, 5)
            if args.keep_raw:
                shutil.copy(raw, args.keep_raw)
        finally:
            runner.stop()
        cpu_by_thread = {tid: th1[tid] - th0.get(tid, 0.0) for tid in th1}
        stages, leaves, per_thread = split_cpu(parse_raw(raw), cpu_by_thread)
        total = sum(stages.values())
        delivered = c1 - c0
        cpu = cpu1 - cpu0
        us = 1e6 * cpu / delivered if delivered else float("nan")
        results.update({"delivered": delivered, "seconds": t1 - t0, "cpu_s": cpu, "us_cpu_per_record": us,
                        "records_per_s": delivered / (t1 - t0), "cpu_percent": 100 * cpu / (t1 - t0),
                        "stages": {s: stages[s] / total for s in stages} if total else {},
                        "threads": {k: round(v, 2) for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1])},
                        "top_leaves": [(f, round(100 * n / total, 1)) for f, n in leaves.most_common(25)],
                        "loadavg_after": rb.loadavg()})
    finally:
        target.stop()
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def profile_k2k(args: argparse.Namespace) -> dict[str, Any]:
    """Kafka → map → Kafka: the runner drains a pre-loaded topic into a Kafka sink while py-spy samples it."""
    work = Path(tempfile.mkdtemp(prefix="syncbus-profile-"))
    env = {**os.environ, "BENCH_KEYS": rb.API_KEY}
    target = rb.Target.start()
    results: dict[str, Any] = {"loadavg_before": rb.loadavg(), "bus": "kafka → kafka", "variant": args.variant}
    started = rb.start_kafka(work)
    if started is None:
        raise SystemExit("no Kafka broker")
    broker, bootstrap = started
    try:
        bench = rb.Bench(argparse.Namespace(runner_args=args.runner_args), work, target, env)
        tool = bench.kafka = rb.KafkaTool(bootstrap)
        tool.create_topics(["bench.prof.in", "bench.prof.out", "bench.prof.out.prereview"])
        tool.preload("bench.prof.in", args.records)
        runner = bench.runner("kafka", variant=args.variant, topic="bench.prof.in",
                              sinks=rb.kafka_sinks(bootstrap, "bench.prof.out"), source=False)
        runner.start()
        try:
            while tool.end_offsets("bench.prof.out") < args.records // 10:
                time.sleep(0.2)
            raw = work / "profile.txt"
            c0, cpu0, th0 = tool.end_offsets("bench.prof.out"), rb.proc_cpu(runner.pid), thread_cpu(runner.pid)
            t0 = time.monotonic()
            spy = subprocess.Popen([rb.PY_SPY, "record", "--pid", str(runner.pid), "-d", str(args.seconds), "-r",
                                    str(args.rate), "-f", "raw", "--threads", "--nonblocking", "-o", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spy.wait(args.seconds + 60)
            c1, cpu1, th1 = tool.end_offsets("bench.prof.out"), rb.proc_cpu(runner.pid), thread_cpu(runner.pid)
            t1 = time.monotonic()
            if args.keep_raw:
                shutil.copy(raw, args.keep_raw)
        finally:
            runner.stop()
        tool.stop_consumer()
        stages, leaves, per_thread = split_cpu(parse_raw(raw), {t: th1[t] - th0.get(t, 0.0) for t in th1})
        total = sum(stages.values())
        delivered, cpu = c1 - c0, cpu1 - cpu0
        us = 1e6 * cpu / delivered if delivered else float("nan")
        results.update({"delivered": delivered, "seconds": t1 - t0, "cpu_s": cpu, "us_cpu_per_record": us,
                        "records_per_s": delivered / (t1 - t0), "cpu_percent": 100 * cpu / (t1 - t0),
                        "stages": {s: stages[s] / total for s in stages} if total else {},
                        "threads": {k: round(v, 2) for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1])},
                        "top_leaves": [(f, round(100 * n / total, 1)) for f, n in leaves.most_common(25)],
                        "loadavg_after": rb.loadavg()})
    finally:
        target.stop()
        with contextlib.suppress(Exception):
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return results


def bench_loadgen(runner: rb.Runner, out: Path, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [rb.PYTHON, str(rb.BENCH / "loadgen.py"), "--port", str(runner.port), "--order", str(rb.ORDER),
           "--api-key", rb.API_KEY, "--mode", "closed", "--seconds", str(args.warmup + args.seconds + 30),
           "--connections", str(args.connections), "--tag", "profile", "--out", str(out)]
    return subprocess.Popen(cmd, start_new_session=True)


ORDER = ["ingress", "bus write", "consume", "map", "deliver", "trace", "metrics", "event loop", "other"]


def render(res: dict[str, Any]) -> str:
    us = res["us_cpu_per_record"]
    lines = [
        f"Profile of `syncbus run` ({res['bus']} bus, {res['variant']} route"
        f"{'' if '→' in res['bus'] else ', ingress → bus → map → HTTP target'}), "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average {res['loadavg_before']} → "
        f"{res['loadavg_after']}.",
        "",
        f"{res['delivered']:,} records delivered in {res['seconds']:.1f} s under py-spy, "
        f"runner CPU {res['cpu_percent']:.0f} %: **{us:,.0f} µs CPU per record** "
        f"({1e6 / us if us else 0:,.0f} records per CPU-second).",
        "",
        "| stage | share of CPU | µs CPU per record |",
        "| --- | ---: | ---: |",
    ]
    for stage in ORDER:
        share = res["stages"].get(stage, 0.0)
        lines.append(f"| {stage} | {100 * share:.1f} % | {share * us:,.0f} |")
    lines += ["", "CPU seconds per thread in the window: "
              + ", ".join(f"{name} {sec:.2f}" for name, sec in list(res["threads"].items())[:8]), "",
              "Hottest leaf frames (share of CPU):", ""]
    lines += [f"* {pct:.1f} % `{frame}`" for frame, pct in res["top_leaves"][:20]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bus", choices=("embedded", "kafka"), default="embedded")
    parser.add_argument("--path", choices=("http", "k2k"), default="http",
                        help="http: ingress → bus → map → HTTP under load; k2k: Kafka → map → Kafka drain")
    parser.add_argument("--records", type=int, default=60_000, help="records pre-loaded for --path k2k")
    parser.add_argument("--variant", choices=("reference", "no-schema"), default="reference")
    parser.add_argument("--seconds", type=int, default=20, help="seconds sampled")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--runner-args", default="", type=lambda s: s.split())
    parser.add_argument("--keep-raw", help="copy py-spy's raw output here")
    parser.add_argument("--out", help="write the Markdown table here too")
    args = parser.parse_args(argv)
    res = profile_k2k(args) if args.path == "k2k" else profile(args)
    text = render(res)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
