"""What the config dir holds, looked at on demand: the hot reload's file watcher (``reload.py``).

Why polling and not inotify: no extra dependency, it works on network and
container-mounted volumes where inotify events never arrive, and a 2 s poll
of a few dozen small files costs nothing. Changes are judged by content
(sha256), not by timestamps: saving a file unchanged (``touch``, an editor's
autosave) reloads nothing, and an edit within the same second that keeps the
size is still seen (files modified near the last look are hashed again, as
git does for "racily clean" files). Editors' swap and backup files, hidden
files and ``mappings/tests`` are not part of what runs and are not watched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000   # files modified this close to the last look are hashed again (coarse mtimes)
MAX_FILES = 5000          # a config dir is dozens of files; stop walking a folder that is not one
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".csv"})
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".bak", ".orig")


@dataclass(frozen=True, slots=True)
class FileState:
    mtime_ns: int
    size: int
    digest: str


Snapshot = dict[str, FileState]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wanted(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES) and path.suffix in WATCHED_SUFFIXES


class FileWatcher:
    """The content of a config dir's mapping, lookup, schema and connector files, looked at on demand.

    Folders are walked recursively (``mappings/tests`` is skipped: unit tests
    of mappings are not part of what runs); ``extra`` names single files a
    mapping uses outside those folders (a schema next to the config dir).
    """

    def __init__(self, config_dir: Path, extra: Iterable[str] = ()) -> None:
        config_dir = self.config_dir = config_dir.absolute()  # one spelling per file, whatever the cwd
        self.folders = [config_dir / "mappings", config_dir / "connectors", config_dir / "schemas"]
        self.skip = {(config_dir / "mappings" / "tests").resolve()}
        self.extra: set[Path] = set()
        self.seen: Snapshot = {}
        self._last: Snapshot = {}
        self._last_ns = 0
        self._warned = False
        self._looking = threading.Lock()  # the watcher and a reload may look at the same time
        self.watch(extra)

    def watch(self, files: Iterable[str]) -> None:
        """Also watch these files (the schemas and lookup tables of the routes that run)."""
        self.extra = {Path(f).absolute() for f in files}

    def paths(self) -> list[Path]:
        found: set[Path] = set()
        for folder in self.folders:
            for root, dirs, names in os.walk(folder):
                here = Path(root)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in self.skip)
                found.update(p for p in (here / n for n in names) if _wanted(p))
                if len(found) > MAX_FILES:
                    if not self._warned:
                        log.warning("watching only the first %d files under %s for changes", MAX_FILES, folder)
                        self._warned = True
                    break
        found.update(self.extra)
        return sorted(found)

    def snapshot(self) -> Snapshot:
        """Every watched file's state; a file is hashed only when its stat changed or it is racy."""
        with self._looking:
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        started = time.time_ns()
        racy_after = self._last_ns - RACY_NS
        out: Snapshot = {}
        for path in self.paths():
            key = str(path)
            try:
                st = path.stat()
                before = self._last.get(key)
                if (before is not None and before.mtime_ns == st.st_mtime_ns and before.size == st.st_size
                        and st.st_mtime_ns < racy_after):
                    out[key] = before
                    continue
                out[key] = FileState(st.st_mtime_ns, st.st_size, _hash(path))
            except OSError:  # gone between listing and reading, or unreadable: loading will say which
                continue
        self._last, self._last_ns = out, started
        return out

    @staticmethod
    def same(a: Snapshot, b: Snapshot) -> bool:
        """Same files with the same content (timestamps alone do not count)."""
        return a.keys() == b.keys() and all(a[k].digest == b[k].digest for k in a)


__all__ = ["FileState", "FileWatcher", "Snapshot"]
