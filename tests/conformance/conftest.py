"""The bridge from pytest fixtures to the poll fixtures of fixtures.py that need session services.

A factory in fixtures.py cannot take pytest fixtures (it is called with a
folder only), yet the ``kafka`` source's test system is the session's broker.
So every conformance check gets ``SERVICES["fixture"]`` (pytest's
``getfixturevalue``: the broker starts only when a factory asks for it), and
the checks that build a type's test system -- those parametrized over the
poll types -- get the marker of every fixture the type NEEDS, so
``-m "not kafka"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .fixtures import NEEDS, SERVICES

HERE = Path(__file__).parent
MARKERS = {"kafka_bootstrap": "kafka"}  # fixture -> the marker of the tests that use it


def _poll_case_type(item: pytest.Item) -> str | None:
    """The source type a check builds the test system of, or None (documentation checks, sinks)."""
    from .test_sources import POLL

    callspec = getattr(item, "callspec", None)
    spec = callspec.params.get("spec") if callspec is not None else None
    parametrize = item.get_closest_marker("parametrize")
    if spec is None or parametrize is None or parametrize.args[1] is not POLL:
        return None
    return str(spec.name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent != HERE:
            continue
        for fixture in NEEDS.get(_poll_case_type(item) or "", ()):
            marker = MARKERS.get(fixture)
            if marker is not None:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(autouse=True)
def _services(request: pytest.FixtureRequest) -> Iterator[None]:
    SERVICES["fixture"] = request.getfixturevalue
    yield
    SERVICES.pop("fixture", None)
