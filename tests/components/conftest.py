from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from syncbus.components import refresh

from . import sample_plugins


@pytest.fixture
def plugins() -> Iterator[None]:
    """The registry as if a package declared the sample plugins' entry points."""
    eps = sample_plugins.entry_points()

    def discover(group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    refresh(discover)
    yield
    refresh()
    from syncbus.mapping.transforms import TRANSFORMS

    TRANSFORMS.pop("reverse", None)  # loading the plugin registered it into the mapping language
