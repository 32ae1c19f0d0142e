"""The catalogue's HTML is reduced to harmless tags before the console shows it."""

from __future__ import annotations

from syncbus.console.sanitize import sanitize


def test_scripts_styles_handlers_and_foreign_links_are_dropped():
    dirty = ("<!doctype html><html><head><title>t</title><style>body{}</style></head><body>"
             "<h1 onclick='x()'>Catalogue</h1><script>alert(1)</script>"
             "<a href='javascript:alert(1)'>bad</a><a href='#orders'>ok</a><a href='https://wiki/x'>wiki</a>"
             "<table><tr><td colspan='2' style='color:red'>a &amp; b &lt;c&gt;</td></tr></table>"
             "<img src=x onerror=alert(1)><iframe src='https://evil'>inner</iframe><p>para</body></html>")
    clean = sanitize(dirty)
    assert "<script" not in clean and "alert(1)</" not in clean and "<style" not in clean and "body{}" not in clean
    assert "onclick" not in clean and "javascript:" not in clean and "<img" not in clean and "inner" not in clean
    assert "<h1>Catalogue</h1>" in clean
    assert '<a>bad</a><a href="#orders">ok</a><a href="https://wiki/x">wiki</a>' in clean
    assert '<td colspan="2">a &amp; b &lt;c&gt;</td>' in clean
    assert clean.endswith("<p>para</p>")


def test_unbalanced_markup_is_closed():
    assert sanitize("<section><p><strong>x</section>") == "<section><p><strong>x</strong></p></section>"
    assert sanitize("</div>text") == "text"
