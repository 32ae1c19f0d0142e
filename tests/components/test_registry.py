"""One registry for every kind (components/registry.py): built-ins, entry points, broken plugins."""

from __future__ import annotations

import logging

import pytest

from syncbus.components import BrokenComponentError, UnknownComponentError, load_registry
from syncbus.components.registry import registry
from syncbus.sinks.http import HttpSink
from syncbus.sources.http_ingress import HttpIngressSource

from . import sample_plugins


def test_every_kind_has_its_builtins() -> None:
    reg = load_registry(lambda group: [])
    assert {"http_ingress", "generate"} <= set(reg.names("source"))
    assert {"http", "sql", "file", "kafka"} <= set(reg.names("sink"))
    assert reg.names("codec") == ["csv", "json", "xml"]
    assert {"trim", "decimal", "mask_phone", "lookup"} <= set(reg.names("transform"))
    assert reg.get("source", "http_ingress").factory is HttpIngressSource
    assert reg.get("sink", "http").factory is HttpSink
    assert all(s.origin == "builtin" for s in reg.specs())
    assert reg.get("transform", "decimal").signature == "decimal(places)"
    assert reg.broken() == []


def test_unknown_names_get_a_did_you_mean() -> None:
    reg = load_registry(lambda group: [])
    with pytest.raises(UnknownComponentError) as info:
        reg.get("source", "http_ingres")
    assert info.value.suggestion == "http_ingress"
    assert str(info.value).startswith("unknown source type 'http_ingres' (did you mean 'http_ingress'? known types: ")
    with pytest.raises(UnknownComponentError, match=r"unknown codec type 'yaml' \(known types: csv, json, xml\)"):
        reg.get("codec", "yaml")
    with pytest.raises(UnknownComponentError, match="unknown sink type 3"):
        reg.get("sink", 3)


def test_plugins_of_every_kind_join(plugins: None) -> None:
    reg = registry()
    ledger = reg.get("source", "ledger_poll")
    assert ledger.factory is sample_plugins.LedgerPoll
    assert (ledger.origin, ledger.status) == ("tests.components.sample_plugins:LedgerPoll", "experimental")
    assert ledger.summary == "Poll a ledger table."
    assert ledger.secret_paths == frozenset({("dsn",)})
    assert reg.get("sink", "null").factory is sample_plugins.NullSink
    assert reg.get("sink", "echo") is sample_plugins.ECHO_SPEC  # an entry point may name a ready spec
    upper = reg.get("codec", "upper")
    assert [o.name for o in upper.options()] == ["encoding"]
    assert reg.get("transform", "reverse").summary == "Reverse a text (test plugin transform)."
    from syncbus.mapping.transforms import compile_chain

    assert compile_chain("reverse | upper")("abc") == "CBA"  # usable in mappings, not only listed


def test_builtins_win_and_broken_plugins_are_reported_not_fatal(plugins: None,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        reg = registry()
    assert reg.get("source", "http_ingress").factory is HttpIngressSource
    assert "'http_ingress' is already a source type" in caplog.text
    broken = {b.name: b for b in reg.broken("sink")}
    assert set(broken) == {"bare", "gone"}
    assert "ModuleNotFoundError" in broken["gone"].reason and not broken["gone"].loaded
    assert "has no Config model derived from SinkConfig" in broken["bare"].reason and broken["bare"].loaded
    with pytest.raises(BrokenComponentError, match=r"sink type 'gone' could not be loaded: .*ModuleNotFoundError"):
        reg.get("sink", "gone")
    with pytest.raises(BrokenComponentError, match="sink type 'bare' is unusable"):
        reg.get("sink", "bare")
    assert "bare" in reg.known("sink") and "gone" not in reg.known("sink")
    assert {"http", "null", "echo"} <= set(reg.names("sink"))  # the rest still works


def test_refresh_reloads(plugins: None) -> None:
    first = registry()
    assert registry() is first  # loaded once
    from syncbus.components import refresh

    refresh(lambda group: [])
    assert registry() is not first and "ledger_poll" not in registry().names("source")
