"""The file sink's options: the ``type: file`` block and its ``rotate:`` block (see :mod:`syncbus.sinks.file`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncbus.sinks.base import SinkConfig
from syncbus.sinks.file_naming import check_template, uses
from syncbus.sinks.file_records import Format, check_encoding
from syncbus.units import Duration, Size

DEFAULT_FILENAMES = {"per_record": "{route}-{record_id}.{ext}", "append": "{route}-{date:%Y%m%d-%H%M%S}-{seq}.{ext}"}
FORMAT_OF_MEDIA: dict[str, Format] = {"csv": "csv", "json": "jsonl", "xml": "xml"}
_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


class RotateSpec(BaseModel):
    """The ``rotate:`` block: when an appended file is complete and gets its final name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: Size | None = Field(
        10 * 1024 * 1024, gt=0,
        description="Start a new file before one would grow past this size (e.g. 10MiB); null: no limit. "
                    "A single record larger than this still gets a file of its own.")
    every: Duration | None = Field(
        3600.0, gt=0,
        description="Publish the current file at each multiple of this period on the local clock "
                    "(1h: on the hour; 1d: at midnight), even when no further record arrives; null: only by "
                    "size and when the sink closes.")


class FileSinkConfig(SinkConfig):
    """``type: file`` — write records into a folder: one file each, or collected into rotated files."""

    type: Literal["file"] = Field("file", description="The sink type: file.")
    path: str = Field(min_length=1, description="The folder to write into (created if missing).")
    mode: Literal["per_record", "append"] = Field(
        "per_record",
        description="per_record: one file per record, replaced atomically; append: collect records into "
                    "files (CSV with one header, JSON Lines, XML under xml_root) written as hidden "
                    "`.<name>.part` files and renamed to their final name when rotated or on close.")
    filename: str | None = Field(
        None,
        description="File name template: {route} {sink} {record_id} {key} {ext} {date} {time} {seq}. {date} "
                    "(2026-11-20) and {time} (120509) are when the file was started, local time, and take a "
                    "strftime format: {date:%Y%m%d-%H%M%S}. {seq} (1, 2, ...; {seq:04d}) is the first number "
                    "whose name is free; without it a taken name gets -1, -2 before the extension. Default: "
                    "{route}-{record_id}.{ext} (per_record), {route}-{date:%Y%m%d-%H%M%S}-{seq}.{ext} (append).")
    format: Literal["csv", "jsonl", "xml"] | None = Field(
        None,
        description="What the sink accepts: csv, jsonl (records of format json) or xml. Default: whatever "
                    "the route sends (its target format). Set it to have a mismatch refused at load.")
    encoding: str | None = Field(
        None,
        description="Encoding of the files: utf-8, utf-8-sig (UTF-8 with a BOM, for Excel), gbk, gb18030, or "
                    "another ASCII-compatible one. A character it cannot hold is a permanent error naming the "
                    "field. Default: the encoding the route's codec wrote.")
    rotate: RotateSpec = Field(default_factory=RotateSpec,
                               description="append mode: {max_bytes: 10MiB, every: 1h} by default.")
    xml_root: str = Field("records", description="append mode, XML: the root element around the records.")
    workers: int = Field(4, ge=1, le=64, description="Threads doing the blocking file writes.")

    @field_validator("filename")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str | None) -> str | None:
        return None if value is None else check_encoding(value)

    @field_validator("xml_root")
    @classmethod
    def _check_root(cls, value: str) -> str:
        if not _XML_NAME.match(value) or value.lower().startswith("xml"):
            raise ValueError(f"xml_root {value!r} is not a usable XML element name")
        return value

    @model_validator(mode="after")
    def _default_filename(self) -> FileSinkConfig:
        if self.filename is None:
            self.filename = DEFAULT_FILENAMES[self.mode]
        elif self.mode == "append" and uses(self.filename, "record_id"):
            raise ValueError(f"filename {self.filename!r}: mode append collects records into files, and "
                             "{record_id} would make a file per record (use mode per_record for that)")
        return self

    def format_problem(self, fmt: str) -> str | None:
        """Why records of target format ``fmt`` cannot go to this sink, or None (for the route loader)."""
        wanted = FORMAT_OF_MEDIA.get(fmt)
        if self.mode == "append" and wanted is None:
            return f"mode append needs csv, json or xml, not {fmt}"
        if self.format is not None and wanted != self.format:
            return f"the sink writes {self.format}, not {fmt}"
        return None
