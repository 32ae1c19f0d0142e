"""Type rules of CEL calls: conversions, ``dec``/``sum``/``round``, methods and comprehension macros.

Split from :mod:`.cel_check` (operators) to keep both readable; the rules
and the decimal syntax they implement are described in :mod:`.cel_types`.
"""

from __future__ import annotations

from .cel_syntax import Call, Ident, Node, Select
from .cel_types import (
    BOOL,
    CONVERSIONS,
    DECIMAL,
    DOUBLE,
    DYN,
    GLOBAL_FUNCTIONS,
    INT,
    MACROS,
    METHODS,
    NUMBERS,
    STRING_TESTS,
    CelType,
    CheckerBase,
    arg_text,
    double_literal,
    list_of,
    string_value,
)
from .decimals import NUMBER_RE

__all__ = ["CallRules"]


class CallRules(CheckerBase):
    def call(self, n: Call, scope: dict[str, CelType]) -> CelType:
        if n.target is not None:
            if isinstance(n.target, Ident) and n.target.name not in scope and n.target.name not in self.variables:
                return self.problem(n, f"unknown function '{n.target.name}.{n.name}'")
            return self.method(n, n.target, scope)
        name = n.name
        if name == "has":
            if len(n.args) != 1 or not isinstance(n.args[0], Select):
                return self.problem(n, "has() takes one field, e.g. has(record.phone)")
            field_arg = n.args[0]
            if not self.member(field_arg.operand, field_arg.field, scope):
                self.visit(field_arg.operand, scope)
            return BOOL
        if name not in GLOBAL_FUNCTIONS:
            known = ", ".join(sorted(GLOBAL_FUNCTIONS - {"dyn", "type"}))
            return self.problem(n, f"unknown function {name!r} (known: {known})")
        types = [self.visit(a, scope) for a in n.args]
        if name == "dec":
            return self.dec(n, types)
        if name == "sum":
            return self.sum(n, n.args, types)
        if name == "round":
            return self.round(n, n.args, types)
        if len(n.args) != 1:
            return self.problem(n, f"{name}() takes one argument, got {len(n.args)}")
        arg, typ = n.args[0], types[0]
        if name == "size":
            if typ.name not in ("string", "bytes", "list", "map", "dyn"):
                return self.problem(n, f"size() of {typ} is not defined")
            return INT
        if name == "int" and typ.name == "decimal":
            self.s.subst[id(n)] = f"{self.use('_dec_int')}({self.text(arg)})"
            return INT
        if name == "double" and typ.name == "decimal":
            return DOUBLE
        return CONVERSIONS[name]

    def dec(self, n: Call, types: list[CelType]) -> CelType:
        if len(n.args) != 1:
            return self.problem(n, f"dec() takes one number or numeric text, got {len(n.args)} arguments")
        arg, typ = n.args[0], types[0]
        if typ.name not in ("int", "uint", "double", "decimal", "string", "dyn"):
            return self.problem(arg, f"dec() needs a number or numeric text, not {typ}")
        text = string_value(arg)
        if text is not None and NUMBER_RE.fullmatch(text.strip()) is None:
            return self.problem(arg, f"dec({arg_text(arg)}): {text!r} is not a number")
        if double_literal(arg):
            self.s.subst[id(arg)] = self.as_decimal(arg, typ)
        self.use("dec")
        return DECIMAL

    def sum(self, n: Call, args: list[Node], types: list[CelType]) -> CelType:
        if len(args) != 1:
            return self.problem(n, f"sum() takes one list, got {len(args)} arguments")
        typ = types[0]
        if typ.name not in ("list", "dyn"):
            return self.problem(n, f"sum() adds the numbers of a list, not {typ}")
        if typ.elem is not None and typ.elem.name not in (*NUMBERS, "dyn"):
            return self.problem(n, f"sum() adds numbers, not {typ}")
        self.s.subst[id(n)] = f"{self.use('_dec_sum')}({self.text(args[0])})"
        return DECIMAL

    def round(self, n: Call, args: list[Node], types: list[CelType]) -> CelType:
        if len(args) != 2:
            return self.problem(n, "round() takes a number and the decimal places: round(dec(x), 2)")
        if types[0].name not in (*NUMBERS, "dyn"):
            return self.problem(args[0], f"round() needs a number, not {types[0]}")
        if types[1].name not in ("int", "dyn"):
            return self.problem(args[1], f"round(): places must be a whole number, not {types[1]}")
        first = self.as_decimal(args[0], types[0])
        self.s.subst[id(n)] = f"{self.use('_dec_round')}({first}, {self.text(args[1])})"
        return DECIMAL

    def method(self, n: Call, target: Node, scope: dict[str, CelType]) -> CelType:
        name = n.name
        if name in MACROS:
            return self.macro(n, target, scope)
        if name not in METHODS:
            return self.problem(n, f"unknown function {name!r}")
        tt = self.visit(target, scope)
        types = [self.visit(a, scope) for a in n.args]
        if name == "sum":
            if n.args:
                return self.problem(n, "list.sum() takes no arguments")
            return self.sum(n, [target], [tt])
        if name == "round":
            return self.round(n, [target, *n.args], [tt, *types])
        if name == "size":
            if tt.name not in ("string", "bytes", "list", "map", "dyn"):
                return self.problem(n, f"size() of {tt} is not defined")
            return INT
        if name in STRING_TESTS:
            if tt.name not in ("string", "dyn"):
                return self.problem(n, f"{name}() works on text, not on {tt}; convert with string(...)")
            return BOOL
        if tt.name not in ("timestamp", "duration", "dyn"):
            return self.problem(n, f"{name}() works on a timestamp or a duration, not on {tt}")
        return INT

    def macro(self, n: Call, target: Node, scope: dict[str, CelType]) -> CelType:
        tt = self.visit(target, scope)
        if tt.name not in ("list", "map", "dyn"):
            return self.problem(n, f"{n.name}() works on a list or a map, not on {tt}")
        want = 3 if n.name == "map" and len(n.args) == 3 else 2
        if len(n.args) != want or not isinstance(n.args[0], Ident):
            return self.problem(n, f"{n.name}() takes a variable name and an expression: "
                                   f"{n.name}(x, <expression over x>)")
        var = n.args[0].name
        inner = {**scope, var: (tt.elem or DYN) if tt.name == "list" else DYN}
        types = [self.visit(a, inner) for a in n.args[1:]]
        predicates = types[:-1] if n.name == "map" else types
        for arg, typ in zip(n.args[1:], predicates, strict=False):
            if typ.name not in ("bool", "dyn"):
                self.problem(arg, f"the condition of {n.name}() must be true or false, not {typ}")
        if n.name == "map":
            return list_of(types[-1])
        if n.name == "filter":
            return tt if tt.name == "list" else list_of(DYN)
        return BOOL


