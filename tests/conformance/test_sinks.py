"""Every registered sink type documents its options and has examples that validate.

Data-driven like test_sources.py: a sink type joins by being registered.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from syncbus.components.registry import registry
from syncbus.components.schema import connectors_schema
from syncbus.components.spec import ComponentSpec
from syncbus.config import load_connector_file

SINKS = registry().specs("sink")


@pytest.mark.parametrize("spec", SINKS, ids=[s.name for s in SINKS])
def test_spec_is_documented(spec: ComponentSpec) -> None:
    assert spec.summary, f"{spec.title}: the class needs a docstring (first paragraph: the summary)"
    undocumented = [o.name for o in spec.options() if not o.description and o.name not in ("name", "type")]
    assert not undocumented, f"{spec.title}: options without a description: {undocumented}"
    assert spec.examples, f"{spec.title}: give at least one entry in the class's `examples`"


@pytest.mark.parametrize("spec", SINKS, ids=[s.name for s in SINKS])
def test_examples_pass_the_loader_and_the_json_schema(spec: ComponentSpec, tmp_path: Path) -> None:
    validator = jsonschema.Draft202012Validator(connectors_schema(registry().specs()))
    for i, example in enumerate(spec.examples):
        assert example.get("type") == spec.name, f"example {i} of {spec.title} has another type"
        path = tmp_path / f"example{i}.yaml"
        path.write_text(yaml.safe_dump({"sinks": [dict(example)]}, sort_keys=False))
        load_connector_file(path, env={}, strict=False)
        problems = [e.message for e in validator.iter_errors({"sinks": [dict(example)]})]
        assert not problems, f"example {i} of {spec.title} fails the JSON Schema: {problems}"
