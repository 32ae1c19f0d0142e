"""Every transform is documented from its registry entry, and every documented example runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from syncbus.mapping.docs import render_transform_reference_markdown
from syncbus.mapping.transforms import (
    TRANSFORMS,
    TransformDoc,
    TransformExample,
    register_transform,
    run_example,
    transform_docs,
)

DOCS = transform_docs()


def test_every_transform_has_a_doc_with_an_example() -> None:
    assert [d.name for d in DOCS] == sorted(TRANSFORMS)
    for d in DOCS:
        assert isinstance(d, TransformDoc)
        assert d.signature.startswith(d.name) and d.description and d.example, d.name


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_documented_example_gives_the_documented_output(doc: TransformDoc) -> None:
    assert doc.name in doc.example  # the example uses the transform it documents
    assert run_example(doc) == doc.example_output


def test_signatures_follow_the_design() -> None:
    by_name = {d.name: d for d in DOCS}
    assert by_name["date"].signature == "date(out, [in], [tz])"
    assert by_name["datetime"].signature == "datetime(out, [in], [tz])"
    assert by_name["decimal"].signature == "decimal(places)"
    assert by_name["lookup"].example_tables


def test_reference_markdown_lists_every_transform_with_its_example() -> None:
    text = render_transform_reference_markdown()
    for d in DOCS:
        assert f"## {d.name}\n" in text
        assert f"`{d.signature}`" in text
    assert 'transform: "decimal(2)"' in text
    assert '| `"1234.565"` | `"1234.57"` |' in text
    assert "``d" not in text and "`` " not in text  # docstrings' reST literals are converted to Markdown


@pytest.fixture
def plugin() -> Iterator[None]:
    yield
    TRANSFORMS.pop("shout", None)


def test_a_plugin_with_an_example_is_documented_too(plugin: None) -> None:
    def shout(times: int | str = 1) -> Any:
        """Upper-case and add exclamation marks."""
        return lambda v: None if v is None else str(v).upper() + "!" * int(times)

    register_transform("shout", shout, example=TransformExample("shout(2)", "hi", "HI!!"))
    [doc] = [d for d in transform_docs() if d.name == "shout"]
    assert (doc.builtin, doc.signature, run_example(doc)) == (False, "shout([times])", "HI!!")
    assert "`shout([times])` (plugin)" in render_transform_reference_markdown()
