"""Promote a shadow to live, roll a route back to a recorded version: by writing files, audited.

Both operations only ever change files in ``mappings/``; the running node's
hot reload (file watcher, SIGHUP, ``POST /admin/reload``) swaps the route,
draining the old version and committing before the new one consumes the same
consumer group -- so no record is lost and none is delivered twice (the
idempotency key ``<route>:<key>:<record id>`` does not depend on the version
either). Nodes that are not running pick the file up when they start.

Every write is atomic (temporary file in the same folder, ``os.replace``), so
a watcher never reads half a file, and the new content is parsed and compiled
before anything is written: a promote or rollback that would be refused by
the reload is refused here instead, with nothing changed.

Promote writes the shadow's file as the live file with two top-level lines
changed -- ``mapping:`` becomes the live name, ``shadow_of:`` goes -- and
nothing else: the shadow already carries its version and changelog entry, and
the user's comments stay. Then the shadow file is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigErrors, SyncbusError
from ..mapping.compiler import CompiledMapping
from ..project import load_mappings
from ..state.versions import ChangeAuditEntry, MappingVersion
from ..yamlfile import read_text
from .history import compile_text, content_hash, parse_text

_TOP_KEY = re.compile(r"^(?P<key>mapping|shadow_of)[ \t]*:(?P<rest>[^\n]*)(?P<nl>\n?)$")


class ChangeError(SyncbusError):
    """A promote or rollback cannot be done as asked; nothing was changed."""


class NoShadow(ChangeError):
    """The route has no shadow to promote (or several, and the shadow must be named)."""


class NotApproved(ChangeError):
    """A promote needs an approver: ``--approved-by`` or ``approved_by`` in the shadow's changelog entry."""


class NotNewer(ChangeError):
    """The shadow's version is not above the live version: bump it and add a changelog entry."""


class NothingToDo(ChangeError):
    """The route already runs the content asked for."""


class UnknownRoute(ChangeError):
    """No mapping file of the config dir (and no recorded version) has this name."""


class CannotRewrite(ChangeError):
    """The shadow file does not have ``mapping:`` as a plain top-level line to rewrite."""


@dataclass
class Switched:
    """What a promote or rollback did."""

    action: str
    route: str
    path: str
    from_version: int | None
    to_version: int
    hash: str
    approved_by: str | None
    removed: str | None = None
    audit_seq: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "route": self.route, "path": self.path, "from_version": self.from_version,
                "to_version": self.to_version, "hash": self.hash, "approved_by": self.approved_by,
                "removed": self.removed, "audit_seq": self.audit_seq}

    def render(self) -> str:
        head = {"promote": "promoted", "rollback": "rolled back"}.get(self.action, self.action)
        text = (f"{head} {self.route}: version {self.from_version} -> {self.to_version} written to {self.path}"
                + (f", {self.removed} removed" if self.removed else "") + "\n")
        return text + "a running node swaps the route by hot reload (within 10 s)\n"


# -- files ----------------------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step; the temporary name does not end in .yaml, so no watcher loads it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):  # the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def promoted_text(text: str, live: str) -> str:
    """The shadow's text as the live file: ``mapping: <live>``, no ``shadow_of:``, every other byte kept."""
    out: list[str] = []
    renamed = 0
    for line in text.splitlines(keepends=True):
        m = _TOP_KEY.match(line)
        if m is None:
            out.append(line)
        elif m["key"] == "shadow_of":
            continue
        else:
            comment = m["rest"].partition(" #")[2]
            out.append(f"mapping: {live}" + (f"  #{comment}" if comment else "") + (m["nl"] or ""))
            renamed += 1
    if renamed != 1:
        raise CannotRewrite("the shadow file needs 'mapping: <name>' as one plain top-level line to promote it")
    return "".join(out)


def _checked(text: str, path: Path) -> CompiledMapping:
    """Compile the new content against the mappings folder (schemas, lookups) before anything is written."""
    try:
        return compile_text(text, str(path), path.parent)
    except ConfigErrors as exc:
        raise ChangeError("the new content does not compile, nothing was changed:\n"
                          + "\n".join(str(e) for e in exc.errors)) from None


# -- promote --------------------------------------------------------------------------------


def find_pair(config_dir: Path, route: str) -> tuple[CompiledMapping, CompiledMapping]:
    """(live, shadow) for a live route with one shadow, or for a shadow's own name."""
    mappings, errors = load_mappings(config_dir)
    named = mappings.get(route)
    if named is not None and named.spec.shadow_of:
        live = mappings.get(named.spec.shadow_of)
        if live is None:
            raise UnknownRoute(f"shadow {route} shadows {named.spec.shadow_of}, which has no loadable file")
        return live, named
    if named is None:
        raise UnknownRoute(f"no mapping named {route!r} in {config_dir / 'mappings'}")
    shadows = sorted((m for m in mappings.values() if m.spec.shadow_of == route), key=lambda m: m.name)
    if not shadows:
        broken = "".join(f"\n  {e}" for e in errors)  # a shadow that does not compile is not a shadow yet
        raise NoShadow(f"route {route} has no shadow (a mapping file with 'shadow_of: {route}')"
                       + (f"; these mapping files do not compile:{broken}" if broken else ""))
    if len(shadows) > 1:
        raise NoShadow(f"route {route} has {len(shadows)} shadows ({', '.join(m.name for m in shadows)}); "
                       "name the one to promote")
    return named, shadows[0]


def promote(store: Any, config_dir: Path, route: str, *, actor: str, approved_by: str | None = None,
            reason: str = "") -> Switched:
    live, shadow = find_pair(config_dir, route)
    if shadow.version <= live.version:
        raise NotNewer(f"shadow {shadow.name} is version {shadow.version}, live {live.name} is version "
                       f"{live.version}: give the shadow a higher version and a changelog entry first")
    entry = next((e for e in shadow.spec.changelog if e.version == shadow.version), None)
    approver = approved_by or (entry.approved_by if entry else None)
    if not approver:
        raise NotApproved(f"promoting {shadow.name} needs an approver: --approved-by NAME, or approved_by in "
                          f"its changelog entry for version {shadow.version}")
    live_path, shadow_path = Path(live.path), Path(shadow.path)
    text = promoted_text(read_text(shadow_path, "shadow file"), live.name)
    compiled = _checked(text, live_path)
    expected = shadow.spec.model_copy(update={"mapping": live.name, "shadow_of": None})
    if compiled.spec.model_dump(mode="json") != expected.model_dump(mode="json"):
        raise CannotRewrite("rewriting 'mapping:' and 'shadow_of:' changed more than those two keys; "
                            "write them as plain top-level lines")
    write_atomically(live_path, text)
    shadow_path.unlink(missing_ok=True)
    why = reason or (entry.reason if entry else "") or "promoted"
    done = Switched("promote", live.name, str(live_path), live.version, shadow.version, content_hash(text),
                    approver, removed=str(shadow_path))
    done.audit_seq = store.add_change_audit(ChangeAuditEntry(
        route=live.name, action="promote", actor=actor, approved_by=approver, reason=why,
        from_version=live.version, to_version=shadow.version, hash=done.hash,
        details={"shadow": shadow.name, "shadow_file": str(shadow_path), "live_file": str(live_path),
                 "changelog": entry.model_dump(mode="json") if entry else None}))
    return done


# -- rollback -------------------------------------------------------------------------------


def rollback(store: Any, config_dir: Path, route: str, ref: str, *, actor: str, approved_by: str | None = None,
             reason: str = "") -> Switched:
    """Write a recorded content of ``route`` back as its file (the route's current file, else where it was)."""
    target: MappingVersion = store.version_of(route, ref)
    mappings, _errors = load_mappings(config_dir)
    current = mappings.get(route)
    if current is not None and current.spec.shadow_of:
        raise ChangeError(f"{route} is a shadow; roll back its live route {current.spec.shadow_of} instead")
    path = Path(current.path) if current is not None else config_dir / "mappings" / Path(target.path).name
    before = read_text(path, "mapping file") if path.exists() else None
    if before is not None and content_hash(before) == target.hash:
        raise NothingToDo(f"{path} already holds version {target.version} ({target.hash[:12]}) of {route}")
    if current is None and before is not None:  # a broken edit of the route's file may be overwritten
        try:
            other: str | None = parse_text(before, str(path)).mapping
        except ConfigErrors:
            other = None
        if other is not None and other != route:
            raise ChangeError(f"{path} now holds mapping {other!r}; move it away or restore {route} by hand")
    compiled = _checked(target.content, path)
    if compiled.name != route:
        raise ChangeError(f"the recorded content is mapping {compiled.name!r}, not {route!r}")
    write_atomically(path, target.content)
    from_version = current.version if current is not None else None
    done = Switched("rollback", route, str(path), from_version, target.version, target.hash, approved_by)
    done.audit_seq = store.add_change_audit(ChangeAuditEntry(
        route=route, action="rollback", actor=actor, approved_by=approved_by, reason=reason or "rolled back",
        from_version=from_version, to_version=target.version, hash=target.hash,
        details={"file": str(path), "from_hash": content_hash(before) if before is not None else None}))
    return done
