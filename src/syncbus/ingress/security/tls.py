"""HTTPS for ``syncbus run``: the server's certificate, and client certificates (mutual TLS).

``--tls-cert``/``--tls-key`` (``SYNCBUS_TLS_CERT``/``SYNCBUS_TLS_KEY``) turn HTTPS on;
``--tls-client-ca`` (``SYNCBUS_TLS_CLIENT_CA``) asks every client for a certificate and
verifies any it sends against that CA. Connections without one are still served (health
checks, sources that authenticate with keys) unless ``--tls-require-client-cert``: a source
with ``auth: {mtls: true}`` refuses them itself (403), so one port serves both kinds of
client. A certificate that does not verify fails the handshake in either case.

TLS 1.2 is the minimum, with the ``ssl`` module's default ciphers (forward secrecy, AEAD).
What a verified client presented is put into the request's ASGI scope as the standard
``tls`` extension (``client_cert_chain``, ``client_cert_name``), by ``connection.py``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import SyncbusError

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
TRUE_WORDS = ("1", "true", "yes", "on")


class TlsConfigError(SyncbusError):
    """The TLS files cannot be used (missing, unreadable, key not matching the certificate)."""


@dataclass(frozen=True)
class TlsOptions:
    """Where the server's certificate and key are, and whether clients present certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False
    key_password: str | None = None

    @classmethod
    def resolve(cls, cert: str | Path | None, key: str | Path | None, client_ca: str | Path | None = None,
                require_client_cert: bool = False, env: Mapping[str, str] | None = None) -> TlsOptions | None:
        """From the command line, falling back to ``SYNCBUS_TLS_*``; None when HTTPS is not asked for."""
        env = env or {}
        cert = cert or env.get("SYNCBUS_TLS_CERT") or None
        key = key or env.get("SYNCBUS_TLS_KEY") or None
        client_ca = client_ca or env.get("SYNCBUS_TLS_CLIENT_CA") or None
        require = require_client_cert or env.get("SYNCBUS_TLS_REQUIRE_CLIENT_CERT", "").lower() in TRUE_WORDS
        if not cert and not key:
            if client_ca or require:
                raise TlsConfigError("--tls-client-ca and --tls-require-client-cert need HTTPS: "
                                     "give --tls-cert and --tls-key too")
            return None
        if not cert or not key:
            raise TlsConfigError("HTTPS needs both --tls-cert and --tls-key (or SYNCBUS_TLS_CERT and SYNCBUS_TLS_KEY)")
        if require and not client_ca:
            raise TlsConfigError("--tls-require-client-cert needs --tls-client-ca: the CA that signs client "
                                 "certificates")
        return cls(Path(cert).expanduser(), Path(key).expanduser(),
                   Path(client_ca).expanduser() if client_ca else None, require,
                   env.get("SYNCBUS_TLS_KEY_PASSWORD") or None)

    @property
    def verifies_clients(self) -> bool:
        return self.client_ca is not None


def server_context(options: TlsOptions) -> ssl.SSLContext:
    """The server's SSL context; every file problem is a :class:`TlsConfigError` naming the file."""
    # Not create_default_context(CLIENT_AUTH): that trusts the system's CAs for client
    # certificates, and any certificate a public CA issued would then pass as a client.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, what in ((options.cert, "--tls-cert"), (options.key, "--tls-key")):
        if not path.is_file():
            raise TlsConfigError(f"{what} {path}: no such file")
    try:
        ctx.load_cert_chain(str(options.cert), str(options.key), password=options.key_password)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"--tls-cert {options.cert} / --tls-key {options.key}: cannot be used together "
                             f"({exc.reason or exc})") from None
    except OSError as exc:
        raise TlsConfigError(f"--tls-cert/--tls-key: {exc.strerror or exc}") from None
    if options.client_ca is not None:
        if not options.client_ca.is_file():
            raise TlsConfigError(f"--tls-client-ca {options.client_ca}: no such file")
        try:
            ctx.load_verify_locations(cafile=str(options.client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"--tls-client-ca {options.client_ca}: not a PEM CA bundle ({exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if options.require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _name(cert: Mapping[str, Any]) -> str | None:
    """RFC 4514-ish subject (``CN=erp-gw,O=Example``) of a decoded peer certificate."""
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in reversed(cert.get("subject", ())) for k, v in rdn]
    return ",".join(parts) or None


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST", "emailAddress": "E"}


def tls_extension(transport: Any) -> dict[str, Any] | None:
    """The ASGI ``tls`` scope extension for a connection (None for plain HTTP).

    ``client_cert_chain`` holds the client's certificate (PEM) only when it was
    verified against ``--tls-client-ca``: ``getpeercert()`` returns nothing else.
    """
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    der = ssl_object.getpeercert(binary_form=True) if cert else None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": _name(cert) if cert else None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
        "syncbus_cipher": cipher[0] if cipher else None,
    }


def verified_client_cert(scope: Mapping[str, Any]) -> str | None:
    """The subject of the verified client certificate of a request, or None (no TLS, no certificate)."""
    ext = (scope.get("extensions") or {}).get("tls")
    if not ext or not ext.get("client_cert_chain") or ext.get("client_cert_error") is not None:
        return None
    return str(ext.get("client_cert_name") or "client certificate")
