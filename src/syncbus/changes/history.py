"""Record every mapping content a node runs, and turn a recorded content back into a mapping.

The supervisor calls :func:`record_loaded` after it started routes (at start
and after every reload). The content stored is the file's text, re-read and
checked to parse to exactly the spec that was compiled: a file edited between
compile and record would otherwise be stored under the wrong version (the
watcher reloads it a moment later and records it then).

Recording never stops a node: the history is for people; a store that is
briefly away costs one entry, which the next load records.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigErrors
from ..mapping.compiler import CompiledMapping, compile_spec
from ..mapping.loader import parse_mapping
from ..mapping.spec import MappingSpec
from ..state.models import utcnow
from ..state.versions import MappingVersion
from ..yamlfile import parse_yaml, read_text

log = logging.getLogger(__name__)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_text(text: str, label: str) -> MappingSpec:
    """A mapping spec from text; errors point at ``label``:line:col."""
    try:
        doc = parse_yaml(text, label)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    return parse_mapping(doc)


def compile_text(text: str, label: str, base: Path) -> CompiledMapping:
    """Compile a mapping from text; schemas and lookups resolve against ``base`` (the mappings folder)."""
    try:
        doc = parse_yaml(text, label)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    return compile_spec(parse_mapping(doc), label, doc.location, base)


def changelog_entry(spec: MappingSpec) -> dict[str, Any]:
    """The changelog entry of the spec's own version (empty when the file keeps no changelog)."""
    for entry in spec.changelog:
        if entry.version == spec.version:
            return entry.model_dump(mode="json")
    return {}


def version_of_text(text: str, path: str, at: datetime | None = None, spec: MappingSpec | None = None
                    ) -> MappingVersion:
    """The history row for a content (parsed, so a broken content is refused here)."""
    spec = spec or parse_text(text, path)
    when = at or utcnow()
    return MappingVersion(route=spec.mapping, hash=content_hash(text), version=spec.version, path=path,
                          content=text, changelog=changelog_entry(spec), shadow_of=spec.shadow_of,
                          loaded_at=when, last_loaded_at=when)


def loaded_version(mapping: CompiledMapping) -> MappingVersion | None:
    """The history row of a compiled mapping, from its file -- None when the file no longer matches it."""
    path = Path(mapping.path)
    text = read_text(path, "mapping file")
    try:
        spec = parse_text(text, str(path))
    except ConfigErrors:
        spec = None
    if spec is None or spec.model_dump(mode="json") != mapping.spec.model_dump(mode="json"):
        log.info("mapping %s changed on disk after it was loaded; its version is recorded on the next load",
                 mapping.name)
        return None
    return version_of_text(text, str(path), spec=spec)


def record_now(store: Any, mappings: Iterable[CompiledMapping]) -> int:
    """Record the contents of ``mappings`` (blocking); returns how many were recorded."""
    done = 0
    for mapping in mappings:
        try:
            version = loaded_version(mapping)
            if version is not None:
                store.record_version(version)
                done += 1
        except Exception as exc:  # history is for people: never stop a node for it
            log.warning("could not record version %s of mapping %s: %s", mapping.version, mapping.name, exc)
    return done


async def record_loaded(store: Any, mappings: Iterable[CompiledMapping]) -> None:
    """The supervisor's hook: record in a thread, swallow every error (logged)."""
    if not callable(getattr(store, "record_version", None)):
        return
    items = list(mappings)
    if not items:
        return
    try:
        await asyncio.to_thread(record_now, store, items)
    except Exception as exc:
        log.warning("could not record mapping versions: %s", exc)
