"""connectors/*.yaml validated from the specs (config.py): file:line:col for every problem, secrets refused.

Each case writes a real file and checks the exact position the error points
at, because "look at line 12, column 5" is what makes a config error useful.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncbus.components.registry import registry
from syncbus.config import load_connector_file, load_connectors
from syncbus.errors import ConfigErrors
from syncbus.sinks.http import HttpSinkConfig
from syncbus.sources.generate import GenerateConfig


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors(path: Path, env: dict[str, str] | None = None, strict: bool = True) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_connector_file(path, env or {}, strict)
    return [str(e).replace(f"{path}:", "") for e in info.value.errors]


def test_valid_file_with_env_forms(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sources:
          - {name: crm, type: http_ingress, topic: crm.orders, auth: {api_keys_env: KEYS}, max_body: 2KiB}
          - name: gen
            type: generate
            topic: gen
            count_env: GEN_COUNT
            schedule: "0 22 * * *"
            timezone: Asia/Shanghai
        sinks:
          - name: erp
            type: http
            url_env: ERP_URL
            headers: {X-Client: "100", Authorization_env: ERP_AUTH}
        """)
    env = {"KEYS": "k1, k2,,k3", "GEN_COUNT": "7", "ERP_URL": "https://erp.example/api", "ERP_AUTH": "Bearer t"}
    cfg = load_connector_file(path, env)
    crm, gen, erp = cfg.sources["crm"], cfg.sources["gen"], cfg.sinks["erp"]
    assert crm.config.auth.api_keys == ["k1", "k2", "k3"] and crm.config.max_body == 2048
    assert isinstance(gen.config, GenerateConfig) and gen.config.count == 7 and gen.line == 3
    assert gen.spec is not None and gen.spec.name == "generate"
    assert isinstance(erp.config, HttpSinkConfig) and erp.config.url == "https://erp.example/api"
    assert erp.config.headers == {"X-Client": "100", "Authorization": "Bearer t"}
    assert (erp.kind, erp.type, erp.file) == ("sink", "http", str(path))


def test_unknown_type_and_option_point_at_their_key_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sources:
          - name: crm
            type: http_ingres
            topic: t
        sinks:
          - name: erp
            type: http
            url: https://erp.example
            retry: {attempts: 3, backof: fixed}
            timout: 5s
        """)
    got = errors(path)
    assert got[0].startswith("3:5: unknown source type 'http_ingres' (did you mean 'http_ingress'? known types:")
    assert got[1].startswith("9:26: unknown option 'backof' (known options: attempts, backoff")
    assert got[1].endswith("did you mean 'backoff'?")
    assert got[2].startswith("10:5: unknown option 'timout'") and got[2].endswith("did you mean 'timeout'?")
    assert len(got) == 3


def test_values_are_checked_where_they_are_written_also_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sources:
          - name: gen
            type: generate
            topic: gen
            count_env: GEN_COUNT
            schedule: "0 25 * * *"
            timezone: Asia/Shangai
          - {name: both, type: generate, topic: t, interval: 10s, schedule: "* * * * *"}
        sinks:
          - {name: erp, type: http}
        """)
    got = errors(path, {"GEN_COUNT": "many"})
    assert got == [
        "5:5: count (from count_env: GEN_COUNT): Input should be a valid integer, unable to parse string as an "
        "integer",
        "6:5: schedule: invalid cron expression '0 25 * * *': expected 5 fields (minute hour day-of-month month "
        "day-of-week), e.g. '0 22 * * *'",
        "7:5: timezone: unknown time zone 'Asia/Shangai': expected an IANA name such as Asia/Shanghai",
        "8:5: give schedule (cron) or interval, not both",
        "10:5: url: required option missing (give url or url_env)",
    ]


@pytest.mark.parametrize(("block", "where", "key"), [
    ("auth: {api_keys: [k1]}", "5:12", "api_keys"),                       # generic secret name
    ("auth: {basic: {username: u, password: p}}", "5:33", "password"),     # generic, nested
    ("auth: {api_key: {value: abc}}", "5:22", "value"),                    # SecretStr in the http spec
])
def test_secrets_in_a_file_are_refused(tmp_path: Path, block: str, where: str, key: str) -> None:
    section = "sources" if "api_keys" in block else "sinks"
    extra = "type: http_ingress\n    topic: t" if section == "sources" else "type: http\n    url: https://x"
    path = write(tmp_path, f"{section}:\n  - name: s\n    {extra}\n    {block}\n")
    assert errors(path) == [f"{where}: secrets come from the environment only: use {key}_env: VAR"]


def test_a_field_marked_secret_by_its_spec_is_refused(tmp_path: Path, plugins: None) -> None:
    path = write(tmp_path, """\
        sources:
          - {name: ledger, type: ledger_poll, topic: l, table: postings, dsn: "postgresql://u:pw@db/erp"}
          - {name: ok, type: ledger_poll, topic: l, table: postings, dsn_env: LEDGER_DSN}
        """)
    got = errors(path, {"LEDGER_DSN": "postgresql://db/erp"})
    assert got == ["2:66: secrets come from the environment only: use dsn_env: VAR"]
    assert "pw@" not in " ".join(got)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key", "Cookie", "X-Auth-Token", "X-Client-Secret",
                                    "proxy-authorization"])
def test_credential_headers_are_refused(tmp_path: Path, header: str) -> None:
    path = write(tmp_path, f"""\
        sinks:
          - name: erp
            type: http
            url: https://erp.example
            headers: {{X-Client: "100", {header}: "abc"}}
        """)
    [got] = errors(path)
    assert got.startswith("5:32: header ") and got.endswith(f"use {header}_env: VAR")


def test_environment_variables(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sinks:
          - {name: a, type: http, url_env: A_URL}
          - {name: b, type: http, url: "https://b", url_env: B_URL}
          - {name: c, type: http, url_env: ""}
        """)
    assert errors(path) == [
        "2:27: environment variable A_URL (for 'url') is not set",
        "3:45: give 'url' or 'url_env', not both",
        "4:27: url_env must name an environment variable",
    ]
    # validate without the production environment: unset variables are not errors, nor their stand-ins
    assert errors(path, strict=False) == errors(path)[1:]


def test_duplicates_and_shape(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        sources:
          - {name: a, type: generate, topic: t}
          - {name: a, type: generate, topic: t}
          - {type: generate, topic: t}
          - just-a-string
          - {name: x}
        extra: 1
        """)
    assert errors(path) == [
        "3:6: source 'a' is declared twice (first in " + str(path) + ")",
        "4:5: source needs a 'name'",
        "5:5: each entry of 'sources' must be a mapping",
        f"6:5: source 'x' needs a 'type' (known: {', '.join(registry().known('source'))})",
        "7:1: unknown key 'extra' (expected 'sources' or 'sinks')",
    ]


def test_a_broken_plugin_type_is_an_error_where_it_is_used(tmp_path: Path, plugins: None) -> None:
    path = write(tmp_path, "sinks:\n  - {name: s, type: gone}\n  - {name: v, type: \"null\"}\n")
    [got] = errors(path)
    assert got.startswith("2:15: sink type 'gone' could not be loaded: syncbus_no_such_package.sinks:Sink: "
                          "ModuleNotFoundError")


def test_strict_for_checks_only_the_named_components(tmp_path: Path) -> None:
    (tmp_path / "connectors").mkdir()
    write(tmp_path / "connectors", """\
        sources:
          - {name: gen, type: generate, topic: t, count_env: GEN_COUNT}
        sinks:
          - {name: erp, type: http, url_env: ERP_URL}
        """)
    cfg = load_connectors(tmp_path, {"GEN_COUNT": "3"}, strict=False, strict_for={"gen"})
    assert cfg.sources["gen"].config.count == 3
    with pytest.raises(ConfigErrors, match="GEN_COUNT"):
        load_connectors(tmp_path, {}, strict=False, strict_for={"gen"})


def test_same_as_compares_options_including_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, "sinks:\n  - {name: a, type: http, url: https://a, auth: {bearer: {token_env: T}}}\n")
    one = load_connector_file(path, {"T": "x"}).sinks["a"]
    assert one.same_as(load_connector_file(path, {"T": "x"}).sinks["a"])
    assert not one.same_as(load_connector_file(path, {"T": "y"}).sinks["a"])  # a rotated token is a change
