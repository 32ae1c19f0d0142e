"""The sandbox ERP for ``make run``: a SQLite file with a table of FI posting lines (``fi_postings``).

The ERP → finance flow polls this table (``connectors/example.yaml``,
source ``erp-postings``); on a real system it is the ERP's database or a
replica of it, usually PostgreSQL. Columns are SAP's BSEG names in lower
case; money is TEXT because a SQLite NUMERIC column would keep a binary
float. ``--post N`` books one more document of N lines (debits and one
balancing credit) stamped now, to watch an incremental poll pick it up::

    python deploy/sandbox/erp_db.py var/sandbox/erp.db            # create with two sample documents
    python deploy/sandbox/erp_db.py var/sandbox/erp.db --post 3   # book a new document
    syncbus sync --full erp-postings                              # or wait for 22:00 Asia/Shanghai
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

DDL = """
CREATE TABLE IF NOT EXISTS fi_postings (
  bukrs TEXT NOT NULL, belnr TEXT NOT NULL, gjahr TEXT NOT NULL, buzei TEXT NOT NULL,
  budat TEXT NOT NULL, dmbtr TEXT NOT NULL, shkzg TEXT NOT NULL CHECK (shkzg IN ('S', 'H')),
  hkont TEXT NOT NULL, waers TEXT NOT NULL, sgtxt TEXT,
  changed_at TEXT NOT NULL,
  PRIMARY KEY (bukrs, gjahr, belnr, buzei)
);
CREATE INDEX IF NOT EXISTS fi_postings_changed ON fi_postings (changed_at, bukrs, gjahr, belnr, buzei);
"""

SAMPLES = [  # (belnr, buzei, dmbtr, shkzg, hkont, sgtxt): two balanced documents
    ("0100004711", "001", "1234.57", "S", "0000113100", "货款 SO-2026-000123"),
    ("0100004711", "002", "1234.57", "H", "0000140000", "货款 SO-2026-000123"),
    ("0100004712", "001", "980.00", "S", "0000400000", None),
    ("0100004712", "002", "980.00", "H", "0000113100", "办公用品"),
]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def create(db: sqlite3.Connection) -> None:
    db.executescript(DDL)
    if db.execute("SELECT count(*) FROM fi_postings").fetchone()[0] == 0:
        stamp = now()
        db.executemany("INSERT INTO fi_postings VALUES ('1000', ?, '2026', ?, '2026-11-20', ?, ?, ?, 'CNY', ?, ?)",
                       [(*row, stamp) for row in SAMPLES])


def post(db: sqlite3.Connection, lines: int) -> str:
    """Book a new document: ``lines - 1`` debits and one credit that balances them."""
    last = db.execute("SELECT max(belnr) FROM fi_postings WHERE bukrs = '1000' AND gjahr = '2026'").fetchone()[0]
    belnr = f"{int(last or '0100004700') + 1:010d}"
    stamp, day = now(), datetime.now(UTC).date().isoformat()
    debits = [Decimal(100 + 11 * i) + Decimal("0.25") for i in range(max(1, lines - 1))]
    rows = [(belnr, f"{i + 1:03d}", day, str(a), "S", "0000400000", f"sandbox {belnr}", stamp)
            for i, a in enumerate(debits)]
    rows.append((belnr, f"{len(rows) + 1:03d}", day, str(sum(debits)), "H", "0000113100", None, stamp))
    db.executemany("INSERT INTO fi_postings VALUES ('1000', ?, '2026', ?, ?, ?, ?, ?, 'CNY', ?, ?)", rows)
    return belnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="the SQLite file (created with sample postings if missing)")
    parser.add_argument("--post", type=int, metavar="N", help="book one more document of N lines")
    args = parser.parse_args()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(args.path)
    try:
        with db:
            create(db)
            if args.post:
                print(f"booked document {post(db, args.post)} ({max(2, args.post)} lines)")
    finally:
        db.close()


if __name__ == "__main__":
    main()
