"""The ``lookup(table)`` transform: a value table from ``mappings/lookups/<table>.yaml|csv``.

The table is read once, when the mapping is compiled (see ``lookups.py`` for
the file formats); per record a lookup is one dict access. Keys are compared
as text, so the number 10 finds the key ``'10'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import Transform, TransformExample, register_transform
from .values import StepError, TransformSpecError, to_text

if TYPE_CHECKING:
    from syncbus.mapping.lookups import LookupTables

__all__ = ["LookupMiss"]


class LookupMiss(StepError):
    """A value is not in its lookup table. Distinct so the compiler can apply the field's ``default``."""

    def __init__(self, table: str, key: str) -> None:
        self.table = table
        self.key = key
        super().__init__(f"lookup({table})", key, "no entry for {value}")


def _lookup(table: int | str, *, lookups: LookupTables | None = None) -> Transform:
    """Value from the lookup table mappings/lookups/<table>.yaml|csv; a miss is an error (LookupMiss).

    A value that is not in the table is a mapping error (dead letter) unless the
    field has a ``default``, so that a new code is noticed instead of silently
    mapped to nothing.
    """
    name = str(table)
    if lookups is None:
        raise TransformSpecError(f"lookup({name}): no lookup table directory is configured")
    entries = lookups.get(name)
    get = entries.get
    label = f"lookup({name})"

    def lookup(value: Any) -> Any:
        key = value if type(value) is str else (None if value is None else to_text(value, label))
        if key is None:
            return None
        found = get(key)
        if found is None:
            raise LookupMiss(name, key)
        return found

    return lookup


register_transform("lookup", _lookup, example=TransformExample(
    "trim | lookup(departments)", " 财务部 ", "D200", {"departments": {"财务部": "D200", "销售部": "D100"}},
))
