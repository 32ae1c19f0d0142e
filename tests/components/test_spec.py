"""ComponentSpec (components/spec.py, adapters.py): options, secrets, types and defaults from one model."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from syncbus.components.adapters import SpecError, class_spec, codec_spec
from syncbus.components.spec import ComponentSpec, describe_type
from syncbus.formats import XmlCodec
from syncbus.sinks.base import BaseSink, SinkConfig
from syncbus.units import Duration, Size


class Token(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(description="Token endpoint.")
    secret: SecretStr = Field(description="Client secret.")


class DemoConfig(SinkConfig):
    type: Literal["demo"] = "demo"
    endpoint: str = Field(description="Where to send.")
    dsn: str | None = Field(None, description="Connection string.", json_schema_extra={"secret": True})
    wait: Duration = Field(5.0, description="How long to wait.")
    limit: Size = Field(1024 * 1024, description="Largest body.")
    mode: Literal["a", "b"] = Field("a", description="Mode.")
    tokens: list[Token] = Field(default_factory=list, description="Tokens, one per tenant.")
    auth: Token | None = Field(None, description="One token.")


class DemoSink(BaseSink):
    """Send records somewhere (a demo).

    Second paragraph: the description.
    """

    Config = DemoConfig
    status: ClassVar[str] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [{"name": "d", "type": "demo", "endpoint": "x"}]


def test_a_class_becomes_a_spec() -> None:
    spec = class_spec("sink", "demo", DemoSink, "pkg:DemoSink")
    assert (spec.summary, spec.description, spec.status) == ("Send records somewhere (a demo).",
                                                              "Second paragraph: the description.", "beta")
    assert spec.examples == ({"name": "d", "type": "demo", "endpoint": "x"},)
    assert spec.config is DemoConfig and spec.factory is DemoSink and spec.title == "sink type 'demo'"
    assert isinstance(spec.validate({"name": "d", "type": "demo", "endpoint": "x"}), DemoConfig)


def test_options_are_flattened_with_types_defaults_and_secrets() -> None:
    options = {o.name: o for o in class_spec("sink", "demo", DemoSink, "x").options()}
    assert list(options)[:4] == ["name", "type", "retry", "retry.attempts"]
    assert options["endpoint"].required and options["endpoint"].description == "Where to send."
    assert (options["wait"].type, options["wait"].default_text()) == ("duration", "5s")
    assert (options["limit"].type, options["limit"].default_text()) == ("size", "1MiB")
    assert (options["mode"].type, options["mode"].default_text()) == ("one of: a, b", '"a"')
    assert options["tokens"].type == "list of object" and options["tokens.*.secret"].secret
    assert options["auth"].default_text() == "" and options["auth.url"].type == "string"
    assert options["dsn"].secret and not options["endpoint"].secret


def test_secret_paths_match_list_items() -> None:
    spec = class_spec("sink", "demo", DemoSink, "x")
    assert spec.secret_paths == frozenset({("dsn",), ("tokens", "*", "secret"), ("auth", "secret")})
    assert spec.is_secret(("tokens", 3, "secret")) and spec.is_secret(("auth", "secret"))
    assert not spec.is_secret(("auth", "url")) and not spec.is_secret(("tokens", 0))


def test_describe_type() -> None:
    assert describe_type(dict[str, list[int]]) == "map of list of integer"
    assert describe_type(bool | None) == "boolean"
    assert describe_type(int | str) == "integer or string"


class Undocumented:
    """No Config."""


def test_classes_that_cannot_describe_themselves_are_refused() -> None:
    with pytest.raises(SpecError, match=r"has no Config model derived from SinkConfig"):
        class_spec("sink", "x", Undocumented, "pkg:Undocumented")
    with pytest.raises(SpecError, match="has no Config model derived from SourceConfig"):
        class_spec("source", "x", DemoSink, "pkg:DemoSink")  # a sink is not a source

    class BadExamples(DemoSink):
        examples: ClassVar[Any] = "name: x"

    with pytest.raises(SpecError, match="examples must be a list of option mappings"):
        class_spec("sink", "x", BadExamples, "pkg:BadExamples")

    class BadStatus(DemoSink):
        status: ClassVar[str] = "alpha"

    with pytest.raises(SpecError, match="status 'alpha' is not one of stable, beta"):
        class_spec("sink", "x", BadStatus, "pkg:BadStatus")
    with pytest.raises(ValueError, match="status"):
        ComponentSpec(kind="sink", name="x", summary="s", status="gamma")  # type: ignore[arg-type]


def test_codec_options_come_from_the_constructor() -> None:
    spec = codec_spec("xml", XmlCodec, "builtin")
    options = {o.name: o for o in spec.options()}
    assert list(options) == ["root", "pretty", "encoding", "declaration", "max_bytes", "max_depth"]
    assert options["pretty"].type == "boolean" and options["pretty"].default is False
    assert "root element" in options["root"].description
    assert spec.validate({"root": "ORDERS05"}).model_dump()["root"] == "ORDERS05"
    assert {"root": "ORDERS05"} in spec.examples
    with pytest.raises(SpecError, match="is not a class with decode"):
        codec_spec("bad", Undocumented, "pkg:Undocumented")


def test_to_json_is_plain_data() -> None:
    import json

    data = class_spec("sink", "demo", DemoSink, "x").to_json()
    assert json.loads(json.dumps(data)) == data
    assert data["kind"] == "sink" and data["status"] == "beta"
    assert {"name": "dsn", "type": "string", "required": False, "default": None,
            "description": "Connection string.", "secret": True} in data["options"]
