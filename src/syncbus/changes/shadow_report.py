"""``syncbus shadow report ROUTE``: how far a shadow agrees with the live route, and where it does not.

The question before a promote is "what would change, for which records?", so
the report leads with the agreement rate of the newest run (one shadow
version against one live version), then the fields that differ most (list
indices folded: ``E1EDP01[].MENGE`` is one field), then examples with both
values side by side. Earlier runs -- the live route was reloaded, or the
shadow was edited -- are listed with their own counts, never mixed in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import SyncbusError
from ..state.versions import ShadowResult
from .tree import field_of


class NoShadowResults(SyncbusError):
    """Nothing was compared for this route (yet): no shadow is running, or it saw no records."""


@dataclass
class ShadowReport:
    route: str
    run: dict[str, Any]
    runs: list[dict[str, Any]]
    fields: list[tuple[str, int]] = field(default_factory=list)
    examples: list[ShadowResult] = field(default_factory=list)
    records: list[ShadowResult] | None = None

    @property
    def compared(self) -> int:
        return int(self.run["same"] + self.run["different"])

    @property
    def agreement(self) -> float:
        return self.run["same"] / self.compared if self.compared else 1.0

    def to_json(self) -> dict[str, Any]:
        n = self.compared
        out: dict[str, Any] = {
            "route": self.route, "shadow": self.run["shadow"], "shadow_version": self.run["shadow_version"],
            "live_version": self.run["live_version"], "compared": n, "same": self.run["same"],
            "different": self.run["different"], "agreement": round(self.agreement, 6),
            "fields": [{"field": f, "records": c, "share": round(c / n, 6) if n else 0.0} for f, c in self.fields],
            "examples": [_example(e) for e in self.examples],
            "runs": [_run_json(r) for r in self.runs]}
        if self.records is not None:
            out["records"] = [{"record_id": r.record_id, "key": r.key, "outcome": r.outcome, "paths": list(r.paths)}
                              for r in self.records]
        return out


def build(store: Any, route: str, *, shadow: str | None = None, examples: int = 5,
          with_records: bool = False) -> ShadowReport:
    """The report of ``route`` (a live route, or a shadow's own name) from the stored results."""
    runs = store.shadow_counts(live_route=route, shadow=shadow)
    if not runs:
        runs = store.shadow_counts(shadow=route)
    if not runs:
        raise NoShadowResults(f"no shadow results for {route!r}: is a mapping with 'shadow_of: {route}' running, "
                              "and has it seen records since?")
    run = runs[0]
    results = store.shadow_results(run["shadow"], run["shadow_version"], run["live_version"])
    per_field: Counter[str] = Counter()
    for r in results:
        per_field.update({field_of(p) for p in r.paths})
    samples = [s for s in store.shadow_samples(run["shadow"])
               if s.shadow_version == run["shadow_version"] and s.live_version == run["live_version"]]
    return ShadowReport(run["live_route"], run, runs, sorted(per_field.items(), key=lambda kv: (-kv[1], kv[0])),
                        samples[:max(0, examples)], results if with_records else None)


def render_markdown(report: ShadowReport) -> str:
    run, n = report.run, report.compared
    lines = [f"# Shadow report: {_md(report.route)}", "",
             f"Shadow `{_md(run['shadow'])}` (version {run['shadow_version']}) against live version "
             f"{run['live_version']}: **{n}** records compared, {run['same']} same, {run['different']} different "
             f"-- agreement **{_pct(report.agreement)}**.", ""]
    if report.fields:
        lines += ["## Fields that differ", "", "| field | records | share of compared |", "| --- | ---: | ---: |"]
        lines += [f"| `{_md(f)}` | {c} | {_pct(c / n if n else 0)} |" for f, c in report.fields]
        lines.append("")
    if report.examples:
        lines += ["## Examples", ""]
        for ex in report.examples:
            lines += [f"### record `{_md(ex.record_id)}`" + (f" (key `{_md(ex.key)}`)" if ex.key else ""), "",
                      "| path | live | shadow |", "| --- | --- | --- |"]
            values = (ex.detail or {}).get("values", {})
            for path in ex.paths:
                v = values.get(path, {})
                lines.append(f"| `{_md(path)}` | {_md(_value(v.get('live')))} | {_md(_value(v.get('shadow')))} |")
            lines.append("")
    lines += ["## Runs", "", "| shadow | shadow version | live version | compared | same | different | agreement "
              "| first | last |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in report.runs:
        total = r["same"] + r["different"]
        lines.append(f"| `{_md(r['shadow'])}` | {r['shadow_version']} | {r['live_version']} | {total} | {r['same']} "
                     f"| {r['different']} | {_pct(r['same'] / total if total else 1)} | {r['first']:%Y-%m-%d %H:%M} "
                     f"| {r['last']:%Y-%m-%d %H:%M} |")
    return "\n".join(lines) + "\n"


def _example(e: ShadowResult) -> dict[str, Any]:
    detail = e.detail or {}
    return {"record_id": e.record_id, "key": e.key, "at": e.at.isoformat(), "paths": list(e.paths),
            "values": detail.get("values", {}), "input": detail.get("input"),
            "truncated_paths": detail.get("truncated", 0)}


def _run_json(r: dict[str, Any]) -> dict[str, Any]:
    total = r["same"] + r["different"]
    return {**r, "compared": total, "agreement": round(r["same"] / total, 6) if total else 1.0,
            "first": r["first"].isoformat(), "last": r["last"].isoformat()}


def _value(v: Any) -> str:
    if isinstance(v, dict) and v.get("missing") is True and len(v) == 1:
        return "(missing)"
    return orjson.dumps(v).decode()


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def _md(text: Any) -> str:
    """Table-safe Markdown: pipes and line breaks would break the table; backticks the code spans."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("`", "'").replace("\n", " ")
