"""Token buckets the workers of one node share, so a rate limit is the node's, not each worker's.

``syncbus run --workers N`` serves one port from N processes, and the kernel
hands each new connection to any of them. A bucket in each process's memory
would let ``rate_limit: 100/s`` through N times over (a client that opens new
connections lands on every worker). Like nginx's ``limit_req`` zone, the
buckets live in one small file mapped into every worker's memory
(``$SYNCBUS_NODE_DIR/rate_limits``, set by the parent, see ``workers.py``),
and each take is a few microseconds under an exclusive ``flock``.

The table is fixed: ``SLOTS`` rows of (key hash, tokens, last refill). A key
looks in ``PROBE`` rows from its hash; when none is its own or free, the row
refilled longest ago is taken over -- the least recently used key starts
again with a full bucket, as a forgotten key of ``KeyedLimiter`` does. The
last refill is ``time.monotonic()``, which on Linux is one clock for every
process of the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path

from ...workers import ENV_NODE_DIR  # set by the parent of `--workers N` for its workers

FILE_NAME = "rate_limits"
ROW = struct.Struct("<Qdd")         # key hash (0: a free row), tokens left, last refill
SLOTS = 16_384                      # beyond ratelimit.MAX_KEYS admin keys and every source
PROBE = 16


@lru_cache(maxsize=4096)
def _hash(key: str) -> int:
    """64 bits of the key, never 0 (0 marks a free row)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") or 1


class SharedBuckets:
    """The node's buckets, in a file mapped by every worker -- or, without a path, in this process's memory
    (one process is the whole node then; the same code keeps the same behaviour either way)."""

    def __init__(self, path: Path | None, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        size = slots * ROW.size
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_size < size:  # the first worker sizes it; new bytes are zero: free rows
                        os.ftruncate(fd, size)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self._map = mmap.mmap(fd, size)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        self._lock = threading.Lock()  # flock excludes other processes; threads of this one share the fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._fd is None:
                yield
                return
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _row(self, wanted: int) -> tuple[int, int, float, float]:
        """The key's row -- its own, else a free one, else the one refilled longest ago -- and what it holds."""
        free = oldest = -1
        oldest_at = float("inf")
        start = wanted % self.slots
        unpack, buf, size = ROW.unpack_from, self._map, ROW.size
        for i in range(PROBE):
            offset = ((start + i) % self.slots) * size
            stored, tokens, at = unpack(buf, offset)
            if stored == wanted:
                return offset, stored, tokens, at
            if stored == 0:
                if free < 0:
                    free = offset
            elif at < oldest_at:
                oldest, oldest_at = offset, at
        offset = free if free >= 0 else oldest
        return (offset, *unpack(buf, offset))

    def _refilled(self, wanted: int, rate: float, burst: float, now: float) -> tuple[int, float, float]:
        """The key's row, its tokens now and the time they are counted to (under the lock)."""
        offset, stored, tokens, at = self._row(wanted)
        if stored != wanted:  # new here (or its row was taken over): a full bucket
            tokens, at = burst, now
        # another worker may have stored a later time than this one read before the lock: time
        # never goes back in the row, or the next refill would count the same interval twice
        now = max(now, at)
        return offset, min(burst, tokens + (now - at) * rate), now

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """0 when a token was taken, else the seconds until one is free (nothing is taken then).

        Once per limited request: the locks are taken inline, not through ``_locked`` (a generator-based
        context manager cost as much as the rest of the call)."""
        wanted = _hash(key)
        fd = self._fd
        with self._lock:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                offset, tokens, now = self._refilled(wanted, rate, burst, now)
                wait = 0.0
                if tokens >= 1.0:
                    tokens -= 1.0
                else:
                    wait = (1.0 - tokens) / rate
                ROW.pack_into(self._map, offset, wanted, tokens, now)
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        return wait

    def level(self, key: str, rate: float, burst: float, now: float) -> float:
        """The tokens the key's bucket holds now, taking none."""
        with self._locked():
            return self._refilled(_hash(key), rate, burst, now)[1]

    def forget(self, key: str) -> None:
        """The key starts again with a full bucket (its row is freed)."""
        wanted = _hash(key)
        with self._locked():
            offset, stored, _tokens, _at = self._row(wanted)
            if stored == wanted:
                ROW.pack_into(self._map, offset, 0, 0.0, 0.0)


@cache
def _open(path: str) -> SharedBuckets:
    return SharedBuckets(Path(path))


def node_buckets(env: Mapping[str, str]) -> SharedBuckets | None:
    """The node's shared buckets when this process is one of several workers, else None (one process:
    its own memory is the node's). One mapping per process, however often the settings are rebuilt."""
    folder = env.get(ENV_NODE_DIR)
    return _open(str(Path(folder) / FILE_NAME)) if folder else None

