"""CEL expressions (``when`` filters and ``expr`` fields), compiled once.

We use the ``common-expression-language`` package (Rust ``cel`` crate). Before
it sees an expression, :mod:`.cel_syntax` parses it and :mod:`.cel_types`
checks it: type errors visible in the text are refused at load time,
``record.数量`` is rewritten to ``record["数量"]``, and decimal arithmetic is
rewritten into exact Python functions (:mod:`.decimals`). An expression our
parser does not understand but the ``cel`` package does is used as written,
without those extras.

Two things keep CEL off the profile of the hot path:

* **Pruning.** Handing a whole record to CEL converts every value in it. When
  an expression only uses ``record.<name>`` (and never ``record`` as a whole),
  only those top-level members are passed.
* **Memoising.** CEL is side-effect free and deterministic, so a result is a
  pure function of the pruned inputs. When those are scalars we cache results
  (bounded LRU keyed by type *and* value, since CEL tells 1, 1.0 and true apart).
  ``when: record.status == "APPROVED"`` then costs a dict lookup per record.
"""

from __future__ import annotations

import logging
import sys
import types
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# The package's __init__ imports its interactive REPL (prompt_toolkit, rich): a
# sixth of a second on every `syncbus` command for something we never use.
sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))
import cel  # noqa: E402

from ..errors import SyncbusError  # noqa: E402
from . import decimals  # noqa: E402
from .cel_check import check  # noqa: E402
from .cel_syntax import CelSyntaxError, parse  # noqa: E402
from .cel_types import DECIMAL, CelType  # noqa: E402

_SCALARS = (str, int, float, bool, type(None))
CACHE_SIZE = 4096


class ExpressionSpecError(SyncbusError):
    """A CEL expression does not compile, or has a type error visible in its text."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset  # 0-based position in the expression, when known
        super().__init__(message)


class ExpressionError(SyncbusError):
    """A CEL expression failed on a record (missing key, type mismatch, not a number)."""


class _QuietDecimalFailures(logging.Filter):
    """The ``cel`` package logs every exception raised in a Python function before
    turning it into a RuntimeError. Ours are reported as the record's mapping
    error; logging them again per record is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f"function '{name}'" in message for name in decimals.FUNCTIONS)


logging.getLogger("cel").addFilter(_QuietDecimalFailures())


class Expression:
    """A compiled CEL program over the variables ``record`` and, inside ``each``, ``item``."""

    __slots__ = ("_cache", "_convert", "_functions", "_program", "_prune_item", "_prune_record", "source",
                 "type")

    def __init__(self, source: str, *, boolean: bool = False) -> None:
        """Compile ``source``; ``boolean``: it is a filter and must give true or false."""
        self.source = source
        try:
            tree = parse(source)
        except CelSyntaxError:
            tree = None  # let the cel package decide, and explain, below
        code = source
        self.type: CelType | None = None
        self._prune_record: frozenset[str] | None = None
        self._prune_item: frozenset[str] | None = None
        self._functions: dict[str, Callable[..., Any]] = {}
        if tree is not None:
            checked = check(tree)
            if checked.problems:
                message, offset = checked.problems[0]
                more = f" (and {len(checked.problems) - 1} more)" if len(checked.problems) > 1 else ""
                raise ExpressionSpecError(f"{message} in {source!r}{more}", offset)
            if boolean and checked.type.name not in ("bool", "dyn"):
                raise ExpressionSpecError(f"a filter must give true or false, but {source!r} gives "
                                          f"{checked.type}", 0)
            code = checked.code or source
            self.type = checked.type
            self._prune_record = checked.members["record"]
            self._prune_item = checked.members["item"]
            self._functions = {name: decimals.FUNCTIONS[name] for name in sorted(checked.functions)}
        try:
            self._program = cel.compile(code)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ExpressionSpecError(_first_line(exc, source)) from None
        if tree is None:
            unknown = set(self._program.variables()) - {"record", "item"}
            if unknown:
                raise ExpressionSpecError(f"unknown variable {sorted(unknown)[0]!r} in {source!r} "
                                          "(use record.<field> or item.<field>)")
        self._convert = _converter(self.type)
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()

    def __call__(self, record: Any, item: Any = None) -> Any:
        rec = _prune(record, self._prune_record)
        it = None
        if item is not None:
            it = _prune(item, self._prune_item)
            key = _cache_key(rec, self._prune_record, it, self._prune_item)
        else:
            key = _cache_key(rec, self._prune_record, None, None)
        if key is not None:
            cache = self._cache
            hit = cache.get(key, cache)
            if hit is not cache:
                return hit
        ctx: dict[str, Any] = {"record": rec, **self._functions} if self._functions else {"record": rec}
        if item is not None:
            ctx["item"] = it
        if self._functions:
            decimals.forget_problem()
        try:
            result = self._program.execute(ctx)
        except KeyError as exc:
            raise ExpressionError(f"{self.source!r}: no such key {exc.args[0]!r} in the record") from None
        except (ValueError, TypeError, RuntimeError) as exc:
            problem = decimals.last_problem() if self._functions else None
            reason = str(problem) if problem is not None else _first_line(exc, self.source)
            raise ExpressionError(f"{self.source!r}: {reason}") from None
        if self._convert is not None:
            result = self._convert(result)
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


def _converter(typ: CelType | None) -> Callable[[Any], Any] | None:
    """Decimals travel through CEL as exact text; they leave it as ``Decimal``."""
    if typ == DECIMAL:
        return _to_decimal
    if typ is not None and typ.name == "list" and typ.elem == DECIMAL:
        return lambda items: [_to_decimal(x) for x in items] if isinstance(items, list) else items
    return None


def _to_decimal(value: Any) -> Any:
    if isinstance(value, str):
        return Decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    return value


def _first_line(exc: BaseException, source: str) -> str:
    text = str(exc).replace("<input>", "expression")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("|")]
    msg = " ".join(lines[:2]) if lines else type(exc).__name__
    if source not in msg:
        msg = f"{msg} in {source!r}"
    return msg


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
