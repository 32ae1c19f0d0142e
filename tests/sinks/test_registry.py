"""Sink types by name: built-ins, entry-point plugins, and config errors that point at the option."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from typing import Any, Literal

import pytest

from syncbus.sinks import registry
from syncbus.sinks.base import BaseSink, Delivery, SinkConfig
from syncbus.sinks.http import HttpSink, HttpSinkConfig
from syncbus.sinks.registry import SinkConfigError, build_sink, format_loc, sink_config, sink_types


class NullSinkConfig(SinkConfig):
    type: Literal["null"] = "null"
    drop_rate: float = 0.0


class NullSink(BaseSink):
    """A plugin sink used to check entry point loading."""

    Config = NullSinkConfig

    async def send(self, delivery: Delivery) -> None:
        return None


class NoConfigSink:
    pass


HTTP: dict[str, Any] = {"name": "erp-orders", "type": "http", "url": "https://erp.example/api/orders"}


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend some packages declared `syncbus.sinks` entry points (real EntryPoint objects)."""
    here = __name__
    fake = [
        EntryPoint("http", "syncbus.sinks.http:HttpSink", "syncbus.sinks"),
        EntryPoint("null", f"{here}:NullSink", "syncbus.sinks"),
        EntryPoint("broken", "syncbus_no_such_package.sinks:Sink", "syncbus.sinks"),
        EntryPoint("bare", f"{here}:NoConfigSink", "syncbus.sinks"),
        EntryPoint("http", f"{here}:NullSink", "syncbus.sinks"),  # may not hijack a built-in
    ]

    def entry_points(group: str) -> list[EntryPoint]:
        return [ep for ep in fake if ep.group == group]

    monkeypatch.setattr(registry, "entry_points", entry_points)
    registry.refresh()
    yield
    monkeypatch.undo()
    registry.refresh()


def test_http_is_known_from_the_installed_entry_points() -> None:
    registry.refresh()
    assert sink_types()["http"] is HttpSink


def test_build_http_sink_from_a_dict() -> None:
    sink = build_sink({**HTTP, "method": "put", "timeout": "5s", "headers": {"X-Client": "100"},
                       "retry": {"attempts": 6, "initial": "250ms", "max": "1m"},
                       "auth": {"oauth2_client_credentials": {"token_url": "https://idp/token",
                                                              "client_id": "syncbus", "client_secret": "x"}}})
    assert isinstance(sink, HttpSink)
    assert sink.name == "erp-orders"
    assert isinstance(sink.config, HttpSinkConfig)
    assert (sink.config.method, sink.config.timeout, sink.config.headers) == ("PUT", 5.0, {"X-Client": "100"})
    assert (sink.retry.attempts, sink.retry.spec.initial, sink.retry.spec.max) == (6, 0.25, 60.0)


def test_defaults() -> None:
    config = sink_config(HTTP)
    assert isinstance(config, HttpSinkConfig)
    assert (config.method, config.timeout, config.verify_tls, config.auth) == ("POST", 10.0, True, None)
    assert config.max_connections >= 1
    assert config.retry.attempts == 4


@pytest.mark.parametrize(("config", "loc", "fragment"), [
    ({**HTTP, "type": "htp"}, ("type",), "unknown sink type 'htp' (did you mean 'http'? known types: KNOWN)"),
    ({**HTTP, "type": "smtp"}, ("type",), "unknown sink type 'smtp' (known types: KNOWN)"),
    ({"name": "x", "url": "http://a"}, ("type",), "missing sink type (known types: KNOWN)"),
    ({**HTTP, "type": 3}, ("type",), "sink type must be text"),
    ({**HTTP, "urll": "x"}, ("urll",), "unknown option 'urll' (known options: "),
    ({k: v for k, v in HTTP.items() if k != "url"}, ("url",), "required option missing"),
    ({**HTTP, "url": "ftp://erp/x"}, ("url",), "invalid URL 'ftp://erp/x'"),
    ({**HTTP, "method": "DELETE"}, ("method",), "Input should be 'POST', 'PUT' or 'PATCH'"),
    ({**HTTP, "timeout": "soon"}, ("timeout",), "invalid duration 'soon'"),
    ({**HTTP, "timeout": 0}, ("timeout",), "greater than 0"),
    ({**HTTP, "name": "has space"}, ("name",), "should match pattern"),
    ({**HTTP, "retry": {"attempts": 0}}, ("retry", "attempts"), "greater than or equal to 1"),
    ({**HTTP, "retry": {"backof": "fixed"}}, ("retry", "backof"),
     "unknown option 'backof' (known options: attempts, backoff, initial, max, jitter)"),
    ({**HTTP, "headers": {"Bad Header": "x"}}, ("headers",), "invalid header name 'Bad Header'"),
    ({**HTTP, "auth": {"bearer": {"token": "a"}, "basic": {"username": "u", "password": "p"}}}, ("auth",),
     "give only one auth scheme, not bearer and basic"),
    ({**HTTP, "auth": {"oauth2_client_credentials": {"token_url": "https://idp", "client_id": "c"}}},
     ("auth", "oauth2_client_credentials", "client_secret"), "required option missing"),
    ({**HTTP, "auth": {"kerberos": {}}}, ("auth", "kerberos"), "unknown option 'kerberos' (known options: "
                                                               "oauth2_client_credentials, bearer, basic, api_key)"),
])
def test_config_errors_name_the_option(config: dict[str, Any], loc: tuple[str, ...], fragment: str) -> None:
    fragment = fragment.replace("KNOWN", ", ".join(sorted(sink_types())))
    with pytest.raises(SinkConfigError) as info:
        build_sink(config)
    problems = dict(info.value.problems)
    assert loc in problems, info.value.problems
    assert fragment in problems[loc]
    assert fragment in str(info.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(SinkConfigError) as info:
        build_sink({"name": "erp", "type": "http", "retry": {"attempts": 0}, "verify": False})
    assert sorted(loc for loc, _ in info.value.problems) == [("retry", "attempts"), ("url",), ("verify",)]
    assert str(info.value).startswith("sink 'erp': ")


def test_secrets_are_not_echoed_in_errors() -> None:
    with pytest.raises(SinkConfigError) as info:
        build_sink({**HTTP, "auth": {"basic": {"username": "u", "password": "hunter2", "realm": "x"}}})
    assert "hunter2" not in str(info.value)


def test_not_a_mapping() -> None:
    with pytest.raises(SinkConfigError, match="a sink must be a mapping of options, not list"):
        build_sink(["http"])  # type: ignore[arg-type]


def test_plugins_from_entry_points(plugins: None) -> None:
    types = sink_types()
    assert types["http"] is HttpSink  # the built-in wins
    assert types["null"] is NullSink
    assert "broken" not in types
    sink = build_sink({"name": "void", "type": "null", "drop_rate": 0.5})
    assert isinstance(sink, NullSink) and sink.config.drop_rate == 0.5  # type: ignore[attr-defined]
    with pytest.raises(SinkConfigError) as info:
        build_sink({"name": "void", "type": "null", "url": "x"})
    assert info.value.problems[0][0] == ("url",)


def test_broken_and_bare_plugins_are_explained(plugins: None) -> None:
    with pytest.raises(SinkConfigError, match=r"sink type 'broken' could not be loaded: .*ModuleNotFoundError"):
        build_sink({"name": "x", "type": "broken"})
    with pytest.raises(SinkConfigError, match="has no Config model derived from SinkConfig"):
        build_sink({"name": "x", "type": "bare"})
    with pytest.raises(SinkConfigError) as info:
        build_sink({"name": "x", "type": "nope"})
    assert f"known types: {', '.join(sorted({*registry.BUILTIN_SINKS, 'bare', 'null'}))})" in str(info.value)


def test_format_loc() -> None:
    assert format_loc(("retry", "attempts")) == "retry.attempts"
    assert format_loc(("headers", 0, "name")) == "headers[0].name"
