"""The ERP → finance flow's throughput: sql_poll → map → sql upsert, on PostgreSQL, in records/s.

Everything is real and local: a private PostgreSQL server (deploy/postgres/pg.sh through the test
suite's ``PostgresServer`` helper, on a free port in a temporary run dir, ``PG_FAST=1``) with two
databases -- the ERP's ``fi_postings`` filled with N posting lines, and finance's empty ``vouchers``
-- and one ``syncbus run`` whose config is the shipped one (the ``erp-postings`` source and the
``finance-vouchers`` sink from connectors/example.yaml, mappings/erp-posting-to-finance.yaml) with
``interval: 1s`` instead of the nightly cron. The node starts with no stored watermark, so its first
run is the full load of all N rows; the clock runs until the N-th voucher is in the finance table.

Two numbers: ``from start`` (N over the time from launching ``syncbus run`` to the last voucher,
startup included) and ``steady`` (rows over the time from the first voucher seen to the last).
Every line gives the runner's CPU seconds too, since the machine may be shared. At the end the
vouchers are checked: N rows, and the sum of their amounts equals the signed sum in the ERP. ::

    .venv/bin/python bench/sql_flow_bench.py [--records 20000] [--batch-size 500] [--bus embedded|kafka://...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parents[1]
SYNCBUS = str(Path(sys.executable).parent / "syncbus")
FLOW = "erp-posting-to-finance"
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ERP_DDL = [
    """CREATE TABLE fi_postings (
         bukrs char(4) NOT NULL, belnr char(10) NOT NULL, gjahr char(4) NOT NULL, buzei char(3) NOT NULL,
         budat date NOT NULL, dmbtr numeric(13,2) NOT NULL, shkzg char(1) NOT NULL, hkont varchar(10) NOT NULL,
         waers char(3) NOT NULL, sgtxt varchar(50), changed_at timestamptz NOT NULL,
         PRIMARY KEY (bukrs, gjahr, belnr, buzei))""",
    "CREATE INDEX fi_postings_changed ON fi_postings (changed_at, bukrs, gjahr, belnr, buzei)",
]
# N lines: documents of two lines (debit, credit), 100 lines per changed_at second (ties on purpose)
FILL = """
INSERT INTO fi_postings
SELECT '1000', lpad((100000000 + g / 2)::text, 10, '0'), '2026', lpad((g % 2 + 1)::text, 3, '0'),
       date '2026-11-16' + (g / 2) % 5, 1 + ((g / 2) * 37 % 100000) / 100.0, CASE g % 2 WHEN 0 THEN 'S' ELSE 'H' END,
       CASE g % 2 WHEN 0 THEN '0000400000' ELSE '0000113100' END, 'CNY',
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'bench ' || g END,
       timestamptz '2026-11-20 22:00:00+08' + (g / 100) * interval '1 second'
FROM generate_series(0, :n - 1) AS g
"""
FINANCE_DDL = [
    """CREATE TABLE vouchers (
         voucher_no varchar(40) PRIMARY KEY, company char(4) NOT NULL, fiscal_year smallint NOT NULL,
         document char(10) NOT NULL, line smallint NOT NULL, date date NOT NULL, account varchar(10) NOT NULL,
         amount numeric(15,2) NOT NULL, currency char(3) NOT NULL, text varchar(50) NOT NULL,
         idempotency_key text)""",
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def make_database(admin: str, name: str, ddl: list[str]) -> str:
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))  # our own constant name
    engine.dispose()
    url = sa.make_url(admin).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in ddl:
            conn.execute(sa.text(statement))
    engine.dispose()
    return url


def write_config(root: Path, batch_size: int) -> Path:
    """The shipped ERP → finance config; the nightly cron becomes a 1s interval."""
    (root / "mappings").mkdir(parents=True)
    shutil.copytree(ROOT / "mappings" / "schemas", root / "mappings" / "schemas")
    shutil.copy(ROOT / "mappings" / f"{FLOW}.yaml", root / "mappings")
    example = yaml.safe_load((ROOT / "connectors" / "example.yaml").read_text("utf-8"))
    [source] = [s for s in example["sources"] if s["name"] == "erp-postings"]
    [sink] = [s for s in example["sinks"] if s["name"] == "finance-vouchers"]
    source.pop("schedule", None)
    source.pop("timezone", None)
    source.update(interval="1s", batch_size=batch_size)
    (root / "connectors").mkdir()
    (root / "connectors" / "erp-finance.yaml").write_text(yaml.safe_dump({"sources": [source], "sinks": [sink]}))
    return root


def count(finance: sa.Engine) -> int:
    with finance.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM vouchers")).scalar_one())


def run_flow(args: argparse.Namespace, work: Path, erp_url: str, finance_url: str) -> dict[str, Any]:
    config = write_config(work / "config", args.batch_size)
    bus = args.bus if args.bus.startswith("kafka://") else f"embedded://{work / 'syncbus.db'}"
    port = free_port()
    env = {**os.environ, "ERP_DSN": erp_url, "FINANCE_DB_URL": finance_url}
    finance = sa.create_engine(finance_url)
    out = (work / "node.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([SYNCBUS, "run", "--config-dir", str(config), "--bus", bus, "--store",
                             f"sqlite:///{work / 'store.db'}", "--port", str(port), "--log-level", "warning"],
                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    first_at: float | None = None
    first_count = 0
    done_at: float | None = None
    try:
        ready_at = None
        deadline = started + args.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"syncbus run exited with {proc.returncode}: {(work / 'node.log').read_text()}")
            if ready_at is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        ready_at = time.monotonic()
                except httpx.HTTPError:
                    pass
            n = count(finance)
            now = time.monotonic()
            if n and first_at is None:
                first_at, first_count = now, n
            if n >= args.records:
                done_at = now
                break
            time.sleep(0.1)
        if done_at is None or first_at is None:
            raise RuntimeError(f"not all vouchers within {args.timeout}s ({count(finance)} of {args.records})")
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        out.close()
    with finance.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*), coalesce(sum(amount), 0) FROM vouchers")).one()
    finance.dispose()
    erp = sa.create_engine(erp_url)
    with erp.connect() as conn:
        want = conn.execute(sa.text("SELECT coalesce(sum(CASE shkzg WHEN 'H' THEN -dmbtr ELSE dmbtr END), 0) "
                                    "FROM fi_postings")).scalar_one()
    erp.dispose()
    steady_rows = args.records - first_count
    return {"records": args.records, "batch_size": args.batch_size, "bus": bus.split(":", 1)[0],
            "seconds_from_start": round(done_at - started, 2),
            "startup_seconds": None if ready_at is None else round(ready_at - started, 2),
            "records_per_s_from_start": round(args.records / (done_at - started)),
            "records_per_s_steady": round(steady_rows / (done_at - first_at)) if done_at > first_at else None,
            "runner_cpu_seconds": round(cpu, 2), "records_per_cpu_s": round(args.records / cpu) if cpu else None,
            "vouchers": int(total[0]), "amounts_match": total[1] == want, "loadavg": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="posting lines in the ERP table")
    parser.add_argument("--batch-size", type=int, default=500, help="the source's page size (the example's: 500)")
    parser.add_argument("--bus", default="embedded", help="embedded, or kafka://host:port")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every voucher")
    parser.add_argument("--out", default=str(ROOT / "var" / "bench-sql-flow.json"))
    args = parser.parse_args([] if argv is None else argv)

    from tests.support.postgres import PostgresServer  # the test suite's pg.sh wrapper

    work = Path(tempfile.mkdtemp(prefix="syncbus-sql-bench-"))
    run_dir = work / "pg"
    run_dir.mkdir()
    run_dir.chmod(0o711)  # as root the server runs as `postgres`, who must enter it
    work.chmod(0o711)
    server = PostgresServer(run_dir=run_dir, port=free_port())
    try:
        log("starting a private PostgreSQL server")
        server.start()
        erp_url = make_database(server.url(), "erp", ERP_DDL)
        finance_url = make_database(server.url(), "finance", FINANCE_DDL)
        erp = sa.create_engine(erp_url)
        with erp.begin() as conn:
            conn.execute(sa.text(FILL), {"n": args.records})
            conn.execute(sa.text("ANALYZE fi_postings"))
        erp.dispose()
        log(f"{args.records} posting lines in the ERP; running sql_poll → map → sql upsert")
        result = run_flow(args, work, erp_url, finance_url)
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"sql_poll → map → sql upsert (PostgreSQL → PostgreSQL, {result['bus']} bus, page {args.batch_size}): "
          f"{result['records_per_s_steady']} records/s steady, {result['records_per_s_from_start']} records/s "
          f"from start ({result['records']} in {result['seconds_from_start']} s, runner CPU "
          f"{result['runner_cpu_seconds']} s = {result['records_per_cpu_s']} records/CPU-s); "
          f"vouchers {result['vouchers']}, amounts match: {result['amounts_match']}")
    if result["vouchers"] != args.records or not result["amounts_match"]:
        raise SystemExit("the vouchers do not match the postings")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
