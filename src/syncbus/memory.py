"""Keep a long-running node's resident memory flat: fewer malloc arenas, freed pages handed back (issue 11).

glibc gives every thread that allocates its own malloc arena (up to 8 per
core). A node has several (SQLite writer and reader of the bus, the store's
and the trace's worker threads): each arena keeps the memory its thread once
needed and fragments on its own, so RSS crept up for minutes under a steady
load. Two arenas are enough for threads that mostly wait on SQLite and
sockets. ``malloc_trim`` then returns free pages inside the heap (not only at
its top) to the OS; it runs every ``TRIM_INTERVAL`` seconds, off the event
loop's hot path (it takes well under a millisecond).

Both are best effort: on another C library (musl, macOS) nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8         # mallopt parameter (glibc malloc.h)
ARENAS = 2
TRIM_INTERVAL = 30.0     # seconds between malloc_trim calls


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas for threads started from now on (call before they start)."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return free heap pages to the OS. True when some memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """``trim`` every ``interval`` seconds until cancelled (a task of ``ingress/server.serve``)."""
    if _LIBC is None:
        return
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(OSError):
            trim()
