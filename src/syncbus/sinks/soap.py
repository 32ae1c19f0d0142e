"""SOAP for the HTTP sink: wrap the mapped XML in an envelope, and read the faults that come back.

Old ERP and finance systems (SAP PI/PO, Oracle EBS, Kingdee, Yonyou) still take
orders over SOAP. The route encodes the *content* of ``soap:Body`` as usual
(``format: xml``), so ``syncbus map`` keeps printing the business document;
this module adds the envelope and the SOAP headers on the way out.

A SOAP service reports failure as a fault, usually with HTTP 500 whatever the
cause, so the status alone would retry a rejected order forever. The fault
code says who is to blame: ``Client`` (1.1) / ``Sender`` (1.2) — the message
itself is wrong, repeating it cannot help, so it is permanent; ``Server`` /
``Receiver`` — the service failed, try again. ``VersionMismatch``,
``MustUnderstand`` and ``DataEncodingUnknown`` are configuration problems:
permanent. A fault whose code we cannot place falls back on the HTTP status.

Responses are parsed with the hardened decoder of :mod:`syncbus.formats.xml`
(no DTD entities, nothing fetched, size and depth capped): the body of an
error answer is as untrusted as any other input.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncbus.errors import ConfigError, DecodeError, DeliveryError
from syncbus.formats.xml import XmlCodec

SOAP11_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS: Final = "http://www.w3.org/2003/05/soap-envelope"
_NS_BY_VERSION: Final = {"1.1": SOAP11_NS, "1.2": SOAP12_NS}
_VERSION_BY_NS: Final = {SOAP11_NS: "1.1", SOAP12_NS: "1.2"}

# Fault code (local part, before any ".detail" of 1.1) -> retryable?
_RETRYABLE_CODES: Final[dict[str, bool]] = {
    "Client": False, "Sender": False,
    "Server": True, "Receiver": True,
    "VersionMismatch": False, "MustUnderstand": False, "DataEncodingUnknown": False,
}
_DECLARATION: Final = re.compile(rb"\A\s*<\?xml\b.*?\?>", re.DOTALL)
_DECLARED_ENCODING: Final = re.compile(rb"\A\s*<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z][\w.-]{0,40})[\"']")
_FAULT_MAX_BYTES: Final = 1024 * 1024
_FAULT_MAX_DEPTH: Final = 64
_REASON_CHARS: Final = 300


class SoapSpec(BaseModel):
    """The ``soap:`` block of an HTTP sink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["1.1", "1.2"] = Field(
        "1.1",
        description="SOAP version. 1.1: Content-Type text/xml and a SOAPAction header; "
                    "1.2: Content-Type application/soap+xml with an action parameter.")
    action: str | None = Field(
        None,
        description="The operation's SOAP action URI (from the service's WSDL), e.g. "
                    "urn:sap-com:document:sap:rfc:functions:ZSD_ORDER_CREATE. 1.1 sends it as "
                    'SOAPAction: "<action>" (an empty "" when unset).')

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads `version: 1.1` as a float; accept it as the text the user meant.
        return str(value) if isinstance(value, float) else value

    @field_validator("action")
    @classmethod
    def _check_action(cls, value: str | None) -> str | None:
        if value is not None and (not value.isascii() or any(c in value for c in '"\\\r\n\0')
                                  or not value.isprintable()):
            raise ValueError("action must be printable ASCII without quotes or backslashes")
        return value


class SoapFaultError(DeliveryError):
    """A SOAP service answered with a fault; ``fault`` holds the code and reason as sent."""

    def __init__(self, message: str, fault: SoapFault, *, retryable: bool, status: int | None,
                 retry_after: float | None = None) -> None:
        self.fault = fault
        super().__init__(message, retryable=retryable, status=status, retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class SoapFault:
    """A parsed fault. ``code`` is the QName as written (``soap:Client``); ``kind`` its SOAP meaning."""

    version: Literal["1.1", "1.2"]
    code: str
    kind: str | None  # Client, Server, Sender, Receiver, ... or None for a code outside the envelope namespace
    reason: str
    subcodes: list[str] = field(default_factory=list)

    @property
    def retryable(self) -> bool | None:
        """True/False by the fault code; None when the code does not say (then the HTTP status decides)."""
        return _RETRYABLE_CODES.get(self.kind) if self.kind is not None else None

    def describe(self) -> str:
        subs = f" [{' / '.join(self.subcodes)}]" if self.subcodes else ""
        return f"{self.code}{subs}: {self.reason}" if self.reason else f"{self.code}{subs}"


class SoapBinding:
    """The SOAP side of one HTTP sink: envelope and headers out, faults in."""

    def __init__(self, spec: SoapSpec) -> None:
        self.spec = spec
        self.namespace = _NS_BY_VERSION[spec.version]
        if spec.version == "1.1":
            self.content_type = "text/xml; charset=utf-8"
            self.headers: dict[str, str] = {"SOAPAction": f'"{spec.action or ""}"'}
        else:
            action = f'; action="{spec.action}"' if spec.action else ""
            self.content_type = f"application/soap+xml; charset=utf-8{action}"
            self.headers = {}
        self._head = (f'<?xml version="1.0" encoding="utf-8"?>\n<soap:Envelope xmlns:soap="{self.namespace}">'
                      "<soap:Body>").encode()
        self._tail = b"</soap:Body></soap:Envelope>"

    def envelope(self, body: bytes, content_type: str) -> bytes:
        """The record's XML document as the content of ``soap:Body``, in UTF-8.

        The document's own declaration is dropped (it cannot appear inside the
        envelope) and a document in another encoding (GBK) is transcoded, since
        SOAP 1.2 allows only UTF-8/16 and most 1.1 stacks assume UTF-8.
        """
        media = content_type.split(";", 1)[0].strip().lower()
        if not (media in ("application/xml", "text/xml") or media.endswith("+xml")):
            raise DeliveryError(f"soap needs an XML body (route target format: xml), not {media or 'no type'}",
                                retryable=False)
        encoding = _body_encoding(body, content_type)
        try:
            text = body.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise DeliveryError(f"soap: the XML body is not valid {encoding}: {exc}", retryable=False) from None
        text = text.removeprefix("\ufeff")
        raw = text.encode("utf-8", errors="surrogatepass")
        declaration = _DECLARATION.match(raw)
        if declaration is not None:
            raw = raw[declaration.end():]
        raw = raw.strip()
        if raw.startswith(b"<!DOCTYPE"):
            raise DeliveryError("soap: a body with a DOCTYPE cannot go inside a SOAP envelope", retryable=False)
        return self._head + raw + self._tail


def _body_encoding(body: bytes, content_type: str) -> str:
    """BOM, then the XML declaration, then the content type's charset, then UTF-8 (XML's own rules)."""
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    declared = _DECLARED_ENCODING.match(body)
    if declared is not None:
        return declared.group(1).decode("ascii")
    return _charset(content_type) or "utf-8"


def _charset(content_type: str | None) -> str | None:
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


# ---------------------------------------------------------------------- faults


def parse_fault(content: bytes, content_type: str | None = None) -> SoapFault | None:
    """The fault in a SOAP response, or None if it is not a SOAP envelope carrying one.

    Never raises on bad input: an answer we cannot read is judged by its status.
    """
    if not content or (b"Fault" not in content and not content.startswith((b"\xff\xfe", b"\xfe\xff"))):
        return None  # cheap: most answers are not faults
    fallback = _charset(content_type) or "utf-8"
    try:
        codec = XmlCodec(encoding=fallback, max_bytes=_FAULT_MAX_BYTES, max_depth=_FAULT_MAX_DEPTH)
    except ConfigError:  # an unknown charset in the answer's Content-Type
        codec = XmlCodec(max_bytes=_FAULT_MAX_BYTES, max_depth=_FAULT_MAX_DEPTH)
    try:
        doc = codec.decode(content)
    except DecodeError:
        return None
    if not isinstance(doc, Mapping) or len(doc) != 1:
        return None
    ((root_name, root),) = doc.items()
    if not isinstance(root, Mapping):
        return None
    scope = _scope(root, {})
    ns, local = _resolve(root_name, scope)
    version = _VERSION_BY_NS.get(ns or "")
    if local != "Envelope" or version is None:
        return None
    body, body_scope = _child(root, scope, ns, "Body")
    if not isinstance(body, Mapping):
        return None
    fault, fault_scope = _child(body, body_scope, ns, "Fault")
    if not isinstance(fault, Mapping):
        return None
    if version == "1.1":
        return _fault11(fault, fault_scope)
    return _fault12(fault, fault_scope)


def _fault11(fault: Mapping[str, Any], scope: dict[str, str]) -> SoapFault:
    # 1.1 fault children are unqualified.
    code_node, code_scope = _child(fault, scope, None, "faultcode")
    code = _text(code_node)
    kind = _kind(code, code_scope, SOAP11_NS, dotted=True)
    reason = _text(_child(fault, scope, None, "faultstring")[0])
    return SoapFault("1.1", code or "(no faultcode)", kind, _clip(reason))


def _fault12(fault: Mapping[str, Any], scope: dict[str, str]) -> SoapFault:
    code_node, code_scope = _child(fault, scope, SOAP12_NS, "Code")
    value_node, value_scope = _child(code_node, code_scope, SOAP12_NS, "Value")
    code = _text(value_node)
    kind = _kind(code, value_scope, SOAP12_NS, dotted=False)
    subcodes: list[str] = []
    node, node_scope = _child(code_node, code_scope, SOAP12_NS, "Subcode")
    while isinstance(node, Mapping) and len(subcodes) < 8:
        sub_value, _ = _child(node, node_scope, SOAP12_NS, "Value")
        if _text(sub_value):
            subcodes.append(_text(sub_value))
        node, node_scope = _child(node, node_scope, SOAP12_NS, "Subcode")
    reason_node, reason_scope = _child(fault, scope, SOAP12_NS, "Reason")
    reason = _text(_child(reason_node, reason_scope, SOAP12_NS, "Text")[0])
    return SoapFault("1.2", code or "(no Code)", kind, _clip(reason), subcodes)


def _kind(code: str, scope: dict[str, str], envelope_ns: str, *, dotted: bool) -> str | None:
    """The SOAP meaning of a fault code QName, or None if it belongs to another namespace."""
    if not code:
        return None
    prefix, _, local = code.rpartition(":")
    namespace = scope.get(prefix) if prefix else scope.get("")
    # Lenient where stacks are sloppy: an unbound prefix or an unqualified code is read as SOAP's own.
    if namespace is not None and namespace != envelope_ns:
        return None
    head = local.split(".", 1)[0] if dotted else local
    return head if head in _RETRYABLE_CODES else None


def _scope(node: Mapping[str, Any], parent: dict[str, str]) -> dict[str, str]:
    """Namespace prefixes in scope inside ``node`` ("" is the default namespace)."""
    declared = {k: v for k, v in node.items() if k == "@xmlns" or k.startswith("@xmlns:")}
    if not declared:
        return parent
    scope = dict(parent)
    for key, value in declared.items():
        if isinstance(value, str):
            scope[key[7:] if key.startswith("@xmlns:") else ""] = value
    return scope


def _resolve(name: str, scope: dict[str, str]) -> tuple[str | None, str]:
    prefix, _, local = name.rpartition(":")
    return (scope.get(prefix) if prefix else scope.get("")), local


def _child(node: Any, scope: dict[str, str], ns: str | None,
           local: str) -> tuple[Any, dict[str, str]]:
    """The first child element ``{ns}local`` of a decoded element, with the scope inside it."""
    if not isinstance(node, Mapping):
        return None, scope
    for key, value in node.items():
        if not isinstance(key, str) or key.startswith(("@", "#")):
            continue
        first = value[0] if isinstance(value, list) and value else value
        inner = _scope(first, scope) if isinstance(first, Mapping) else scope
        child_ns, child_local = _resolve(key, inner)
        if child_local != local:
            continue
        if ns is None or child_ns == ns or (child_ns is None and ":" not in key):
            return first, inner
    return None, scope


def _text(node: Any) -> str:
    if isinstance(node, str):
        return node.strip()
    if isinstance(node, Mapping):
        text = node.get("#text")
        return text.strip() if isinstance(text, str) else ""
    return ""


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS] + "…"
