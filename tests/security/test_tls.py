"""HTTPS and mutual TLS on a real `syncbus run`: real handshakes with Python's ssl and httpx.

Certificates are made by the test (tests/security/certs.py); nothing secret is committed.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import SYNCBUS, free_port
from tests.security.certs import Pki, make_pki
from tests.security.node import CRM_KEY, SecureNode, tls_context, write_secure_config

ORDER = {"order_id": "SO-TLS-1", "seq": 1}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _node(root: Path, pki: Pki, *extra: str) -> SecureNode:
    write_secure_config(root, mtls=True)
    return SecureNode(root, f"embedded://{root}/bus.db", f"sqlite:///{root}/store.db", ca=pki.ca,
                      extra_args=["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), *extra])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SecureNode]:
    """HTTPS, client certificates asked for and verified, but optional (sources decide)."""
    n = _node(tmp_path_factory.mktemp("tls"), pki, "--tls-client-ca", str(pki.ca)).start()
    yield n
    assert n.stop() == 0, n.tail()


def test_https_with_the_servers_certificate(node: SecureNode) -> None:
    with node.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200 and response.url.scheme == "https"
    raw = ssl.create_default_context(cafile=str(node.ca))
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock, \
            raw.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert dict(x[0] for x in tls.getpeercert()["subject"])["commonName"] == "127.0.0.1"
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=10) as system_trust:
        system_trust.get(f"{node.url}/healthz")          # the test CA is not trusted by default


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(node: SecureNode) -> None:
    old = ssl.create_default_context(cafile=str(node.ca))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock, pytest.raises(ssl.SSLError):
        old.wrap_socket(sock, server_hostname="127.0.0.1")


def test_mtls_source_refuses_a_client_without_a_certificate(node: SecureNode) -> None:
    before = node.metric("syncbus_ingress_rejected_total", source="certified", reason="client_cert_required")
    with node.client() as client:
        response = client.post("/ingress/certified", json=ORDER)
    assert response.status_code == 403
    assert response.json()["error"] == "client_cert_required"
    assert node.metric("syncbus_ingress_rejected_total", source="certified",
                       reason="client_cert_required") == before + 1


def test_mtls_source_accepts_a_verified_client_certificate(node: SecureNode, pki: Pki) -> None:
    with node.client(cert=(pki.client_cert, pki.client_key)) as client:
        response = client.post("/ingress/certified", json=ORDER)
        keyed = client.post("/ingress/crm", json=ORDER)      # a certificate does not replace a source's key
    assert response.status_code == 202, response.text
    assert keyed.status_code == 401


def test_a_certificate_from_another_ca_fails_the_handshake(node: SecureNode, pki: Pki) -> None:
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)), \
            node.client(cert=(pki.rogue_cert, pki.rogue_key)) as client:
        client.post("/ingress/certified", json=ORDER)


def test_key_sources_work_over_https_without_a_client_certificate(node: SecureNode) -> None:
    with node.client() as client:
        assert client.post("/ingress/crm", json=ORDER, headers={"X-API-Key": CRM_KEY}).status_code == 202


def test_required_client_certificates_refuse_at_the_handshake(tmp_path: Path, pki: Pki) -> None:
    node = _node(tmp_path, pki, "--tls-client-ca", str(pki.ca), "--tls-require-client-cert")
    with pytest.raises(RuntimeError):
        node.start(timeout=5)            # its readiness probe has no certificate: it never gets an answer
    deadline = time.monotonic() + 60     # ...but it does listen (under load a worker may take a while)
    while True:
        try:
            socket.create_connection(("127.0.0.1", node.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, node.tail()
            time.sleep(0.2)
    try:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
            tls = tls_context(pki.ca).wrap_socket(sock, server_hostname="127.0.0.1")
            # TLS 1.3: the client's side of the handshake completes; the server then drops the
            # connection (an alert or a plain close) instead of reading any request.
            try:
                tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = tls.recv(100)
            except (ssl.SSLError, ConnectionResetError):
                answer = b""
            assert answer == b""
            tls.close()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)), \
                node.client() as client:
            client.get("/healthz")
        with node.client(cert=(pki.client_cert, pki.client_key)) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        assert node.stop() == 0, node.tail()


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-cert", "{missing}", "--tls-key", "{key}"], "no such file"),
    (["--tls-cert", "{client_cert}", "--tls-key", "{key}"], "cannot be used together"),
    (["--tls-cert", "{cert}"], "both --tls-cert and --tls-key"),
    (["--tls-cert", "{cert}", "--tls-key", "{key}", "--mtls-source"], "requires client certificates"),
])
def test_bad_tls_settings_stop_the_start_with_one_line(tmp_path: Path, pki: Pki, args: list[str],
                                                        message: str) -> None:
    mtls = "--mtls-source" in args   # the config has a source with auth: {mtls: true}, the node no client CA
    args = [a for a in args if a != "--mtls-source"]
    root = write_secure_config(tmp_path, mtls=mtls)
    files = {"missing": tmp_path / "nope.pem", "key": pki.server_key, "cert": pki.server_cert,
             "client_cert": pki.client_cert}
    proc = subprocess.run([SYNCBUS, "run", "--config-dir", str(root), "--port", str(free_port()),
                           *[a.format(**files) for a in args]],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "SEC_CRM_KEYS": CRM_KEY})
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
