"""Masking personal data in dead-letter payloads for people who may only look (``dlq:read``).

Dead letters hold whole records: phone numbers, ID card numbers, bank accounts. On-call
staff who triage need the route, the error and the shape of the record, not those values;
whoever fixes and replays (``dlq:write``) sees them. ``SYNCBUS_MASK_FIELDS`` lists what to
hide:

* JSON: dotted paths from the record's root (``customer.phone``); a path walks through
  lists, so ``lines.serial`` hides the serial of every line;
* XML: element (or attribute) names -- the last part of each path, so ``customer.phone``
  hides every ``<phone>`` element and ``phone="…"`` attribute, whatever its depth or
  namespace prefix (XML paths depend on the root element and on repetition, names do not).

A payload that is neither parseable JSON nor XML is hidden whole: when we cannot tell
where the personal data is, none of it is shown (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ...errors import SyncbusError
from ...formats import make_codec
from ...state.models import decode_value, encode_value

MASK = "****"
UNREADABLE = b"[masked: the payload is not JSON or XML, so it is hidden whole]"
MAX_PATHS = 200


class MaskFieldsError(SyncbusError):
    """``SYNCBUS_MASK_FIELDS`` cannot be used as given."""


def _local(name: str) -> str:
    """An XML name without ``@`` (attribute) and namespace prefix: ``@ns:phone`` → ``phone``."""
    return name.lstrip("@").rpartition(":")[2]


@dataclass(frozen=True)
class Masker:
    """Masks the configured fields; an empty masker changes nothing."""

    paths: tuple[tuple[str, ...], ...]

    @classmethod
    def from_text(cls, text: str) -> Masker:
        paths: list[tuple[str, ...]] = []
        for raw in text.split(","):
            entry = raw.strip()
            if not entry:
                continue
            parts = tuple(p.strip() for p in entry.split("."))
            if not all(parts):
                raise MaskFieldsError(f"SYNCBUS_MASK_FIELDS: {entry!r} has an empty part (expected a.b.c)")
            paths.append(parts)
        if len(paths) > MAX_PATHS:
            raise MaskFieldsError(f"SYNCBUS_MASK_FIELDS lists more than {MAX_PATHS} fields")
        return cls(tuple(paths))

    def __bool__(self) -> bool:
        return bool(self.paths)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(p[-1] for p in self.paths)

    # -- JSON: dotted paths ---------------------------------------------------------------

    def mask_json(self, obj: Any) -> Any:
        """A copy of ``obj`` with every configured path masked."""
        for path in self.paths:
            obj = _mask_path(obj, path)
        return obj

    # -- XML (xmltodict model): element and attribute names -------------------------------

    def mask_xml(self, obj: Any) -> Any:
        names = self.names
        if isinstance(obj, Mapping):
            return {k: (_masked(v) if _local(str(k)) in names else self.mask_xml(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.mask_xml(v) for v in obj]
        return obj

    # -- payloads -------------------------------------------------------------------------

    def mask_payload(self, value: bytes, content_type: str | None = None) -> bytes:
        """The payload with the fields masked, in its own format; unreadable payloads hidden whole."""
        if not self:
            return value
        kind = _kind(value, content_type)
        try:
            if kind == "json":
                return orjson.dumps(self.mask_json(orjson.loads(value)))
            if kind == "xml":
                codec = make_codec("xml")
                return bytes(codec.encode(self.mask_xml(codec.decode(value))))
        except (SyncbusError, ValueError, TypeError):
            pass
        return UNREADABLE

    def mask_text(self, text: str, encoding: str, content_type: str | None) -> tuple[str, str]:
        """``(text, encoding)`` of a JSON-encoded value (``models.encode_value``), masked."""
        try:
            raw = decode_value(text, encoding)
        except ValueError:
            return UNREADABLE.decode(), "utf-8"
        return encode_value(self.mask_payload(raw, content_type))

    def dead_letter(self, letter: Any) -> Any:
        """A dead letter's JSON (``DeadLetter.to_json``, with its ``audit`` if present), or a page of them, masked.

        Masks the record's ``value`` and the before/after values of ``edit``
        audit entries, which hold the same record (see :func:`mask_document`).
        """
        return mask_document(self, letter) if self else letter

    def audit_entry(self, entry: Any, content_type: str | None = None) -> Any:
        if not isinstance(entry, dict) or not isinstance(entry.get("details"), dict):
            return entry
        details = dict(entry["details"])
        for side in ("before", "after"):
            if isinstance(details.get(side), str):
                details[side], details[f"{side}_encoding"] = self.mask_text(
                    details[side], details.get(f"{side}_encoding", "utf-8"), content_type)
        return {**entry, "details": details}


def _masked(value: Any) -> Any:
    return None if value is None else MASK


def _mask_path(obj: Any, path: tuple[str, ...]) -> Any:
    if isinstance(obj, list):
        return [_mask_path(item, path) for item in obj]
    if not isinstance(obj, dict) or path[0] not in obj:
        return obj
    head, rest = path[0], path[1:]
    out = dict(obj)
    out[head] = _masked(obj[head]) if not rest else _mask_path(obj[head], rest)
    return out


def _content_type(headers: Any) -> str | None:
    if isinstance(headers, Mapping):
        value = headers.get("content-type")
        return value if isinstance(value, str) else None
    return None


def _kind(value: bytes, content_type: str | None) -> str:
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype.endswith("json"):
        return "json"
    if ctype.endswith("xml"):
        return "xml"
    head = value.lstrip()[:1]
    if head in (b"{", b"["):
        return "json"
    if head == b"<":
        return "xml"
    return "other"


def mask_document(masker: Masker, obj: Any, content_type: str | None = None) -> Any:
    """Any JSON answer of the admin API with the dead letters (and edit audits) in it masked.

    Recognises a dead letter by ``value_encoding`` and an edit audit entry by
    ``details.before_encoding``, wherever they are (a page's ``items``, a letter's
    ``audit``, a bulk result), so new endpoints are covered without being listed.
    """
    if isinstance(obj, list):
        return [mask_document(masker, item, content_type) for item in obj]
    if not isinstance(obj, dict):
        return obj
    if "value_encoding" in obj and isinstance(obj.get("value"), str):
        content_type = _content_type(obj.get("headers")) or content_type
        value, encoding = masker.mask_text(obj["value"], obj["value_encoding"], content_type)
        obj = {**obj, "value": value, "value_encoding": encoding}
    if isinstance(obj.get("details"), dict) and "before_encoding" in obj["details"]:
        obj = masker.audit_entry(obj, content_type)
    return {k: (mask_document(masker, v, content_type) if isinstance(v, list | dict) else v) for k, v in obj.items()}
