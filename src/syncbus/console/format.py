"""Numbers and times as the console shows them (plain text: the templates escape it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

MAX_DETAIL = 300


def seconds(value: float | None) -> str:
    """A latency: ``850 ms``, ``2.4 s``; ``—`` when there is none yet."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s"


def when(epoch: float | None, now: float | None = None) -> str:
    """``2026-11-20 08:00:01Z (42 s ago)``; ``never`` when there is no time."""
    if not epoch:
        return "never"
    ago = max(0.0, (now if now is not None else time.time()) - epoch)
    if ago < 120:
        rel = f"{ago:.0f} s ago"
    elif ago < 7200:
        rel = f"{ago / 60:.0f} min ago"
    else:
        rel = f"{ago / 3600:.1f} h ago"
    return f"{datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M:%S}Z ({rel})"


def details(detail: dict[str, Any]) -> str:
    """A trace event's details on one line: ``sink=erp outcome=retryable seconds=0.02`` (empty ones left out)."""
    text = " ".join(f"{k}={v}" for k, v in detail.items() if v is not None and v != "")
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


def at(iso: str) -> str:
    """A trace time (ISO 8601, UTC) to the millisecond, the way the rest of the console writes times."""
    try:
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except (TypeError, ValueError):
        return str(iso)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d}"
