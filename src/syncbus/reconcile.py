"""``syncbus reconcile FLOW``: does the target hold what the source has? Counts and sums per day, keys.

Delivery is at-least-once and every failure ends in a dead letter, yet
finance still wants the proof a bank statement gives: the same vouchers,
the same amounts, day by day. A reconciliation reads both databases
*directly* -- not the bus -- so it also catches what syncbus never saw (a
row committed late with an old watermark, a voucher deleted by hand).

A flow is declared in ``reconcile/<flow>.yaml`` in the config dir (beside
``mappings/`` and ``connectors/``; the mapping file belongs to the mapping's
owner)::

    flow: erp-posting-to-finance
    source:                       # each query returns the columns key, day, amount
      name: ERP
      dsn_env: ERP_DSN
      query: SELECT ... AS key, budat AS day, ... AS amount FROM fi_postings WHERE budat BETWEEN :since AND :until
    target:
      name: Finance
      dsn_env: FINANCE_DB_URL
      query: SELECT voucher_no AS key, date AS day, amount FROM vouchers WHERE date BETWEEN :since AND :until
    tolerance: 0.00               # largest accepted difference of one amount and of one day's sum

``:since`` and ``:until`` (optional) are bound to the days asked for (ISO
text; everything when not asked). Amounts are compared as exact decimals.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .components.validation import problems
from .config import EnvRules, resolve_env
from .errors import ConfigError, ConfigErrors, SyncbusError
from .sinks.sql_errors import first_line, redact_url
from .sources.sql_poll_query import bind_names, open_engine, strip_query
from .sources.sql_poll_values import decimal_text, text
from .units import Duration
from .yamlfile import load_yaml_file

FOLDER = "reconcile"
COLUMNS = ("key", "day", "amount")
BOUNDS = {"since": "0001-01-01", "until": "9999-12-31"}
NO_DAY = "(no day)"


class ReconcileError(SyncbusError):
    """A reconciliation cannot be run: no such flow, a database that cannot be read, a bad result."""


class Side(BaseModel):
    """One database of the flow and the query that lists its records as (key, day, amount)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", description="What to call it in the report (ERP, Finance).")
    dsn: str = Field(repr=False, json_schema_extra={"secret": True},
                     description="SQLAlchemy URL, from the environment only: dsn_env: VAR.")
    query: str = Field(min_length=1, description="SELECT returning the columns key, day and amount.")
    connect_args: dict[str, Any] = Field(default_factory=dict, description="Driver options (TLS).")
    timeout: Duration = Field(120.0, gt=0, description="Longest wait to connect and for the query.")

    @field_validator("query")
    @classmethod
    def _only_known_parameters(cls, value: str) -> str:
        unknown = sorted(bind_names(value) - set(BOUNDS))
        if unknown:
            raise ValueError(f"unknown parameter :{unknown[0]} (only :since and :until are bound)")
        return strip_query(value.strip())


class ReconcileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: str = Field(min_length=1, description="The flow's name, as in the mapping (the file's name).")
    description: str = ""
    source: Side
    target: Side
    tolerance: Decimal = Field(Decimal("0"), ge=0, description="Largest accepted difference of an amount.")


def reconcile_files(config_dir: Path) -> list[Path]:
    folder = config_dir / FOLDER
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []


def load_reconcile(config_dir: Path, flow: str, env: Mapping[str, str] | None = None) -> ReconcileConfig:
    """``reconcile/<flow>.yaml``, secrets from ``env``; ConfigErrors with file:line:col when invalid."""
    files = {p.stem: p for p in reconcile_files(config_dir)}
    path = files.get(flow)
    if path is None:
        known = ", ".join(sorted(files)) or "none"
        raise ReconcileError(f"no reconciliation for flow {flow!r}: expected {config_dir / FOLDER / flow}.yaml "
                             f"(declared: {known})")
    doc = load_yaml_file(path)
    if not isinstance(doc.data, dict):
        raise ConfigErrors([doc.error((), "a reconcile file is a mapping with flow, source and target")])
    errors: list[ConfigError] = []
    rules = EnvRules(secret_paths=frozenset({("source", "dsn"), ("target", "dsn")}))
    data = resolve_env(doc.data, doc, (), os.environ if env is None else env, True, errors, rules)
    if errors:
        raise ConfigErrors(errors)
    try:
        config = ReconcileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigErrors([doc.error(loc, msg) for loc, msg in problems(ReconcileConfig, exc, env_hint=True)]) \
            from None
    if config.flow != flow:
        raise ConfigErrors([doc.error(("flow",), f"flow {config.flow!r} does not match the file name {flow!r}")])
    return config


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    day: str
    amount: Decimal


def day_of(value: Any) -> str:
    """ISO day of a date, a timestamp or ISO text; anything else as text."""
    if value is None:
        return NO_DAY
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raw = str(value).strip()
    try:
        return dt.date.fromisoformat(raw[:10]).isoformat()
    except ValueError:
        return raw


def amount_of(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not an amount")
    if isinstance(value, float):
        value = repr(value)  # SQLite REAL: the shortest text that reads back the same
    try:
        out = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount") from None
    if not out.is_finite():
        raise ValueError(f"{value!r} is not an amount")
    return out


def read_side(side: Side, label: str, since: str | None, until: str | None) -> list[Entry]:
    """The side's rows, read-only, with the day bounds bound; ReconcileError naming the database."""
    db = redact_url(side.dsn)
    params = {name: bound for name, bound in (("since", since), ("until", until)) if name in bind_names(side.query)}
    params = {name: BOUNDS[name] if value is None else value for name, value in params.items()}
    try:
        engine = open_engine(side.dsn, side.connect_args, side.timeout)
    except Exception as exc:
        raise ReconcileError(f"{label}: cannot use database {db}: {exc}") from None
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(side.query), params)
            names = list(result.keys())
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise ReconcileError(f"{label}: the query returns no column {missing[0]!r} "
                                     f"(it returns: {', '.join(names)}; alias them key, day, amount)")
            at = [names.index(c) for c in COLUMNS]
            rows = [tuple(r) for r in result]
    except sa.exc.SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        raise ReconcileError(f"{label}: cannot read {db}: {first_line(str(orig or exc))}") from None
    finally:
        engine.dispose()
    entries: list[Entry] = []
    for row in rows:
        key = text(row[at[0]]).strip() if row[at[0]] is not None else ""
        try:
            entries.append(Entry(key, day_of(row[at[1]]), amount_of(row[at[2]])))
        except ValueError as exc:
            raise ReconcileError(f"{label}: key {key!r}: {exc}") from None
    return entries


# -- comparing -------------------------------------------------------------------------------


@dataclass
class DayTotals:
    day: str
    source_count: int = 0
    target_count: int = 0
    source_amount: Decimal = Decimal(0)
    target_amount: Decimal = Decimal(0)
    ok: bool = True

    @property
    def difference(self) -> Decimal:
        return self.target_amount - self.source_amount


@dataclass
class Report:
    """The outcome; ``ok`` is False on any difference. Differences are target minus source."""

    flow: str
    source_name: str
    target_name: str
    tolerance: Decimal
    source_count: int = 0
    target_count: int = 0
    source_amount: Decimal = Decimal(0)
    target_amount: Decimal = Decimal(0)
    days: list[DayTotals] = field(default_factory=list)
    missing_in_target: list[Entry] = field(default_factory=list)
    missing_in_source: list[Entry] = field(default_factory=list)
    amounts_differ: list[tuple[Entry, Entry]] = field(default_factory=list)
    days_differ: list[tuple[Entry, Entry]] = field(default_factory=list)
    duplicates: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing_in_target or self.missing_in_source or self.amounts_differ or self.days_differ
                    or self.duplicates or any(not d.ok for d in self.days))


def _by_key(entries: Iterable[Entry]) -> tuple[dict[str, Entry], dict[str, int]]:
    """One entry per key (amounts of repeated keys summed) and the keys that came more than once."""
    out: dict[str, Entry] = {}
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.key] = counts.get(e.key, 0) + 1
        seen = out.get(e.key)
        out[e.key] = e if seen is None else Entry(e.key, seen.day, seen.amount + e.amount)
    return out, {k: n for k, n in counts.items() if n > 1}


def compare(config: ReconcileConfig, source: Sequence[Entry], target: Sequence[Entry], *,
            since: str | None = None, until: str | None = None) -> Report:
    """Compare the two sides (restricted to days in [since, until] when given)."""
    def wanted(e: Entry) -> bool:
        return (since is None or e.day >= since) and (until is None or e.day <= until)

    source = [e for e in source if wanted(e)]
    target = [e for e in target if wanted(e)]
    tol = config.tolerance
    report = Report(config.flow, config.source.name or "source", config.target.name or "target", tol,
                    len(source), len(target), sum((e.amount for e in source), Decimal(0)),
                    sum((e.amount for e in target), Decimal(0)))
    days: dict[str, DayTotals] = {}
    for side, entries in (("source", source), ("target", target)):
        for e in entries:
            d = days.setdefault(e.day, DayTotals(e.day))
            if side == "source":
                d.source_count += 1
                d.source_amount += e.amount
            else:
                d.target_count += 1
                d.target_amount += e.amount
    for d in days.values():
        d.ok = d.source_count == d.target_count and abs(d.difference) <= tol
    report.days = [days[k] for k in sorted(days)]
    src, src_dups = _by_key(source)
    tgt, tgt_dups = _by_key(target)
    report.duplicates = {k: {"source": src_dups.get(k, 1), "target": tgt_dups.get(k, 1)}
                         for k in sorted(set(src_dups) | set(tgt_dups))}
    report.missing_in_target = [src[k] for k in sorted(set(src) - set(tgt))]
    report.missing_in_source = [tgt[k] for k in sorted(set(tgt) - set(src))]
    for k in sorted(set(src) & set(tgt)):
        s, t = src[k], tgt[k]
        if abs(t.amount - s.amount) > tol:
            report.amounts_differ.append((s, t))
        if s.day != t.day:
            report.days_differ.append((s, t))
    return report


def reconcile(config: ReconcileConfig, *, since: str | None = None, until: str | None = None) -> Report:
    """Read both sides and compare them."""
    source = read_side(config.source, f"source {config.source.name or ''}".rstrip(), since, until)
    target = read_side(config.target, f"target {config.target.name or ''}".rstrip(), since, until)
    return compare(config, source, target, since=since, until=until)


# -- output ----------------------------------------------------------------------------------


def _d(value: Decimal) -> str:
    return decimal_text(value)


def to_json(report: Report) -> dict[str, Any]:
    """Machine-readable report; amounts as exact decimal text."""
    def entry(e: Entry) -> dict[str, str]:
        return {"key": e.key, "day": e.day, "amount": _d(e.amount)}

    def pair(s: Entry, t: Entry) -> dict[str, str]:
        return {"key": s.key, "source_day": s.day, "target_day": t.day, "source_amount": _d(s.amount),
                "target_amount": _d(t.amount), "difference": _d(t.amount - s.amount)}

    return {
        "flow": report.flow, "ok": report.ok, "tolerance": _d(report.tolerance),
        "source": {"name": report.source_name, "rows": report.source_count, "amount": _d(report.source_amount)},
        "target": {"name": report.target_name, "rows": report.target_count, "amount": _d(report.target_amount)},
        "days": [{"day": d.day, "source_rows": d.source_count, "target_rows": d.target_count,
                  "source_amount": _d(d.source_amount), "target_amount": _d(d.target_amount),
                  "difference": _d(d.difference), "ok": d.ok} for d in report.days],
        "missing_in_target": [entry(e) for e in report.missing_in_target],
        "missing_in_source": [entry(e) for e in report.missing_in_source],
        "amounts_differ": [pair(s, t) for s, t in report.amounts_differ],
        "days_differ": [pair(s, t) for s, t in report.days_differ],
        "duplicate_keys": report.duplicates,
    }


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report, max_keys: int = 100) -> str:
    """A report for people (and for a ticket): totals, one row per day, every differing key."""
    s, t = report.source_name, report.target_name
    lines = [f"# Reconciliation of {report.flow}: {'match' if report.ok else 'MISMATCH'}", "",
             f"| | {_cell(s)} (source) | {_cell(t)} (target) |", "| --- | ---: | ---: |",
             f"| rows | {report.source_count} | {report.target_count} |",
             f"| amount | {_d(report.source_amount)} | {_d(report.target_amount)} |", "",
             f"Amount tolerance: {_d(report.tolerance)}. Differences are target minus source.", "",
             "## Per day", ""]
    if report.days:
        lines += ["| day | source rows | target rows | source amount | target amount | difference | |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        lines += [f"| {_cell(d.day)} | {d.source_count} | {d.target_count} | {_d(d.source_amount)} | "
                  f"{_d(d.target_amount)} | {_d(d.difference)} | {'ok' if d.ok else '**differs**'} |"
                  for d in report.days]
    else:
        lines.append("No rows on either side.")

    def section(title: str, header: str, rows: list[str]) -> None:
        lines.extend(["", f"## {title} ({len(rows)})", ""])
        if not rows:
            lines.append("none")
            return
        lines.extend([header, "| " + " | ".join("---" for _ in header.strip("|").split("|")) + " |"])
        lines.extend(rows[:max_keys])
        if len(rows) > max_keys:
            lines.append(f"\n... and {len(rows) - max_keys} more (all of them: --format json)")

    section(f"Missing in {t}", "| key | day | amount |",
            [f"| {_cell(e.key)} | {e.day} | {_d(e.amount)} |" for e in report.missing_in_target])
    section(f"Missing in {s}", "| key | day | amount |",
            [f"| {_cell(e.key)} | {e.day} | {_d(e.amount)} |" for e in report.missing_in_source])
    section("Amounts differ", "| key | day | source amount | target amount | difference |",
            [f"| {_cell(a.key)} | {a.day} | {_d(a.amount)} | {_d(b.amount)} | {_d(b.amount - a.amount)} |"
             for a, b in report.amounts_differ])
    section("Days differ", "| key | source day | target day |",
            [f"| {_cell(a.key)} | {a.day} | {b.day} |" for a, b in report.days_differ])
    if report.duplicates:
        section("Keys more than once", "| key | source rows | target rows |",
                [f"| {_cell(k)} | {n['source']} | {n['target']} |" for k, n in report.duplicates.items()])
    return "\n".join(lines) + "\n"
