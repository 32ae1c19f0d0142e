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

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ...errors import SyncbusError
from ...formats import make_codec
from ...state.models import DeadLetter, decode_value, encode_value

MASK = "****"
UNREADABLE = b"[masked: the payload is not JSON or XML, so it is hidden whole]"
HIDDEN_TEXT = "[masked: this text may quote a payload that is not JSON or XML, so it is hidden whole]"
EDITED_TEXT = "[masked: the record was edited since; this text may quote the values it had]"
MIN_SECRET = 4   # shorter values cannot be told from the digits and words around them (see scrub)
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

    # -- free text that may quote the record (error texts, trace details) ---------------------

    def secrets(self, value: bytes, content_type: str | None = None) -> list[str] | None:
        """The record's values under the masked fields, as text; None when the payload cannot be read."""
        kind = _kind(value, content_type)
        found: list[str] = []
        try:
            if kind == "json":
                doc = orjson.loads(value)
                for path in self.paths:
                    _collect_path(doc, path, found)
                return found
            if kind == "xml":
                _collect_names(make_codec("xml").decode(value), self.names, found)
                return found
        except (SyncbusError, ValueError, TypeError):
            pass
        return None

    def scrub(self, text: str, value: bytes, content_type: str | None = None) -> str:
        """``text`` (an error, a trace detail) with every masked value of the record replaced by ``****``.

        A target's error body or a mapping error may quote the record; for a
        payload that cannot be read the text is hidden whole (fail closed).
        """
        return scrub(text, self.secrets(value, content_type)) if self else text

    def letter(self, dl: DeadLetter) -> DeadLetter:
        """A dead letter as a read-only key sees it: the value masked, the error scrubbed of masked values
        (hidden whole once the value was edited: it may quote values the current one no longer holds),
        the key masked when it is one of them."""
        if not self:
            return dl
        ctype = dl.headers.get("content-type")
        found = self.secrets(dl.value, ctype)
        error = EDITED_TEXT if dl.edited and dl.error else scrub(dl.error or "", found)
        key = MASK if dl.key is not None and found and dl.key in found else dl.key
        return replace(dl, value=self.mask_payload(dl.value, ctype), error=error, key=key)

    def search_view(self, value: bytes, content_type: str | None, error: str, edited: bool) -> tuple[bytes, str]:
        """What a text search by a read-only key looks in: the payload as stored and the error, both scrubbed
        of the masked values, so a search can never tell whether a masked field holds a value (13812… found
        or not). The stored text, not a re-serialised one: what the search finds is what the database holds."""
        found = self.secrets(value, content_type)
        shown = scrub(value.decode("utf-8", "replace"), found).encode("utf-8")
        return shown, EDITED_TEXT if edited and error else scrub(error, found)

    def trace(self, view: dict[str, Any], letters: list[DeadLetter]) -> dict[str, Any]:
        """A record's trace (``dlq/trace_view.py``) as a read-only key sees it: every text in the events
        scrubbed of the record's masked values, known from its dead letters; without one (or after an
        edit, when the attempts may quote the old value), an attempt's error is hidden."""
        found: list[str] | None = []
        for dl in letters:
            more = None if dl.edited else self.secrets(dl.value, dl.headers.get("content-type"))
            found = None if more is None or found is None else found + more
        if not letters:
            found = None

        def clean(key: str, value: Any) -> Any:
            if isinstance(value, str):
                return scrub(value, found) if found is not None or key == "error" else value
            if isinstance(value, dict):
                return {k: clean(k, v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(key, v) for v in value]
            return value

        return {**view, "events": [{**ev, "detail": clean("", ev.get("detail"))} for ev in view.get("events", [])]}

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


def scrub(text: str, secrets: list[str] | None) -> str:
    """``text`` with each secret (in each form it may take there) replaced by ``****``; None: hidden whole.

    Only whole values: a secret must not touch a letter or digit on either side, so ``123`` is not cut out
    of ``1234.00`` (which would show where it is, and spoil the text). A secret shorter than
    ``MIN_SECRET`` cannot be told from the text around it: if it appears at all, the text is hidden whole.
    """
    if not text:
        return text
    if secrets is None:
        return HIDDEN_TEXT
    for secret in sorted({f for s in secrets for f in _forms(s)}, key=len, reverse=True):
        pattern = re.compile(r"(?<![0-9A-Za-z])" + re.escape(secret) + r"(?![0-9A-Za-z])")
        if len(secret) < MIN_SECRET:
            if pattern.search(text):
                return HIDDEN_TEXT
            continue
        text = pattern.sub(MASK, text)
    return text


def _forms(secret: str) -> set[str]:
    """The ways a value shows in an error text: as it is, JSON-escaped (non-ASCII as \\uXXXX), repr'd."""
    if not secret:
        return set()
    return {secret, orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1], repr(secret)[1:-1]}


def _leaves(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        out.append(str(value))


def _collect_path(obj: Any, path: tuple[str, ...], out: list[str]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _collect_path(item, path, out)
        return
    if not isinstance(obj, dict) or path[0] not in obj:
        return
    if len(path) == 1:
        _leaves(obj[path[0]], out)
    else:
        _collect_path(obj[path[0]], path[1:], out)


def _collect_names(obj: Any, names: frozenset[str], out: list[str]) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if _local(str(k)) in names:
                _leaves(v, out)
            else:
                _collect_names(v, names, out)
    elif isinstance(obj, list):
        for v in obj:
            _collect_names(v, names, out)


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
    # A dead letter's error may quote its record: scrubbed of the record's masked values (the record is the
    # letter itself in older answers, its "record" member in DeadLetter.to_json).
    nested = obj.get("record")
    record: dict[str, Any] = nested if isinstance(nested, dict) else obj
    if isinstance(obj.get("error"), str) and "value_encoding" in record and isinstance(record.get("value"), str):
        try:
            raw = decode_value(record["value"], record["value_encoding"])
        except ValueError:
            raw = b""
        found = masker.secrets(raw, _content_type(record.get("headers")) or content_type)
        error = EDITED_TEXT if obj.get("edited") and obj["error"] else scrub(obj["error"], found)
        obj = {**obj, "error": error}
        if found and obj.get("key") in found:  # the route's key is a masked field
            obj["key"] = MASK
            if nested is record:
                obj["record"] = {**record, "key": MASK}
    if "value_encoding" in obj and isinstance(obj.get("value"), str):
        content_type = _content_type(obj.get("headers")) or content_type
        value, encoding = masker.mask_text(obj["value"], obj["value_encoding"], content_type)
        obj = {**obj, "value": value, "value_encoding": encoding}
    if isinstance(obj.get("details"), dict) and "before_encoding" in obj["details"]:
        obj = masker.audit_entry(obj, content_type)
    return {k: (mask_document(masker, v, content_type) if isinstance(v, list | dict) else v) for k, v in obj.items()}
