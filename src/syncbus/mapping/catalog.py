"""The interface catalogue (``syncbus catalog``): the document process owners sign, one section per flow.

Built from the files themselves so it can never drift from what runs:
:mod:`.catalog_model` gathers the facts (systems, direction, interface,
schedule, security, endpoints, key, filter and fan-out rules in words, retry,
schemas, field mappings, owner, version, the whole change history),
:mod:`.catalog_render` writes Markdown or a printable, self-contained HTML
page, :mod:`.catalog_words` holds the wording in English and Chinese.
"""

from __future__ import annotations

from pathlib import Path

from .catalog_model import ChangeRow, Endpoint, FieldRow, FlowEntry, SchemaInfo, build_catalog
from .catalog_render import render_html, render_markdown

CatalogEntry = FlowEntry  # the first catalogue's name for an entry

__all__ = [
    "CatalogEntry", "ChangeRow", "Endpoint", "FieldRow", "FlowEntry", "SchemaInfo", "build_catalog",
    "catalog_for", "render_html", "render_markdown",
]


def catalog_for(config_dir: Path, fmt: str = "markdown", lang: str = "en") -> str:
    """The catalogue of a config dir as text (``fmt``: markdown or html).

    The config dir is loaded with an *empty* environment: every ``x_env: VAR``
    then stands for itself ("from $VAR") and no secret or address from the
    machine's environment can end up in a document that gets printed.
    """
    from ..project import load_project

    project = load_project(config_dir, env={}, strict_env=False)
    entries = build_catalog(list(project.mappings.values()), project.connectors, lang=lang)
    return render_html(entries, lang) if fmt == "html" else render_markdown(entries, lang)
