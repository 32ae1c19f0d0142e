"""Every registered source type passes the same checks (the fixtures for poll types: fixtures.py).

Data-driven: a new type joins by being registered (built-in or plugin) and,
for poll types, by adding its test system to ``fixtures.py``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from syncbus.components.registry import registry
from syncbus.components.schema import connectors_schema
from syncbus.components.spec import ComponentSpec
from syncbus.config import load_connector_file
from syncbus.sources.base import PollBatch, PollSource, PushSource

from .fixtures import POLL_FIXTURES, PollCase

SOURCES = registry().specs("source")
POLL = [s for s in SOURCES if s.factory is not None and issubclass(s.factory, PollSource)]


def ids(specs: list[ComponentSpec]) -> list[str]:
    return [s.name for s in specs]


@pytest.mark.parametrize("spec", SOURCES, ids=ids(SOURCES))
def test_spec_is_documented(spec: ComponentSpec) -> None:
    assert spec.summary, f"{spec.title}: the class needs a docstring (first paragraph: the summary)"
    assert spec.description, f"{spec.title}: the docstring needs a second paragraph (the description)"
    undocumented = [o.name for o in spec.options() if not o.description and o.name not in ("name", "type")]
    assert not undocumented, f"{spec.title}: options without a description: {undocumented}"
    assert spec.examples, f"{spec.title}: give at least one entry in the class's `examples`"
    assert spec.factory is not None and issubclass(spec.factory, PollSource | PushSource)


@pytest.mark.parametrize("spec", SOURCES, ids=ids(SOURCES))
def test_examples_pass_the_loader_and_the_json_schema(spec: ComponentSpec, tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(connectors_schema(registry().specs()))
    for i, example in enumerate(spec.examples):
        assert example.get("type") == spec.name, f"example {i} of {spec.title} has another type"
        path = tmp_path / f"example{i}.yaml"
        path.write_text(yaml.safe_dump({"sources": [dict(example)]}, sort_keys=False))
        load_connector_file(path, env={}, strict=False)  # raises ConfigErrors with file:line:col
        problems = [e.message for e in validator.iter_errors({"sources": [dict(example)]})]
        assert not problems, f"example {i} of {spec.title} fails the JSON Schema: {problems}"


def _case_for(spec: ComponentSpec) -> Any:
    factory = POLL_FIXTURES.get(spec.name)
    if factory is None:
        pytest.fail(f"poll source type {spec.name!r} has no conformance fixture: add one to "
                    "tests/conformance/fixtures.py")
    return factory


def _source(spec: ComponentSpec, config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> PollSource:
    """An instance built the way a node builds it: through the connectors file loader."""
    path = tmp_path / "conformance.yaml"
    path.write_text(textwrap.dedent(yaml.safe_dump({"sources": [config]}, sort_keys=False)))
    component = load_connector_file(path, env=env).sources[config["name"]]
    assert spec.factory is not None
    source = spec.factory(component.config)
    assert isinstance(source, PollSource)
    return source


async def _drain(source: PollSource, cursor: Any, *, full: bool, limit: int = 2) -> tuple[list[Any], Any]:
    """Every page after ``cursor``, as the runner pages: (records, the cursor after them)."""
    records: list[Any] = []
    for _ in range(1000):
        batch = await source.poll(cursor, full=full, limit=limit)
        assert isinstance(batch, PollBatch)
        assert len(batch.records) <= limit, f"{source.config.type}: a page larger than limit={limit}"
        json.dumps(batch.cursor)  # the cursor is stored as JSON
        progressed = bool(batch.records) or batch.cursor != cursor
        records += batch.records
        cursor = batch.cursor
        if not batch.more or not progressed:
            return records, cursor
    raise AssertionError("poll() kept saying more")


@pytest.mark.parametrize("spec", POLL, ids=ids(POLL))
async def test_lifecycle_is_idempotent(spec: ComponentSpec, tmp_path: Path) -> None:
    case: PollCase = await _case_for(spec)(tmp_path)
    try:
        never_started = _source(spec, case.config, tmp_path, case.env)
        await never_started.stop()  # a reload may stop what never started
        source = _source(spec, case.config, tmp_path, case.env)
        await source.start()
        await source.start()
        assert await source.check() in (True, False)
        await source.stop()
        await source.stop()
    finally:
        if case.close is not None:
            await case.close()


@pytest.mark.parametrize("spec", POLL, ids=ids(POLL))
async def test_a_cursor_returns_only_newer_records(spec: ComponentSpec, tmp_path: Path) -> None:
    case: PollCase = await _case_for(spec)(tmp_path)
    source = _source(spec, case.config, tmp_path, case.env)
    await source.start()
    try:
        first, cursor = await _drain(source, None, full=True)
        seen = [case.identity(r) for r in first]
        assert len(seen) >= 3, "the fixture's system must start with at least 3 records"
        assert len(set(seen)) == len(seen), "a full load returned a record twice"
        new_config = await case.add(2)
        if new_config is not None:  # the type sees new records only with new options: restart it
            await source.stop()
            source = _source(spec, new_config, tmp_path, case.env)
            await source.start()
        newer, cursor2 = await _drain(source, cursor, full=False)
        got = [case.identity(r) for r in newer]
        assert len(got) == 2, f"after the cursor, expected the 2 new records, got {got}"
        assert not set(got) & set(seen), "records before the cursor came back"
        again, _ = await _drain(source, cursor2, full=False)
        assert again == [], "nothing new, yet records came back"
    finally:
        await source.stop()
        if case.close is not None:
            await case.close()
