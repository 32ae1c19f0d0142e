"""schemas/connectors.schema.json (components/schema.py): generated from the specs, and what it accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from syncbus.components.schema import builtin_schema, render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "schemas" / "connectors.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = builtin_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(validator: jsonschema.Draft202012Validator, doc: dict[str, Any]) -> list[str]:
    return [e.message for e in validator.iter_errors(doc)]


def test_the_committed_schema_is_generated_from_the_specs() -> None:
    assert COMMITTED.read_text() == render(builtin_schema()), \
        "run: .venv/bin/python -m syncbus.components.schema > schemas/connectors.schema.json"


def test_the_example_connectors_are_valid(validator: jsonschema.Draft202012Validator) -> None:
    doc = yaml.safe_load((ROOT / "connectors" / "example.yaml").read_text())
    assert problems(validator, doc) == []


def test_options_and_their_env_forms(validator: jsonschema.Draft202012Validator) -> None:
    sink = {"name": "erp", "type": "http", "url": "https://erp", "timeout": "10s", "retry": {"max_env": "MAX"}}
    assert problems(validator, {"sinks": [sink]}) == []
    assert problems(validator, {"sinks": [{**sink, "url_env": "ERP_URL"}]}) != []  # not both
    no_url = {k: v for k, v in sink.items() if k != "url"}
    assert problems(validator, {"sinks": [{**no_url, "url_env": "ERP_URL"}]}) == []
    assert problems(validator, {"sinks": [no_url]}) != []  # url or url_env is required
    assert problems(validator, {"sinks": [{**sink, "urll": "x"}]}) != []  # unknown option
    assert problems(validator, {"sources": [{"name": "g", "type": "generat", "topic": "t"}]}) != []
    assert problems(validator, {"sources": [{"name": "g", "type": "generate", "topic": "t",
                                             "interval": "30s", "batch_size_env": "N"}]}) == []


def test_secrets_exist_only_as_env(validator: jsonschema.Draft202012Validator) -> None:
    base = {"name": "erp", "type": "http", "url": "https://erp"}
    plain = {**base, "auth": {"basic": {"username": "u", "password": "p"}}}
    from_env = {**base, "auth": {"basic": {"username": "u", "password_env": "ERP_PASSWORD"}}}
    assert problems(validator, {"sinks": [plain]}) != []
    assert problems(validator, {"sinks": [from_env]}) == []
    keys = {"name": "crm", "type": "http_ingress", "topic": "t"}
    assert problems(validator, {"sources": [{**keys, "auth": {"api_keys": ["k"]}}]}) != []
    assert problems(validator, {"sources": [{**keys, "auth": {"api_keys_env": "KEYS"}}]}) == []


def test_schema_describes_options() -> None:
    schema = json.loads(COMMITTED.read_text())
    generate = schema["$defs"]["source.generate"]
    assert generate["properties"]["count"]["description"].startswith("How many records exist")
    assert generate["properties"]["count_env"]["type"] == "string"
    assert schema["$defs"]["source"]["properties"]["type"]["enum"] == sorted(
        ["generate", "http_ingress", "sql_poll", "file_drop", "http_poll", "kafka"])
