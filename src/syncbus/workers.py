"""``syncbus run --workers N``: one node on every core (issue 11).

Python runs one thread of Python at a time, so one ``syncbus run`` uses one
core however many a machine has. With ``--workers N`` (default: the cores
this process may run on) the command becomes a small parent process that
starts N workers -- each a complete ``syncbus run`` -- and:

* **shares the port**: every worker binds the same address with
  ``SO_REUSEPORT`` and the kernel spreads incoming connections over them.
  The parent checks the address first (plainly, so an address that another
  program, or another syncbus, holds is "address in use", exit 1) and hands
  the port to the workers (``--port 0`` works too).
* **splits the routes' work**: on Kafka the workers are members of the same
  consumer groups, so the partitions are divided among them. On the embedded
  bus each worker takes the records whose key falls in its share (see
  ``bus/embedded.py``). Either way a key is always handled by one worker, in
  order; every guarantee of one process holds (at-least-once, outcomes stored
  before offsets are committed, idempotency claims in the shared store).
* **is one node to operate**: one start-up line (worker 0's, once every worker
  is ready); SIGTERM/SIGINT drain every worker and exit 0 when all stopped
  cleanly; SIGHUP (reload) reaches every worker -- ``POST /admin/reload``,
  answered by one of them, sends one to the parent (``reload.py``) -- and a
  worker still starting gets it once it listens; ``/metrics`` shows the
  whole node (``metrics.py``, multi-process mode); kill -9 of the process
  group stops everything, and a worker whose parent dies gets SIGTERM.
* **keeps going**: a worker that dies (after start-up) is started again; one
  that keeps dying (``MAX_RESTARTS`` within ``RESTART_WINDOW`` s) stops the
  node with exit 1. A worker that fails at start-up stops the node at once.

Workers start one after the other's start-up (worker 0 first, then the rest
together), so a configuration error is reported once, and store and bus
files are created by one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SyncbusError
from .logs import banner_line

ENV_WORKER = "SYNCBUS_WORKER"                # "i/N" in worker i of N
ENV_PORT = "SYNCBUS_WORKER_PORT"             # the port the parent checked (the workers bind it)
ENV_READY_FD = "SYNCBUS_WORKER_READY_FD"     # worker → parent: its start-up line once it listens
ENV_PARENT = "SYNCBUS_WORKER_PARENT"         # the parent's pid: a worker whose parent is gone stops
ENV_METRICS = "PROMETHEUS_MULTIPROC_DIR"     # metrics.py: every worker's samples, merged at /metrics
ENV_NODE_DIR = "SYNCBUS_NODE_DIR"            # state the workers share in memory (ingress/security/shared_buckets.py)

STOP_TIMEOUT = 60.0      # a worker drains (HTTP 15 s, in-flight deliveries 10 s); then it is killed
START_TIMEOUT = 300.0    # start-up of one worker (a Kafka broker may be slow to answer)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
_PR_SET_PDEATHSIG = 1


class WorkerError(SyncbusError):
    """The workers could not be started as asked."""


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """This process is worker ``index`` of ``count`` (from the parent's environment)."""

    index: int
    count: int
    port: int | None = None
    ready_fd: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerIdentity | None:
        raw = env.get(ENV_WORKER)
        if not raw:
            return None
        try:
            index_text, count_text = raw.split("/", 1)
            index, count = int(index_text), int(count_text)
        except ValueError:
            raise WorkerError(f"{ENV_WORKER}={raw!r}: expected <index>/<count>") from None
        if not 0 <= index < count:
            raise WorkerError(f"{ENV_WORKER}={raw!r}: there is no worker {index} of {count}")
        port = int(env[ENV_PORT]) if env.get(ENV_PORT) else None
        fd = int(env[ENV_READY_FD]) if env.get(ENV_READY_FD) else None
        return cls(index, count, port, fd)

    def announce(self, line: str) -> None:
        """Tell the parent this worker listens (worker 0's line is the node's start-up line)."""
        self._tell(line.replace("\n", " "))

    def _tell(self, line: str) -> None:
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.ready_fd, (line + "\n").encode("utf-8"))



def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def prepare_worker(env: Mapping[str, str]) -> None:
    """First thing in a worker: SIGTERM (a drain) when the parent dies, however it died (Linux), and no
    death by a SIGHUP that arrives before the reloader listens for it (it loads the config afresh anyway)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = env.get(ENV_PARENT)
    if parent and parent.isdigit() and os.getppid() != int(parent):
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before prctl: stop like it had


def check_address(host: str, port: int) -> int:
    """Bind once, exclusively: "in use" is an error here, not a port silently shared. The bound port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise WorkerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return int(sock.getsockname()[1])


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int | None
    line: str | None = None      # its start-up line: it listens
    buffer: str = ""
    hup_pending: bool = False    # a SIGHUP came while it was starting: sent once it listens

    @property
    def ready(self) -> bool:
        return self.line is not None


class Parent:
    """The parent of ``count`` workers (module docstring)."""

    def __init__(self, argv: Sequence[str], count: int, host: str, port: int, *, log_format: str = "text",
                 env: Mapping[str, str] | None = None) -> None:
        if count < 2:
            raise WorkerError("--workers: a parent needs at least 2 workers")
        self.argv = list(argv)
        self.count = count
        self.host = host
        self.port = port
        self.log_format = log_format
        self.env = dict(os.environ if env is None else env)
        self.workers: dict[int, _Worker] = {}
        self.stopping = False
        self.restarts: list[float] = []
        self.node_dir: str | None = None      # the node's shared files, removed when it stops
        self.metrics_dir: str | None = None
        self.failed = False

    # -- messages ---------------------------------------------------------------------

    def say(self, message: str, level: str = "WARNING") -> None:
        if self.log_format.strip().lower() == "json":
            line = banner_line(message, "json").replace('"level": "INFO"', f'"level": "{level}"')
        else:
            line = f"syncbus workers: {message}"
        print(line, file=sys.stderr, flush=True)

    # -- processes --------------------------------------------------------------------

    def _spawn(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        env = {**self.env, ENV_WORKER: f"{index}/{self.count}", ENV_PORT: str(self.port),
               ENV_READY_FD: str(write_fd), ENV_PARENT: str(os.getpid())}
        if self.node_dir is not None and self.metrics_dir is not None:
            env[ENV_METRICS] = self.metrics_dir
            env[ENV_NODE_DIR] = self.node_dir
        code = "import sys; sys.argv[0] = 'syncbus'; from syncbus.cli import main; main()"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code, *self.argv], env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        return _Worker(index, proc, read_fd)

    def _read_ready(self, timeout: float) -> None:
        fds = {w.ready_fd: w for w in self.workers.values() if w.ready_fd is not None}
        if not fds:
            time.sleep(timeout)
            return
        try:
            readable, _, _ = select.select(list(fds), [], [], timeout)
        except InterruptedError:
            return
        for fd in readable:
            worker = fds[fd]
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # closed: it exited (handled by the caller)
                self._close_ready(worker)
                continue
            worker.buffer += data.decode("utf-8", "replace")
            *lines, worker.buffer = worker.buffer.split("\n")
            for line in lines:
                self._message(worker, line)

    def _message(self, worker: _Worker, line: str) -> None:
        if worker.line is None:  # its start-up line: it listens
            worker.line = line
            if worker.hup_pending:
                self._hup(worker)

    def _hup(self, worker: _Worker) -> None:
        """SIGHUP a listening worker; one still starting gets it once it listens (it would die of it now)."""
        if not worker.ready:
            worker.hup_pending = True
            return
        worker.hup_pending = False
        if worker.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGHUP)

    @staticmethod
    def _close_ready(worker: _Worker) -> None:
        if worker.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(worker.ready_fd)
            worker.ready_fd = None

    def _signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(sig)

    def _on_stop(self, _sig: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            self._signal_all(signal.SIGTERM)  # SIGINT too: a second SIGINT would make uvicorn skip the drain

    def _on_hup(self, _sig: int, _frame: Any) -> None:
        for worker in self.workers.values():
            self._hup(worker)

    # -- the life of the node --------------------------------------------------------------

    def run(self) -> int:
        """Start the workers, print the start-up line, supervise, drain on a signal. The exit code."""
        self.port = check_address(self.host, self.port)
        self.node_dir = tempfile.mkdtemp(prefix="syncbus-node-")
        self.metrics_dir = os.path.join(self.node_dir, "metrics")
        os.mkdir(self.metrics_dir)
        previous = {sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            code = self._start()
            if code is None:
                code = self._supervise()
            return 0 if code is None else code
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            shutil.rmtree(self.node_dir, ignore_errors=True)

    def _start(self) -> int | None:
        """Worker 0, then the others; None once all are ready, else the exit code of the failed start."""
        for batch in ([0], list(range(1, self.count))):
            for index in batch:
                self.workers[index] = self._spawn(index)
            deadline = time.monotonic() + START_TIMEOUT
            while not all(self.workers[i].ready for i in batch):
                if self.stopping:
                    return 0
                for i in batch:
                    code = self.workers[i].proc.poll()
                    if code is not None and not self.workers[i].ready:
                        self.failed = True
                        return code or 1
                if time.monotonic() > deadline:
                    self.say(f"worker {batch} not ready within {START_TIMEOUT:.0f} s; stopping")
                    self.failed = True
                    return 1
                self._read_ready(0.1)
        print(self.workers[0].line, file=sys.stderr, flush=True)  # the node's start-up line
        return None

    def _supervise(self) -> int | None:
        while not self.stopping:
            self._read_ready(0.2)
            for index, worker in list(self.workers.items()):
                code = worker.proc.poll()
                if code is None or self.stopping:
                    continue
                self._forget_metrics(worker.proc.pid)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW] + [now]
                if len(self.restarts) > MAX_RESTARTS:
                    self.say(f"worker {index} exited with {code}; {MAX_RESTARTS} restarts within "
                             f"{RESTART_WINDOW:.0f} s: stopping the node", "ERROR")
                    self.failed = True
                    return 1
                self.say(f"worker {index} exited with {code}; starting it again")
                self.workers[index] = self._spawn(index)
        return None

    def _stop_all(self) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers.values():
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"worker {worker.index} did not stop within {STOP_TIMEOUT:.0f} s; killed", "ERROR")
                worker.proc.kill()
                worker.proc.wait()
                self.failed = True
            self._close_ready(worker)
        if any(w.proc.returncode not in (0, -signal.SIGTERM) for w in self.workers.values()):
            self.failed = True

    def exit_code(self, code: int) -> int:
        return 1 if self.failed and code == 0 else code

    def _forget_metrics(self, pid: int) -> None:
        """A dead worker's live gauges and routes leave /metrics (prometheus_client's ``mark_process_dead``)."""
        if self.metrics_dir is None:
            return
        for path in (*Path(self.metrics_dir).glob(f"gauge_live*_{pid}.db"),
                     *Path(self.metrics_dir).glob(f"route_info_{pid}.json")):
            with contextlib.suppress(OSError):
                path.unlink()


def run_parent(argv: Sequence[str], count: int, host: str, port: int, log_format: str = "text") -> int:
    """``syncbus run --workers N`` in the parent: the exit code of the node."""
    parent = Parent(argv, count, host, port, log_format=log_format)
    try:
        code = parent.run()
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return parent.exit_code(code)
