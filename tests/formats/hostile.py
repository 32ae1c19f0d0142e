"""Assertions for hostile input: refused with a one-line DecodeError, fast, in little memory."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from syncbus.errors import DecodeError

MIB = 1024 * 1024

# The classic entity-expansion bomb: a billion 'lol's from a few hundred bytes.
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>"""


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
