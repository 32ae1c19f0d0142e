import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYNCBUS = str(Path(sys.executable).parent / "syncbus")


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float  # wall clock
    cpu_seconds: float  # user + system: what the command itself cost, whatever else the machine does
    max_rss_mb: float


# Linux children inherit their parent's peak RSS at fork, so the command is
# started by a tiny launcher process and measured there, not forked from pytest.
LAUNCHER = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
cpu = usage.ru_utime + usage.ru_stime
sys.stderr.write(f"\\n@@measure {time.perf_counter() - t} {cpu} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_cli(*args: str, stdin: bytes | Path | None = None, cwd: Path | None = None,
            env: dict | None = None) -> Run:
    """Run the real `syncbus` command; its wall time and its own peak RSS."""
    with tempfile.TemporaryFile() as fin:
        if isinstance(stdin, Path):
            source = stdin.open("rb")
        else:
            fin.write(stdin or b"")
            fin.seek(0)
            source = fin
        with source:
            proc = subprocess.run([sys.executable, "-c", LAUNCHER, SYNCBUS, *args], stdin=source,
                                  capture_output=True, cwd=cwd or ROOT, env={**os.environ, **(env or {})})
    err = proc.stderr.decode("utf-8", "replace")
    err, _, measure = err.rpartition("\n@@measure ")
    seconds, cpu, rss_kb = measure.split()
    return Run(proc.returncode, proc.stdout.decode("utf-8", "replace"), err, float(seconds), float(cpu),
               int(rss_kb) / 1024)


@pytest.fixture(scope="session")
def cli():
    return run_cli
