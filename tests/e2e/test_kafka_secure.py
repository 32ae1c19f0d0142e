"""`syncbus run` on a Kafka bus reached over SASL/TLS and mutual TLS (issue 12), as an operator would run it.

The bus URL carries the TLS and SASL options; the password comes from
``SYNCBUS_KAFKA_PASSWORD``. Orders posted to the node are delivered once and
the ledger (which reads the bus from outside, with the same settings) is
clean. A refused password stops the node with one clear line: no traceback,
no password in the output.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.harness import SYNCBUS, Node, free_port, order, wait_until, write_config
from tests.sinks.target_server import TargetServer
from tests.support.kafka import SecureListeners

pytestmark = pytest.mark.kafka


def secure_bus(secure: SecureListeners, how: str) -> str:
    pki = secure.pki
    if how == "mtls":
        options = {"tls_ca_file": pki.ca, "tls_client_cert": pki.client_cert, "tls_client_key": pki.client_key}
        return f"kafka://{secure.bootstrap('SSL')}?{urlencode({k: str(v) for k, v in options.items()})}"
    query = urlencode({"tls_ca_file": str(pki.ca), "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": secure.user})
    return f"kafka://{secure.bootstrap('SASL_SSL')}?{query}"


@pytest.fixture
def target() -> Iterator[TargetServer]:
    with TargetServer() as server:
        yield server


@pytest.mark.parametrize("how", ["sasl_ssl", "mtls"])
def test_node_on_a_secured_bus_delivers_each_order_once(how: str, kafka_secure: SecureListeners, tmp_path: Path,
                                                        target: TargetServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCBUS_KAFKA_PASSWORD", kafka_secure.password)
    suffix = f"-secure-{how}-{free_port()}"
    config = write_config(tmp_path / "config", target.url_for("/erp/orders"), suffix=suffix)
    node = Node(config, secure_bus(kafka_secure, how), f"sqlite:///{tmp_path}/store.db").start()
    try:
        n = 30
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                assert node.post(client, order(i)).status_code == 202
        wait_until(lambda: len(target.requests) >= n, what=f"{n} deliveries over the secured bus")

        def ledger() -> dict[str, object]:
            proc = node.cli("ledger", "--json", "--since", "1h", check=False)
            return dict(json.loads(proc.stdout)) if proc.stdout.strip() else {"error": proc.stderr}

        wait_until(lambda: ledger().get("delivered") == n and ledger().get("in_flight") == 0, timeout=30,
                   what="the ledger (read over the same secured listener) to show every order delivered")
        keys = [r.header("idempotency-key") for r in target.requests]
        assert len(keys) == n == len(set(keys))
        if how == "sasl_ssl":  # the same reader with a CA that did not sign the broker's certificate
            node.bus = node.bus.replace(urlencode({"tls_ca_file": str(kafka_secure.pki.ca)}),
                                        urlencode({"tls_ca_file": str(kafka_secure.pki.rogue_ca)}))
            proc = node.cli("ledger", "--since", "1h", check=False)
            output = proc.stdout + proc.stderr
            assert proc.returncode != 0 and "Traceback" not in output
            assert "certificate is not trusted" in output, output
    finally:
        assert node.stop() == 0, node.tail()


def test_refused_password_stops_the_node_with_one_clear_line(kafka_secure: SecureListeners, tmp_path: Path,
                                                              target: TargetServer) -> None:
    config = write_config(tmp_path / "config", target.url_for("/erp/orders"), suffix=f"-refused-{free_port()}")
    wrong = "definitely-not-it"
    proc = subprocess.run(
        [SYNCBUS, "run", "--config-dir", str(config), "--bus", secure_bus(kafka_secure, "sasl_ssl"),
         "--store", f"sqlite:///{tmp_path}/store.db", "--port", str(free_port())],
        capture_output=True, text=True, timeout=90,
        env={**Node(config, "", "").env(), "SYNCBUS_KAFKA_PASSWORD": wrong})
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    assert wrong not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "authentication refused" in errors[0] and f"SCRAM-SHA-512 as '{kafka_secure.user}'" in errors[0]
