"""CEL source text: tokens and a syntax tree (:mod:`.cel_print` prints a tree back to CEL).

Why we parse CEL ourselves when the ``cel`` package compiles it: the package
gives us a black box, and three things need to see inside an expression
before it runs:

* **names** — ``record.数量`` is not valid CEL (identifiers are ASCII), but it is
  how people write Chinese field names. Rewriting it to ``record["数量"]`` must
  know where string literals and comments are, so it is done on the parsed
  tree, never with a regular expression over the text;
* **exact money** — ``dec(record.price) * 1.13`` must not reach CEL's binary
  ``double`` arithmetic, so decimal operations are rewritten into calls of
  exact Python functions (see :mod:`.cel_types`);
* **load-time checks** — type errors that can be seen in the text
  (``"a" * 2``, an unknown function) are reported by ``syncbus validate``
  with the mapping file's line, instead of dead-lettering every record.

The grammar is CEL's (https://github.com/google/cel-spec, ``langdef.md``)
minus message construction (``Foo{a: 1}``), which mapping files never need;
an expression this parser does not understand raises :class:`CelSyntaxError`
and the caller decides whether the ``cel`` package accepts it anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "ASCII_IDENT", "Binary", "Call", "CelSyntaxError", "Cond", "Ident", "Index", "ListLit", "Lit", "MapLit", "Node",
    "Select", "Token", "Unary", "is_cel_identifier", "parse", "tokenize",
]


class CelSyntaxError(ValueError):
    """The text is not an expression this parser understands; ``pos`` is a 0-based offset."""

    def __init__(self, message: str, pos: int) -> None:
        self.pos = pos
        super().__init__(message)


# --------------------------------------------------------------------------- tokens

RESERVED = frozenset({
    "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
    "package", "namespace", "return", "var", "void", "while", "in", "true", "false", "null",
})
ASCII_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")

_TOKEN = re.compile(
    r"""
      (?P<ws>[ \t\r\n\f]+|//[^\n]*)
    | (?P<raw>(?:[rR][bB]?|[bB][rR])(?:'''[\s\S]*?'''|\"\"\"[\s\S]*?\"\"\"|'[^'\n]*'|"[^"\n]*"))
    | (?P<str>[bB]?(?:'''(?:\\[\s\S]|[^\\])*?'''|\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"
                   |'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
    | (?P<double>(?:[0-9]+\.[0-9]+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)
    | (?P<uint>(?:0[xX][0-9a-fA-F]+|[0-9]+)[uU])
    | (?P<int>0[xX][0-9a-fA-F]+|[0-9]+)
    | (?P<ident>[^\W\d]\w*)
    | (?P<op>\|\||&&|<=|>=|==|!=|[-+*/%!<>?:.,()\[\]{}])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # ident, int, uint, double, string, bytes, op, eof
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def tokenize(source: str) -> list[Token]:
    """Split CEL text into tokens (comments and blanks dropped), ending with an ``eof`` token."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN.match(source, pos)
        if m is None:
            ch = source[pos]
            what = "unterminated string" if ch in "'\"" else f"unexpected character {ch!r}"
            raise CelSyntaxError(f"{what} at column {pos + 1}", pos)
        kind = m.lastgroup or ""
        text = m.group()
        if kind in ("raw", "str"):
            kind = "bytes" if text[0] in "bB" or text[:2] in ("rb", "rB", "Rb", "RB") else "string"
        if kind != "ws":
            if kind in ("int", "uint", "double") and m.end() < len(source) and _glued(source, m.end()):
                raise CelSyntaxError(f"bad number {source[pos:m.end() + 1]!r} at column {pos + 1}", pos)
            tokens.append(Token(kind, text, pos))
        pos = m.end()
    tokens.append(Token("eof", "", len(source)))
    return tokens


def _glued(source: str, pos: int) -> bool:
    ch = source[pos]
    return ch.isalnum() or ch == "_"


def is_cel_identifier(name: str) -> bool:
    """True when ``name`` can be written after a dot in plain CEL (ASCII and not reserved)."""
    return ASCII_IDENT.fullmatch(name) is not None and name not in RESERVED


# --------------------------------------------------------------------------- tree


@dataclass(eq=False, slots=True)
class Node:
    start: int
    end: int


@dataclass(eq=False, slots=True)
class Lit(Node):
    kind: str  # int, uint, double, string, bytes, bool, null
    text: str  # as written


@dataclass(eq=False, slots=True)
class Ident(Node):
    name: str
    leading_dot: bool = False


@dataclass(eq=False, slots=True)
class Select(Node):
    operand: Node
    field: str


@dataclass(eq=False, slots=True)
class Index(Node):
    operand: Node
    index: Node


@dataclass(eq=False, slots=True)
class Call(Node):
    name: str
    args: list[Node]
    target: Node | None = None  # x.f(args): receiver-style call or macro


@dataclass(eq=False, slots=True)
class Unary(Node):
    op: str  # "!" or "-"
    operand: Node


@dataclass(eq=False, slots=True)
class Binary(Node):
    op: str
    left: Node
    right: Node


@dataclass(eq=False, slots=True)
class Cond(Node):
    cond: Node
    then: Node
    other: Node


@dataclass(eq=False, slots=True)
class ListLit(Node):
    items: list[Node] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class MapLit(Node):
    entries: list[tuple[Node, Node]] = field(default_factory=list)


# --------------------------------------------------------------------------- parser

_RELATIONS = frozenset({"<", "<=", ">", ">=", "==", "!=", "in"})
MAX_DEPTH = 200  # CEL implementations limit nesting too; this keeps Python's stack safe


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.tokens[self.i]
        return tok.text == text and tok.kind in ("op", "ident")

    def expect(self, text: str) -> Token:
        if not self.at(text):
            tok = self.tok
            found = repr(tok.text) if tok.kind != "eof" else "the end"
            raise CelSyntaxError(f"expected {text!r} at column {tok.start + 1}, found {found}", tok.start)
        return self.next()

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CelSyntaxError("expression nested too deeply", self.tok.start)
        try:
            cond = self.binary(0)
            if not self.at("?"):
                return cond
            self.next()
            then = self.binary(0)
            self.expect(":")
            other = self.expr()
            return Cond(cond.start, other.end, cond, then, other)
        finally:
            self.depth -= 1

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}), frozenset({"&&"}), _RELATIONS, frozenset({"+", "-"}), frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        ops = self._LEVELS[level]
        left = self.binary(level + 1)
        while self.tok.text in ops and self.tok.kind in ("op", "ident"):
            op = self.next().text
            right = self.binary(level + 1)
            left = Binary(left.start, right.end, op, left, right)
        return left

    def unary(self) -> Node:
        if self.at("!") or self.at("-"):
            tok = self.next()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CelSyntaxError("expression nested too deeply", tok.start)
            try:
                operand = self.unary()
            finally:
                self.depth -= 1
            return Unary(tok.start, operand.end, tok.text, operand)
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.at("."):
                self.next()
                name = self.next()
                if name.kind != "ident":
                    raise CelSyntaxError(f"expected a field name after '.' at column {name.start + 1}", name.start)
                if self.at("("):
                    args, end = self.arguments()
                    node = Call(node.start, end, name.text, args, node)
                else:
                    node = Select(node.start, name.end, node, name.text)
            elif self.at("["):
                self.next()
                index = self.expr()
                end = self.expect("]").end
                node = Index(node.start, end, node, index)
            elif self.at("{"):
                raise CelSyntaxError("message construction is not supported", self.tok.start)
            else:
                return node

    def arguments(self) -> tuple[list[Node], int]:
        self.expect("(")
        args: list[Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.next()
                args.append(self.expr())
        return args, self.expect(")").end

    def primary(self) -> Node:
        tok = self.next()
        kind = tok.kind
        if kind in ("int", "uint", "double", "string", "bytes"):
            return Lit(tok.start, tok.end, kind, tok.text)
        if kind == "ident" or (tok.text == "." and self.tok.kind == "ident"):
            dot = tok.text == "."
            if dot:
                tok = self.next()
            if tok.text in ("true", "false"):
                return Lit(tok.start, tok.end, "bool", tok.text)
            if tok.text == "null":
                return Lit(tok.start, tok.end, "null", tok.text)
            if tok.text in RESERVED:
                raise CelSyntaxError(f"{tok.text!r} is a reserved word (column {tok.start + 1})", tok.start)
            if self.at("("):
                args, end = self.arguments()
                return Call(tok.start, end, tok.text, args)
            return Ident(tok.start, tok.end, tok.text, dot)
        if tok.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if tok.text == "[":
            items: list[Node] = []
            while not self.at("]"):
                items.append(self.expr())
                if not self.at("]"):
                    self.expect(",")
            end = self.expect("]").end
            return ListLit(tok.start, end, items)
        if tok.text == "{":
            entries: list[tuple[Node, Node]] = []
            while not self.at("}"):
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if not self.at("}"):
                    self.expect(",")
            end = self.expect("}").end
            return MapLit(tok.start, end, entries)
        found = repr(tok.text) if kind != "eof" else "the end"
        raise CelSyntaxError(f"unexpected {found} at column {tok.start + 1}", tok.start)


def parse(source: str) -> Node:
    """The syntax tree of a CEL expression; CelSyntaxError if it is not one."""
    parser = _Parser(tokenize(source))
    node = parser.expr()
    if parser.tok.kind != "eof":
        tok = parser.tok
        raise CelSyntaxError(f"unexpected {tok.text!r} at column {tok.start + 1}", tok.start)
    return node
