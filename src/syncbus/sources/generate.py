"""``generate``: a poll source that makes up numbered records -- the reference poll source.

It exists to prove and demonstrate the poll lifecycle end to end without an
outside system (poll → publish → cursor stored → a restart resumes after the
cursor), for smoke tests of a new deployment, and as the smallest example of
a :class:`PollSource` for people writing their own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from .base import NewRecord, PollBatch, PollSource, PollSourceConfig, SourceConfig


class GenerateConfig(PollSourceConfig):
    type: Literal["generate"] = "generate"
    count: int = Field(10, ge=0, le=10_000_000,
                       description="How many records exist, numbered 1 to count; raise it to make new ones.")
    fields: dict[str, Any] = Field(default_factory=dict,
                                   description="Fields added to every record beside its number `n`.")


class GenerateSource(PollSource):
    """Emit records `{"n": 1, ...fields}` to `{"n": count, ...}`, each once, keyed by `n`.

    The cursor is the last number published, so a restart continues after it
    and raising `count` publishes only the new numbers. A run with no stored
    cursor starts at 1 (a full load).
    """

    Config: ClassVar[type[SourceConfig]] = GenerateConfig
    status: ClassVar[Literal["stable", "beta", "experimental", "deprecated"]] = "beta"
    examples: ClassVar[list[dict[str, Any]]] = [
        {"name": "smoke", "type": "generate", "topic": "smoke.test", "count": 100, "interval": "1m"},
        {"name": "nightly-probe", "type": "generate", "topic": "probe", "count": 1, "fields": {"probe": True},
         "schedule": "0 22 * * *", "timezone": "Asia/Shanghai"},
    ]
    config: GenerateConfig

    async def poll(self, cursor: Any | None, *, full: bool, limit: int) -> PollBatch:
        last = 0 if cursor is None else int(cursor)
        end = min(self.config.count, last + limit)
        records = [NewRecord(value=orjson.dumps({"n": n, **self.config.fields}), key=str(n))
                   for n in range(last + 1, end + 1)]
        return PollBatch(records=records, cursor=end if records else cursor, more=end < self.config.count)
