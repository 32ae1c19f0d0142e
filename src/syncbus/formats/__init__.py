"""Payload codecs: JSON, XML (xmltodict's dict model) and CSV.

A codec is configured once (constructor options) and then used per record,
from any task or thread. Every decode problem is a
:class:`syncbus.errors.DecodeError` whose message says what and where (line and
column, or byte offset); every encode problem an
:class:`syncbus.errors.EncodeError` naming the key or field. Decoders check the
input size before parsing and cap nesting, so hostile input fails fast and
small. See each module for the exact model and limits.
"""

from __future__ import annotations

from typing import Any, Final, Protocol, runtime_checkable

from syncbus.errors import ConfigError, SyncbusError
from syncbus.formats.csv import CsvCodec
from syncbus.formats.json import JsonCodec
from syncbus.formats.limits import (
    DEFAULT_CSV_MAX_BYTES,
    DEFAULT_JSON_MAX_DEPTH,
    DEFAULT_MAX_BYTES,
    DEFAULT_XML_MAX_DEPTH,
)
from syncbus.formats.xml import XmlCodec

__all__ = [
    "DEFAULT_CSV_MAX_BYTES",
    "DEFAULT_JSON_MAX_DEPTH",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_XML_MAX_DEPTH",
    "FORMATS",
    "Codec",
    "CsvCodec",
    "JsonCodec",
    "UnsupportedFormatError",
    "XmlCodec",
    "codec_for_content_type",
    "get_codec",
    "make_codec",
]


@runtime_checkable
class Codec(Protocol):
    """What routes, sinks and ingress need from a payload format."""

    name: str
    content_type: str

    def decode(self, data: bytes) -> Any: ...

    def encode(self, obj: Any) -> bytes: ...


class UnsupportedFormatError(SyncbusError, LookupError):
    """No codec for this format name or content type (ingress answers 415).

    Deliberately not a DecodeError: the body was never looked at.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"unsupported format {what!r} (supported: json, xml, csv)")


_CLASSES: Final[dict[str, type[Any]]] = {"json": JsonCodec, "xml": XmlCodec, "csv": CsvCodec}
FORMATS: Final = tuple(_CLASSES)

# Default-configured codecs are stateless, so one instance each is shared.
_DEFAULTS: Final[dict[str, Codec]] = {name: cls() for name, cls in _CLASSES.items()}


def get_codec(name: str) -> Codec:
    """The default-configured codec for ``json`` | ``xml`` | ``csv`` (case-insensitive)."""
    codec = _DEFAULTS.get(name.strip().lower()) if isinstance(name, str) else None
    if codec is None:
        raise UnsupportedFormatError(str(name))
    return codec


def make_codec(name: str, **options: Any) -> Codec:
    """A codec with options, e.g. ``make_codec("xml", root="ORDERS05")``; bad options are ConfigErrors."""
    cls = _CLASSES.get(name.strip().lower()) if isinstance(name, str) else None
    if cls is None:
        raise UnsupportedFormatError(str(name))
    if not options:
        return _DEFAULTS[name.strip().lower()]
    try:
        codec: Codec = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"{name} codec: {_option_problem(exc)}") from None
    return codec


def _option_problem(exc: TypeError) -> str:
    text = str(exc)
    # "XmlCodec.__init__() got an unexpected keyword argument 'rot'" -> "unknown option 'rot'"
    if "unexpected keyword argument" in text:
        return "unknown option " + text.rsplit(" ", 1)[-1]
    return text


_JSON_TYPES: Final = frozenset({"application/json", "text/json"})
_XML_TYPES: Final = frozenset({"application/xml", "text/xml"})
_CSV_TYPES: Final = frozenset({"text/csv", "application/csv", "text/comma-separated-values"})


def codec_for_content_type(ct: str | None) -> Codec:
    """The codec for an HTTP/record Content-Type.

    ``application/json``, ``*/*+json``, ``application/xml``, ``text/xml``,
    ``*/*+xml`` (SOAP 1.2 included), ``text/csv``. A missing or empty type
    means JSON, as for :attr:`syncbus.record.Record.content_type`. A ``charset``
    parameter selects the CSV encoding, and the XML fallback encoding for
    documents without a declaration; for JSON it must be UTF-8.
    """
    if ct is None or not ct.strip():
        return _DEFAULTS["json"]
    media, _, params = ct.partition(";")
    media = media.strip().lower()
    charset = _charset(params)
    if media in _JSON_TYPES or media.endswith("+json"):
        if charset and charset.replace("_", "-") not in ("utf-8", "utf8", "us-ascii", "ascii"):
            raise UnsupportedFormatError(ct)
        return _DEFAULTS["json"]
    if media in _XML_TYPES or media.endswith("+xml"):
        return _with_charset("xml", charset, ct)
    if media in _CSV_TYPES:
        return _with_charset("csv", charset, ct)
    raise UnsupportedFormatError(ct)


def _charset(params: str) -> str | None:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower() or None
    return None


def _with_charset(name: str, charset: str | None, ct: str) -> Codec:
    if charset is None or charset in ("utf-8", "utf8"):
        return _DEFAULTS[name]
    codec = _CHARSET_CACHE.get((name, charset))
    if codec is None:
        try:
            codec = make_codec(name, encoding=charset)
        except ConfigError:
            raise UnsupportedFormatError(ct) from None
        if len(_CHARSET_CACHE) < 64:
            _CHARSET_CACHE[(name, charset)] = codec
    return codec


_CHARSET_CACHE: dict[tuple[str, str], Codec] = {}
