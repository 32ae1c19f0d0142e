"""The kafka sink over TLS and SASL, against the session broker's secured listeners.

Real handshakes only (tests/support/kafka.py: mutual TLS, SASL_SSL and
SASL_PLAINTEXT with PLAIN and SCRAM-SHA-512, under a CA this session made).
What matters to an operator: a record produced over a secured listener is
the same record, a refusal by the cluster goes straight to the dead letters
with a message saying what to fix (and never the password), and settings
that cannot work stop the load instead of failing every delivery.
"""

from __future__ import annotations

import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from syncbus.bus.kafka_security import KafkaSecurityError
from syncbus.config import load_connector_file
from syncbus.errors import ConfigErrors, DeliveryError
from syncbus.sinks.kafka import KafkaSink, KafkaSinkConfig
from syncbus.sinks.retry import DeliveryFailed
from tests.support.kafka import SecureListeners

from .test_kafka_sink import MakeDelivery, read_topic

pytestmark = pytest.mark.kafka

WRONG_PASSWORD = "not-the-password-7f3a"


def new_topic() -> str:
    return f"secure-sink-{uuid.uuid4().hex[:12]}"


def sasl_ssl(secure: SecureListeners, mechanism: str, password: str | None = None,
             ca: Path | None = None) -> dict[str, Any]:
    """The options of a sink on the SASL_SSL listener (the password as it arrives from password_env)."""
    return {"bootstrap": secure.bootstrap("SASL_SSL"), "tls": {"ca_file": str(ca or secure.pki.ca)},
            "sasl": {"mechanism": mechanism, "username": secure.user, "password": password or secure.password}}


def mutual_tls(secure: SecureListeners) -> dict[str, Any]:
    pki = secure.pki
    return {"bootstrap": secure.bootstrap("SSL"),
            "tls": {"ca_file": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}}


def secured_sink(topic: str, options: dict[str, Any], **extra: Any) -> KafkaSink:
    config: dict[str, Any] = {"name": "lake", "type": "kafka", "topic": topic, "timeout": "10s",
                              "retry": {"attempts": 3, "initial": "10ms", "max": "50ms"}, **options, **extra}
    return KafkaSink(config)


async def read_secured(options: dict[str, Any], topic: str, count: int,
                       timeout: float = 20.0) -> list[ConsumerRecord[Any, Any]]:
    """Read ``topic`` back with a plain aiokafka consumer on the same secured listener."""
    cfg = KafkaSinkConfig.model_validate({"name": "reader", "topic": topic, **options})
    return await read_topic(cfg.bootstrap, topic, count, timeout, **cfg.client_security().kwargs)


async def deliver_and_read(options: dict[str, Any], make_delivery: MakeDelivery) -> None:
    topic = new_topic()
    sink = secured_sink(topic, options, headers={"X-Tenant": "acme"})
    await sink.start()
    try:
        await sink.send(make_delivery(record_id="rec-7", idempotency_key="crm-to-erp:order-42:rec-7"))
    finally:
        await sink.close()
    [record] = await read_secured(options, topic, 1)
    assert (record.value, record.key) == (b'{"VBELN": "42"}', b"order-42")
    headers = dict(record.headers)
    assert headers["Idempotency-Key"] == b"crm-to-erp:order-42:rec-7"
    assert headers["X-Syncbus-Record-Id"] == b"rec-7"
    assert headers["X-Syncbus-Route"] == b"crm-to-erp"
    assert headers["content-type"] == b"application/json"
    assert headers["X-Tenant"] == b"acme"


# -- delivering over secured listeners ------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_delivers_over_sasl_ssl(kafka_secure: SecureListeners, make_delivery: MakeDelivery,
                                      mechanism: str) -> None:
    await deliver_and_read(sasl_ssl(kafka_secure, mechanism), make_delivery)


async def test_delivers_over_mutual_tls(kafka_secure: SecureListeners, make_delivery: MakeDelivery) -> None:
    await deliver_and_read(mutual_tls(kafka_secure), make_delivery)


async def test_a_connectors_file_with_password_env_delivers(kafka_secure: SecureListeners, tmp_path: Path,
                                                            make_delivery: MakeDelivery) -> None:
    """The way a node builds it: YAML, the password from the environment, the spec's model, the sink."""
    topic = new_topic()
    path = tmp_path / "lake.yaml"
    path.write_text(textwrap.dedent(f"""\
        sinks:
          - name: lake
            type: kafka
            bootstrap: {kafka_secure.bootstrap("SASL_SSL")}
            topic: {topic}
            tls: {{ca_file: {kafka_secure.pki.ca}}}
            sasl: {{mechanism: SCRAM-SHA-512, username: {kafka_secure.user}, password_env: LAKE_KAFKA_PASSWORD}}
        """))
    component = load_connector_file(path, env={"LAKE_KAFKA_PASSWORD": kafka_secure.password}).sinks["lake"]
    sink = KafkaSink(component.config)
    assert sink.security.describe() == f"SASL_SSL, SCRAM-SHA-512 as {kafka_secure.user!r}"
    try:
        await sink.send(make_delivery())
    finally:
        await sink.close()
    assert len(await read_secured(sasl_ssl(kafka_secure, "SCRAM-SHA-512"), topic, 1)) == 1


# -- refusals: permanent, saying what to fix --------------------------------------------------------


async def test_wrong_password_is_permanent_naming_mechanism_and_user(kafka_secure: SecureListeners,
                                                                     make_delivery: MakeDelivery) -> None:
    sink = secured_sink(new_topic(), sasl_ssl(kafka_secure, "SCRAM-SHA-512", password=WRONG_PASSWORD))
    await sink.start()  # logs the refusal; a sink must not stop the node
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.send(make_delivery())
        assert caught.value.retryable is False
        message = str(caught.value)
        assert f"SCRAM-SHA-512 as {kafka_secure.user!r}" in message and "authentication refused" in message
        assert "sasl" in message and "dead letters" in message
        assert WRONG_PASSWORD not in message and kafka_secure.password not in message
        with pytest.raises(DeliveryFailed) as failed:  # what the router does: one attempt, then dead letters
            await sink.retry.run(lambda: sink.send(make_delivery()))
        assert failed.value.permanent and failed.value.attempts == 1
    finally:
        await sink.close()


async def test_untrusted_broker_certificate_is_permanent(kafka_secure: SecureListeners,
                                                         make_delivery: MakeDelivery) -> None:
    options = sasl_ssl(kafka_secure, "SCRAM-SHA-512", ca=kafka_secure.pki.rogue_ca)
    sink = secured_sink(new_topic(), options)
    try:
        with pytest.raises(DeliveryError, match="not trusted") as caught:
            await sink.send(make_delivery())
        assert caught.value.retryable is False
        assert "tls" in str(caught.value)
    finally:
        await sink.close()


async def test_missing_client_certificate_is_permanent(kafka_secure: SecureListeners,
                                                       make_delivery: MakeDelivery) -> None:
    sink = secured_sink(new_topic(), {"bootstrap": kafka_secure.bootstrap("SSL"),
                                      "tls": {"ca_file": str(kafka_secure.pki.ca)}})
    try:
        with pytest.raises(DeliveryError, match="requires a client certificate") as caught:
            await sink.send(make_delivery())
        assert caught.value.retryable is False
    finally:
        await sink.close()


async def test_a_refusal_is_remembered_briefly_then_tried_again(kafka_secure: SecureListeners,
                                                                make_delivery: MakeDelivery) -> None:
    """A busy route must not open a connection per record to hear the same refusal; once fixed, it delivers."""
    sink = secured_sink(new_topic(), sasl_ssl(kafka_secure, "PLAIN", password=WRONG_PASSWORD))
    try:
        with pytest.raises(DeliveryError):
            await sink.send(make_delivery())
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(DeliveryError, match="authentication refused") as caught:
                await sink.send(make_delivery())
            assert caught.value.retryable is False
        assert time.monotonic() - started < 1.0
        assert sink._refused is not None
        sink._refused = (sink._refused[0] - 60, sink._refused[1])  # the hold has passed ...
        sink.security = KafkaSinkConfig.model_validate(  # ... and the cluster's password was fixed
            {"name": "lake", "topic": "t", **sasl_ssl(kafka_secure, "PLAIN")}).client_security()
        await sink.send(make_delivery())
        assert sink._refused is None
    finally:
        await sink.close()


async def test_an_unreachable_cluster_stays_retryable(closed_port: int, kafka_secure: SecureListeners,
                                                      make_delivery: MakeDelivery) -> None:
    options = sasl_ssl(kafka_secure, "SCRAM-SHA-512") | {"bootstrap": f"127.0.0.1:{closed_port}"}
    sink = secured_sink("t", options, timeout="3s")
    try:
        with pytest.raises(DeliveryError) as caught:
            await sink.send(make_delivery())
        assert caught.value.retryable is True
    finally:
        await sink.close()


# -- settings that cannot work (no broker needed) ----------------------------------------------------


def test_a_missing_ca_file_fails_when_the_sink_is_built(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(KafkaSecurityError, match=rf"kafka sink 'lake': kafka tls ca_file: {missing}: no such file"):
        secured_sink("t", {"bootstrap": "127.0.0.1:9093", "tls": {"ca_file": str(missing)}})


def test_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        sinks:
          - name: lake
            type: kafka
            bootstrap: kafka-lake-1:9093
            topic: lake.orders
            sasl: {mechanism: PLAIN, username: syncbus, password: hunter22}
        """))
    with pytest.raises(ConfigErrors) as caught:
        load_connector_file(path, env={})
    messages = [str(e) for e in caught.value.errors]
    assert len(messages) == 1 and messages[0].startswith(f"{path}:6:"), messages
    assert messages[0].endswith("secrets come from the environment only: use password_env: VAR")
    assert "hunter22" not in " ".join(messages)


def test_security_options_are_validated() -> None:
    with pytest.raises(ValueError, match="mechanism"):
        KafkaSinkConfig.model_validate({"name": "k", "bootstrap": "a:1", "topic": "t",
                                        "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}})
    with pytest.raises(ValueError, match="extra"):
        KafkaSinkConfig.model_validate({"name": "k", "bootstrap": "a:1", "topic": "t", "tls": {"cafile": "/x"}})
    plain = KafkaSinkConfig.model_validate({"name": "k", "bootstrap": "a:1", "topic": "t"})
    assert plain.client_security().protocol == "PLAINTEXT"
    off = KafkaSinkConfig.model_validate({"name": "k", "bootstrap": "a:1", "topic": "t", "tls": {"enabled": False},
                                          "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"}})
    assert off.client_security().protocol == "SASL_PLAINTEXT"
