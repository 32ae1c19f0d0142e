"""Reduce the catalogue's HTML to a small set of harmless tags before the console shows it.

The catalogue renders mapping descriptions, changelog reasons and field
rules that people type into YAML files. The catalogue module escapes them
today, but it is being rewritten and the console must not depend on that:
anything outside the allow-list (scripts, styles, event handlers, links to
other schemes, forms) is dropped here, text is re-escaped, and the page's
Content-Security-Policy forbids inline scripts anyway.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset({
    "a", "b", "br", "caption", "code", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol",
    "p", "pre", "section", "small", "span", "strong", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
VOID_TAGS = frozenset({"br", "hr"})
DROP_WITH_CONTENT = frozenset({"script", "style", "template", "iframe", "object", "embed", "svg", "math",
                               "noscript", "textarea", "select", "title", "head"})
ALLOWED_ATTRS = frozenset({"id", "class", "colspan", "rowspan", "href", "title"})
_SAFE_HREF = re.compile(r"^(#[\w.:-]*|https?://[^\s\"'<>]*)$", re.IGNORECASE)
_SAFE_VALUE = re.compile(r"^[\w .:#/-]{0,200}$")


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping += 1
            return
        if self.dropping or tag not in ALLOWED_TAGS:
            return
        kept = []
        for name, value in attrs:
            if name not in ALLOWED_ATTRS or value is None:
                continue
            if name == "href" and not _SAFE_HREF.match(value.strip()):
                continue
            if name != "href" and name != "title" and not _SAFE_VALUE.match(value):
                continue
            kept.append(f' {name}="{html.escape(value, quote=True)}"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID_TAGS:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS:
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping or tag not in self.open:
            return
        while self.open:            # close what was left open inside it, so the output stays balanced
            inner = self.open.pop()
            self.out.append(f"</{inner}>")
            if inner == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def body_of(document: str) -> str:
    """The inside of ``<body>`` when given a whole document, else the text as is."""
    m = re.search(r"<body[^>]*>(.*)</body\s*>", document, re.IGNORECASE | re.DOTALL)
    return m.group(1) if m else document


def sanitize(fragment: str) -> str:
    parser = _Sanitizer()
    parser.feed(body_of(fragment))
    parser.close()
    return parser.result()
