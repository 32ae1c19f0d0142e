"""The transform language of mapping files (DESIGN §4): ``"trim | upper"``, ``"decimal(2)"``.

A chain is parsed once, when a mapping is compiled, into one plain callable
``value -> value`` (:mod:`.registry`). At run time a step raises
:class:`~syncbus.errors.TransformError` naming the step and the value the
record held (``decimal(2): 'abc' is not a number``); the compiler adds the
target field. ``None`` passes through every built-in unchanged.

Chain syntax: ``name`` or ``name(arg, ...)`` joined by ``|``; an argument is a
whole number (``-3``), text in single or double quotes (a backslash escapes a
quote or a backslash and is literal otherwise; ``|`` inside quotes is text) or a
bare name (``lookup(departments)`` = ``lookup('departments')``).

The built-ins live by family: :mod:`.text`, :mod:`.numbers`, :mod:`.dates`,
:mod:`.lookup`; each module documents its decisions where DESIGN §4 is silent.
Plugins add transforms with :func:`register_transform`; ``TRANSFORMS`` is the
registry and :func:`transform_docs` the documentation built from it.
"""

from __future__ import annotations

# Importing the families registers the built-ins.
from . import dates, numbers, text  # noqa: F401
from .lookup import LookupMiss
from .registry import (
    TRANSFORMS,
    Transform,
    TransformDef,
    TransformDoc,
    TransformExample,
    compile_chain,
    register_transform,
    run_example,
    transform_docs,
)
from .values import StepError, TransformSpecError, to_text

__all__ = [
    "TRANSFORMS",
    "LookupMiss",
    "StepError",
    "Transform",
    "TransformDef",
    "TransformDoc",
    "TransformExample",
    "TransformSpecError",
    "compile_chain",
    "register_transform",
    "run_example",
    "to_text",
    "transform_docs",
]
