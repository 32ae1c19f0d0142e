"""Hot reload (DESIGN §4, §7): a running node picks up edited mappings, lookups, schemas and connectors.

Three triggers, one path: a file watcher (polls every 2 s), SIGHUP, and
``POST /admin/reload``. Each loads the whole config dir as ``syncbus run``
does at start (``project.load_project``: every file, cross-references
included), then hands it to ``Runtime.apply``, which swaps only what differs
(``supervisor.py``): a route whose mapping, schema or lookup table changed
(``CompiledMapping.fingerprint``) drains -- intake stops, in-flight
deliveries finish, their offsets are committed -- and its new version resumes
from that committed offset in the same consumer group. Nothing is lost and
nothing is delivered twice by the swap.

A broken edit never takes a working node down: the configuration that was
running keeps running, the errors are logged (``file:line:col: message``),
``syncbus_config_reload_failures_total`` goes up by one, and ``/readyz``
shows them under ``details.config`` until a later reload succeeds.
Readiness does NOT flip to 503 for it: the node still serves its previous,
valid configuration, and every node watching the same files would otherwise
leave the load balancer at once over one typo -- a config mistake turned
into an outage. Alert on the counter instead.

Why polling and not inotify: no extra dependency, it works on network and
container-mounted volumes where inotify events never arrive, and a 2 s poll
of a few dozen small files costs nothing. Changes are judged by content
(sha256), not by timestamps: saving a file unchanged (``touch``, an editor's
autosave) reloads nothing, and an edit within the same second that keeps the
size is still seen (files modified near the last look are re-hashed, as git
does for "racily clean" files). A change is acted on once the files stopped
changing for a moment, so an editor that writes in steps or a ``cp`` of
several files is loaded once, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigErrors, SyncbusError
from .project import Project, load_project
from .supervisor import ApplyError, ChangeSet
from .units import parse_duration

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0       # seconds between looks at the files
SETTLE = 0.5              # a change is loaded once two looks this far apart agree...
MAX_SETTLE_LOOKS = 8      # ...or after this many looks, if something keeps writing
RACY_NS = 2_000_000_000   # files modified this close to the last look are hashed again (coarse mtimes)
MAX_RETRY_DELAY = 60.0    # a reload that failed part-way is retried, backing off up to this
STOP_WAIT = 60.0          # seconds a stopping node waits for a reload in progress to finish
MAX_FILES = 5000          # a config dir is dozens of files; stop walking a folder that is not one
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".csv"})
IGNORED_SUFFIXES = ("~", ".swp", ".swx", ".tmp", ".bak", ".orig")


class ReloadSetupError(SyncbusError):
    """``SYNCBUS_RELOAD_INTERVAL`` is not a duration (refused at start: a typo must not switch watching off)."""


class ReloadError(SyncbusError):
    """A reload did not leave the node on the new configuration."""

    def __init__(self, errors: list[str], trigger: str) -> None:
        self.errors = errors
        self.trigger = trigger
        super().__init__("\n".join(errors))


class ReloadRefused(ReloadError):
    """The new configuration is invalid or could not be started; the previous one keeps running untouched."""


class ReloadFailed(ReloadError):
    """Applying a valid configuration failed part-way (e.g. the bus went away); see the log for what runs."""


class ReloadTarget(Protocol):
    """What the reloader needs of the runtime (``runtime.Runtime``)."""

    project: Project
    metrics: Any

    async def apply(self, project: Project) -> ChangeSet: ...


# --------------------------------------------------------------------------- file snapshots


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


# --------------------------------------------------------------------------- the reloader


def _who(trigger: str, by: str | None) -> str:
    return f"{trigger} by {by}" if by else trigger


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Reloader:
    """Loads the config dir and applies it to the runtime; one reload at a time, whatever triggered it."""

    def __init__(self, runtime: ReloadTarget, config_dir: Path, *, env: Mapping[str, str] | None = None,
                 interval: float | None = None, settle: float = SETTLE) -> None:
        """``interval``: seconds between looks at the files; default ``SYNCBUS_RELOAD_INTERVAL`` or 2 s,
        0 (``off``) watches nothing -- for deployments that reload only on purpose (SIGHUP, the API)."""
        self.runtime = runtime
        self.config_dir = config_dir
        self.env = os.environ if env is None else env
        self.interval = watch_interval(self.env) if interval is None else interval
        self.settle = settle
        self.watcher = FileWatcher(config_dir, _files_of(runtime.project))
        # The files as the node loaded them at start: an edit from now on is a change.
        self.watcher.seen = self.watcher.snapshot()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self._ok = True
        self._errors: list[str] = []
        self._since = _now()
        self._last: dict[str, Any] | None = None
        self._closing = False
        self._retry_delay = 0.0
        self._retry_at: float | None = None  # monotonic time of the next retry of a failed apply

    # -- one reload ---------------------------------------------------------------------

    async def reload(self, trigger: str, *, by: str | None = None, only_if_changed: bool = False) -> ChangeSet:
        """Load and apply the config dir now. :class:`ReloadRefused`: invalid, the old one still runs.

        ``by``: who asked (the admin API's actor), for the log only -- ``/readyz`` shows the
        trigger to anyone and must not name people. ``only_if_changed`` (the watcher): nothing
        to do when the files are what was last loaded -- a SIGHUP or an API call may have
        loaded this very change meanwhile.
        """
        async with self._lock:
            if self._closing:
                raise ReloadFailed([f"{self.config_dir}: the node is stopping"], trigger)
            before = await asyncio.to_thread(self.watcher.snapshot)
            if only_if_changed and FileWatcher.same(before, self.watcher.seen):
                return ChangeSet()
            # What was looked at counts as seen, also when it is broken: the watcher then waits for the
            # next edit instead of failing (and counting) every 2 s; a file saved while loading differs
            # from `before` and is loaded by the next look.
            self.watcher.seen = before
            try:
                project = await asyncio.to_thread(load_project, self.config_dir, self.env)
            except ConfigErrors as exc:
                raise self._failed(ReloadRefused([str(e) for e in exc.errors], trigger), by) from None
            try:
                changes = await self.runtime.apply(project)
            except ApplyError as exc:
                raise self._failed(ReloadRefused([f"{self.config_dir}: {exc}"], trigger), by) from None
            except Exception as exc:
                # Not refused but broken half-way (the bus went away while a route restarted): the
                # supervisor still runs the old project, so applying again later completes the swap.
                log.exception("config reload (%s): applying the new configuration failed", trigger)
                self._retry_delay = min(max(self._retry_delay * 2, self.interval or POLL_INTERVAL), MAX_RETRY_DELAY)
                self._retry_at = time.monotonic() + self._retry_delay
                raise self._failed(ReloadFailed([f"{self.config_dir}: applying the new configuration failed: "
                                                 f"{type(exc).__name__} (see the log)"], trigger), by) from None
            self.watcher.watch(_files_of(project))
            self._retry_delay, self._retry_at = 0.0, None
            self._succeeded(trigger, by, changes)
            return changes

    def _failed(self, exc: ReloadError, by: str | None) -> ReloadError:
        self.runtime.metrics.config_reload_failures.inc()
        if self._ok:
            self._since = _now()
        self._ok, self._errors = False, list(exc.errors)
        self._last = {"at": _now(), "trigger": exc.trigger,
                      "outcome": "refused" if isinstance(exc, ReloadRefused) else "failed"}
        log.error("config reload (%s) refused, the running configuration stays: %s", _who(exc.trigger, by),
                  " | ".join(exc.errors), extra={"trigger": exc.trigger, "actor": by, "error_count": len(exc.errors)})
        return exc

    def _succeeded(self, trigger: str, by: str | None, changes: ChangeSet) -> None:
        if not self._ok:
            self._since = _now()
        self._ok, self._errors = True, []
        self._last = {"at": _now(), "trigger": trigger, "outcome": "applied", "changes": changes.to_json()}
        if changes.empty:
            log.info("config reload (%s): no changes", _who(trigger, by), extra={"trigger": trigger, "actor": by})
        else:
            log.warning("config reloaded (%s): %s", _who(trigger, by), changes,
                        extra={"trigger": trigger, "actor": by, "changes": changes.to_json()})

    def status(self) -> dict[str, Any]:
        """For ``/readyz`` details: is the config on disk the one running, and if not, why."""
        return {"ok": self._ok, "errors": list(self._errors), "since": self._since, "last_reload": self._last}

    def request(self, trigger: str) -> None:
        """Reload soon, in the background (a signal handler cannot wait); the outcome is logged."""
        task = asyncio.get_running_loop().create_task(self._quietly(trigger), name=f"reload-{trigger}")
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    async def _quietly(self, trigger: str, only_if_changed: bool = False) -> None:
        with contextlib.suppress(ReloadError):  # logged and counted already
            await self.reload(trigger, only_if_changed=only_if_changed)

    # -- the watcher --------------------------------------------------------------------

    async def start(self) -> None:
        """Begin watching (the files as loaded at start were remembered when this was made)."""
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._watch(), name="syncbus-config-watch")

    async def stop(self) -> None:
        """Stop watching. A reload in progress is let finish: cancelled half-way, a route would be
        left neither running nor drained."""
        self._closing = True
        try:
            await asyncio.wait_for(self._lock.acquire(), STOP_WAIT)
            held = True
        except TimeoutError:
            log.warning("a config reload is still running after %.0fs; stopping anyway", STOP_WAIT)
            held = False
        try:
            tasks = [t for t in (self._task, *self._requests) if t is not None]
            self._task = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        finally:
            if held:
                self._lock.release()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                if self._retry_at is not None and time.monotonic() >= self._retry_at:
                    await self._quietly("retry")
                elif await self._changed():
                    await self._quietly("file change", only_if_changed=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive any one bad look
                log.exception("config watcher: looking at the files failed; trying again")

    async def _changed(self) -> bool:
        """True once the files differ from what was last loaded and have stopped changing."""
        current = await asyncio.to_thread(self.watcher.snapshot)
        if FileWatcher.same(current, self.watcher.seen):
            return False
        for _ in range(MAX_SETTLE_LOOKS):
            await asyncio.sleep(self.settle)
            again = await asyncio.to_thread(self.watcher.snapshot)
            if FileWatcher.same(again, current):
                break
            current = again
        return True


def watch_interval(env: Mapping[str, str]) -> float:
    """``SYNCBUS_RELOAD_INTERVAL``: a duration (``2s``, ``500ms``), or ``0``/``off`` to watch nothing."""
    raw = (env.get("SYNCBUS_RELOAD_INTERVAL") or "").strip()
    if not raw:
        return POLL_INTERVAL
    if raw.lower() in ("off", "0", "false", "no"):
        return 0.0
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ReloadSetupError(f"SYNCBUS_RELOAD_INTERVAL: {exc}") from None


def _files_of(project: Project) -> list[str]:
    return [f for m in project.mappings.values() for f in getattr(m, "files", ())]


# --------------------------------------------------------------------------- the server hook


@contextlib.asynccontextmanager
async def hot_reload(runtime: Any) -> AsyncIterator[Reloader | None]:
    """Watch the config dir and reload on SIGHUP while the server runs (``ingress/server.py``'s hook)."""
    reloader: Reloader | None = getattr(runtime, "reloader", None)
    if reloader is None:
        yield None
        return
    from .logs import adopt_library_loggers

    adopt_library_loggers()  # uvicorn configured its loggers by now: route them through ours (logs.py)
    loop = asyncio.get_running_loop()
    await reloader.start()
    hup = getattr(signal, "SIGHUP", None)
    installed = False
    if hup is not None:
        try:
            loop.add_signal_handler(hup, reloader.request, "SIGHUP")
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            log.warning("SIGHUP cannot trigger a reload in this process; the file watcher and "
                        "POST /admin/reload still do")
    try:
        yield reloader
    finally:
        if installed and hup is not None:
            loop.remove_signal_handler(hup)
        await reloader.stop()


__all__ = ["FileWatcher", "ReloadError", "ReloadFailed", "ReloadRefused", "ReloadSetupError", "Reloader",
           "hot_reload", "watch_interval"]
