"""Helpers shared by the file sink tests: deliveries of the OA → HR flow, a settable clock, folder listings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from syncbus.sinks.base import Delivery

CSV_UTF8 = "text/csv; charset=utf-8"
CSV_GBK = "text/csv; charset=gbk"
NOON = datetime(2026, 11, 20, 12, 5, 9)


class Clock:
    """The sink's notion of now, moved by the test."""

    def __init__(self, now: datetime = NOON) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def employee(make_delivery: Callable[..., Delivery], body: bytes, content_type: str = CSV_UTF8,
             record_id: str = "rec-1", key: str | None = "E001", **more: Any) -> Delivery:
    return make_delivery(route="oa-employee-to-hr", sink="hr-drop", record_id=record_id, key=key,
                         idempotency_key=f"oa-employee-to-hr:{key}:{record_id}", body=body,
                         content_type=content_type, **more)


def row(make_delivery: Callable[..., Delivery], emp_id: str, name: str, *, header: str = "emp_id,name",
        **more: Any) -> Delivery:
    """One employee as the route's CSV codec encodes it (UTF-8, header + row), with its mapped payload."""
    body = f"{header}\r\n{emp_id},{name}\r\n".encode()
    return employee(make_delivery, body, record_id=emp_id, key=emp_id, payload={"emp_id": emp_id, "name": name},
                    **more)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def visible(folder: Path) -> list[str]:
    """What a file-drop poller sees: hidden (dot) files are in progress."""
    return [name for name in listing(folder) if not name.startswith(".")]
