"""docs/reference.md (components/docs.py): generated from the specs, every type, option and example."""

from __future__ import annotations

from pathlib import Path

from syncbus.components.docs import builtin_reference, render_markdown
from syncbus.components.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_generated_from_the_specs() -> None:
    assert (ROOT / "docs" / "reference.md").read_text() == builtin_reference(), \
        "run: .venv/bin/python -m syncbus.components.docs > docs/reference.md"


def test_every_builtin_type_is_documented_with_its_options() -> None:
    page = builtin_reference()
    reg = load_registry(lambda group: [])
    for spec in reg.specs():
        assert f"### `{spec.signature or spec.name}`" in page
    assert "| `auth.api_keys` | list of string | `[]` | Accepted keys" in page and "| yes |" in page
    assert "| `interval` | duration |" in page and "| `retry.initial` | duration | `1s` |" in page
    assert "### `generate` (beta)" in page
    assert "```yaml\nsources:\n- name: crm-orders\n  type: http_ingress" in page
    assert "Example: `decimal(2)`:" in page


def test_one_type_without_the_page_title(plugins: None) -> None:
    from syncbus.components.registry import registry

    text = render_markdown([registry().get("source", "ledger_poll")], title=False)
    assert text.startswith("## `ledger_poll` (experimental)\n\nPoll a ledger table.")
    assert "From the plugin `tests.components.sample_plugins:LedgerPoll`." in text
    assert "| `dsn` | string | required | Database URL with its password. | yes |" in text
    assert "dsn_env: LEDGER_DSN" in text
