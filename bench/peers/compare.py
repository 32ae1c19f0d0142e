"""Compare the XML documents that two tools wrote for the same corpus, as trees.

A stream (what a tool wrote to stdout) is split into documents at each XML
declaration (``<?xml ...?>``); a stream without declarations is one document
per non-empty line. Each document is parsed (expat, via ElementTree) and
compared with its counterpart element by element, in order:

* the tag, the attributes (as a set of name/value pairs: their order and the
  quotes used do not matter), the text, and the children in document order
  (the order of IDoc segments and fields does matter);
* text is compared exactly after parsing, so ``&#34;`` and ``&quot;`` and a
  literal ``"`` are the same, and an element written ``<A/>`` equals ``<A></A>``;
  text that is only whitespace between elements (indentation) is ignored.

Documents are paired by their record key (the text of the first ``VBELN``), so
order does not matter: Benthos and Camel map on several threads. Every
difference is reported with the document number, its path
(``/ORDERS05/IDOC/E1EDP01[2]/MENGE``) and both values.

    python bench/peers/compare.py expected.xml actual.xml [--names syncbus,benthos]
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

_DECLARATION = re.compile(rb"<\?xml[^>]*\?>")


@dataclass(frozen=True)
class Difference:
    document: int  # 1-based
    path: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"document {self.document} {self.path}: expected {self.expected!r}, got {self.actual!r}"


def split_documents(data: bytes) -> list[bytes]:
    """The documents of a stream: split at XML declarations, else one per non-empty line."""
    if _DECLARATION.search(data):
        parts = _DECLARATION.split(data)
        if parts and parts[0].strip():
            raise ValueError(f"text before the first XML declaration: {parts[0][:80]!r}")
        return [p.strip() for p in parts[1:]]
    return [line.strip() for line in data.splitlines() if line.strip()]


def _text(value: str | None) -> str:
    return value if value is not None and value.strip() else ""


def _label(el: ET.Element, index: int, count: int) -> str:
    return f"{el.tag}[{index}]" if count > 1 else el.tag


def compare_elements(a: ET.Element, b: ET.Element, path: str, doc: int, out: list[Difference]) -> None:
    if a.tag != b.tag:
        out.append(Difference(doc, path, f"<{a.tag}>", f"<{b.tag}>"))
        return
    if a.attrib != b.attrib:
        for name in sorted(set(a.attrib) | set(b.attrib)):
            if a.attrib.get(name) != b.attrib.get(name):
                out.append(Difference(doc, f"{path}/@{name}", a.attrib.get(name, "(absent)"),
                                      b.attrib.get(name, "(absent)")))
    if _text(a.text) != _text(b.text):
        out.append(Difference(doc, path, _text(a.text), _text(b.text)))
    ca, cb = list(a), list(b)
    tags_a = [c.tag for c in ca]
    seen: dict[str, int] = {}
    for i in range(max(len(ca), len(cb))):
        x = ca[i] if i < len(ca) else None
        y = cb[i] if i < len(cb) else None
        ref = x if x is not None else y
        assert ref is not None
        seen[ref.tag] = seen.get(ref.tag, 0) + 1
        child = f"{path}/{_label(ref, seen[ref.tag], tags_a.count(ref.tag) or 1)}"
        if x is None:
            out.append(Difference(doc, child, "(absent)", _describe(y)))
        elif y is None:
            out.append(Difference(doc, child, _describe(x), "(absent)"))
        else:
            compare_elements(x, y, child, doc, out)
        if x is not None and y is not None and _text(x.tail) != _text(y.tail):
            out.append(Difference(doc, child + "/following-text()", _text(x.tail), _text(y.tail)))


def _describe(el: ET.Element | None) -> str:
    if el is None:
        return "(absent)"
    text = _text(el.text)
    return f"<{el.tag}>{text}" + ("…" if len(el) else "")


def compare_documents(expected: bytes, actual: bytes, doc: int = 1) -> list[Difference]:
    out: list[Difference] = []
    try:
        a = ET.fromstring(expected)
    except ET.ParseError as exc:
        return [Difference(doc, "/", "well-formed XML", f"expected side does not parse: {exc}")]
    try:
        b = ET.fromstring(actual)
    except ET.ParseError as exc:
        return [Difference(doc, "/", "well-formed XML", f"does not parse: {exc}: {actual[:200]!r}")]
    compare_elements(a, b, "/" + a.tag, doc, out)
    return out


def document_key(doc: bytes, key: str) -> str | None:
    """The text of the first ``key`` element of a document (None when it has none or does not parse)."""
    start = doc.find(f"<{key}>".encode())
    if start < 0:
        return None
    end = doc.find(f"</{key}>".encode(), start)
    if end < 0:
        return None
    try:
        return str(ET.fromstring(doc[start:end + len(key) + 3]).text or "")
    except ET.ParseError:
        return None


def compare_streams(expected: bytes, actual: bytes, key: str | None = "VBELN") -> list[Difference]:
    """Every difference between two streams of documents.

    With ``key`` (an element name; the record key, VBELN, by default) documents
    are paired by that element's text, so a tool that maps on several threads
    and writes in another order still compares; documents are numbered as the
    expected stream has them. Documents only one side has are differences too.
    Without ``key`` (or when a side has no or repeated keys) they pair by position.
    """
    docs_a, docs_b = split_documents(expected), split_documents(actual)
    out: list[Difference] = []
    keys_a = [document_key(d, key) for d in docs_a] if key else []
    keys_b = [document_key(d, key) for d in docs_b] if key else []
    keyed = bool(key) and None not in keys_a and len(set(keys_a)) == len(keys_a)
    if keyed:
        by_key: dict[str, bytes] = {}
        for k, d in zip(keys_b, docs_b, strict=True):
            if k is None:
                out.append(Difference(0, f"(a document without <{key}>)", "(none)", d[:200].decode("utf-8", "replace")))
            elif k in by_key:
                out.append(Difference(0, f"(<{key}>{k} written twice)", "once", "twice"))
            else:
                by_key[k] = d
        for n, (k, x) in enumerate(zip(keys_a, docs_a, strict=True), 1):
            assert k is not None
            y = by_key.pop(k, None)
            if y is None:
                out.append(Difference(n, f"(<{key}>{k})", "a document", "(absent)"))
            elif x != y:  # identical bytes are identical trees
                out.extend(compare_documents(x, y, n))
        for k in by_key:
            out.append(Difference(0, f"(<{key}>{k})", "(absent)", "a document"))
        return out
    if len(docs_a) != len(docs_b):
        out.append(Difference(0, "(number of documents)", str(len(docs_a)), str(len(docs_b))))
    for n, (x, y) in enumerate(zip(docs_a, docs_b, strict=False), 1):
        if x != y:
            out.extend(compare_documents(x, y, n))
    return out


def report(differences: list[Difference], expected_name: str, actual_name: str, limit: int = 20) -> str:
    if not differences:
        return f"{actual_name}: output equals {expected_name}'s"
    lines = [f"{actual_name}: {len(differences)} difference(s) from {expected_name} "
             f"(expected = {expected_name}, got = {actual_name}):"]
    lines += [f"  {d}" for d in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"  … and {len(differences) - limit} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("expected")
    parser.add_argument("actual")
    parser.add_argument("--names", default="expected,actual")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--key", default="VBELN", help="element pairing the documents; '' pairs by position")
    args = parser.parse_args(argv)
    names = [*args.names.split(","), "expected", "actual"][:2]
    diffs = compare_streams(Path(args.expected).read_bytes(), Path(args.actual).read_bytes(), args.key or None)
    print(report(diffs, names[0], names[1], args.limit))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
