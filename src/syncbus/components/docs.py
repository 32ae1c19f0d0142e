"""The reference page of every type, rendered from the specs (``syncbus docs``, ``docs/reference.md``).

Because the page is generated from the same specs that validate the files,
an option cannot be documented with another name, type or default than the
one the loader enforces. ``docs/reference.md`` is the page for the built-in
types (``python -m syncbus.components.docs > docs/reference.md``); a test
keeps it in sync.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

from .spec import KINDS, ComponentSpec, Kind

HEADINGS: dict[Kind, str] = {"source": "Sources", "sink": "Sinks", "codec": "Codecs", "transform": "Transforms"}
SECTION_OF: dict[Kind, str] = {"source": "sources", "sink": "sinks"}
INTRO = """\
# syncbus component reference

Generated from the component specs by `syncbus docs`; do not edit by hand.
Sources and sinks are declared in `connectors/*.yaml`; codecs are the
`format` of routes and file sources; transforms are the steps of a mapping's
`transform:` chains. Any option `x` may be given as `x_env: VAR` instead, read
from the environment at start; options marked secret can *only* be given that
way. `syncbus plugins` lists the types installed, plugins included.
"""


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def options_table(spec: ComponentSpec) -> list[str]:
    options = [o for o in spec.options() if o.name not in ("name", "type")]
    if not options:
        return ["No options."]
    lines = ["| option | type | default | description | secret |", "| --- | --- | --- | --- | --- |"]
    for o in options:
        default = "required" if o.required else _code(o.default_text())
        lines.append(f"| `{o.name}` | {_cell(o.type)} | {_cell(default)} | {_cell(o.description)} | "
                     f"{'yes' if o.secret else ''} |")
    return lines


def _example_yaml(spec: ComponentSpec, example: dict[str, Any]) -> str:
    section = SECTION_OF.get(spec.kind)
    data: Any = {section: [example]} if section else example
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False).rstrip()


def render_spec(spec: ComponentSpec, level: int = 3) -> list[str]:
    """One type's section: heading, status, summary, description, options, examples."""
    status = "" if spec.status == "stable" else f" ({spec.status})"
    origin = "" if spec.origin in ("builtin", "registered") else f"\n\nFrom the plugin `{spec.origin}`."
    lines = [f"{'#' * level} `{spec.signature or spec.name}`{status}", "", spec.summary + origin]
    if spec.description:
        lines += ["", spec.description]
    if spec.kind == "transform":
        for ex in spec.examples:
            if "chain" in ex:
                lines += ["", f"Example: `{ex['chain']}`: `{json.dumps(ex.get('input'), ensure_ascii=False)}` → "
                              f"`{json.dumps(ex.get('output'), ensure_ascii=False)}`"]
        return lines
    lines += ["", *options_table(spec)]
    for i, example in enumerate(spec.examples):
        lines += ["", "Example:" if len(spec.examples) == 1 else f"Example {i + 1}:", "",
                  "```yaml", _example_yaml(spec, dict(example)), "```"]
    return lines


def render_markdown(specs: Iterable[ComponentSpec], *, title: bool = True) -> str:
    by_kind: dict[Kind, list[ComponentSpec]] = {k: [] for k in KINDS}
    for spec in specs:
        by_kind[spec.kind].append(spec)
    lines: list[str] = [INTRO.rstrip()] if title else []
    for kind in KINDS:
        if not by_kind[kind]:
            continue
        if title:
            lines += ["", f"## {HEADINGS[kind]}"]
        for spec in sorted(by_kind[kind], key=lambda s: s.name):
            lines += ["", *render_spec(spec, 3 if title else 2)]
    return "\n".join(lines).lstrip("\n") + "\n"


def render_json(specs: Sequence[ComponentSpec]) -> str:
    return json.dumps([s.to_json() for s in specs], indent=2, ensure_ascii=False, default=str) + "\n"


def builtin_reference() -> str:
    """The page for the built-in types: what ``docs/reference.md`` holds."""
    from .registry import load_registry

    return render_markdown(s for s in load_registry(lambda group: []).specs() if s.origin == "builtin")


if __name__ == "__main__":
    sys.stdout.write(builtin_reference())
