"""http_poll over TLS: a private CA (``ca_file``) and mutual TLS (``client_cert``), against a real HTTPS server.

The certificates are made here with ``cryptography`` (a private CA, a server
certificate for 127.0.0.1, a client certificate); the server is the standard
library's HTTP server behind an ``ssl`` context, in a thread.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from syncbus.sources.http_poll import HttpPollSource, HttpPollUnavailable


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _issue(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, cn: str, usage: x509.ObjectIdentifier,
           path: Path, ip: str | None = None) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ca = (x509.CertificateBuilder().subject_name(_name("syncbus test CA")).issuer_name(_name("syncbus test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = _issue(ca_key, ca.subject, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH,
                                     d / "server.pem", ip="127.0.0.1")
    client_cert, client_key = _issue(ca_key, ca.subject, "syncbus", ExtendedKeyUsageOID.CLIENT_AUTH, d / "client.pem")
    return Pki(d / "ca.pem", server_cert, _write_key(server_key, d / "server.key"), client_cert,
               _write_key(client_key, d / "client.key"))


class _Api(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        body = json.dumps({"items": [{"id": 1, "client": subject.get("commonName")}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


def _serve(pki: Pki, require_client_cert: bool) -> Iterator[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/items"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def https_url(pki: Pki) -> Iterator[str]:
    yield from _serve(pki, require_client_cert=False)


@pytest.fixture
def mtls_url(pki: Pki) -> Iterator[str]:
    yield from _serve(pki, require_client_cert=True)


async def poll(url: str, **options: object) -> list[dict[str, object]]:
    src = HttpPollSource({"name": "tls", "type": "http_poll", "topic": "t", "url": url, **options})
    await src.start()
    try:
        batch = await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()
    return [json.loads(r.value) for r in batch.records]


async def test_a_private_ca_is_trusted_only_through_ca_file(https_url: str, pki: Pki) -> None:
    with pytest.raises(HttpPollUnavailable, match=r"GET cannot connect .*https://127\.0\.0\.1:\d+/items"):
        await poll(https_url)  # the system's CAs do not know the test CA
    assert await poll(https_url, ca_file=str(pki.ca)) == [{"id": 1, "client": None}]
    assert await poll(https_url, verify_tls=False) == [{"id": 1, "client": None}]


async def test_mutual_tls_presents_the_client_certificate(mtls_url: str, pki: Pki) -> None:
    with pytest.raises(HttpPollUnavailable):
        await poll(mtls_url, ca_file=str(pki.ca))  # no client certificate: the server hangs up
    got = await poll(mtls_url, ca_file=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key))
    assert got == [{"id": 1, "client": "syncbus"}]
