"""Printing a CEL syntax tree back to CEL text (see :mod:`.cel_syntax` for why we parse CEL at all).

The printer is what turns ``record.数量`` into ``record["数量"]`` and a checked
decimal expression into calls of the exact functions (:mod:`.cel_types`
passes those as replacements). Everything is fully parenthesised, so the
meaning never depends on the printer knowing CEL's precedence; a property
test checks that printing keeps the meaning of random expressions.
"""

from __future__ import annotations

from .cel_syntax import (
    ASCII_IDENT,
    Binary,
    Call,
    Cond,
    Ident,
    Index,
    ListLit,
    Lit,
    MapLit,
    Node,
    Select,
    Unary,
    is_cel_identifier,
)

__all__ = ["ascii_name", "children", "needs_rewrite", "quote", "unparse"]


def quote(text: str) -> str:
    """A CEL string literal for ``text``."""
    out = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{out}"'


def unparse(node: Node, replace: dict[int, str] | None = None) -> str:
    """CEL text for a tree, fully parenthesised, so precedence never depends on the printer.

    ``replace`` maps ``id(node)`` to text printed instead of that node (used to
    print rewritten subtrees). Field names that are not CEL identifiers
    (``数量``, ``in``) are printed as ``x["数量"]``, and ``has(x.数量)`` as
    ``"数量" in x`` because ``has()`` only takes a dotted field.
    """
    subst = replace or {}

    def out(n: Node) -> str:
        hit = subst.get(id(n))
        if hit is not None:
            return hit
        if isinstance(n, Lit):
            return n.text
        if isinstance(n, Ident):
            return ("." if n.leading_dot else "") + ascii_name(n.name)
        if isinstance(n, Select):
            if is_cel_identifier(n.field):
                return f"{out(n.operand)}.{n.field}"
            return f"{out(n.operand)}[{quote(n.field)}]"
        if isinstance(n, Index):
            return f"{out(n.operand)}[{out(n.index)}]"
        if isinstance(n, Call):
            if n.name == "has" and n.target is None and len(n.args) == 1 and isinstance(n.args[0], Select) \
                    and not is_cel_identifier(n.args[0].field):
                arg = n.args[0]
                return f"({quote(arg.field)} in {out(arg.operand)})"
            args = ", ".join(out(a) for a in n.args)
            if n.target is not None:
                return f"{out(n.target)}.{n.name}({args})"
            return f"{n.name}({args})"
        if isinstance(n, Unary):
            if n.op == "-" and isinstance(n.operand, Lit) and n.operand.kind in ("int", "double") \
                    and id(n.operand) not in subst:
                return f"-{n.operand.text}"  # -9223372036854775808 is a literal, -(9223372036854775808) is not
            return f"{n.op}({out(n.operand)})"
        if isinstance(n, Binary):
            return f"({out(n.left)} {n.op} {out(n.right)})"
        if isinstance(n, Cond):
            return f"({out(n.cond)} ? {out(n.then)} : {out(n.other)})"
        if isinstance(n, ListLit):
            return "[" + ", ".join(out(i) for i in n.items) + "]"
        if isinstance(n, MapLit):
            return "{" + ", ".join(f"{out(k)}: {out(v)}" for k, v in n.entries) + "}"
        raise TypeError(f"cannot print {type(n).__name__}")

    return out(node)


def ascii_name(name: str) -> str:
    """A loop variable plain CEL can spell: ``行`` becomes ``_u_e8a18c`` (its UTF-8 in hex)."""
    if ASCII_IDENT.fullmatch(name):
        return name
    return "_u_" + name.encode("utf-8").hex()


def needs_rewrite(node: Node) -> bool:
    """True when the tree has a name plain CEL cannot spell (``record.数量``, a loop variable ``行``)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Select) and not is_cel_identifier(n.field):
            return True
        if isinstance(n, Ident) and not ASCII_IDENT.fullmatch(n.name):
            return True
        stack.extend(children(n))
    return False


def children(n: Node) -> list[Node]:
    if isinstance(n, Select):
        return [n.operand]
    if isinstance(n, Index):
        return [n.operand, n.index]
    if isinstance(n, Call):
        return ([n.target] if n.target is not None else []) + list(n.args)
    if isinstance(n, Unary):
        return [n.operand]
    if isinstance(n, Binary):
        return [n.left, n.right]
    if isinstance(n, Cond):
        return [n.cond, n.then, n.other]
    if isinstance(n, ListLit):
        return list(n.items)
    if isinstance(n, MapLit):
        return [x for kv in n.entries for x in kv]
    return []
