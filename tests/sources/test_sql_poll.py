"""``sql_poll`` (sources/sql_poll.py): paging by (watermark, key), full loads, values, errors.

Every paging test runs on a real SQLite file and on a real PostgreSQL
database (tests/support/postgres.py). Cursors go through JSON between two
polls, as the state store keeps them.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from syncbus.config import load_connector_file
from syncbus.errors import ConfigErrors
from syncbus.sources.sql_poll import CursorError, QueryError, SqlPollConfig, SqlPollSource

T0 = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)

DDL = {
    "postgresql": "CREATE TABLE postings (doc text NOT NULL, line int NOT NULL, changed_at timestamptz, "
                  "dmbtr numeric(15,2), budat date, sgtxt text, PRIMARY KEY (doc, line))",
    # SQLite: money as TEXT keeps it exact (a NUMERIC column would store a binary float)
    "sqlite": "CREATE TABLE postings (doc TEXT NOT NULL, line INTEGER NOT NULL, changed_at TEXT, "
              "dmbtr TEXT, budat TEXT, sgtxt TEXT, PRIMARY KEY (doc, line))",
}


class Erp:
    """A table of postings in a real database; ``add`` inserts rows with a given watermark."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.backend = self.engine.dialect.name
        with self.engine.begin() as conn:
            conn.execute(sa.text(DDL[self.backend]))

    def ts(self, seconds: int) -> Any:
        when = T0 + timedelta(seconds=seconds)
        return when if self.backend == "postgresql" else when.strftime("%Y-%m-%d %H:%M:%S")

    def add(self, *rows: tuple[str, int, int | None], dmbtr: str = "1234.50", sgtxt: str | None = "text") -> None:
        """Rows (doc, line, watermark seconds after T0 or None), all in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO postings VALUES (:doc, :line, :ts, :dmbtr, :budat, :sgtxt)"),
                         [{"doc": d, "line": n, "ts": None if s is None else self.ts(s), "dmbtr": dmbtr,
                           "budat": "2026-11-20", "sgtxt": sgtxt} for d, n, s in rows])

    def touch(self, doc: str, line: int, seconds: int) -> None:
        """The row changed: a new watermark."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("UPDATE postings SET changed_at = :ts WHERE doc = :doc AND line = :line"),
                         {"ts": self.ts(seconds), "doc": doc, "line": line})

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def erp(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Erp]:
    url = f"sqlite:///{tmp_path / 'erp.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    db = Erp(url)
    yield db
    db.close()


Make = Callable[..., SqlPollSource]


@pytest.fixture
async def make(erp: Erp) -> AsyncIterator[Make]:
    made: list[SqlPollSource] = []

    def build(**options: Any) -> SqlPollSource:
        cfg = {"name": "erp", "type": "sql_poll", "topic": "erp.postings", "dsn": erp.url,
               "query": "SELECT * FROM postings", "watermark": "changed_at", "key": ["doc", "line"], **options}
        source = SqlPollSource(cfg)
        made.append(source)
        return source

    yield build
    for source in made:
        await source.stop()


async def drain(source: SqlPollSource, cursor: Any, limit: int) -> tuple[list[dict[str, Any]], Any, list[int]]:
    """Every page after ``cursor`` as the runner pages: (rows, the cursor after them, page sizes)."""
    rows: list[dict[str, Any]] = []
    sizes: list[int] = []
    for _ in range(100):
        batch = await source.poll(cursor, full=cursor is None, limit=limit)
        cursor = json.loads(json.dumps(batch.cursor))  # stored as JSON
        rows += [orjson.loads(r.value) for r in batch.records]
        sizes.append(len(batch.records))
        if not batch.more:
            return rows, cursor, sizes
    raise AssertionError("poll kept saying more")


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [f"{r['doc']}/{r['line']}" for r in rows]


async def test_a_full_load_pages_every_row_once_in_watermark_key_order(erp: Erp, make: Make) -> None:
    erp.add(("B", 1, 5), ("A", 2, 5), ("A", 1, 5), ("C", 1, 1), ("D", 1, 9), ("E", 1, 9), ("F", 1, 12))
    erp.add(("N", 1, None))  # no watermark: never read
    rows, cursor, sizes = await drain(make(), None, limit=2)
    assert ids(rows) == ["C/1", "A/1", "A/2", "B/1", "D/1", "E/1", "F/1"]
    assert sizes == [2, 2, 2, 1]
    first = rows[0]
    assert list(first) == ["doc", "line", "changed_at", "dmbtr", "budat", "sgtxt"]  # the query's column order
    assert first["dmbtr"] == "1234.50" and first["budat"] == "2026-11-20"  # exact text, never a float
    assert first["changed_at"].startswith("2026-11-20") and first["changed_at"][11:19] == "22:00:01"
    assert cursor["key"] == ["F", 1] and cursor["since"] == cursor["watermark"]
    again, same, _ = await drain(make(), cursor, limit=2)
    assert again == [] and same == cursor


async def test_equal_watermarks_are_neither_lost_nor_doubled_across_pages_and_runs(erp: Erp, make: Make) -> None:
    # one ERP transaction: every line gets the same changed_at
    erp.add(*[(f"D{i:02d}", 1, 100) for i in range(7)])
    source = make()
    rows, cursor, sizes = await drain(source, None, limit=3)
    assert ids(rows) == [f"D{i:02d}/1" for i in range(7)] and sizes == [3, 3, 1]
    # the next documents of the same second (ascending numbers), and a change of the first one
    erp.add(("D07", 1, 100), ("D07", 2, 100), ("D08", 1, 100))
    erp.touch("D00", 1, 101)
    rows, cursor, _ = await drain(source, cursor, limit=3)
    assert ids(rows) == ["D07/1", "D07/2", "D08/1", "D00/1"]
    assert (await drain(source, cursor, limit=3))[0] == []


async def test_the_designs_query_form_without_a_key(erp: Erp, make: Make) -> None:
    """`WHERE changed_at > :watermark ORDER BY changed_at`, no key: DESIGN §5's example, kept working."""
    erp.add(("A", 1, 1), *[(f"G{i}", 1, 2) for i in range(4)], ("B", 1, 3), ("C", 1, 3))
    source = make(query="SELECT * FROM postings WHERE changed_at > :watermark ORDER BY changed_at;", key=None)
    # the first run is a full load: :watermark is bound below every timestamp
    batch = await source.poll(None, full=True, limit=3)
    assert ids([orjson.loads(r.value) for r in batch.records]) == ["A/1"]  # the page ends before the tie group
    assert batch.more and all(r.key is None for r in batch.records)
    batch = await source.poll(json.loads(json.dumps(batch.cursor)), full=True, limit=3)
    assert sorted(ids([orjson.loads(r.value) for r in batch.records])) == ["G0/1", "G1/1", "G2/1", "G3/1"]
    rows, cursor, _ = await drain(source, batch.cursor, limit=3)
    assert sorted(ids(rows)) == ["B/1", "C/1"]
    erp.add(("D", 1, 4))
    assert ids((await drain(source, cursor, limit=3))[0]) == ["D/1"]


async def test_watermark_is_bound_for_a_whole_run_not_per_page(erp: Erp, make: Make) -> None:
    """With `> :watermark`, binding the last *page's* watermark would drop the rest of a tie group."""
    erp.add(("A", 1, 1))
    source = make(query="SELECT * FROM postings WHERE changed_at > :watermark")
    _, cursor, _ = await drain(source, None, limit=10)
    erp.add(*[(f"T{i}", 1, 50) for i in range(5)])
    rows, cursor, sizes = await drain(source, cursor, limit=2)
    assert ids(rows) == [f"T{i}/1" for i in range(5)] and sizes == [2, 2, 1]


async def test_initial_watermark_limits_the_full_load(erp: Erp, make: Make) -> None:
    erp.add(("OLD", 1, 0), ("NEW", 1, 3600 * 24))
    source = make(query="SELECT * FROM postings WHERE changed_at >= :watermark", initial_watermark="2026-11-21")
    rows, _, _ = await drain(source, None, limit=10)
    assert ids(rows) == ["NEW/1"]


async def test_record_keys_nulls_and_omit_nulls(erp: Erp, make: Make) -> None:
    erp.add(("A", 1, 1), sgtxt=None, dmbtr="-0.10")
    batch = await make().poll(None, full=True, limit=10)
    [record] = batch.records
    assert record.key == "A/1"
    assert orjson.loads(record.value)["sgtxt"] is None and orjson.loads(record.value)["dmbtr"] == "-0.10"
    [record] = (await make(omit_nulls=True, key="doc").poll(None, full=True, limit=10)).records
    assert "sgtxt" not in orjson.loads(record.value) and record.key == "A"


async def test_what_the_query_does_not_return_is_named(erp: Erp, make: Make) -> None:
    erp.add(("A", 1, 1))
    with pytest.raises(QueryError, match="changed_at"):
        await make(query="SELECT doc, line FROM postings").poll(None, full=True, limit=10)
    with pytest.raises(QueryError, match="refused the query"):
        await make(query="SELECT * FROM no_such_table").poll(None, full=True, limit=10)
    twice = make(query="SELECT *, sgtxt FROM postings")
    if erp.backend == "postgresql":
        with pytest.raises(QueryError, match="returns column 'sgtxt' twice; give one an alias"):
            await twice.poll(None, full=True, limit=10)
    else:  # SQLite renames the second one itself
        [record] = (await twice.poll(None, full=True, limit=10)).records
        assert list(orjson.loads(record.value))[-2:] == ["sgtxt", "sgtxt:1"]


@pytest.mark.postgres
async def test_the_connection_is_read_only(pg_url: str) -> None:
    erp = Erp(pg_url)
    with erp.engine.begin() as conn:
        conn.execute(sa.text("CREATE SEQUENCE s"))
    erp.add(("A", 1, 1))
    source = SqlPollSource({"name": "erp", "type": "sql_poll", "topic": "t", "dsn": pg_url, "watermark": "changed_at",
                            "query": "SELECT nextval('s') AS n, * FROM postings"})
    try:
        with pytest.raises(QueryError, match="read-only transaction"):
            await source.poll(None, full=True, limit=10)
    finally:
        await source.stop()
        erp.close()


async def test_a_cursor_of_another_kind_is_refused(erp: Erp, make: Make) -> None:
    with pytest.raises(CursorError, match="sync --full erp"):
        await make().poll(42, full=False, limit=10)
    with pytest.raises(CursorError, match="not written by sql_poll"):
        await make().poll({"watermark": {"when": "yesterday"}}, full=False, limit=10)


async def test_a_cursor_from_other_key_options_rereads_rather_than_loses(erp: Erp, make: Make) -> None:
    erp.add(("A", 1, 1), ("B", 1, 1), ("C", 1, 2))
    _, cursor, _ = await drain(make(key="doc"), None, limit=1)  # one key column ...
    erp.add(("D", 1, 2))
    rows, _, _ = await drain(make(), {**cursor, "key": ["C"]}, limit=10)  # ... now two
    assert "D/1" in ids(rows)


async def test_check_says_whether_the_database_answers(erp: Erp, make: Make) -> None:
    assert await make().check() is True
    down = make(dsn="postgresql+psycopg://nobody@127.0.0.1:1/none", timeout=2)
    assert await down.check() is False


# -- no database needed --------------------------------------------------------------------------


def cursor(w: Any, keys: list[Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"watermark": w, "since": w}
    if keys is not None:
        out["key"] = keys
    return out


def test_later_compares_watermark_then_key() -> None:
    source = SqlPollSource({"name": "s", "type": "sql_poll", "topic": "t", "dsn": "sqlite://",
                            "query": "SELECT 1", "watermark": "w", "key": "k"})
    a, b = cursor({"datetime": "2026-11-20T22:00:00+00:00"}, ["A"]), cursor({"datetime": "2026-11-20T22:00:01+00:00"})
    assert source.later(a, b) == b and source.later(b, a) == b
    assert source.later(cursor(5, ["B"]), cursor(5, ["C"])) == cursor(5, ["C"])
    assert source.later(cursor(5, ["C"]), cursor(5)) == cursor(5)  # the whole group of 5 is further
    assert source.later(cursor({"decimal": "10.5"}), cursor({"decimal": "9.75"})) == cursor({"decimal": "10.5"})
    assert source.later(None, a) == a and source.later(a, None) == a
    assert source.later(7, a) == a and source.later(a, "junk") == a


def config_errors(tmp_path: Path, block: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(block))
    try:
        load_connector_file(path, env=env or {"ERP_DSN": "sqlite://"})
    except ConfigErrors as exc:
        return [str(e) for e in exc.errors]
    return []


def test_the_designs_example_block_loads(tmp_path: Path) -> None:
    assert config_errors(tmp_path, """\
        sources:
          - name: erp-postings
            type: sql_poll
            dsn_env: ERP_DSN
            query: SELECT * FROM postings WHERE changed_at > :watermark ORDER BY changed_at
            watermark: changed_at
            schedule: "0 22 * * *"
            timezone: Asia/Shanghai
            topic: erp.postings
        """) == []


@pytest.mark.parametrize(("options", "message"), [
    ("dsn: sqlite:///erp.db", "c.yaml:3:5: secrets come from the environment only: use dsn_env: VAR"),
    ("dsn_env: ERP_DSN\n    query: SELECT * FROM p WHERE a > :since", "unknown parameter :since"),
    ("dsn_env: ERP_DSN\n    key: changed_at", "cannot also be the key"),
    ("dsn_env: ERP_DSN\n    key: [a, a]", "a key column is listed twice"),
    ("dsn_env: ERP_DSN\n    query: ' ; '", "the query is empty"),
])
def test_bad_options_are_refused_with_their_line(tmp_path: Path, options: str, message: str) -> None:
    block = "sources:\n  - name: erp\n    " + options + "\n    type: sql_poll\n    topic: t\n"
    if "query" not in options:
        block += "    query: SELECT * FROM p\n"
    block += "    watermark: changed_at\n"
    errors = config_errors(tmp_path, block)
    assert any(message in e for e in errors), errors


def test_yaml_dates_and_trailing_semicolons_are_read_as_meant() -> None:
    cfg = SqlPollConfig.model_validate({"name": "s", "topic": "t", "dsn": "sqlite://", "watermark": "w",
                                        "query": "SELECT * FROM p;\n",
                                        "initial_watermark": datetime(2026, 1, 1).date()})
    assert cfg.query == "SELECT * FROM p" and cfg.initial_watermark == "2026-01-01"
