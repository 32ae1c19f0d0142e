import textwrap
from pathlib import Path

import pytest

from syncbus.mapping.loader import load_mapping

HEADER = """\
mapping: t
version: 1
owner: test
source: {topic: t.in}
target: {sink: out, format: json}
"""


@pytest.fixture
def compile_yaml(tmp_path: Path):
    """Compile a mapping from YAML text (header added unless the text has `mapping:`)."""

    def make(text: str, name: str = "m.yaml"):
        body = textwrap.dedent(text)
        if not body.lstrip().startswith("mapping:"):
            body = HEADER + body
        path = tmp_path / name
        path.write_text(body, encoding="utf-8")
        return load_mapping(path)

    return make
