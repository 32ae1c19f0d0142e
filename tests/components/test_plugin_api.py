"""The plugin facade (syncbus/plugin.py): its names are a promise to plugin authors, so they are pinned."""

from __future__ import annotations

import syncbus.plugin

PINNED = [
    "BaseSink", "ComponentSpec", "ConfigError", "Delivery", "DeliveryError", "Duration", "NewRecord", "OptionDoc",
    "PollBatch", "PollSource", "PollSourceConfig", "PushSource", "Sink", "SinkConfig", "Size", "Source",
    "SourceConfig",
]


def test_all_is_pinned() -> None:
    assert syncbus.plugin.__all__ == PINNED, "a change here breaks plugins: update PINNED deliberately"


def test_every_name_is_there() -> None:
    for name in PINNED:
        assert getattr(syncbus.plugin, name) is not None
    from syncbus.sources.base import PollSource

    assert syncbus.plugin.PollSource is PollSource
