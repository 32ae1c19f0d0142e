"""Lookup tables for the ``lookup(table)`` transform (DESIGN §4).

A table is one file in the lookups directory (``mappings/lookups``):

- ``<table>.yaml`` (or ``.yml``): either a flat mapping ``key: value`` or a list
  of ``{key: ..., value: ...}`` entries (handy when keys need comments or are
  long). Every scalar is taken *as written*: the file is read without YAML's
  type guessing, so ``NO: Norway`` keeps the key ``NO`` (not ``false``),
  ``010: x`` keeps ``010`` (not the octal number 8) and ``1.50`` stays
  ``1.50``. An unquoted empty value or ``~``/``null`` is refused (write ``''``
  if the empty text is meant); nested lists/objects, merge keys and duplicate
  keys are refused with file:line:col.
- ``<table>.csv``: UTF-8 (a BOM, as Excel writes it, is fine) with a header row
  naming the columns ``key`` and ``value`` (any order, case-insensitive; other
  columns, e.g. a comment column, are ignored). Cells are taken as written.

Tables are read lazily, once, when a mapping that uses them is compiled; the
per-record cost is one dict lookup. There is no ``extends``/include mechanism,
so the only possible cycle is a symbolic-link loop, which is reported like any
other unreadable file.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
from pathlib import Path

import yaml

from syncbus.errors import Location
from syncbus.mapping.transforms import LookupMiss, TransformSpecError

__all__ = ["LookupMiss", "LookupSpecError", "LookupTables"]

SUFFIXES = (".yaml", ".yml", ".csv")
MAX_FILE_BYTES = 64 * 1024 * 1024
_TABLE_NAME_RE = re.compile(r"\w[\w.-]*")
_YAML_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


class LookupSpecError(TransformSpecError):
    """A lookup table is missing or invalid; ``location`` points into the table file when known."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.location = location
        super().__init__(f"{location}: {message}" if location else message)


class LookupTables:
    """The tables of one lookups directory, each loaded on first use and then kept.

    Create a new instance to pick up edited files (a mapping reload does).
    """

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._tables: dict[str, dict[str, str]] = {}
        self.sources: dict[str, Path] = {}  # table name -> the file it was read from

    def get(self, name: str) -> dict[str, str]:
        """The table ``name`` as key -> value. Do not modify it: compiled mappings share it."""
        table = self._tables.get(name)
        if table is None:
            path = self._find(name)
            table = _load(path)
            self._tables[name] = table
            self.sources[name] = path
        return table

    def names(self) -> list[str]:
        """Tables present in the directory (for validation and the generated catalogue)."""
        try:
            entries = os.listdir(self.directory)
        except OSError:
            return []
        return sorted({e.rsplit(".", 1)[0] for e in entries if e.endswith(SUFFIXES) and e[0] != "."})

    def _find(self, name: str) -> Path:
        if not _TABLE_NAME_RE.fullmatch(name):
            raise LookupSpecError(
                f"invalid lookup table name {name!r}: use letters, digits, '_', '-' and '.' (no paths)"
            )
        candidates = [self.directory / f"{name}{suffix}" for suffix in SUFFIXES]
        # lexists: a dangling or looping symlink is "there" and gets a precise error when read.
        found = [p for p in candidates if os.path.lexists(p)]
        if not found:
            where = str(candidates[0]) + ", " + ", ".join(SUFFIXES[1:])
            missing_dir = "" if self.directory.is_dir() else f" (directory {self.directory} does not exist)"
            raise LookupSpecError(f"lookup table {name!r} not found: looked for {where}{missing_dir}")
        if len(found) > 1:
            names = " and ".join(p.name for p in found)
            raise LookupSpecError(f"lookup table {name!r} is ambiguous: {names} in {self.directory}")
        return found[0]


def _load(path: Path) -> dict[str, str]:
    raw = _read(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise LookupSpecError(
            f"not valid UTF-8 (byte {exc.start}); save the table as UTF-8 (Excel: 'CSV UTF-8')",
            Location(str(path), line, 1),
        ) from None
    if path.suffix == ".csv":
        return _parse_csv(text, str(path))
    return _parse_yaml(text, str(path))


def _read(path: Path) -> bytes:
    try:
        info = path.stat()  # follows links: a loop raises ELOOP here
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise LookupSpecError(f"cannot read lookup table: it is {what}", Location(str(path)))
        if info.st_size > MAX_FILE_BYTES:
            raise LookupSpecError(
                f"lookup table is {info.st_size} bytes; the limit is {MAX_FILE_BYTES}", Location(str(path))
            )
        return path.read_bytes()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            reason = "symbolic link loop"
        elif exc.errno == errno.ENOENT:
            reason = "dangling symbolic link" if path.is_symlink() else "file disappeared"
        else:
            reason = exc.strerror or str(exc)
        raise LookupSpecError(f"cannot read lookup table: {reason}", Location(str(path))) from None


# --------------------------------------------------------------------------- YAML


def _where(filename: str, node: yaml.Node) -> Location:
    return Location(filename, node.start_mark.line + 1, node.start_mark.column + 1)


def _parse_yaml(text: str, filename: str) -> dict[str, str]:
    # BaseLoader: no implicit typing, every scalar is the text as written.
    loader = yaml.BaseLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(filename, mark.line + 1, mark.column + 1) if mark else Location(filename)
        problem = exc.problem or exc.context or "syntax error"
        if problem.startswith("but ") and exc.context:  # "but found another document"
            problem = f"{exc.context}, {problem}"
        raise LookupSpecError(f"invalid YAML: {problem}", where) from None
    except yaml.YAMLError as exc:
        raise LookupSpecError(f"invalid YAML: {exc}", Location(filename)) from None
    finally:
        loader.dispose()
    if root is None:
        raise LookupSpecError(
            "empty lookup table file: expected a mapping 'key: value' or a list of {key, value}",
            Location(filename),
        )
    table: dict[str, str] = {}
    seen: dict[str, yaml.Node] = {}
    if isinstance(root, yaml.MappingNode):
        for knode, vnode in root.value:
            _add(table, seen, filename, knode, vnode)
        return table
    if isinstance(root, yaml.SequenceNode):
        for n, item in enumerate(root.value, 1):
            if not isinstance(item, yaml.MappingNode):
                raise LookupSpecError(f"entry {n}: expected {{key: ..., value: ...}}", _where(filename, item))
            fields = {_scalar(filename, k, "a field name"): (k, v) for k, v in item.value}
            if set(fields) != {"key", "value"}:
                got = ", ".join(sorted(fields)) or "nothing"
                raise LookupSpecError(
                    f"entry {n}: expected exactly the fields key and value, got {got}", _where(filename, item)
                )
            _add(table, seen, filename, fields["key"][1], fields["value"][1])
        return table
    raise LookupSpecError(
        "expected a mapping 'key: value' or a list of {key, value} entries", _where(filename, root)
    )


def _add(table: dict[str, str], seen: dict[str, yaml.Node], filename: str,
         knode: yaml.Node, vnode: yaml.Node) -> None:
    key = _scalar(filename, knode, "a key")
    if key == "<<" and isinstance(knode, yaml.ScalarNode) and knode.style is None:
        raise LookupSpecError("merge keys (<<) are not supported in lookup tables", _where(filename, knode))
    if key in seen:
        first = seen[key].start_mark.line + 1
        raise LookupSpecError(f"duplicate key {key!r} (first at line {first})", _where(filename, knode))
    seen[key] = knode
    table[key] = _scalar(filename, vnode, f"the value of {key!r}")


def _scalar(filename: str, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "an object"
        raise LookupSpecError(f"{what} must be text, got {kind}", _where(filename, node))
    if node.style is None and node.value in _YAML_NULLS:
        raise LookupSpecError(
            f"{what} is empty/null; quote it ('') if the empty text is meant", _where(filename, node)
        )
    value: str = node.value
    return value


# --------------------------------------------------------------------------- CSV


def _parse_csv(text: str, filename: str) -> dict[str, str]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    table: dict[str, str] = {}
    first_line: dict[str, int] = {}
    key_col = value_col = width = -1
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if width < 0:
                header = [cell.strip().lower() for cell in row]
                if header.count("key") != 1 or header.count("value") != 1:
                    raise LookupSpecError(
                        f"the header must name 'key' and 'value' once each, got {','.join(row)!r}",
                        Location(filename, line, 1),
                    )
                key_col, value_col, width = header.index("key"), header.index("value"), len(header)
                continue
            if len(row) != width:
                raise LookupSpecError(
                    f"expected {width} columns like the header, got {len(row)}", Location(filename, line, 1)
                )
            key = row[key_col]
            if key in table:
                raise LookupSpecError(
                    f"duplicate key {key!r} (first at line {first_line[key]})", Location(filename, line, 1)
                )
            table[key] = row[value_col]
            first_line[key] = line
    except csv.Error as exc:
        raise LookupSpecError(f"invalid CSV: {exc}", Location(filename, reader.line_num or 1, 1)) from None
    if width < 0:
        raise LookupSpecError("empty lookup table file: expected a header row 'key,value'",
                              Location(filename))
    return table
