"""The fast path of ``CompiledMapping.map_object``: XML targets written by generated writers (issue 11).

``xmlgen.py`` writes an XML target's document straight from the record. The
mapped dict is then only needed by whoever asks for ``Output.payload`` (the
SQL and file sinks, ``syncbus map``, shadow comparisons): :class:`LazyOutput`
builds it on first access, with the same builder the general path uses, so
it is equal to what that path would have given. Targets without a writer, or
with an output schema (which validates the dict), get the dict and the codec
exactly as before.

Any exception on this path -- a ``when`` that fails, a transform error, a
value the writer leaves to the general path -- returns None, and the caller
maps the record the general way: errors and their messages come from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiler import CompiledMapping, CompiledTarget, MapResult, Output

_UNSET: Any = object()


def lazy_output_class() -> type[Output]:
    """``LazyOutput``, made once the compiler's Output exists (the two modules import each other)."""
    from .compiler import Output

    slot = Output.__dict__["payload"]  # the slot that holds a built payload

    class LazyOutput(Output):
        """An Output whose ``payload`` (the mapped dict) is built on first access."""

        __slots__ = ("_make",)

        def __init__(self, target: CompiledTarget, body: bytes, make: Callable[[], Any]) -> None:
            self.target = target
            self.body = body
            self._make: Callable[[], Any] | None = make

        @property
        def payload(self) -> Any:
            make = self._make
            if make is not None:
                slot.__set__(self, make())
                self._make = None
            return slot.__get__(self, type(self))

        @payload.setter
        def payload(self, value: Any) -> None:
            slot.__set__(self, value)
            self._make = None

    return LazyOutput


_classes: list[Any] = []  # [LazyOutput, Output, MapResult], filled on first use (import cycle)


def _load_classes() -> list[Any]:
    from .compiler import MapResult, Output

    _classes[:] = [lazy_output_class(), Output, MapResult]
    return _classes


def map_fast(m: CompiledMapping, obj: Any, key: str | None, writers: Sequence[Any]) -> MapResult | None:
    """Targets after ``when``: generated writers where there are some, the general encoder elsewhere."""
    lazy, output, result = _classes or _load_classes()
    try:
        outputs: list[Any] = []
        mapped: Any = _UNSET
        build = m.build
        for target, writer in zip(m.targets, writers, strict=True):
            if target.when is not None and not target.when.test(obj):
                continue
            if writer is not None and target.schema is None:
                if mapped is _UNSET:
                    outputs.append(lazy(target, writer(obj), _builder(build, obj)))
                else:
                    outputs.append(output(target, mapped, writer(obj)))
                continue
            if mapped is _UNSET:
                mapped = build(obj, obj)
            if target.schema is not None:
                target.schema.check(mapped)
            outputs.append(output(target, mapped, target.codec.encode(mapped)))
        if not outputs:
            build(obj, obj)  # the general path builds before any target's `when`: its errors count
    except Exception:
        return None
    return result(key, outputs, skipped=not outputs)  # type: ignore[no-any-return]


def _builder(build: Callable[[Any, Any], Any], obj: Any) -> Callable[[], Any]:
    return lambda: build(obj, obj)
