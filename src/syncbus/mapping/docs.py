"""Reference documentation generated from the registries, so it can never describe other behaviour.

``render_transform_reference_markdown()`` lists every registered transform
(plugins included) with its signature, description, rules and worked example;
the examples are the ones tests/mapping/test_docs.py runs. ``syncbus docs``
(and anything else that publishes documentation) calls it.
"""

from __future__ import annotations

import json
from typing import Any

from .transforms import transform_docs

__all__ = ["render_transform_reference_markdown"]

_INTRO = """\
A field's `transform:` is a chain of steps joined by `|`, applied left to right
after the source value is read and before `map:`: `"trim | upper | zfill(10)"`.
Arguments are whole numbers, 'quoted text' or bare names. A missing value
(absent or null) passes through every step unchanged. A step that cannot
handle a value is a mapping error naming the field, the step and the value
the record held; a lookup miss takes the field's `default` if it has one."""


def _value(value: Any) -> str:
    """A value as JSON (how it looks in a record), in inline code."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return "`" + text.replace("`", "\\`") + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_transform_reference_markdown() -> str:
    """The transform reference as Markdown: an index table, then one section per transform."""
    docs = transform_docs()
    out = ["# Transforms", "", _INTRO, "", "| transform | what it does |", "| --- | --- |"]
    out.extend(f"| [`{d.signature}`](#{d.name}) | {_cell(d.description)} |" for d in docs)
    for d in docs:
        out += ["", f"## {d.name}", "", f"`{d.signature}`" + ("" if d.builtin else " (plugin)"), "",
                d.description]
        if d.details:
            out += ["", d.details.replace("``", "`")]
        if d.example:
            out += ["", "Example:", "", "```yaml", f"transform: {json.dumps(d.example, ensure_ascii=False)}",
                    "```", "", "| input | output |", "| --- | --- |",
                    f"| {_value(d.example_input)} | {_value(d.example_output)} |"]
            for table, entries in d.example_tables.items():
                rows = ", ".join(f"{k}: {v}" for k, v in entries.items())
                out += ["", f"with the lookup table `{table}`: {rows}"]
    return "\n".join(out) + "\n"
