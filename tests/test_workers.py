"""`syncbus run --workers N` (issue 11): identity, the port check, one node to operate.

The workers' behaviour under load, crashes and reloads is covered by the
e2e suites, which run with the default (the number of cores) and with
``--workers 2`` explicitly (tests/e2e/test_reload.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from syncbus.workers import WorkerError, WorkerIdentity, check_address, default_workers

SYNCBUS = str(Path(sys.executable).parent / "syncbus")


def test_identity_from_the_environment() -> None:
    assert WorkerIdentity.from_env({}) is None
    me = WorkerIdentity.from_env({"SYNCBUS_WORKER": "1/3", "SYNCBUS_WORKER_PORT": "8080"})
    assert me == WorkerIdentity(1, 3, 8080, None)
    for bad in ("3/3", "x/2", "1"):
        with pytest.raises(WorkerError):
            WorkerIdentity.from_env({"SYNCBUS_WORKER": bad})


def test_default_is_the_cores_this_process_may_use() -> None:
    assert default_workers() == len(os.sched_getaffinity(0))


def test_an_address_in_use_is_refused_even_by_a_port_sharing_socket() -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as a worker of another node binds
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(WorkerError, match="cannot listen"):
            check_address("127.0.0.1", port)
    assert check_address("127.0.0.1", 0) > 0


@pytest.mark.slow
def test_one_start_up_line_every_worker_answers_and_sigterm_drains_all(tmp_path: Path) -> None:
    (tmp_path / "mappings").mkdir()
    (tmp_path / "connectors").mkdir()
    (tmp_path / "mappings" / "m.yaml").write_text(textwrap.dedent("""\
        mapping: m
        version: 1
        owner: o
        source: {topic: t.in}
        target: {sink: nowhere, format: json}
        fields: {ID: id}
        """))
    (tmp_path / "connectors" / "c.yaml").write_text(textwrap.dedent("""\
        sources:
          - {name: open, type: http_ingress, topic: t.in, key: id}
        sinks:
          - {name: nowhere, type: http, url: "http://127.0.0.1:9/x", retry: {attempts: 1}}
        """))
    err = tmp_path / "stderr.txt"
    proc = subprocess.Popen([SYNCBUS, "run", "--config-dir", str(tmp_path), "--bus", f"embedded://{tmp_path}/b.db",
                             "--store", f"sqlite:///{tmp_path}/s.db", "--port", "0", "--log-level", "warning",
                             "--workers", "2"], stderr=err.open("wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "http://" not in err.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, err.read_text()
            time.sleep(0.2)
        lines = [line for line in err.read_text().splitlines() if "routes, bus" in line]
        assert len(lines) == 1, err.read_text()  # one start-up line for the node, with the real port
        url = lines[0].rsplit(" ", 1)[1]
        pids = set()
        for _ in range(40):  # new connections are spread over both workers
            r = httpx.post(f"{url}/ingress/open", json={"id": "1"}, headers={"Connection": "close"})
            assert r.status_code == 202
        children = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(children) == 2
        metrics = httpx.get(f"{url}/metrics").text  # the node's, whichever worker answers
        assert 'syncbus_records_received_total{source="open"} 40.0' in metrics
        pids.update(children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert all(not Path(f"/proc/{p}").exists() for p in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
