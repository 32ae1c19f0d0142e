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

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from ...workers import ENV_NODE_DIR  # set by the parent of `--workers N` for its workers

FILE_NAME = "rate_limits"
ROW = struct.Struct("<Qdd")         # key hash (0: a free row), tokens left, last refill
SLOTS = 16_384                      # beyond ratelimit.MAX_KEYS admin keys and every source
PROBE = 16


def _hash(key: str) -> int:
    """64 bits of the key, never 0 (0 marks a free row)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") or 1


class SharedBuckets:
    """The node's buckets, in a file mapped by every worker."""

    def __init__(self, path: Path, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        size = slots * ROW.size
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

    def _row(self, wanted: int) -> int:
        """The offset of the key's row: its own, else a free one, else the one refilled longest ago."""
        free = oldest = -1
        oldest_at = float("inf")
        start = wanted % self.slots
        for i in range(PROBE):
            offset = ((start + i) % self.slots) * ROW.size
            stored, _tokens, at = ROW.unpack_from(self._map, offset)
            if stored == wanted:
                return offset
            if stored == 0:
                if free < 0:
                    free = offset
            elif at < oldest_at:
                oldest, oldest_at = offset, at
        return free if free >= 0 else oldest

    def take(self, key: str, rate: float, burst: float, now: float) -> float:
        """0 when a token was taken, else the seconds until one is free (nothing is taken then)."""
        wanted = _hash(key)
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                offset = self._row(wanted)
                stored, tokens, at = ROW.unpack_from(self._map, offset)
                if stored != wanted:  # new here (or its row was taken over): a full bucket
                    tokens, at = burst, now
                # another worker may have stored a later time than this one read before the lock: time
                # never goes back in the row, or the next refill would count the same interval twice
                now = max(now, at)
                tokens = min(burst, tokens + (now - at) * rate)
                wait = 0.0
                if tokens >= 1.0:
                    tokens -= 1.0
                else:
                    wait = (1.0 - tokens) / rate
                ROW.pack_into(self._map, offset, wanted, tokens, now)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        return wait


@cache
def _open(path: str) -> SharedBuckets:
    return SharedBuckets(Path(path))


def node_buckets(env: Mapping[str, str]) -> SharedBuckets | None:
    """The node's shared buckets when this process is one of several workers, else None (one process:
    its own memory is the node's). One mapping per process, however often the settings are rebuilt."""
    folder = env.get(ENV_NODE_DIR)
    return _open(str(Path(folder) / FILE_NAME)) if folder else None

