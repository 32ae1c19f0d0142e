"""Assertions for hostile input: refused with a one-line DecodeError, fast, in little memory."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from syncbus.errors import DecodeError

MIB = 1024 * 1024


def assert_refused(call: Callable[[], Any], match: str, *, seconds: float = 1.0,
                   peak_mib: float = 32.0) -> DecodeError:
    """Run ``call`` twice: once timed, once under tracemalloc (which slows things down)."""
    started = time.perf_counter()
    with pytest.raises(DecodeError, match=match) as info:
        call()
    elapsed = time.perf_counter() - started
    assert elapsed < seconds, f"took {elapsed:.3f}s to refuse"
    message = str(info.value)
    assert "\n" not in message, message
    assert "Traceback" not in message

    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < peak_mib * MIB, f"peak {peak / MIB:.1f} MiB while refusing"
    return info.value
