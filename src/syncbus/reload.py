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
``syncbus_config_reload_failures_total`` goes up by one (per broken edit: the
same files refused again do not count twice), and ``/readyz`` shows them
under ``details.config`` until a later reload succeeds.
Readiness does NOT flip to 503 for it: the node still serves its previous,
valid configuration, and every node watching the same files would otherwise
leave the load balancer at once over one typo -- a config mistake turned
into an outage. Alert on the counter instead.

The watcher polls (``config_watch.py`` says why) and acts on a change once
the files stopped changing for a moment, so an editor that writes in steps or
a ``cp`` of several files is loaded once, whole. With ``--workers N`` every
worker reloads for itself: each watches the files, the parent passes SIGHUP
to all, and a worker answering ``POST /admin/reload`` passes it on as SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .aio import cancel_all
from .config_watch import FileWatcher, Snapshot
from .errors import ConfigErrors, SyncbusError
from .project import Project, load_project
from .supervisor import ApplyError, ChangeSet
from .units import parse_duration

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0       # seconds between looks at the files
SETTLE = 0.5              # a change is loaded once two looks this far apart agree...
MAX_SETTLE_LOOKS = 8      # ...or after this many looks, if something keeps writing
MAX_RETRY_DELAY = 60.0    # a reload that failed part-way is retried, backing off up to this
STOP_WAIT = 60.0          # seconds a stopping node waits for a reload in progress to finish


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
        self._counted: Snapshot | None = None  # the files of the last refusal counted in the metric
        self._retry_delay = 0.0
        self._retry_at: float | None = None  # monotonic time of the next retry of a failed apply

    # -- one reload ---------------------------------------------------------------------

    async def reload(self, trigger: str, *, by: str | None = None, only_if_changed: bool = False,
                     everywhere: bool = False) -> ChangeSet:
        """Load and apply the config dir now. :class:`ReloadRefused`: invalid, the old one still runs.

        ``by``: who asked (the admin API's actor), for the log only -- ``/readyz`` shows the
        trigger to anyone and must not name people. ``only_if_changed`` (the watcher): nothing
        to do when the files are what was last loaded -- a SIGHUP or an API call may have
        loaded this very change meanwhile. ``everywhere`` (the API): afterwards, make the
        other workers of ``syncbus run --workers N`` reload too (:meth:`tell_workers`).
        """
        try:
            return await self._reload(trigger, by, only_if_changed)
        finally:
            if everywhere:
                self.tell_workers()

    def tell_workers(self) -> None:
        """SIGHUP to the parent of the workers, which passes it to each (this one reloads again: no changes).

        An API call reaches one worker; without this the others would run the old
        configuration until their watcher noticed -- never, with watching off.
        """
        parent = self.env.get("SYNCBUS_WORKER_PARENT", "")
        count = self.env.get("SYNCBUS_WORKER", "0/1").partition("/")[2]
        if parent.isdigit() and count.isdigit() and int(count) > 1:
            with contextlib.suppress(OSError):
                os.kill(int(parent), signal.SIGHUP)

    async def _reload(self, trigger: str, by: str | None, only_if_changed: bool) -> ChangeSet:
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
                raise self._failed(ReloadRefused([str(e) for e in exc.errors], trigger), by, before) from None
            try:
                changes = await self.runtime.apply(project)
            except ApplyError as exc:
                raise self._failed(ReloadRefused([f"{self.config_dir}: {exc}"], trigger), by, before) from None
            except Exception as exc:
                # Not refused but broken half-way (the bus went away while a route restarted): the
                # supervisor still runs the old project, so applying again later completes the swap.
                log.exception("config reload (%s): applying the new configuration failed", trigger)
                self._retry_delay = min(max(self._retry_delay * 2, self.interval or POLL_INTERVAL), MAX_RETRY_DELAY)
                self._retry_at = time.monotonic() + self._retry_delay
                raise self._failed(ReloadFailed([f"{self.config_dir}: applying the new configuration failed: "
                                                 f"{type(exc).__name__} (see the log)"], trigger), by, before
                                   ) from None
            self.watcher.watch(_files_of(project))
            self._retry_delay, self._retry_at, self._counted = 0.0, None, None
            self._succeeded(trigger, by, changes)
            return changes

    def _failed(self, exc: ReloadError, by: str | None, files: Snapshot) -> ReloadError:
        # The metric counts broken edits, not attempts: the same files refused again (a SIGHUP passed
        # to every worker after an API call, a retry) are the same edit.
        if self._counted is None or not FileWatcher.same(files, self._counted):
            self.runtime.metrics.config_reload_failures.inc()
        self._counted = files
        if self._ok:
            self._since = _now()
        self._ok, self._errors = False, list(exc.errors)
        self._last = {"at": _now(), "trigger": exc.trigger,
                      "outcome": "refused" if isinstance(exc, ReloadRefused) else "failed"}
        what = ("refused, the running configuration stays" if isinstance(exc, ReloadRefused)
                else "failed part-way, retrying later")
        log.error("config reload (%s) %s: %s", _who(exc.trigger, by), what, " | ".join(exc.errors),
                  extra={"trigger": exc.trigger, "actor": by, "error_count": len(exc.errors)})
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
            await cancel_all(tasks)
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
