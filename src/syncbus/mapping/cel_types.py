"""Static types of CEL expressions: load-time type errors and the exact-decimal rewrite.

Record fields have no declared types, so most values are ``dyn``; what *can*
be known (literals, conversions, ``dec()``, operators over them) is checked,
and a mistake is reported when the mapping loads instead of dead-lettering
every record at run time. Nothing is refused that might work at run time.

Exact decimals (the syntax people write; README "Exact money"):

* ``dec(x)`` is the exact decimal of a number or numeric text;
* an arithmetic operator (``+ - * / %``) or an ordering comparison
  (``< <= > >=``) is decimal when one operand is a decimal, or when one is a
  literal with a fraction (``1.13``) and the other is not an explicit
  ``double(...)``: ``record.price * 1.13`` is exact, the literal taken as
  written. ``==``/``!=`` are decimal when an operand is a decimal;
* ``sum(list)`` (or ``list.sum()``) adds numbers exactly and gives a decimal;
  ``round(d, n)`` (or ``d.round(n)``) rounds half-up;
* ``double(d)``, ``string(d)`` and ``int(d)`` (toward zero) convert back.

Every decimal operation is printed as a call of a function in
:mod:`.decimals`, so CEL never computes with a binary double for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cel_print import quote, unparse
from .cel_syntax import Ident, Lit, Node, Unary

__all__ = ["DECIMAL", "CelType", "Checked", "CheckerBase", "State", "list_of"]


@dataclass(frozen=True, slots=True)
class CelType:
    name: str  # dyn int uint double string bytes bool null list map decimal timestamp duration type
    elem: CelType | None = None  # lists

    def __str__(self) -> str:
        """With its article, for messages: "an int", "a list of decimals"."""
        if self.name == "list" and self.elem is not None:
            return f"a list of {self.elem.name}s"
        return ("an " if self.name[0] in "aeiou" else "a ") + self.name


DYN, INT, UINT, DOUBLE = CelType("dyn"), CelType("int"), CelType("uint"), CelType("double")
STRING, BYTES, BOOL, NULL = CelType("string"), CelType("bytes"), CelType("bool"), CelType("null")
MAP, DECIMAL, TIMESTAMP = CelType("map"), CelType("decimal"), CelType("timestamp")
DURATION, TYPE = CelType("duration"), CelType("type")


def list_of(elem: CelType) -> CelType:
    return CelType("list", elem)


NUMBERS = frozenset({"int", "uint", "double", "decimal"})
LITERAL_TYPES = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
                  "bool": BOOL, "null": NULL}
TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type",
                         "type", "dyn", "timestamp", "duration"})
CONVERSIONS = {"int": INT, "uint": UINT, "double": DOUBLE, "string": STRING, "bytes": BYTES,
                "timestamp": TIMESTAMP, "duration": DURATION, "type": TYPE, "dyn": DYN}
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
STRING_TESTS = frozenset({"contains", "startsWith", "endsWith", "matches"})
TIME_PARTS = frozenset({"getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear",
                         "getHours", "getMinutes", "getSeconds", "getMilliseconds"})
GLOBAL_FUNCTIONS = frozenset({"dec", "sum", "round", "size", "has", *CONVERSIONS})
METHODS = frozenset({"size", "sum", "round", *MACROS, *STRING_TESTS, *TIME_PARTS})
OP_FUNCTION = {"+": "_dec_add", "-": "_dec_sub", "*": "_dec_mul", "/": "_dec_div", "%": "_dec_mod"}
ARITHMETIC = frozenset(OP_FUNCTION)
ORDERING = frozenset({"<", "<=", ">", ">="})


@dataclass
class Checked:
    """What the checker found out about one expression."""

    type: CelType
    code: str | None  # CEL text to compile when it differs from the source
    problems: list[tuple[str, int]]  # (message, 0-based offset)
    functions: set[str]  # Python functions (decimals.FUNCTIONS) the program calls
    members: dict[str, frozenset[str] | None]  # record/item -> top-level fields used; None = used whole


@dataclass
class State:
    problems: list[tuple[str, int]] = field(default_factory=list)
    subst: dict[int, str] = field(default_factory=dict)
    functions: set[str] = field(default_factory=set)
    members: dict[str, set[str] | None] = field(default_factory=lambda: {"record": set(), "item": set()})


def double_literal(n: Node) -> bool:
    if isinstance(n, Unary) and n.op == "-":
        n = n.operand
    return isinstance(n, Lit) and n.kind == "double"


def string_value(n: Node) -> str | None:
    """The value of a plain string literal (no prefix, no escapes); None otherwise."""
    if isinstance(n, Lit) and n.kind == "string" and n.text[0] in "'\"" and "\\" not in n.text:
        quote_len = 3 if n.text[:3] in ("'''", '"""') else 1
        return n.text[quote_len:-quote_len]
    return None


def arg_text(n: Node) -> str:
    return n.text if isinstance(n, Lit) else "..."


def family(t: CelType) -> str:
    if t.name in NUMBERS:
        return "number"
    if t.name in ("dyn", "null"):
        return "any"
    return t.name


class CheckerBase:
    """What every rule needs: the shared state, problems, printing, pruning bookkeeping."""

    def __init__(self, state: State, variables: frozenset[str]) -> None:
        self.s = state
        self.variables = variables

    def problem(self, node: Node, message: str) -> CelType:
        self.s.problems.append((message, node.start))
        return DYN

    def text(self, node: Node) -> str:
        return unparse(node, self.s.subst)

    def as_decimal(self, node: Node, typ: CelType) -> str:
        """The node as an argument of a decimal function: a literal with a fraction as its exact text."""
        if isinstance(node, Lit) and node.kind == "double":
            return quote(node.text)
        if isinstance(node, Unary) and isinstance(node.operand, Lit) and node.operand.kind == "double":
            return quote("-" + node.operand.text)
        return self.text(node)

    def use(self, name: str) -> str:
        self.s.functions.add(name)
        return name

    def member(self, operand: Node, name: str | None, scope: dict[str, CelType]) -> bool:
        """Note ``record.<name>`` for pruning; True when operand is a record/item variable."""
        if isinstance(operand, Ident) and operand.name in self.variables and operand.name not in scope:
            used = self.s.members[operand.name]
            if used is not None:
                if name is None:
                    self.s.members[operand.name] = None
                else:
                    used.add(name)
            return True
        return False

    def visit(self, n: Node, scope: dict[str, CelType]) -> CelType:
        raise NotImplementedError  # cel_check.Checker
