"""Durations and sizes as written in connector files."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from syncbus.units import Duration, Size, format_duration, parse_duration, parse_size


@pytest.mark.parametrize(("text", "seconds"), [
    ("0.5s", 0.5), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1h30m", 5400.0), ("1m 30s", 90.0), (" 10 s ", 10.0), ("10S", 10.0), ("10", 10.0), ("1.5", 1.5),
    (".25s", 0.25), ("0", 0.0), (3, 3.0), (2.5, 2.5), (0, 0.0),
])
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(("text", "fragment"), [
    ("abc", "expected a number with a unit"),
    ("10x", "expected a number with a unit"),
    ("1s2", "expected a number with a unit"),
    ("s", "expected a number with a unit"),
    ("", "empty"),
    ("-1s", "must not be negative"),
    (-3, "must not be negative"),
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (True, "invalid duration True"),
    (None, "invalid duration None"),
])
def test_parse_duration_refuses(text: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)  # type: ignore[arg-type]
    assert fragment in str(info.value)


@pytest.mark.parametrize(("text", "size"), [
    ("1MiB", 1048576), ("512KiB", 524288), ("10MB", 10_000_000), ("1GiB", 1024**3), ("1.5KiB", 1536),
    ("100", 100), ("100B", 100), ("1kb", 1000), ("2Mi", 2 * 1024**2), ("1 MiB", 1048576),
    (1048576, 1048576), (0, 0),
])
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1XB", "MiB", "ten", "-1MiB", "", True, None, -1, "1.2.3KB"])
def test_parse_size_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (10.0, "10s"), (1.5, "1.5s"), (0.01, "10ms")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


class _Model(BaseModel):
    timeout: Duration = 10.0
    limit: Size = 1024


def test_pydantic_field_types() -> None:
    model = _Model.model_validate({"timeout": "250ms", "limit": "1MiB"})
    assert (model.timeout, model.limit) == (0.25, 1048576)
    with pytest.raises(ValidationError) as info:
        _Model.model_validate({"timeout": "soon"})
    error = info.value.errors()[0]
    assert error["loc"] == ("timeout",)
    assert "invalid duration 'soon'" in error["msg"]
