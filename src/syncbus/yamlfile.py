"""YAML loading that remembers where every value came from.

Pydantic tells us *which* key is wrong (a ``loc`` tuple); people need to know
*where* it is. We compose the YAML node tree ourselves so every path in the
document maps to a line and column, refuse duplicate keys (PyYAML silently
keeps the last one, which hides typos) and refuse alias bombs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, ConfigErrors, Location

MAX_NODES = 200_000  # a mapping file has hundreds; this only stops alias bombs
MAX_FILE_BYTES = 4 * 1024 * 1024

Loc = tuple[Any, ...]


@dataclass
class YamlDocument:
    """Parsed data plus the position of every value and every key in it."""

    path: str
    data: Any
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def location(self, loc: Sequence[Any]) -> Location:
        """The closest known position for a path (the longest known prefix)."""
        loc = tuple(loc)
        while True:
            pos = self.keys.get(loc) or self.values.get(loc)
            if pos is not None:
                return Location(self.path, pos[0], pos[1])
            if not loc:
                return Location(self.path, 1, 1)
            loc = loc[:-1]

    def error(self, loc: Sequence[Any], message: str) -> ConfigError:
        return ConfigError(message, self.location(loc))


def read_text(path: Path, what: str = "file") -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(f"{what} is {size} bytes; the limit is {MAX_FILE_BYTES}", Location(str(path)))
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} not found", Location(str(path))) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not valid UTF-8 (byte {exc.start})", Location(str(path))) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", Location(str(path))) from None


def load_yaml_file(path: Path) -> YamlDocument:
    return parse_yaml(read_text(path, "YAML file"), str(path))


def parse_yaml(text: str, filename: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(f"invalid YAML: {problem}", Location(filename, line, col)) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {exc}", Location(filename)) from None
        doc = YamlDocument(filename, None)
        if node is not None:
            doc.data = _Walker(loader, doc).walk(node, ())
        return doc
    finally:
        loader.dispose()


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.count = 0
        self.stack: set[int] = set()

    def walk(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._err(node, f"document has more than {MAX_NODES} values (alias expansion?)")
        self.doc.values.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            if id(node) in self.stack:
                raise self._err(node, "recursive alias")
            self.stack.add(id(node))
            try:
                self.loader.flatten_mapping(node)
                out: dict[Any, Any] = {}
                for knode, vnode in node.value:
                    key = self._scalar(knode)
                    if isinstance(key, (list, dict)):
                        raise self._err(knode, "a key must be a plain value")
                    if key in out:
                        raise self._err(knode, f"duplicate key {key!r}")
                    self.doc.keys[(*loc, key)] = (knode.start_mark.line + 1, knode.start_mark.column + 1)
                    out[key] = self.walk(vnode, (*loc, key))
                return out
            finally:
                self.stack.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            if id(node) in self.stack:
                raise self._err(node, "recursive alias")
            self.stack.add(id(node))
            try:
                return [self.walk(item, (*loc, i)) for i, item in enumerate(node.value)]
            finally:
                self.stack.discard(id(node))
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self._err(node, f"invalid value: {exc.problem}") from None

    def _err(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(message, Location(self.doc.path, node.start_mark.line + 1, node.start_mark.column + 1))


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = err.get("loc", ())
    name = loc[-1] if loc else ""
    if kind == "extra_forbidden":
        return f"unknown key {name!r}"
    if kind == "missing":
        return f"missing required key {name!r}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{_dotted(loc)}: {msg}" if loc else msg


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_errors(doc: YamlDocument, exc: ValidationError, prefix: Loc = ()) -> ConfigErrors:
    """Turn pydantic's errors into file:line:col errors, one per problem."""
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = (*prefix, *(p for p in err["loc"] if not _is_union_tag(p)))
        e = doc.error(loc, _describe({**err, "loc": loc}))
        if str(e) not in seen:
            seen.add(str(e))
            errors.append(e)
    return ConfigErrors(errors)


# Tags of the discriminated unions in our models (see mapping/spec.py). pydantic puts
# them into ``loc``; they are not keys of the document, so they are dropped.
UNION_TAGS = frozenset({"<path>", "<spec>", "<list>", "<one>"})


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and part in UNION_TAGS
