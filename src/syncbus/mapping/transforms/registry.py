"""The transform registry and the chain language: ``"trim | upper"``, ``"decimal(2)"``.

A chain is parsed once, when a mapping is compiled, into one plain callable
``value -> value``. Nothing is parsed or looked up per record: a one-step chain
*is* the step's function. Mistakes in the chain text (unknown names, wrong
argument counts, bad formats) are reported at load time as
:class:`TransformSpecError`, with the offset of the failing step so the
compiler can point at file:line:col.

Every transform is registered here with its documentation *and an example*
(input, chain, output): ``syncbus docs`` and ``syncbus plugins`` print them via
:func:`transform_docs`, and a test runs every example, so the reference can
never describe a transform that behaves differently.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from syncbus.errors import TransformError

from .values import StepError, TransformSpecError, show

if TYPE_CHECKING:
    from syncbus.mapping.lookups import LookupTables

__all__ = [
    "TRANSFORMS", "Transform", "TransformDef", "TransformDoc", "TransformExample", "compile_chain",
    "register_transform", "run_example", "transform_docs",
]

Transform = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class TransformExample:
    """One worked example: ``chain`` applied to ``input`` gives ``output``.

    ``tables`` are lookup tables the example needs (name -> key -> value).
    """

    chain: str
    input: Any
    output: Any
    tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class TransformDef:
    """One registered transform: how to build it and how to describe it."""

    name: str
    factory: Callable[..., Transform]
    doc: str
    params: tuple[str, ...]
    required: int  # how many of ``params`` must be given
    variadic: bool
    wants_lookups: bool  # the factory takes ``lookups=`` (keyword-only)
    builtin: bool  # built-ins only raise TransformError; plugin steps are guarded
    example: TransformExample | None = None
    details: str = ""  # the rest of the factory's docstring: rules, edge cases

    @property
    def usage(self) -> str:
        """How to write it in a chain, e.g. ``decimal(places)``."""
        if not self.params and not self.variadic:
            return self.name
        params = [p.rstrip("_") for p in self.params]  # `in_` is written `in`
        names = [*params[: self.required], *(f"[{p}]" for p in params[self.required :])]
        if self.variadic:
            names.append("...")
        return f"{self.name}({', '.join(names)})"


TRANSFORMS: dict[str, TransformDef] = {}

_NAME_RE = re.compile(r"[^\W\d]\w*")


def register_transform(
    name: str, factory: Callable[..., Transform], *, doc: str | None = None, replace: bool = False,
    example: TransformExample | None = None,
) -> TransformDef:
    """Add a transform usable in chains as ``name`` or ``name(args...)``.

    ``factory(*args)`` is called once per use in a mapping, at compile time, with
    the parsed arguments (``int`` or ``str``) and returns the per-value function.
    It should validate its arguments and raise TransformSpecError (ValueError and
    TypeError are converted). A factory that declares a keyword-only ``lookups``
    parameter receives the mapping's LookupTables. ``doc`` (default: the first
    line of the factory's docstring) is the one line shown in generated docs;
    ``example`` is shown beside it (built-ins must have one; a test runs them).
    """
    if not _NAME_RE.fullmatch(name):
        raise TransformSpecError(f"transform name {name!r} is not an identifier")
    if name in TRANSFORMS and not replace:
        raise TransformSpecError(f"transform {name!r} is already registered (pass replace=True)")
    full = (doc or inspect.getdoc(factory) or "").strip()
    line = full.splitlines()
    if not line or not line[0].strip():
        raise TransformSpecError(f"transform {name!r} needs a one-line doc string")
    params: list[str] = []
    required = 0
    variadic = wants_lookups = False
    for p in inspect.signature(factory).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            params.append(p.name)
            if p.default is p.empty:
                required += 1
        elif p.kind is p.VAR_POSITIONAL:
            variadic = True
        elif p.kind is p.KEYWORD_ONLY and p.name == "lookups":
            wants_lookups = True
        elif p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            raise TransformSpecError(f"transform {name!r}: keyword-only parameter {p.name!r} cannot be given")
    entry = TransformDef(
        name=name,
        factory=factory,
        doc=line[0].strip(),
        params=tuple(params),
        required=required,
        variadic=variadic,
        wants_lookups=wants_lookups,
        builtin=factory.__module__.rpartition(".")[0] == __package__,
        example=example,
        details="\n".join(full.splitlines()[1:]).strip() if doc is None else "",
    )
    TRANSFORMS[name] = entry
    return entry


# --------------------------------------------------------------------------- parsing

_TOKEN_RE = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<int>[+-]?[0-9]{1,18}(?![\w.]))
    | (?P<name>[^\W\d]\w*(?:-\w+)*)
    | (?P<punct>[|(),])
    """,
    re.VERBOSE | re.DOTALL,
)
_BAD_NUMBER_RE = re.compile(r"[+-]?[\w.]+")
_UNESCAPE_RE = re.compile(r"\\(['\"\\])")


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    args: tuple[int | str, ...]
    start: int
    text: str  # the step as written, for messages


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            ch = text[pos]
            if ch in "'\"":
                raise TransformSpecError(f"unterminated string starting at position {pos} in {text!r}", pos)
            if ch in "+-0123456789":
                bad = _BAD_NUMBER_RE.match(text, pos)
                word = bad.group()[:30] if bad else ch
                raise TransformSpecError(
                    f"bad argument {word!r} at position {pos} in {text!r}: "
                    "arguments are whole numbers, 'quoted text' or names", pos
                )
            raise TransformSpecError(f"unexpected {ch!r} at position {pos} in {text!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group(), pos))
        pos = m.end()
    return tokens


def _arg_value(kind: str, raw: str) -> int | str:
    if kind == "int":
        return int(raw)
    if kind == "str":
        return _UNESCAPE_RE.sub(r"\1", raw[1:-1])
    return raw  # a bare identifier, e.g. a lookup table name


def _parse(text: str) -> list[_Step]:
    tokens = _tokenize(text)
    if not tokens:
        raise TransformSpecError("empty transform chain", 0)
    steps: list[_Step] = []
    i = 0
    while True:
        if i >= len(tokens):
            raise TransformSpecError(f"expected a transform name after the last '|' in {text!r}", len(text))
        kind, raw, start = tokens[i]
        if kind != "name":
            raise TransformSpecError(f"expected a transform name at position {start}, found {raw!r}", start)
        name = raw
        i += 1
        args: list[int | str] = []
        end = start + len(raw)
        if i < len(tokens) and tokens[i][1] == "(":
            i += 1
            expect_arg = True
            while True:
                if i >= len(tokens):
                    raise TransformSpecError(f"missing ')' in {text[start:]!r}", start)
                kind, raw, pos = tokens[i]
                i += 1
                if raw == ")" and (not expect_arg or not args):
                    end = pos + 1
                    break
                if expect_arg and kind in ("int", "str", "name"):
                    args.append(_arg_value(kind, raw))
                    expect_arg = False
                elif not expect_arg and raw == ",":
                    expect_arg = True
                else:
                    raise TransformSpecError(
                        f"bad argument {raw!r} at position {pos} in {text[start:]!r}", pos
                    )
        steps.append(_Step(name, tuple(args), start, text[start:end]))
        if i >= len(tokens):
            return steps
        kind, raw, pos = tokens[i]
        if raw != "|":
            raise TransformSpecError(f"expected '|' or '(' at position {pos}, found {raw!r} in {text!r}", pos)
        i += 1


# --------------------------------------------------------------------------- compiling



# --------------------------------------------------------------------------- compiling


def compile_chain(text: str, *, lookups: LookupTables | None = None) -> Transform:
    """Compile ``"step | step(args) | ..."`` into one function ``value -> value``.

    Raises TransformSpecError (LookupSpecError for lookup table problems) for
    anything wrong in the text; the returned function raises TransformError.
    """
    steps = _parse(text)
    return _compose([_build(step, lookups) for step in steps], tuple(s.text for s in steps))


def _build(step: _Step, lookups: LookupTables | None) -> Transform:
    entry = TRANSFORMS.get(step.name)
    if entry is None:
        close = difflib.get_close_matches(step.name, TRANSFORMS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(TRANSFORMS))
        raise TransformSpecError(f"unknown transform {step.name!r}{hint} (known: {known})", step.start)
    got = len(step.args)
    if got < entry.required or (got > len(entry.params) and not entry.variadic):
        raise TransformSpecError(f"{step.name}() {_arity(entry)}, got {got}", step.start)
    kwargs: dict[str, Any] = {"lookups": lookups} if entry.wants_lookups else {}
    try:
        fn = entry.factory(*step.args, **kwargs)
    except TransformSpecError as exc:
        if exc.offset is None:
            exc.offset = step.start
        raise
    except (TypeError, ValueError) as exc:
        raise TransformSpecError(f"{step.text}: {exc}", step.start) from None
    if not callable(fn):
        raise TransformSpecError(f"{step.text}: the factory did not return a function", step.start)
    return fn if entry.builtin else _guarded(fn, step.text)


def _arity(entry: TransformDef) -> str:
    n, m = entry.required, len(entry.params)
    names = f" ({', '.join(p.rstrip('_') for p in entry.params)})" if entry.params else ""
    if entry.variadic:
        return f"takes at least {n} argument{'s' * (n != 1)}{names}"
    if m == 0:
        return "takes no arguments"
    if n == m:
        return f"takes {n} argument{'s' * (n != 1)}{names}"
    return f"takes {n} to {m} arguments{names}"


def _compose(fns: list[Transform], labels: tuple[str, ...]) -> Transform:
    # Specialised so that short chains cost one or two extra calls, not a loop. The
    # try blocks cost nothing until a step fails (zero-cost exceptions).
    if len(fns) == 1:
        return fns[0]
    steps = tuple(fns)
    if len(fns) == 2:
        f, g = fns

        def chain2(value: Any) -> Any:
            try:
                return g(f(value))
            except TransformError as exc:
                raise _restate(exc, value, steps, labels) from None

        return chain2
    if len(fns) == 3:
        f, g, h = fns

        def chain3(value: Any) -> Any:
            try:
                return h(g(f(value)))
            except TransformError as exc:
                raise _restate(exc, value, steps, labels) from None

        return chain3

    def chain(value: Any) -> Any:
        original = value
        try:
            for fn in steps:
                value = fn(value)
        except TransformError as exc:
            raise _restate(exc, original, steps, labels) from None
        return value

    return chain


def _restate(exc: TransformError, original: Any, steps: tuple[Transform, ...], labels: tuple[str, ...]
             ) -> TransformError:
    """The error of a failing chain, restated with the record's original value.

    Error path only: the chain is re-run step by step (transforms are pure) to
    find which step failed and what it was given.
    """
    value = original
    for k, fn in enumerate(steps):
        try:
            value = fn(value)
        except TransformError as again:
            if k == 0:
                return again
            before = " | ".join(labels[:k])
            if isinstance(again, StepError):
                return again.restated(original, before)
            return TransformError(f"{again} (value {show(original)}, after {before}: {show(value)})")
    return exc


def _guarded(fn: Transform, label: str) -> Transform:
    """Plugin steps may raise anything; the route must only ever see TransformError."""

    def guarded(value: Any) -> Any:
        try:
            return fn(value)
        except TransformError:
            raise
        except Exception as exc:
            raise StepError(label, value, f"{{value}}: {exc}") from exc

    return guarded


# --------------------------------------------------------------------------- documentation


@dataclass(frozen=True, slots=True)
class TransformDoc:
    """What ``syncbus docs`` / ``syncbus plugins`` show for one transform."""

    name: str
    signature: str  # how to write it: decimal(places), date(format, [input_format], [tz])
    description: str  # one line
    example: str  # the example chain, e.g. "decimal(2)"
    example_input: Any
    example_output: Any
    details: str = ""  # rules and edge cases (the rest of the docstring)
    builtin: bool = True
    example_tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def transform_docs() -> list[TransformDoc]:
    """Every registered transform (plugins included), by name, with its example."""
    docs = []
    for name in sorted(TRANSFORMS):
        entry = TRANSFORMS[name]
        ex = entry.example
        docs.append(TransformDoc(
            name=name, signature=entry.usage, description=entry.doc,
            example=ex.chain if ex else "", example_input=ex.input if ex else None,
            example_output=ex.output if ex else None, details=entry.details, builtin=entry.builtin,
            example_tables=dict(ex.tables) if ex else {},
        ))
    return docs


class _Tables(Protocol):
    def get(self, name: str) -> dict[str, str]: ...


@dataclass(frozen=True)
class _ExampleTables:
    """The lookup tables of an example, in memory (same interface as LookupTables.get)."""

    tables: Mapping[str, Mapping[str, str]]

    def get(self, name: str) -> dict[str, str]:
        if name not in self.tables:
            raise TransformSpecError(f"lookup table {name!r} not found in the example")
        return dict(self.tables[name])


def run_example(doc: TransformDoc) -> Any:
    """Apply a documented example's chain to its input (what the docs test checks)."""
    tables: _Tables = _ExampleTables(doc.example_tables)
    return compile_chain(doc.example, lookups=tables)(doc.example_input)  # type: ignore[arg-type]
