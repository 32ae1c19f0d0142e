"""`make bench-peers`: syncbus next to Benthos and Apache Camel on the reference mapping, per CPU-second.

Issue 11. Three tools do the same work, the way their users would write it:

* **syncbus**: its mapping engine (``load_mapping`` + ``map_bytes``:
  bench/peers/syncbus_stdin.py) for the mapping path, a real ``syncbus run``
  (HTTP ingress → embedded bus → route → HTTP sink) for the HTTP path;
* **Benthos** (the Apache-2.0 core, github.com/redpanda-data/benthos/v4,
  built from the Go module proxy by bench/peers/benthos/): Bloblang
  (mapping.blobl), stdin → stdout (mapping.yaml) and http_server → http_client
  (http.yaml);
* **Apache Camel 4** (camel-main, Maven Central, bench/peers/camel/): a Java
  bean (OrderMapper) between Jackson JSON and Jackson XML, stream:in →
  stream:out and platform-http → camel-http.

The mapping is mappings/crm-order-to-erp.yaml with its XML target only and no
JSON Schemas (bench/peers/reference.py). Steps:

1. build the peers, cached (var/peers/benthos, var/peers/camel/*.jar; rebuilt
   when their sources, the Go or the Java version change);
2. check: each tool maps the golden order (mappings/tests/data/crm_order.json)
   to the golden ORDERS05 document, and Benthos and Camel write the same XML
   trees as syncbus for a generated corpus (bench/peers/corpus.py, 20,000
   orders); any difference is printed (document, path, both values) and fails
   the run;
3. mapping path, interleaved rounds (the tool order rotates each round): each
   tool as a child process reads orders from a file on stdin and writes to
   /dev/null; CPU (user + system) and peak RSS (VmHWM) of the child are
   sampled every 20 ms from /proc, with how far it has read its stdin
   (/proc/<pid>/fdinfo/0). Records per CPU-second are taken while it reads
   60 % to 95 % of ``--map-records`` (250,000) orders: the steady cost, once
   started and warm (the JVM's JIT needs 100,000 or more orders on a busy
   machine before Camel reaches its steady rate). A run on one order gives the
   start-up CPU, and ``N / CPU`` from ``os.wait4`` the whole-process rate;
4. HTTP path: the three tools run as HTTP servers on 127.0.0.1 next to one
   fast target (bench/http_target.py); after a warm-up (``--http-warmup``
   orders each, 80,000: the JVM needs that many on a busy machine before
   its JIT is done; its curve is logged and kept), interleaved rounds of
   the load generator (bench/peers/loadgen.py: ``--http-records`` orders over
   ``--connections`` keep-alive connections) against each tool; a window ends
   when the target has every APPROVED order, plus ``--settle`` seconds. CPU of
   the tool's process (and any children) from /proc/<pid>/stat before and
   after; RSS is VmHWM (peak).

Prints one table (medians over the rounds; the ratio is the median of the
per-round ratios to syncbus of the same round) and writes it to
var/bench-peers.md and, with every round, var/bench-peers.json::

    .venv/bin/python bench/peers/run.py [--rounds 3] [--map-records 250000] [--http-records 20000] [--check-only]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VAR = ROOT / "var"
OUT = VAR / "peers"
PYTHON = sys.executable
SYNCBUS = str(Path(sys.executable).parent / "syncbus")
BENTHOS_DIR = HERE / "benthos"
CAMEL_DIR = HERE / "camel"
BENTHOS_BIN = OUT / "benthos"
CAMEL_JAR = OUT / "camel" / "syncbus-peer-camel.jar"
GOLDEN_IN = ROOT / "mappings" / "tests" / "data" / "crm_order.json"
GOLDEN_OUT = ROOT / "mappings" / "tests" / "data" / "crm_order.ORDERS05.xml"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOOLS = ("syncbus", "benthos", "camel")

sys.path.insert(0, str(HERE))

import compare  # noqa: E402
import corpus  # noqa: E402
from reference import write_bench_mapping  # noqa: E402


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------- builds (cached)


def _digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"{argv[0]} is not usable: {exc}") from None
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def _cached_build(name: str, artifact: Path, stamp: Path, digest: str, build: Callable[[], None],
                  force: bool) -> dict[str, Any]:
    if not force and artifact.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        log(f"{name}: cached build {artifact.relative_to(ROOT)}")
        return {"cached": True, "seconds": 0.0}
    log(f"{name}: building {artifact.relative_to(ROOT)} …")
    t0 = time.monotonic()
    build()
    if not artifact.exists():
        raise BenchError(f"{name}: the build did not produce {artifact}")
    stamp.write_text(digest + "\n")
    seconds = round(time.monotonic() - t0, 1)
    log(f"{name}: built in {seconds} s")
    return {"cached": False, "seconds": seconds}


def _run_build(argv: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BenchError(f"{what} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def build_benthos(force: bool = False) -> dict[str, Any]:
    """go build of bench/peers/benthos (modules from the Go module proxy) into var/peers/benthos."""
    go = shutil.which("go")
    if go is None:
        raise BenchError("Go is not installed: the Benthos peer cannot be built")
    version = _tool_version([go, "version"])
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    OUT.mkdir(parents=True, exist_ok=True)
    sources = [BENTHOS_DIR / "go.mod", BENTHOS_DIR / "go.sum", BENTHOS_DIR / "main.go"]

    def build() -> None:
        _run_build([go, "build", "-trimpath", "-o", str(BENTHOS_BIN), "."], BENTHOS_DIR, env, "go build (Benthos)")

    info = _cached_build("benthos", BENTHOS_BIN, OUT / "benthos.stamp", _digest(sources, version), build, force)
    info["go"] = version
    info["version"] = _tool_version([str(BENTHOS_BIN), "--version"])
    return info


def build_camel(force: bool = False) -> dict[str, Any]:
    """mvn -q package of bench/peers/camel (Maven Central) into var/peers/camel/."""
    mvn, java = shutil.which("mvn"), shutil.which("java")
    if mvn is None or java is None:
        raise BenchError("Maven or Java is not installed: the Camel peer cannot be built")
    version = _tool_version([java, "-version"])
    sources = [CAMEL_DIR / "pom.xml", *sorted((CAMEL_DIR / "src").rglob("*.java"))]

    def build() -> None:
        _run_build([mvn, "-q", "-B", "package"], CAMEL_DIR, dict(os.environ), "mvn package (Camel)")

    info = _cached_build("camel", CAMEL_JAR, OUT / "camel.stamp", _digest(sources, version), build, force)
    info["java"] = version
    pom = (CAMEL_DIR / "pom.xml").read_text()
    info["version"] = pom.split("<camel.version>", 1)[1].split("<", 1)[0]
    return info


# --------------------------------------------------------------------------- the tools


@dataclass
class Tool:
    name: str
    mapping_argv: Callable[[int], list[str]]  # lines on stdin -> argv
    env: dict[str, str]
    cwd: Path


def syncbus_env(src: str | None) -> dict[str, str]:
    """The environment of syncbus's processes: ``--syncbus-src`` (a copy of src/) first on the path, if given."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(src).resolve()), env.get("PYTHONPATH")) if p)
    return env


def make_tools(work: Path, java_opts: list[str], syncbus_src: str | None = None) -> dict[str, Tool]:
    mapping_file = write_bench_mapping(work / "syncbus-mapping")
    env = dict(os.environ)
    benthos_env = {**env, "MAPPING_FILE": str(BENTHOS_DIR / "mapping.blobl")}
    return {
        "syncbus": Tool("syncbus", lambda n: [PYTHON, str(HERE / "syncbus_stdin.py"), "--mapping", str(mapping_file)],
                        syncbus_env(syncbus_src), ROOT),
        "benthos": Tool("benthos", lambda n: [str(BENTHOS_BIN), "-c", str(BENTHOS_DIR / "mapping.yaml")],
                        benthos_env, BENTHOS_DIR),
        "camel": Tool("camel", lambda n: ["java", *java_opts, "-jar", str(CAMEL_JAR), "stdin", str(n)], env, ROOT),
    }


@dataclass
class ChildRun:
    cpu_s: float
    user_s: float
    sys_s: float
    maxrss_mb: float
    wall_s: float
    returncode: int
    stderr: str
    progress: list[tuple[int, float]] = field(default_factory=list)  # (stdin offset, CPU s), every 20 ms


def run_child(argv: list[str], stdin: Path, stdout: Path | None, env: dict[str, str], cwd: Path,
              timeout: float = 900.0) -> ChildRun:
    """Run ``argv`` with a file on stdin; CPU from os.wait4, peak RSS from /proc/<pid>/status.

    Not ``ru_maxrss``: a child forked from this (much larger) process starts
    with this process's RSS as its high-water mark and keeps it across exec,
    so every small tool would report at least our own size. VmHWM belongs to
    the exec'ed program's own memory; it is sampled every 20 ms until the exit,
    together with how far the child has read its stdin (/proc/<pid>/fdinfo/0)
    and its CPU so far, for the steady rate of the mapping path.
    """
    err_path = Path(tempfile.mkstemp(prefix="peer-stderr-")[1])
    peak = [0.0]
    progress: list[tuple[int, float]] = []
    try:
        with stdin.open("rb") as fin, (stdout.open("wb") if stdout else open(os.devnull, "wb")) as fout, \
                err_path.open("wb") as ferr:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, stdin=fin, stdout=fout, stderr=ferr, env=env, cwd=cwd,
                                    start_new_session=True)
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.02):
                    peak[0] = max(peak[0], proc_status_mb(proc.pid, "VmHWM"))
                    point = stdin_progress(proc.pid)
                    if point is not None:
                        progress.append(point)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            timer = threading.Timer(timeout, lambda: _kill_group(proc.pid))
            timer.start()
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
                done.set()
                sampler.join()
            wall = time.monotonic() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        stderr = err_path.read_text("utf-8", "replace")
    finally:
        err_path.unlink(missing_ok=True)
    return ChildRun(usage.ru_utime + usage.ru_stime, usage.ru_utime, usage.ru_stime, peak[0],
                    wall, proc.returncode, stderr, progress)


def stdin_progress(pid: int) -> tuple[int, float] | None:
    """(bytes of stdin read so far, CPU seconds so far) of a running process, None once it is gone."""
    try:
        fdinfo = Path(f"/proc/{pid}/fdinfo/0").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if stat[0] == "Z":
        return None
    pos = int(fdinfo.split("pos:", 1)[1].split()[0])
    return pos, (int(stat[11]) + int(stat[12])) / CLK_TCK


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _stderr_tail(text: str, lines: int = 15) -> str:
    useful = [x for x in text.splitlines() if x.strip() and not x.startswith("SLF4J(")]
    return "\n".join(useful[-lines:])


# --------------------------------------------------------------------------- step 2: equality


def one_line(path: Path) -> bytes:
    return json.dumps(json.loads(path.read_text("utf-8")), ensure_ascii=False).encode("utf-8")


def check_equality(tools: dict[str, Tool], corpus_path: Path, golden_line: Path, lines: int) -> dict[str, Any]:
    out_dir = OUT / "check"
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    failures: list[str] = []
    golden = GOLDEN_OUT.read_bytes()
    outputs: dict[str, bytes] = {}
    for name, tool in tools.items():
        g = run_child(tool.mapping_argv(1), golden_line, out_dir / f"{name}.golden.xml", tool.env, tool.cwd, 300)
        if g.returncode != 0:
            failures.append(f"{name}: exit {g.returncode} on the golden order:\n{_stderr_tail(g.stderr)}")
            continue
        diffs = compare.compare_streams(golden, (out_dir / f"{name}.golden.xml").read_bytes())
        if diffs:
            failures.append(compare.report(diffs, "golden crm_order.ORDERS05.xml", name))
        log(f"check: {name} on the golden order: {'equal' if not diffs else f'{len(diffs)} differences'}")
        r = run_child(tool.mapping_argv(lines), corpus_path, out_dir / f"{name}.xml", tool.env, tool.cwd)
        if r.returncode != 0:
            failures.append(f"{name}: exit {r.returncode} on the corpus:\n{_stderr_tail(r.stderr)}")
            continue
        outputs[name] = (out_dir / f"{name}.xml").read_bytes()
        noisy = _stderr_tail(r.stderr, 5)
        if noisy and name == "benthos":  # Benthos logs mapping errors and passes the record on
            failures.append(f"benthos: errors on stderr:\n{noisy}")
        results[name] = {"documents": len(compare.split_documents(outputs[name])), "cpu_s": round(r.cpu_s, 2),
                         "golden_equal": not diffs}
    if "syncbus" in outputs:
        for name in outputs:
            if name == "syncbus":
                continue
            diffs = compare.compare_streams(outputs["syncbus"], outputs[name])
            results[name]["differences"] = len(diffs)
            text = compare.report(diffs, "syncbus", name)
            log(f"check: {text.splitlines()[0]}")
            if diffs:
                failures.append(text)
    elif "syncbus" in tools:
        failures.append("syncbus produced no output to compare with")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        raise BenchError("the tools' outputs differ (see above); outputs are in var/peers/check/")
    return results


# --------------------------------------------------------------------------- step 3: mapping path


def write_lines(path: Path, lines: list[bytes], count: int) -> list[int]:
    """Write ``count`` lines (the corpus over and over); returns the byte offset where each line ends."""
    ends: list[int] = []
    pos = 0
    with path.open("wb") as f:
        for i in range(count):
            line = lines[i % len(lines)] + b"\n"
            f.write(line)
            pos += len(line)
            ends.append(pos)
    return ends


def steady_rate(progress: list[tuple[int, float]], ends: list[int], window: tuple[float, float]) -> dict[str, float]:
    """Records per CPU-second while the child read the ``window`` fraction of its input (e.g. 40 % to 95 %).

    Records are counted from stdin offsets (lines wholly read), CPU from the
    samples taken at the same moments. A tool reads at most a buffer (a few
    KB, a few dozen orders) ahead of what it has mapped, which is noise next to
    the tens of thousands of orders in the window.
    """
    lo, hi = ends[int(len(ends) * window[0])], ends[min(len(ends) - 1, int(len(ends) * window[1]))]
    inside = [p for p in progress if lo <= p[0] <= hi]
    if len(inside) < 5:
        return {"records_per_cpu_s": float("nan"), "window_records": 0, "window_cpu_s": 0.0,
                "window_samples": len(inside)}
    (pos_a, cpu_a), (pos_b, cpu_b) = inside[0], inside[-1]
    records = bisect.bisect_right(ends, pos_b) - bisect.bisect_right(ends, pos_a)
    cpu = cpu_b - cpu_a
    return {"records_per_cpu_s": records / cpu if cpu > 0 else float("nan"), "window_records": records,
            "window_cpu_s": cpu, "window_samples": len(inside)}


def mapping_rounds(tools: dict[str, Tool], corpus_lines: list[bytes], records: int, one: Path, rounds: int,
                   work: Path, window: tuple[float, float]) -> list[dict[str, Any]]:
    """Interleaved rounds of two runs per tool: 1 order (start-up) and ``records`` orders (measured).

    The steady rate is taken inside the long run, between the moments the tool
    had read ``window[0]`` and ``window[1]`` of its input (60 % and 95 % by
    default): start-up and warm-up (imports, the JVM's start, JIT compilation,
    Camel's context) come before the window. The whole-process rate
    (``records / CPU`` from os.wait4, start-up included) is kept next to it.
    """
    big = work / "map-input.jsonl"
    ends = write_lines(big, corpus_lines, records)
    names = list(tools)
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row: dict[str, Any] = {"round": r + 1, "order": order, "loadavg": loadavg()}
        for name in order:
            tool = tools[name]
            start = run_child(tool.mapping_argv(1), one, None, tool.env, tool.cwd, 300)
            full = run_child(tool.mapping_argv(records), big, None, tool.env, tool.cwd)
            for what, run in (("start-up", start), ("measured", full)):
                if run.returncode != 0:
                    raise BenchError(f"{name} mapping path ({what} run) exited {run.returncode}:\n"
                                     f"{_stderr_tail(run.stderr)}")
            steady = steady_rate(full.progress, ends, window)
            row[name] = {
                "records": records, "cpu_s": full.cpu_s, "user_s": full.user_s, "sys_s": full.sys_s,
                "wall_s": full.wall_s, "startup_cpu_s": start.cpu_s, "maxrss_mb": full.maxrss_mb, **steady,
                "records_per_cpu_s_whole_process": records / full.cpu_s if full.cpu_s else float("nan"),
            }
            log(f"mapping round {r + 1}: {name:8} {row[name]['records_per_cpu_s']:>9,.0f} records/CPU-s steady "
                f"({steady['window_records']:,} records in the window); whole process "
                f"{row[name]['records_per_cpu_s_whole_process']:,.0f}/CPU-s, start-up {start.cpu_s:.2f} CPU-s, "
                f"peak RSS {full.maxrss_mb:.0f} MB, load {row['loadavg'][0]}")
        out.append(row)
    return out


# --------------------------------------------------------------------------- step 4: HTTP path


def proc_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants, plus children it reaped."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        stats[int(entry)] = fields
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for p in tree:
        f = stats.get(p)
        if f is None:
            continue
        total += int(f[11]) + int(f[12])
        if p == pid:
            total += int(f[13]) + int(f[14])
    return total / CLK_TCK


def proc_status_mb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class FastTarget:
    proc: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls) -> FastTarget:
        proc = subprocess.Popen([PYTHON, str(ROOT / "bench" / "http_target.py")], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            stop(proc)
            raise BenchError(f"the benchmark target did not start: {url!r}")
        return cls(proc, url)

    def count(self) -> int:
        return int(json.loads(_http("GET", f"{self.url}/_stats")[1])["count"])

    def reset(self) -> None:
        _http("POST", f"{self.url}/_reset", b"")


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.wait()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str  # the ingress URL the load generator posts to
    log_path: Path
    samples: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self) -> str:
        return _stderr_tail(self.log_path.read_text("utf-8", "replace")) if self.log_path.exists() else ""


PROBE = b'{"order_id": "PROBE", "status": "PROBE", "cust_code": "x", "amount": 1, "lines": []}'


def _wait_ready(server: Server, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return
        time.sleep(0.2)
    raise BenchError(f"{server.name} not ready within {timeout:.0f} s:\n{server.tail()}")


def start_syncbus(work: Path, target: str, extra: list[str], src: str | None = None) -> Server:
    cfg = work / "syncbus-run"
    write_bench_mapping(cfg / "mappings", topic="crm.orders")
    (cfg / "connectors").mkdir(parents=True, exist_ok=True)
    (cfg / "connectors" / "bench.yaml").write_text(textwrap.dedent(f"""\
        # generated by bench/peers/run.py: HTTP ingress -> embedded bus -> route -> HTTP sink (the fast target)
        sources:
          - name: crm-orders
            type: http_ingress
            topic: crm.orders
            key: order_id
        sinks:
          - name: erp-orders
            type: http
            url: {target}/erp/orders
            retry: {{attempts: 4, initial: 100ms, max: 2s}}
            timeout: 10s
        """), encoding="utf-8")
    port = free_port()
    log_path = cfg / "syncbus.log"
    proc = subprocess.Popen(
        [SYNCBUS, "run", "--config-dir", str(cfg), "--bus", f"embedded://{cfg}/bus.db", "--store",
         f"sqlite:///{cfg}/store.db", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, env=syncbus_env(src), start_new_session=True)
    server = Server("syncbus", proc, f"http://127.0.0.1:{port}/ingress/crm-orders", log_path)
    _wait_ready(server, lambda: _http("GET", f"http://127.0.0.1:{port}/readyz", timeout=2)[0] == 200)
    return server


def start_benthos(work: Path, target: str) -> Server:
    port = free_port()
    log_path = work / "benthos-http.log"
    env = {**os.environ, "PORT": str(port), "TARGET_URL": f"{target}/erp/orders",
           "MAPPING_FILE": str(BENTHOS_DIR / "mapping.blobl")}
    proc = subprocess.Popen([str(BENTHOS_BIN), "-c", str(BENTHOS_DIR / "http.yaml")], cwd=BENTHOS_DIR, env=env,
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("benthos", proc, f"http://127.0.0.1:{port}/ingress/crm-orders", log_path)
    _wait_ready(server, lambda: 200 <= _http("POST", server.url, PROBE, timeout=2)[0] < 300)
    return server


def start_camel(work: Path, target: str, java_opts: list[str]) -> Server:
    port = free_port()
    log_path = work / "camel-http.log"
    proc = subprocess.Popen(["java", *java_opts, "-jar", str(CAMEL_JAR), "http", str(port), f"{target}/erp/orders"],
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("camel", proc, f"http://127.0.0.1:{port}/ingress/crm-orders", log_path)
    _wait_ready(server, lambda: 200 <= _http("POST", server.url, PROBE, timeout=2)[0] < 300)
    return server


def load_window(server: Server, target: FastTarget, corpus_path: Path, records: int, connections: int,
                tag: str, work: Path, settle: float, drain: float = 120.0) -> dict[str, Any]:
    """One measured window: reset the target, send ``records`` orders, wait until all approved ones arrived.

    The window closes ``settle`` seconds after the last delivery, so work a tool
    does after delivering (syncbus commits offsets and writes trace rows) is
    counted; the same pause for every tool.
    """
    target.reset()
    report_path = work / f"load-{server.name}-{tag}.json"
    cpu0 = proc_tree_cpu(server.pid)
    t0 = time.monotonic()
    gen = subprocess.run([PYTHON, str(HERE / "loadgen.py"), "--url", server.url, "--corpus", str(corpus_path),
                          "--records", str(records), "--connections", str(connections), "--tag", tag,
                          "--out", str(report_path)], timeout=1800)
    if gen.returncode != 0:
        raise BenchError(f"the load generator failed against {server.name}")
    report = json.loads(report_path.read_text())
    expected = report["accepted_approved"]
    deadline = time.monotonic() + drain
    delivered = target.count()
    while delivered < expected and time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"{server.name} exited during the load:\n{server.tail()}")
        time.sleep(0.05)
        delivered = target.count()
    wall = time.monotonic() - t0
    time.sleep(settle)
    cpu = proc_tree_cpu(server.pid) - cpu0
    accepted = report["accepted"]
    if report["errors"] or accepted < records or delivered < expected:
        log(f"  {server.name}: {accepted}/{records} accepted, {delivered}/{expected} delivered, "
            f"errors {report['errors']}")
    return {"records": accepted, "sent": report["sent"], "delivered": delivered, "expected_deliveries": expected,
            "errors": report["errors"], "cpu_s": cpu, "wall_s": wall,
            "records_per_cpu_s": accepted / cpu if cpu > 0 else float("nan"),
            "records_per_s": accepted / wall if wall > 0 else float("nan"),
            "cpu_percent": 100 * cpu / wall if wall > 0 else 0.0,
            "rss_mb": proc_status_mb(server.pid, "VmRSS"), "peak_rss_mb": proc_status_mb(server.pid, "VmHWM")}


def http_rounds(servers: dict[str, Server], target: FastTarget, corpus_path: Path, args: argparse.Namespace,
                work: Path) -> dict[str, Any]:
    # A fixed warm-up, the same for every tool, in chunks whose rates are kept (the warm-up curve):
    # Go and Python are at their steady rate from the first chunk; the JVM on a busy 2-core machine
    # needs tens of thousands of requests (C2 compiles late when neighbours take the cores) and its
    # rate may sit on a plateau before the next jump, so "two chunks agree" is no stopping rule.
    warm: dict[str, list[dict[str, Any]]] = {}
    chunk = max(1, min(args.http_warmup, 10_000))
    for name, server in servers.items():
        chunks = warm[name] = []
        left, k = args.http_warmup, 0
        while left > 0:
            n = min(chunk, left)
            w = load_window(server, target, corpus_path, n, args.connections, f"w{k}", work, args.settle)
            chunks.append(w)
            left -= n
            k += 1
            log(f"http warm-up {k}: {name:8} {w['records_per_cpu_s']:>8,.0f} records/CPU-s, "
                f"{w['records_per_s']:,.0f}/s")
    names = list(servers)
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row: dict[str, Any] = {"round": r + 1, "order": order, "loadavg": loadavg()}
        for name in order:
            w = load_window(servers[name], target, corpus_path, args.http_records, args.connections, f"r{r + 1}", work,
                            args.settle)
            row[name] = w
            log(f"http round {r + 1}: {name:8} {w['records_per_cpu_s']:>8,.0f} records/CPU-s "
                f"({1e6 / w['records_per_cpu_s']:,.0f} µs CPU/record), {w['records_per_s']:,.0f}/s at "
                f"{w['cpu_percent']:.0f} % CPU, RSS {w['rss_mb']:.0f} MB, load {row['loadavg'][0]}")
        rounds.append(row)
    return {"warmup": warm, "rounds": rounds}


# --------------------------------------------------------------------------- the table


def summarize(rounds: list[dict[str, Any]], names: list[str], rss_key: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in names:
        rates = [row[name]["records_per_cpu_s"] for row in rounds if name in row]
        if not rates:
            continue
        ratios = [row[name]["records_per_cpu_s"] / row["syncbus"]["records_per_cpu_s"]
                  for row in rounds if name in row and "syncbus" in row]
        median = statistics.median(rates)
        out[name] = {
            "records_per_cpu_s": median,
            "us_cpu_per_record": 1e6 / median,
            "ratio_vs_syncbus": statistics.median(ratios) if ratios else float("nan"),
            "ratio_min": min(ratios) if ratios else float("nan"),
            "ratio_max": max(ratios) if ratios else float("nan"),
            "rss_mb": max(row[name][rss_key] for row in rounds if name in row),
            "rounds": len(rates),
        }
        startup = [row[name].get("startup_cpu_s") for row in rounds if name in row and "startup_cpu_s" in row[name]]
        if startup:
            out[name]["startup_cpu_s"] = statistics.median(startup)
            out[name]["records_per_cpu_s_whole_process"] = statistics.median(
                row[name]["records_per_cpu_s_whole_process"] for row in rounds if name in row)
        walls = [row[name].get("records_per_s") for row in rounds if name in row and "records_per_s" in row[name]]
        if walls:
            out[name]["records_per_s"] = statistics.median(walls)
    return out


def table(results: dict[str, Any]) -> str:
    head = ("| tool | path | records/CPU-s | µs CPU/record | ratio vs syncbus (min–max) | peak RSS |\n"
            "| --- | --- | ---: | ---: | ---: | ---: |")
    rows = [head]
    for path, label in (("mapping", "mapping (stdin → stdout)"), ("http", "HTTP (in → map → out)")):
        summary = results.get("summary", {}).get(path, {})
        for name in TOOLS:
            s = summary.get(name)
            if s is None:
                continue
            ratio = "1.0" if name == "syncbus" else (
                f"{s['ratio_vs_syncbus']:.2f}× ({s['ratio_min']:.2f}–{s['ratio_max']:.2f})")
            rows.append(f"| {name} | {label} | {s['records_per_cpu_s']:,.0f} | {s['us_cpu_per_record']:,.0f} | "
                        f"{ratio} | {s['rss_mb']:,.0f} MB |")
    return "\n".join(rows)


def notes(results: dict[str, Any]) -> str:
    lines = []
    m = results.get("summary", {}).get("mapping", {})
    if m:
        w = results["args"]["map_window"].split(",")
        lines.append(f"Mapping path: steady records per CPU-second, measured while each tool read "
                     f"{float(w[0]):.0%}–{float(w[1]):.0%} of its input, so start-up and JIT warm-up are not in them. "
                     "Start-up CPU of one process (1 order): "
                     + ", ".join(
            f"{n} {s['startup_cpu_s']:.2f} s" for n, s in m.items() if "startup_cpu_s" in s) + "; whole-process "
            "records/CPU-s, start-up and warm-up included: " + ", ".join(
            f"{n} {s['records_per_cpu_s_whole_process']:,.0f}" for n, s in m.items()
            if "records_per_cpu_s_whole_process" in s) + f" ({results['args']['map_records']:,} records a run).")
    h = results.get("summary", {}).get("http", {})
    if h:
        lines.append("HTTP wall-clock rates (all three share 2 cores with the load generator, the target and "
                     "the neighbours): " + ", ".join(f"{n} {s.get('records_per_s', 0):,.0f}/s" for n, s in h.items())
                     + f" ({results['args']['http_records']:,} orders a window after "
                       f"{results['args']['http_warmup']:,} to warm up, {results['args']['connections']} "
                       "connections).")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    v = results["versions"]
    return "\n".join([
        "# syncbus vs Benthos vs Apache Camel (`make bench-peers`)",
        "",
        f"{results['started']}; {results['cpus']} CPUs; load average before/after "
        f"{results['loadavg_before']} / {results['loadavg_after']}; {results['args']['rounds']} interleaved rounds, "
        "medians; ratio = the tool's records per CPU-second ÷ syncbus's in the same round (> 1: cheaper than "
        "syncbus).",
        "",
        table(results),
        "",
        notes(results),
        "",
        f"Versions: syncbus {v.get('syncbus')} from {v.get('syncbus_src')}, Python {v.get('python')}; Benthos "
        f"{v.get('benthos')} "
        f"({v.get('go')}), Apache Camel {v.get('camel')} ({v.get('java')}). Reference mapping "
        "crm-order-to-erp, XML target, no JSON Schemas; outputs checked equal as XML trees on "
        f"{results['args']['corpus_size']:,} generated orders and the golden order.",
        "",
    ])


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tools", default=",".join(TOOLS), help="subset of syncbus,benthos,camel")
    parser.add_argument("--paths", default="mapping,http", help="mapping and/or http")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus-size", type=int, default=20_000, help="orders in the corpus (and the check)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--map-records", type=int, default=250_000, help="orders per mapping-path run")
    parser.add_argument("--map-window", default="0.6,0.95",
                        help="fractions of the input between which the steady mapping rate is measured")
    parser.add_argument("--http-records", type=int, default=20_000, help="orders per HTTP window")
    parser.add_argument("--http-warmup", type=int, default=80_000,
                        help="orders sent to each server before measuring (in chunks of 10,000, rates logged)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds an HTTP window stays open after delivery")
    parser.add_argument("--java-opts", default="", help="JVM options for Camel (default: none, the JVM's defaults)")
    parser.add_argument("--syncbus-args", default="", help="extra `syncbus run` options, e.g. --no-trace")
    parser.add_argument("--syncbus-src", help="a copy of src/ to run syncbus from (a fixed version while src/ "
                        "changes; default: the installed package)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the peers even if cached")
    parser.add_argument("--check-only", action="store_true", help="build and check equality, measure nothing")
    parser.add_argument("--out-md", default=str(VAR / "bench-peers.md"))
    parser.add_argument("--out-json", default=str(VAR / "bench-peers.json"))
    args = parser.parse_args(argv)
    names = [n for n in TOOLS if n in args.tools.split(",")]
    paths = [p for p in ("mapping", "http") if p in args.paths.split(",")]
    if "syncbus" not in names:
        parser.error("--tools must include syncbus (the ratios are to syncbus)")
    java_opts = args.java_opts.split()

    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                               "loadavg_before": loadavg(), "args": vars(args), "host": platform.platform()}
    versions: dict[str, Any] = {"python": platform.python_version(), "syncbus": _syncbus_version(),
                                "syncbus_src": _source_digest(Path(args.syncbus_src) if args.syncbus_src
                                                              else ROOT / "src")}
    builds: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="syncbus-peers-"))
    target: FastTarget | None = None
    servers: dict[str, Server] = {}
    try:
        if "benthos" in names:
            builds["benthos"] = build_benthos(args.rebuild)
            versions["benthos"] = builds["benthos"]["version"].removeprefix("Version: ")
            versions["go"] = builds["benthos"]["go"]
        if "camel" in names:
            builds["camel"] = build_camel(args.rebuild)
            versions["camel"] = builds["camel"]["version"]
            versions["java"] = builds["camel"]["java"]
        results["builds"], results["versions"] = builds, versions

        corpus_path = OUT / f"corpus-{args.corpus_size}-{args.seed}.jsonl"
        approved = corpus.write(corpus_path, args.corpus_size, args.seed)
        log(f"corpus: {args.corpus_size:,} orders ({approved:,} APPROVED) in {corpus_path.relative_to(ROOT)}")
        golden_line = work / "golden.jsonl"
        golden_line.write_bytes(one_line(GOLDEN_IN) + b"\n")
        tools = {n: t for n, t in make_tools(work, java_opts, args.syncbus_src).items() if n in names}

        results["check"] = check_equality(tools, corpus_path, golden_line, args.corpus_size)
        if args.check_only:
            return 0

        results["summary"] = {}
        if "mapping" in paths:
            lines = corpus_path.read_bytes().splitlines()
            window = tuple(float(x) for x in args.map_window.split(","))
            results["mapping"] = mapping_rounds(tools, lines, args.map_records, golden_line, args.rounds, work,
                                                (window[0], window[1]))
            results["summary"]["mapping"] = summarize(results["mapping"], names, "maxrss_mb")
        if "http" in paths:
            target = FastTarget.start()
            starters: dict[str, Callable[[], Server]] = {
                "syncbus": lambda: start_syncbus(work, target.url, args.syncbus_args.split(), args.syncbus_src),
                "benthos": lambda: start_benthos(work, target.url),
                "camel": lambda: start_camel(work, target.url, java_opts),
            }
            for name in names:
                servers[name] = starters[name]()
                log(f"http: {name} serving {servers[name].url} (pid {servers[name].pid})")
            results["http"] = http_rounds(servers, target, corpus_path, args, work)
            results["summary"]["http"] = summarize(results["http"]["rounds"], names, "peak_rss_mb")
    except BenchError as exc:
        log(f"bench-peers failed: {exc}")
        return 1
    finally:
        for server in servers.values():
            stop(server.proc)
        if target is not None:
            stop(target.proc, 5)
        results["loadavg_after"] = loadavg()
        shutil.rmtree(work, ignore_errors=True)

    Path(args.out_json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    text = markdown(results)
    Path(args.out_md).write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"(written to {_show(Path(args.out_md))} and {_show(Path(args.out_json))}; builds: "
          + ", ".join(f"{k} {'cached' if v['cached'] else str(v['seconds']) + ' s'}" for k, v in builds.items())
          + ")")
    return 0


def _show(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _source_digest(src: Path) -> str:
    """Where syncbus ran from and a digest of its Python files (src/ changes while others work)."""
    files = sorted((src / "syncbus").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(src)).encode())
        h.update(f.read_bytes())
    return f"{_show(src)} (sha256 of {len(files)} .py files: {h.hexdigest()[:12]})"


def _syncbus_version() -> str:
    try:
        from importlib.metadata import version

        return version("syncbus")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
