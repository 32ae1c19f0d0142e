"""The CEL checker: the type of every node, operator rules, and :func:`check`, the entry point.

See :mod:`.cel_types` for the decimal syntax these rules implement.
"""

from __future__ import annotations

from .cel_calls import CallRules
from .cel_print import needs_rewrite, unparse
from .cel_syntax import Binary, Call, Cond, Ident, Index, ListLit, Lit, MapLit, Node, Select, Unary
from .cel_types import (
    ARITHMETIC,
    BOOL,
    DECIMAL,
    DYN,
    LITERAL_TYPES,
    MAP,
    NUMBERS,
    OP_FUNCTION,
    ORDERING,
    TYPE,
    TYPE_NAMES,
    CelType,
    Checked,
    State,
    double_literal,
    family,
    list_of,
    string_value,
)

__all__ = ["check"]


def check(tree: Node, variables: frozenset[str] = frozenset({"record", "item"})) -> Checked:
    """Type the tree, collect problems and print the decimal rewrite if one is needed."""
    state = State()
    typ = Checker(state, variables).visit(tree, {})
    code = None
    if state.subst or needs_rewrite(tree):
        code = unparse(tree, state.subst)
    members = {k: (frozenset(v) if v is not None else None) for k, v in state.members.items()}
    return Checked(typ, code, state.problems, state.functions, members)



class Checker(CallRules):
    """Types every node; operators here, calls in :class:`CallRules`."""

    def visit(self, n: Node, scope: dict[str, CelType]) -> CelType:
        if isinstance(n, Lit):
            return LITERAL_TYPES[n.kind]
        if isinstance(n, Ident):
            return self.ident(n, scope)
        if isinstance(n, Select):
            return self.select(n, scope)
        if isinstance(n, Index):
            return self.index(n, scope)
        if isinstance(n, Call):
            return self.call(n, scope)
        if isinstance(n, Unary):
            return self.unary(n, scope)
        if isinstance(n, Binary):
            return self.binary(n, scope)
        if isinstance(n, Cond):
            return self.cond(n, scope)
        if isinstance(n, ListLit):
            return self.list_lit(n, scope)
        if isinstance(n, MapLit):
            for k, v in n.entries:
                self.visit(k, scope)
                self.visit(v, scope)
            return MAP
        return DYN

    def ident(self, n: Ident, scope: dict[str, CelType]) -> CelType:
        if n.name in scope:
            return scope[n.name]
        if n.name in self.variables:
            self.s.members[n.name] = None  # the whole record is used: no pruning
            return DYN
        if n.name in TYPE_NAMES:
            return TYPE
        return self.problem(n, f"unknown variable {n.name!r} (use record.<field> or item.<field>)")

    def select(self, n: Select, scope: dict[str, CelType]) -> CelType:
        if self.member(n.operand, n.field, scope):
            return DYN
        operand = self.visit(n.operand, scope)
        if operand.name not in ("dyn", "map"):
            return self.problem(n, f"cannot read field {n.field!r} of {operand}")
        return DYN

    def index(self, n: Index, scope: dict[str, CelType]) -> CelType:
        if not self.member(n.operand, string_value(n.index), scope):
            operand = self.visit(n.operand, scope)
        else:
            operand = DYN
        key = self.visit(n.index, scope)
        if operand.name == "list":
            if key.name not in ("int", "uint", "dyn"):
                self.problem(n.index, f"a list index must be a whole number, not {key}")
            return operand.elem or DYN
        if operand.name not in ("dyn", "map"):
            return self.problem(n, f"cannot index {operand}")
        return DYN

    # -- operators ------------------------------------------------------------------------

    def unary(self, n: Unary, scope: dict[str, CelType]) -> CelType:
        typ = self.visit(n.operand, scope)
        if n.op == "!":
            if typ.name not in ("bool", "dyn"):
                return self.problem(n, f"'!' needs true or false, not {typ}")
            return BOOL
        if typ.name == "decimal":
            self.s.subst[id(n)] = f"{self.use('_dec_neg')}({self.text(n.operand)})"
            return DECIMAL
        if typ.name not in ("int", "double", "dyn"):
            return self.problem(n, f"cannot negate {typ}")
        return typ

    def decimal_operands(self, n: Binary, lt: CelType, rt: CelType) -> bool:
        """Whether ``n`` computes in decimals (see the module doc)."""
        if "decimal" in (lt.name, rt.name):
            return True
        if n.op in ("==", "!=", "in"):
            return False
        left_lit, right_lit = double_literal(n.left), double_literal(n.right)
        if left_lit and (right_lit or rt.name in ("dyn", "int")):
            return True
        return right_lit and lt.name in ("dyn", "int")

    def binary(self, n: Binary, scope: dict[str, CelType]) -> CelType:
        op = n.op
        lt, rt = self.visit(n.left, scope), self.visit(n.right, scope)
        if op in ("&&", "||"):
            for side, typ in ((n.left, lt), (n.right, rt)):
                if typ.name not in ("bool", "dyn"):
                    self.problem(side, f"'{op}' needs true or false on both sides, not {typ}")
            return BOOL
        if op == "in":
            if lt.name == "decimal":
                return self.problem(n, "'in' does not work with decimals; compare with == inside exists()")
            if rt.name not in ("list", "map", "dyn"):
                return self.problem(n.right, f"'in' needs a list or a map on the right, not {rt}")
            return BOOL
        if self.decimal_operands(n, lt, rt):
            return self.decimal_binary(n, lt, rt)
        if op in ("==", "!="):
            families = {family(lt), family(rt)}
            if len(families) == 2 and "any" not in families:
                return self.problem(n, f"'{op}' compares {lt} with {rt}: that is never true")
            return BOOL
        if op in ORDERING:
            if family(lt) != family(rt) and "any" not in (family(lt), family(rt)):
                return self.problem(n, f"cannot compare {lt} with {rt} using '{op}'")
            if lt.name in ("list", "map", "null") or rt.name in ("list", "map", "null"):
                return self.problem(n, f"cannot order {lt if lt.name != 'dyn' else rt} with '{op}'")
            return BOOL
        return self.arithmetic(n, lt, rt)

    def arithmetic(self, n: Binary, lt: CelType, rt: CelType) -> CelType:
        op, names = n.op, (lt.name, rt.name)
        if "dyn" in names:
            other = rt if lt.name == "dyn" else lt
            if other.name in ("bool", "null", "map") or (other.name in ("string", "list", "bytes") and op != "+"):
                return self.problem(n, f"cannot use '{op}' with {other}")
            return other if other.name in ("string", "list", "bytes") else DYN
        if lt == rt and lt.name in ("int", "uint", "double"):
            return lt
        if op == "+" and lt.name == rt.name and lt.name in ("string", "bytes", "list"):
            return lt if lt == rt else list_of(DYN)
        if {"timestamp", "duration"} & set(names):
            return DYN
        if lt.name in NUMBERS and rt.name in NUMBERS:
            return self.problem(n, f"CEL does not mix {lt} and {rt} in '{op}': use dec(...) on both for exact "
                                   f"decimals, or convert with {lt.name}(...)/{rt.name}(...)")
        if "string" in names and op == "+":
            return self.problem(n, f"cannot add {lt} and {rt}: convert the number with string(...)")
        return self.problem(n, f"cannot use '{op}' with {lt} and {rt}")

    def decimal_binary(self, n: Binary, lt: CelType, rt: CelType) -> CelType:
        op = n.op
        for side, typ in ((n.left, lt), (n.right, rt)):
            if typ.name not in (*NUMBERS, "dyn"):
                hint = " (write dec(\"...\") for a number in quotes)" if typ.name == "string" else ""
                return self.problem(side, f"decimal '{op}' needs numbers, not {typ}{hint}")
        a, b = self.as_decimal(n.left, lt), self.as_decimal(n.right, rt)
        if op in ARITHMETIC:
            self.s.subst[id(n)] = f"{self.use(OP_FUNCTION[op])}({a}, {b})"
            return DECIMAL
        self.s.subst[id(n)] = f"({self.use('_dec_cmp')}({a}, {b}) {op} 0)"
        return BOOL

    def cond(self, n: Cond, scope: dict[str, CelType]) -> CelType:
        ct = self.visit(n.cond, scope)
        if ct.name not in ("bool", "dyn"):
            self.problem(n.cond, f"the condition before '?' must be true or false, not {ct}")
        tt, ot = self.visit(n.then, scope), self.visit(n.other, scope)
        if "decimal" in (tt.name, ot.name):
            for side, typ in ((n.then, tt), (n.other, ot)):
                if typ.name not in (*NUMBERS, "dyn"):
                    return self.problem(side, f"one branch is a decimal, the other {typ}")
                if typ.name != "decimal":
                    self.s.subst[id(side)] = f"{self.use('dec')}({self.as_decimal(side, typ)})"
            return DECIMAL
        return tt if tt == ot else DYN

    def list_lit(self, n: ListLit, scope: dict[str, CelType]) -> CelType:
        types = [self.visit(i, scope) for i in n.items]
        if any(t.name == "decimal" for t in types):
            for item, typ in zip(n.items, types, strict=True):
                if typ.name not in (*NUMBERS, "dyn"):
                    return self.problem(item, f"a list of decimals cannot hold {typ}")
                if typ.name != "decimal":
                    self.s.subst[id(item)] = f"{self.use('dec')}({self.as_decimal(item, typ)})"
            return list_of(DECIMAL)
        if types and all(t == types[0] for t in types):
            return list_of(types[0])
        return list_of(DYN)

    # -- calls ----------------------------------------------------------------------------

