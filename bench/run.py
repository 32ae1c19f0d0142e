"""`make bench`: the mapping hot path, the runtime on Kafka and on the embedded bus, the SQL flow."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mapping_bench


def main() -> None:
    mapping_bench.main()
    if "--mapping-only" in sys.argv:
        return
    import runtime_bench

    runtime_bench.main()
    import sql_flow_bench  # ERP → finance: sql_poll → map → sql upsert on PostgreSQL

    sql_flow_bench.main()


if __name__ == "__main__":
    main()
