"""Runtime benchmarks: real ``syncbus run`` processes on a private Kafka broker and on the embedded bus.

Everything runs on 127.0.0.1 and is started (and stopped) here: a Kafka
broker via deploy/kafka/kafka.sh on free ports in a temporary run dir, the
bare HTTP target (bench/http_target.py) and the load generator
(bench/loadgen.py) in processes of their own, and one ``syncbus run`` per
measurement with a generated config dir. The route is the reference
``crm-order-to-erp`` mapping (a CRM order with 3 lines → ORDERS05 XML, input
and output JSON schemas, two targets) in two variants: ``reference`` as
shipped, and ``no-schema`` (the same file without its two ``schema:`` lines),
which shows how much of a record's cost is the runtime rather than validation.

1. Kafka → map → Kafka: N records pre-loaded into a topic, one ``syncbus run``
   with a Kafka sink; records/s while the output topic fills (5 % → 95 % of
   N, at most ``--k2k-cap`` s), next to a bare aiokafka consume → produce pipe
   (bench/kafka_pipe.py) on the same input, broker and machine. One more run
   with ``--no-trace`` shows what the trace costs.
2. ingress → bus → map → HTTP: the load generator POSTs orders over 64
   keep-alive connections as fast as they are answered; records/s delivered
   at the target after a warm-up, on Kafka and on the embedded bus.
3. End-to-end latency at fixed rates (``--rates``, 1,000 and 250 orders/s,
   open loop): from the moment an order was due to the target receiving its
   delivery, joined by record id. A node too slow for the rate shows it here.
4. VmRSS of the runner at steady state (sampled during 2 and 3).
5. Scaling: ingress → embedded bus → map → HTTP, closed loop, with ``--scaling``
   workers (``syncbus run --workers N``; default 1 and 2): delivered/s and
   CPU per record of all the node's processes. Every other run uses
   ``--workers`` (default 1), so its numbers compare with one process.

Tracing is on (the default) unless a line says ``--no-trace``. Every line
also gives the runner's CPU use, so "records per CPU-second" stays
comparable on a busy machine. Writes var/bench-runtime.json; ``--profile``
also records py-spy profiles of the runner during 2 (numbers of profiled runs
are perturbed: py-spy pauses the process to sample it)::

    .venv/bin/python bench/runtime_bench.py [--records 50000] [--seconds 12] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
PYTHON = sys.executable
SYNCBUS = str(Path(sys.executable).parent / "syncbus")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
ORDER = ROOT / "mappings" / "tests" / "data" / "crm_order.json"
MAPPING = ROOT / "mappings" / "crm-order-to-erp.yaml"
API_KEY = "bench-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- processes


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its children: the workers of ``syncbus run --workers N`` are the node too."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (a dead child's CPU is in the parent's cutime)."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_cpu(p)
    return total


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += proc_rss_mb(p)
    return total


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL; only this process (and its own session, which we created)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Target:
    """bench/http_target.py in its own process."""

    proc: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls) -> Target:
        proc = subprocess.Popen([PYTHON, str(BENCH / "http_target.py")], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            stop_process(proc)
            raise RuntimeError(f"benchmark target did not start: {url!r}")
        return cls(proc, url)

    def count(self) -> int:
        return int(httpx.get(f"{self.url}/_stats", timeout=5).json()["count"])

    def arrivals(self) -> dict[str, float]:
        return {rid: t for rid, t in orjson.loads(httpx.get(f"{self.url}/_arrivals", timeout=30).content)}

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset", timeout=5)

    def stop(self) -> None:
        stop_process(self.proc, 5)


@dataclass
class Runner:
    """One ``syncbus run`` process (like tests/e2e/harness.py's Node)."""

    config_dir: Path
    bus: str
    store: str
    env: dict[str, str]
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.config_dir / "syncbus.log"

    def start(self, timeout: float = 90.0) -> Runner:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SYNCBUS, "run", "--config-dir", str(self.config_dir), "--bus", self.bus, "--store", self.store,
             "--port", str(self.port), "--log-level", "warning", *self.extra],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"syncbus run exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"syncbus run not ready within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])

    def metric(self, name: str) -> float:
        total = 0.0
        for line in httpx.get(f"{self.url}/metrics", timeout=5).text.splitlines():
            if line.startswith(name + "{") or line.split(" ")[0] == name:
                total += float(line.rpartition(" ")[2])
        return total

    def stop(self) -> None:
        stop_process(self.proc)


class Sampler:
    """Samples a counter, the runner's CPU and RSS at a fixed interval (on the caller's thread)."""

    def __init__(self, pid: int, count: Callable[[], int]) -> None:
        self.pid = pid
        self.count = count
        self.samples: list[tuple[float, int, float, float]] = []  # (t, count, cpu s, rss MB)

    def sample(self) -> tuple[float, int, float, float]:
        s = (time.monotonic(), self.count(), tree_cpu(self.pid), tree_rss_mb(self.pid))
        self.samples.append(s)
        return s

    def window(self, t_from: float, t_to: float) -> dict[str, float]:
        inside = [s for s in self.samples if t_from <= s[0] <= t_to]
        if len(inside) < 2:
            return {"records_per_s": 0.0, "cpu_percent": 0.0, "records_per_cpu_s": 0.0, "rss_mb": 0.0}
        (t1, c1, cpu1, _), (t2, c2, cpu2, _) = inside[0], inside[-1]
        cpu = cpu2 - cpu1
        return {"records_per_s": (c2 - c1) / (t2 - t1), "cpu_percent": 100 * cpu / (t2 - t1),
                "records_per_cpu_s": (c2 - c1) / cpu if cpu else 0.0,
                "rss_mb": max(s[3] for s in inside), "seconds": t2 - t1, "records": c2 - c1}


# --------------------------------------------------------------------------- config dirs


def mapping_text(name: str, topic: str, variant: str) -> str:
    text = MAPPING.read_text("utf-8")
    for old, new in (("mapping: crm-order-to-erp\n", f"mapping: {name}\n"),
                     ("  topic: crm.orders\n", f"  topic: {topic}\n")):
        if old not in text:
            raise RuntimeError(f"{MAPPING} changed: cannot find {old.strip()!r} to rewrite for the benchmark")
        text = text.replace(old, new)
    if variant == "no-schema":
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if not line.strip().startswith("schema:")]
        if len(lines) - len(kept) != 2:
            raise RuntimeError(f"{MAPPING} changed: expected two schema: lines, found {len(lines) - len(kept)}")
        text = "".join(kept)
    return text


def write_config(root: Path, *, name: str, topic: str, variant: str, sinks: str, source: bool) -> Path:
    mappings = root / "mappings"
    mappings.mkdir(parents=True, exist_ok=True)
    for sub in ("schemas", "lookups"):
        if (ROOT / "mappings" / sub).is_dir() and not (mappings / sub).exists():
            shutil.copytree(ROOT / "mappings" / sub, mappings / sub)
    (mappings / f"{name}.yaml").write_text(mapping_text(name, topic, variant), encoding="utf-8")
    (root / "connectors").mkdir(exist_ok=True)
    sources = textwrap.dedent(f"""\
        sources:
          - name: crm-orders
            type: http_ingress
            topic: {topic}
            key: order_id
            auth: {{api_keys_env: BENCH_KEYS}}
        """) if source else "sources: []\n"
    (root / "connectors" / "bench.yaml").write_text(sources + textwrap.dedent(sinks), encoding="utf-8")
    return root


def http_sinks(target_url: str) -> str:
    return f"""\
        sinks:
          - name: erp-orders
            type: http
            url: {target_url}/erp/orders
            retry: {{attempts: 4, initial: 100ms, max: 2s}}
            timeout: 10s
          - name: finance-prereview
            type: http
            url: {target_url}/finance/prereview
            retry: {{attempts: 4, initial: 100ms, max: 2s}}
            timeout: 10s
        """


def kafka_sinks(bootstrap: str, topic: str) -> str:
    return f"""\
        sinks:
          - name: erp-orders
            type: kafka
            bootstrap: {bootstrap}
            topic: {topic}
            retry: {{attempts: 4, initial: 100ms, max: 2s}}
            timeout: 10s
          - name: finance-prereview
            type: kafka
            bootstrap: {bootstrap}
            topic: {topic}.prereview
            retry: {{attempts: 4, initial: 100ms, max: 2s}}
            timeout: 10s
        """


# --------------------------------------------------------------------------- Kafka helpers


class KafkaTool:
    """Admin, pre-loading and end offsets from the benchmark process (its own event loop)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()

    def create_topics(self, topics: list[str], partitions: int = 4) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def create() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
            finally:
                await admin.close()

        self.run(create())

    def preload(self, topic: str, count: int) -> float:
        """Produce ``count`` orders (distinct keys) into ``topic``; returns records/s of the load."""
        from aiokafka import AIOKafkaProducer

        template = orjson.loads(ORDER.read_bytes())

        async def load() -> float:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                        linger_ms=10, max_batch_size=256 * 1024)
            await producer.start()
            started = time.monotonic()
            try:
                futures = []
                for i in range(count):
                    order = dict(template, order_id=f"SO-K2K-{i:09d}")
                    futures.append(await producer.send(
                        topic, value=orjson.dumps(order), key=order["order_id"].encode(),
                        headers=[("content-type", b"application/json")]))
                    if len(futures) >= 5000:
                        await asyncio.gather(*futures)
                        futures = []
                await asyncio.gather(*futures)
            finally:
                await producer.stop()
            return count / (time.monotonic() - started)

        return float(self.run(load()))

    def end_offsets(self, topic: str) -> int:
        return int(self.run(self._end_offsets(topic)))

    async def _end_offsets(self, topic: str) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = getattr(self, "_consumer", None)
        if consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
            await consumer.start()
            self._consumer = consumer
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())

    def stop_consumer(self) -> None:
        consumer = getattr(self, "_consumer", None)
        if consumer is not None:
            self.run(consumer.stop())
            self._consumer = None


def fill_rate(sampler: Sampler, target_count: int, cap: float, poll: float = 0.1,
              stalled_after: float = 30.0) -> dict[str, float]:
    """Sample until ``target_count`` is reached; rate between 5 % and 95 % (or ``cap`` s after 5 %)."""
    lo, hi = 0.05 * target_count, 0.95 * target_count
    t_lo: float | None = None
    last_change, last_count = time.monotonic(), -1
    while True:
        t, count, _cpu, _rss = sampler.sample()
        if count != last_count:
            last_change, last_count = t, count
        if t_lo is None and count >= lo:
            t_lo = t
        if count >= hi or (t_lo is not None and t - t_lo >= cap) or t - last_change > stalled_after:
            break
        time.sleep(poll)
    if t_lo is None:
        return {"records_per_s": 0.0, "records": float(count), "stalled": 1.0}
    return sampler.window(t_lo, t)


# --------------------------------------------------------------------------- profiling


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    if not Path(PY_SPY).exists():
        log("py-spy not installed in the virtualenv; no profile")
        return None
    # --gil: only samples holding the GIL, i.e. Python CPU time (not threads waiting on fsync or a queue).
    return subprocess.Popen([PY_SPY, "record", "--gil", "--pid", str(pid), "-d", str(seconds), "-f", "raw",
                             "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_profile(path: Path, top: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares per function from py-spy's raw (collapsed stack) output."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text("utf-8", "replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {"self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)],
            "inclusive": [(f, round(100 * c / total, 1)) for f, c in incl.most_common(top * 2)],
            "samples": [("total", float(total))]}


# --------------------------------------------------------------------------- the benchmarks


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    target: Target
    env: dict[str, str]
    kafka: KafkaTool | None = None
    results: dict[str, Any] = field(default_factory=dict)
    runs: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def runner(self, bus: str, *, variant: str, topic: str, sinks: str, source: bool,
               extra: list[str] | None = None) -> Runner:
        n = next(self.runs)
        name = f"crm-order-to-erp-{n}"
        cfg = write_config(self.work / f"run{n}", name=name, topic=topic, variant=variant, sinks=sinks,
                           source=source)
        if bus == "embedded":
            bus_url = f"embedded://{self.work}/run{n}/bus.db"
        else:
            assert self.kafka is not None
            bus_url = f"kafka://{self.kafka.bootstrap}"
        extra = [*self.args.runner_args, *(extra or [])]
        if "--workers" not in extra:  # one process unless asked: numbers stay comparable with earlier runs
            extra += ["--workers", str(getattr(self.args, "workers", 1))]
        return Runner(cfg, bus_url, f"sqlite:///{self.work}/run{n}/store.db", self.env, extra=extra)

    # 1 --------------------------------------------------------------------------
    def kafka_to_kafka(self) -> None:
        assert self.kafka is not None
        tool, n = self.kafka, self.args.records
        source = "bench.k2k.in"
        tool.create_topics([source, "bench.k2k.raw"])
        load_rate = tool.preload(source, n)
        log(f"k2k: pre-loaded {n} records into {source} ({load_rate:,.0f}/s)")
        out: dict[str, Any] = {"records": n, "preload_per_s": load_rate}

        # the bare pipe first: same input, its own consumer group
        pipe = subprocess.Popen([PYTHON, str(BENCH / "kafka_pipe.py"), "--bootstrap", tool.bootstrap,
                                 "--source", source, "--target", "bench.k2k.raw", "--count", str(n),
                                 "--seconds", str(self.args.k2k_cap * 3)], start_new_session=True)
        try:
            sampler = Sampler(pipe.pid, lambda: tool.end_offsets("bench.k2k.raw"))
            out["raw_pipe"] = fill_rate(sampler, n, self.args.k2k_cap)
            pipe.wait(60)
        finally:
            stop_process(pipe, 5)
        log(f"k2k: raw aiokafka pipe {out['raw_pipe']['records_per_s']:,.0f} records/s")

        runs = [(v, False) for v in self.args.variants]
        if self.args.k2k_no_trace:
            runs.append((self.args.variants[-1], True))
        for variant, no_trace in runs:
            label = f"{variant}{', --no-trace' if no_trace else ''}"
            sink_topic = f"bench.k2k.out.{variant}{'.no-trace' if no_trace else ''}"
            tool.create_topics([sink_topic, f"{sink_topic}.prereview"])
            runner = self.runner("kafka", variant=variant, topic=source,
                                 sinks=kafka_sinks(tool.bootstrap, sink_topic), source=False,
                                 extra=["--no-trace"] if no_trace else [])
            runner.start()
            try:
                sampler = Sampler(runner.pid, lambda t=sink_topic: tool.end_offsets(t))
                res = fill_rate(sampler, n, self.args.k2k_cap)
            finally:
                runner.stop()
            raw = out["raw_pipe"]["records_per_s"]
            res["ratio_to_raw_pipe"] = res["records_per_s"] / raw if raw else 0.0
            out[f"syncbus_{label}"] = res
            log(f"k2k: syncbus ({label}) {res['records_per_s']:,.0f} records/s, "
                f"{100 * res['ratio_to_raw_pipe']:.0f} % of the raw pipe")
        tool.stop_consumer()
        self.results["kafka_to_kafka"] = out

    # 2 + 3 ----------------------------------------------------------------------
    def loadgen(self, runner: Runner, out: Path, *, mode: str, seconds: float, tag: str,
                rate: float = 0.0, connections: int = 64, record: bool = False) -> subprocess.Popen[bytes]:
        cmd = [PYTHON, str(BENCH / "loadgen.py"), "--port", str(runner.port), "--order", str(ORDER),
               "--api-key", API_KEY, "--mode", mode, "--seconds", str(seconds), "--connections", str(connections),
               "--tag", tag, "--out", str(out)]
        if mode == "paced":
            cmd += ["--rate", str(rate)]
        if record:
            cmd.append("--record")
        return subprocess.Popen(cmd, start_new_session=True)

    def throughput(self, runner: Runner, label: str) -> dict[str, Any]:
        """Closed-loop load for ``--seconds``; deliveries/s at the target after the warm-up."""
        self.target.reset()
        seconds, warmup = self.args.seconds, self.args.warmup
        out = self.work / f"load-{label}.json"
        profile_out = ROOT / "var" / f"bench-profile-{label}.txt"
        sampler = Sampler(runner.pid, self.target.count)
        gen = self.loadgen(runner, out, mode="closed", seconds=seconds, tag=label, connections=self.args.connections)
        t0 = time.monotonic()
        spy = None
        try:
            while gen.poll() is None:
                sampler.sample()
                if self.args.profile and spy is None and time.monotonic() - t0 >= warmup:
                    spy = py_spy(runner.pid, 5, profile_out)
                time.sleep(0.25)
            t_end = sampler.sample()[0]
        finally:
            stop_process(gen, 5)
        report = orjson.loads(out.read_bytes())
        res: dict[str, Any] = sampler.window(t0 + warmup, t_end)
        per_second = report["per_second"][int(warmup):int(seconds)]
        res["ingress_accepted_per_s"] = statistics.mean(per_second) if per_second else 0.0
        res["ingress_errors"] = report["errors"]
        res["accepted_total"] = report["accepted"]
        # drain: how long until everything accepted was delivered
        t_drain = time.monotonic()
        delivered = self.target.count()
        while delivered < report["accepted"] and time.monotonic() - t_drain < self.args.drain:
            time.sleep(0.2)
            delivered = self.target.count()
        res["backlog_at_end_of_load"] = report["accepted"] - sampler.samples[-1][1]
        res["drain_seconds"] = time.monotonic() - t_drain
        res["undelivered_after_drain"] = report["accepted"] - delivered
        if spy is not None:
            spy.wait(30)
            if profile_out.exists():
                res["profile"] = str(profile_out.relative_to(ROOT))
                res["hotspots"] = summarize_profile(profile_out)
        return res

    def wait_drained(self) -> None:
        """Wait (at most --drain s) until the target stops receiving: the previous run's backlog is gone."""
        deadline = time.monotonic() + self.args.drain
        last = self.target.count()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.target.count()
            if now == last:
                return
            last = now

    def latency(self, runner: Runner, label: str, rate: float) -> dict[str, Any]:
        """Open-loop load at ``rate`` for ``--latency-seconds``; percentiles of POST → target."""
        self.target.reset()
        out = self.work / f"latency-{label}-{rate:.0f}.json"
        sampler = Sampler(runner.pid, self.target.count)
        gen = self.loadgen(runner, out, mode="paced", rate=rate, seconds=self.args.latency_seconds,
                           tag=label, connections=128, record=True)
        t0 = time.monotonic()
        try:
            while gen.poll() is None:
                sampler.sample()
                time.sleep(0.25)
        finally:
            stop_process(gen, 5)
        report = orjson.loads(out.read_bytes())
        deadline = time.monotonic() + 5
        while self.target.count() < report["accepted"] and time.monotonic() < deadline:
            time.sleep(0.1)
        arrivals = self.target.arrivals()
        lat = sorted((arrivals[rid] - sent) * 1000 for rid, sent in report["sends"] if rid in arrivals)
        steady = sampler.window(t0 + min(3.0, self.args.latency_seconds / 3), sampler.samples[-1][0])

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

        return {"rate": rate, "seconds": self.args.latency_seconds, "accepted": report["accepted"],
                "ingress_accepted_per_s": report["accepted_per_second"],
                "delivered": len(lat), "ingress_errors": report["errors"],
                "generator_max_lag_ms": report["max_schedule_lag"] * 1000,
                "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": lat[-1] if lat else 0.0,
                "rss_mb": steady.get("rss_mb", 0.0), "cpu_percent": steady.get("cpu_percent", 0.0)}

    def scaling(self, bus: str) -> None:
        """5. ingress → bus → map → HTTP, closed loop, with 1 and with N workers: delivered/s and CPU/record."""
        out: dict[str, Any] = {}
        for count in self.args.scaling:
            label = f"{bus}-scaling-{count}"
            runner = self.runner(bus, variant=self.args.variants[0], topic=f"bench.scale.{label}",
                                 sinks=http_sinks(self.target.url), source=True, extra=["--workers", str(count)])
            runner.start()
            try:
                time.sleep(1.0 + count)  # every worker listening
                res = self.throughput(runner, label)
            finally:
                runner.stop()
            out[str(count)] = res
            log(f"{label}: {res['records_per_s']:,.0f} delivered/s, CPU {res['cpu_percent']:.0f} %, "
                f"{res['records_per_cpu_s']:,.0f}/CPU-s")
            self.wait_drained()
        counts = [str(c) for c in self.args.scaling]
        if len(counts) >= 2 and out[counts[0]]["records_per_s"]:
            out["speedup"] = out[counts[-1]]["records_per_s"] / out[counts[0]]["records_per_s"]
        self.results[f"scaling_{bus}"] = out

    def ingress_to_http(self, bus: str) -> None:
        out: dict[str, Any] = {}
        for variant in self.args.variants:
            label = f"{bus}-{variant}"
            runner = self.runner(bus, variant=variant, topic=f"bench.http.{label}", sinks=http_sinks(self.target.url),
                                 source=True)
            runner.start()
            try:
                time.sleep(1.0)
                res = self.throughput(runner, label)
                out[f"throughput_{variant}"] = res
                log(f"{label}: {res['records_per_s']:,.0f} delivered/s (ingress {res['ingress_accepted_per_s']:,.0f}"
                    f"/s), runner CPU {res['cpu_percent']:.0f} %, RSS {res['rss_mb']:.0f} MB")
                if variant == self.args.variants[0] and self.args.latency_seconds > 0:
                    for rate in self.args.rates:
                        self.wait_drained()
                        lat = self.latency(runner, label, rate)
                        out[f"latency_{variant}_{rate:.0f}"] = lat
                        log(f"{label}: {rate:.0f}/s p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, "
                            f"max {lat['max_ms']:.1f} ms, {lat['delivered']}/{lat['accepted']} delivered, "
                            f"RSS {lat['rss_mb']:.0f} MB")
            finally:
                runner.stop()
        self.results[f"ingress_to_http_{bus}"] = out


def start_kafka(work: Path) -> tuple[Any, str] | None:
    """A private broker on free ports (tests/support/kafka.py's KafkaBroker); None if it cannot start."""
    from tests.support.kafka import KafkaBroker, KafkaUnavailable
    from tests.support.kafka import free_port as kfree

    broker = KafkaBroker(run_dir=work / "kafka", port=kfree(), controller_port=kfree())
    try:
        broker.start()
    except KafkaUnavailable as err:
        log(f"Kafka broker unavailable, Kafka benchmarks skipped: {err}")
        with contextlib.suppress(KafkaUnavailable):
            broker.stop()
        return None
    return broker, broker.bootstrap


def print_table(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []

    def num(x: float, unit: str = "") -> str:
        return f"{x:,.0f}{unit}" if x == x else "n/a"

    k = results.get("kafka_to_kafka")
    if k:
        rows.append(("1. Kafka→map→Kafka, raw aiokafka pipe", num(k["raw_pipe"]["records_per_s"], "/s"), ""))
        for key, value in k.items():
            if key.startswith("syncbus_"):
                rows.append((f"1. Kafka→map→Kafka, syncbus ({key[8:]})", num(value["records_per_s"], "/s"),
                             f"{100 * value['ratio_to_raw_pipe']:.0f} % of raw (target ≥ 60 %); "
                             f"CPU {value['cpu_percent']:.0f} %, RSS {value['rss_mb']:.0f} MB"))
    for bus in ("kafka", "embedded"):
        section = results.get(f"ingress_to_http_{bus}", {})
        for key, v in section.items():
            if key.startswith("throughput_"):
                rows.append((f"2. ingress→{bus}→map→HTTP ({key[11:]})", num(v["records_per_s"], "/s"),
                             f"ingress {num(v['ingress_accepted_per_s'], '/s')}, CPU {v['cpu_percent']:.0f} %, "
                             f"{num(v['records_per_cpu_s'])}/CPU-s, RSS {v['rss_mb']:.0f} MB (target ≥ 5,000/s)"))
            elif key.startswith("latency_"):
                rows.append((f"3. latency @{v['rate']:.0f}/s {bus} ({key[8:]})",
                             f"p99 {v['p99_ms']:.1f} ms",
                             f"p50 {v['p50_ms']:.1f} ms, p90 {v['p90_ms']:.1f}, max {v['max_ms']:.0f}; "
                             f"{v['delivered']}/{v['accepted']} delivered, ingress kept up at "
                             f"{v['ingress_accepted_per_s']:,.0f}/s (target p99 < 50 ms)"))
                rows.append((f"4. runner RSS @{v['rate']:.0f}/s {bus}", f"{v['rss_mb']:.0f} MB",
                             f"CPU {v['cpu_percent']:.0f} % (target < 150 MB)"))
    for bus in ("kafka", "embedded"):
        sc = results.get(f"scaling_{bus}")
        if sc:
            for count, v in sc.items():
                if count != "speedup":
                    rows.append((f"5. {bus}, {count} worker(s), closed loop", num(v["records_per_s"], "/s"),
                                 f"CPU {v['cpu_percent']:.0f} %, {num(v['records_per_cpu_s'])}/CPU-s, "
                                 f"RSS {v['rss_mb']:.0f} MB (all processes)"))
            if "speedup" in sc:
                rows.append((f"5. {bus}, speed-up", f"{sc['speedup']:.2f}×", "target ≥ 1.7×"))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"\nsyncbus runtime benchmarks (load average before/after: {results['loadavg_before']} / "
          f"{results['loadavg_after']}, {os.cpu_count()} CPUs):")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="syncbus runtime benchmarks")
    parser.add_argument("--records", type=int, default=50_000, help="records pre-loaded for Kafka → Kafka")
    parser.add_argument("--k2k-cap", type=float, default=20.0, help="seconds measured at most per Kafka → Kafka run")
    parser.add_argument("--k2k", action=argparse.BooleanOptionalAction, default=True,
                        help="run Kafka → Kafka (1.) when Kafka is among --buses")
    parser.add_argument("--k2k-no-trace", action=argparse.BooleanOptionalAction, default=True,
                        help="also run Kafka → Kafka with --no-trace (next to the traced runs)")
    parser.add_argument("--seconds", type=float, default=12.0, help="closed-loop load per throughput run")
    parser.add_argument("--connections", type=int, default=64, help="load generator connections (closed loop)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of each load run not measured")
    parser.add_argument("--drain", type=float, default=20.0, help="seconds to wait for a backlog to drain")
    parser.add_argument("--rates", default="1000,250", type=lambda s: [float(r) for r in s.split(",") if r],
                        help="orders/s of the latency runs (the first is the target's 1,000/s)")
    parser.add_argument("--latency-seconds", type=float, default=20.0, help="0 skips the latency runs")
    parser.add_argument("--variants", default="reference,no-schema",
                        type=lambda s: [v for v in s.split(",") if v in ("reference", "no-schema")])
    parser.add_argument("--buses", default="kafka,embedded", type=lambda s: s.split(","))
    parser.add_argument("--runner-args", default="", type=lambda s: s.split(),
                        help="extra `syncbus run` options, e.g. '--no-trace'")
    parser.add_argument("--workers", type=int, default=1, help="`syncbus run --workers` of every run but scaling")
    parser.add_argument("--scaling", default="1,2", type=lambda s: [int(c) for c in s.split(",") if c],
                        help="worker counts of the scaling runs (5.), '' skips them")
    parser.add_argument("--profile", action="store_true", help="py-spy the runner during the throughput runs")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench-runtime.json"))
    args = parser.parse_args([] if argv is None else argv)
    if not args.variants:
        parser.error("--variants: use reference and/or no-schema")

    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="syncbus-bench-"))
    env = {**os.environ, "BENCH_KEYS": API_KEY}
    results: dict[str, Any] = {"loadavg_before": loadavg(), "cpus": os.cpu_count(), "argv": argv or [],
                               "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    broker = None
    target = Target.start()
    bench = Bench(args, work, target, env, results=results)
    started = time.monotonic()
    try:
        if "kafka" in args.buses:
            log("starting a private Kafka broker")
            started_kafka = start_kafka(work)
            if started_kafka is not None:
                broker, bootstrap = started_kafka
                bench.kafka = KafkaTool(bootstrap)
                if args.k2k:
                    bench.kafka_to_kafka()
                bench.ingress_to_http("kafka")
        if "embedded" in args.buses:
            bench.ingress_to_http("embedded")
            if len(args.scaling) > 1:
                bench.scaling("embedded")
    finally:
        results["loadavg_after"] = loadavg()
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        target.stop()
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()
        if bench.kafka is not None:
            bench.kafka.close()
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    print_table(results)
    print(f"  (whole run {results['wall_seconds']} s; details in {args.out})")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
