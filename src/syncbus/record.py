"""The Record envelope that travels from connectors over the bus to the routes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

# Header names syncbus itself sets. Values are always str on our side; the
# Kafka bus converts to/from bytes at the edge.
H_ID = "syncbus-id"                    # record id, assigned once at ingress
H_RECEIVED_AT = "syncbus-received-at"  # epoch seconds (float as text) at ingress
H_CONTENT_TYPE = "content-type"        # application/json, application/xml, text/csv
H_SOURCE = "syncbus-source"            # the source connector name
H_REPLAY_ROUTE = "syncbus-replay-route"  # set on a replayed record: only this route takes it
H_REPLAY_SINK = "syncbus-replay-sink"    # …and only this target of a fan-out, when one sink failed
H_DEAD_LETTER = "syncbus-dead-letter"  # id of the dead letter a replay came from
H_FILE = "syncbus-file"                # a row's file (file_drop) ...
H_LINE = "syncbus-line"                # ... and line (1-based, a CSV header is line 1), or a batch row's line
H_INDEX = "syncbus-index"              # a JSON array element's index in its batch
H_MAPPING_VERSION = "syncbus-mapping-version"  # a replay mapped with this version from history
H_MALFORMED = "syncbus-malformed"      # a row its source could not parse: "<file>:<line>: <why>"; value = raw


def new_id() -> str:
    """A record id: sortable by time, unique without coordination."""
    return f"{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


@dataclass(slots=True)
class Record:
    """One message on the bus.

    ``value`` stays bytes until a route decodes it, so the bus never needs to
    know the payload format. ``topic``/``partition``/``offset`` are filled by the
    bus when the record is published or consumed.
    """

    value: bytes
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    partition: int = 0
    offset: int = -1
    timestamp: float = 0.0

    @property
    def id(self) -> str:
        """The record id from the headers, else a stable id from the bus position."""
        rid = self.headers.get(H_ID)
        if rid:
            return rid
        return f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def received_at(self) -> float:
        try:
            return float(self.headers.get(H_RECEIVED_AT) or self.timestamp)
        except ValueError:
            return self.timestamp

    @property
    def content_type(self) -> str:
        return self.headers.get(H_CONTENT_TYPE, "application/json")
