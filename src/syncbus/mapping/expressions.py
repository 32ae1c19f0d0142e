"""CEL expressions (``when`` filters and ``expr`` fields), compiled once.

We use the ``common-expression-language`` package (Rust ``cel`` crate). Two
things keep it off the profile of the hot path:

* **Pruning.** Handing a whole record to CEL converts every value in it. When
  an expression only uses ``record.<name>`` (and never ``record`` as a whole),
  only those top-level members are passed.
* **Memoising.** CEL is side-effect free and deterministic, so a result is a
  pure function of the pruned inputs. When those are scalars we cache results
  (bounded LRU keyed by type *and* value, since CEL tells 1, 1.0 and true apart).
  ``when: record.status == "APPROVED"`` then costs a dict lookup per record.
"""

from __future__ import annotations

import re
import sys
import types
from collections import OrderedDict
from typing import Any

# The package's __init__ imports its interactive REPL (prompt_toolkit, rich): a
# sixth of a second on every `syncbus` command for something we never use.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402

from ..errors import SyncbusError  # noqa: E402

_SCALARS = (str, int, float, bool, type(None))
CACHE_SIZE = 4096
_TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type",
                         "type", "dyn", "timestamp", "duration"})


class ExpressionSpecError(SyncbusError):
    """A CEL expression does not compile."""


class ExpressionError(SyncbusError):
    """A CEL expression failed on a record (missing key, type mismatch)."""


class Expression:
    """A compiled CEL program over the variables ``record`` and, inside ``each``, ``item``."""

    __slots__ = ("_cache", "_program", "_prune_item", "_prune_record", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ExpressionSpecError(_first_line(exc, source)) from None
        unknown = set(self._program.variables()) - {"record", "item"} - _TYPE_NAMES - _bound_names(source)
        if unknown:
            raise ExpressionSpecError(
                f"unknown variable {sorted(unknown)[0]!r} in {source!r} (use record.<field> or item.<field>)"
            )
        self._prune_record = _members(source, "record")
        self._prune_item = _members(source, "item")
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __call__(self, record: Any, item: Any = None) -> Any:
        rec = _prune(record, self._prune_record)
        ctx: dict[str, Any] = {"record": rec}
        key: tuple[Any, ...] | None = None
        if item is not None:
            it = _prune(item, self._prune_item)
            ctx["item"] = it
            key = _cache_key(rec, self._prune_record, it, self._prune_item)
        else:
            key = _cache_key(rec, self._prune_record, None, None)
        if key is not None:
            cache = self._cache
            hit = cache.get(key, cache)
            if hit is not cache:
                return hit
        try:
            result = self._program.execute(ctx)
        except KeyError as exc:
            raise ExpressionError(f"{self.source!r}: no such key {exc.args[0]!r} in the record") from None
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ExpressionError(f"{self.source!r}: {_first_line(exc, self.source)}") from None
        if key is not None:
            cache = self._cache
            cache[key] = result
            if len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
        return result

    def test(self, record: Any) -> bool:
        """Evaluate as a filter: the result must be a boolean."""
        result = self(record)
        if result is True or result is False:
            return result
        raise ExpressionError(f"{self.source!r} gave {result!r}, not true or false")


def _first_line(exc: BaseException, source: str) -> str:
    text = str(exc).replace("<input>", "expression")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("|")]
    msg = " ".join(lines[:2]) if lines else type(exc).__name__
    if source not in msg:
        msg = f"{msg} in {source!r}"
    return msg


_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def _members(source: str, var: str) -> frozenset[str] | None:
    """Top-level members used as ``var.name``; None when ``var`` is used whole (no pruning)."""
    code = _STRING.sub('""', source)
    uses = list(re.finditer(rf"(?<![\w.]){var}\b", code))
    if not uses:
        return frozenset()
    names: set[str] = set()
    for m in uses:
        member = re.match(r"\s*\.\s*([A-Za-z_]\w*)", code[m.end():])
        if member is None:
            return None
        names.add(member.group(1))
    return frozenset(names)


def _bound_names(source: str) -> set[str]:
    """Loop variables of comprehension macros: ``lines.exists(l, l.qty > 1)``."""
    return set(re.findall(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,", source))


def _prune(obj: Any, names: frozenset[str] | None) -> Any:
    if names is None or type(obj) is not dict:
        return obj
    return {n: obj[n] for n in names if n in obj}


def _cache_key(rec: Any, rnames: frozenset[str] | None, item: Any, inames: frozenset[str] | None
               ) -> tuple[Any, ...] | None:
    if rnames is None or (item is not None and inames is None):
        return None
    key: list[Any] = []
    for obj in (rec, item):
        if obj is None:
            continue
        if type(obj) is not dict:
            return None
        for name in sorted(obj):
            v = obj[name]
            if not isinstance(v, _SCALARS):
                return None
            key.append((name, type(v), v))
        key.append("|")
    return tuple(key)

