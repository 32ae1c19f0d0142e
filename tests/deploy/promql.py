"""Metric names in PromQL expressions, and the names syncbus exports.

A small tokenizer, not a parser: it removes string literals, label matchers ``{...}``, ranges
``[...]``, grouping clauses (``by (...)``, ``on (...)``, ``group_left (...)``...), ``offset``,
Grafana variables and numbers; what is left that looks like an identifier and is not followed by
``(`` (a function or an aggregation) or a keyword is a metric name. promtool checks the syntax.
"""

from __future__ import annotations

import re

from syncbus.metrics import Metrics

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "offset", "bool", "inf", "nan", "start", "end", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

# Series Prometheus makes itself: `up` for every scrape target.
PROMETHEUS_SYNTHETIC = {"up"}


def metric_names(expr: str) -> set[str]:
    s = _STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)
    s = re.sub(r"(?<![\w:])\d[\w.]*", " ", s)  # numbers: 0.95, 1e3, 4.7E-02 (the -02 too)
    names = set()
    for m in _IDENT.finditer(s):
        token = m.group(0)
        if token.lower() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(token)
    return names


def exported_metric_names() -> set[str]:
    """Every series name a syncbus process exports, from the metric families of its registry."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        n = family.name
        if family.type == "counter":
            names |= {f"{n}_total", f"{n}_created"}
        elif family.type == "histogram":
            names |= {f"{n}_bucket", f"{n}_sum", f"{n}_count", f"{n}_created"}
        elif family.type == "summary":
            names |= {n, f"{n}_sum", f"{n}_count", f"{n}_created"}
        elif family.type == "info":
            names.add(f"{n}_info")
        else:
            names.add(n)
    return names


def unknown_names(expr: str, known: set[str]) -> set[str]:
    """Names in expr that are neither exported, nor process_* (the process collector), nor known."""
    return {n for n in metric_names(expr)
            if n not in known and n not in PROMETHEUS_SYNTHETIC and not n.startswith("process_")}
