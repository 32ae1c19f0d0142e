"""The Kafka bus over TLS and SASL against the session broker's secured listeners (issue 12).

Real handshakes only: the broker (tests/support/kafka.py) serves mutual TLS,
SASL_SSL and SASL_PLAINTEXT with PLAIN and SCRAM-SHA-512, using a CA and
certificates this session made. Every refusal must arrive as its own error
class with a message that says what to fix, never as "cannot connect".
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from urllib.parse import urlencode

import pytest

from syncbus.bus.inspect import read_entries, read_group_offsets
from syncbus.bus.kafka import KafkaBus
from syncbus.bus.kafka_security import (
    KafkaAuthFailed,
    KafkaSecurityError,
    KafkaTlsFailed,
    from_url_options,
)
from syncbus.record import H_ID
from tests.support.kafka import SecureListeners

pytestmark = pytest.mark.kafka


def _target(bootstrap: str, **options: str) -> str:
    return f"{bootstrap}?{urlencode(options)}" if options else bootstrap


def _sasl_ssl(secure: SecureListeners, mechanism: str, **extra: str) -> str:
    return _target(secure.bootstrap("SASL_SSL"), tls_ca_file=str(secure.pki.ca), sasl_mechanism=mechanism,
                   sasl_username=secure.user, **extra)


async def _round_trip(target: str, env: Mapping[str, str]) -> None:
    """Create a topic, publish, consume and commit through the secured listener."""
    bus = KafkaBus(target, env=env, publish_timeout=15.0)
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    await bus.start()
    try:
        await bus.ensure_topics([topic], partitions=1)
        sent = await bus.publish(topic, b'{"order": 1}', key="k1", headers={H_ID: "rid-1"})
        consumer = bus.consumer(f"g-{topic}", [topic])
        await consumer.start()
        try:
            got = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got = await consumer.fetch(10, 0.5)
            assert [r.value for r in got] == [b'{"order": 1}']
            assert got[0].offset == sent.offset
            consumer.done(got[0])
            await consumer.commit()
        finally:
            await consumer.stop()
    finally:
        await bus.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_sasl_over_tls_round_trip(kafka_secure: SecureListeners, mechanism: str) -> None:
    await _round_trip(_sasl_ssl(kafka_secure, mechanism), {"SYNCBUS_KAFKA_PASSWORD": kafka_secure.password})


async def test_sasl_without_tls_and_a_named_password_variable(kafka_secure: SecureListeners) -> None:
    auditor, password = kafka_secure.users[1]
    target = _target(kafka_secure.bootstrap("SASL_PLAINTEXT"), sasl_mechanism="scram-sha-512",
                     sasl_username=auditor, sasl_password_env="AUDITOR_PW")
    await _round_trip(target, {"AUDITOR_PW": password})


async def test_mutual_tls_round_trip(kafka_secure: SecureListeners) -> None:
    pki = kafka_secure.pki
    target = _target(kafka_secure.bootstrap("SSL"), tls_ca_file=str(pki.ca), tls_client_cert=str(pki.client_cert),
                     tls_client_key=str(pki.client_key))
    await _round_trip(target, {})


async def test_wrong_password_is_an_auth_error_naming_user_not_password(kafka_secure: SecureListeners) -> None:
    bus = KafkaBus(_sasl_ssl(kafka_secure, "SCRAM-SHA-512"), env={"SYNCBUS_KAFKA_PASSWORD": "not-the-password"})
    with pytest.raises(KafkaAuthFailed) as caught:
        await bus.start()
    message = str(caught.value)
    assert "SCRAM-SHA-512 as 'syncbus'" in message and "authentication refused" in message
    assert "not-the-password" not in message
    await bus.stop()


async def test_unknown_user_is_refused(kafka_secure: SecureListeners) -> None:
    target = _target(kafka_secure.bootstrap("SASL_SSL"), tls_ca_file=str(kafka_secure.pki.ca),
                     sasl_mechanism="PLAIN", sasl_username="mallory")
    bus = KafkaBus(target, env={"SYNCBUS_KAFKA_PASSWORD": kafka_secure.password})
    with pytest.raises(KafkaAuthFailed, match="PLAIN as 'mallory'"):
        await bus.start()


async def test_untrusted_broker_certificate_is_a_tls_error(kafka_secure: SecureListeners) -> None:
    target = _target(kafka_secure.bootstrap("SASL_SSL"), tls_ca_file=str(kafka_secure.pki.rogue_ca),
                     sasl_mechanism="SCRAM-SHA-512", sasl_username=kafka_secure.user)
    bus = KafkaBus(target, env={"SYNCBUS_KAFKA_PASSWORD": kafka_secure.password})
    with pytest.raises(KafkaTlsFailed, match="certificate is not trusted"):
        await bus.start()


async def test_system_cas_do_not_trust_a_private_ca(kafka_secure: SecureListeners) -> None:
    bus = KafkaBus(_target(kafka_secure.bootstrap("SASL_SSL"), tls="true", sasl_mechanism="PLAIN",
                           sasl_username=kafka_secure.user), env={"SYNCBUS_KAFKA_PASSWORD": kafka_secure.password})
    with pytest.raises(KafkaTlsFailed, match="not trusted"):
        await bus.start()


@pytest.mark.parametrize("client", ["none", "rogue"])
async def test_mutual_tls_refuses_a_missing_or_foreign_client_certificate(kafka_secure: SecureListeners,
                                                                          client: str) -> None:
    pki = kafka_secure.pki
    options = {"tls_ca_file": str(pki.ca)}
    if client == "rogue":
        options.update(tls_client_cert=str(pki.rogue_cert), tls_client_key=str(pki.rogue_key))
    bus = KafkaBus(_target(kafka_secure.bootstrap("SSL"), **options), env={})
    with pytest.raises(KafkaTlsFailed, match="requires a client certificate"):
        await bus.start()


async def test_plaintext_client_on_a_tls_port_is_told_to_turn_tls_on(kafka_secure: SecureListeners) -> None:
    bus = KafkaBus(kafka_secure.bootstrap("SASL_SSL"), env={})
    with pytest.raises(KafkaTlsFailed, match="speaks TLS on this port"):
        await bus.start()


async def test_tls_client_on_a_plaintext_port(kafka_bootstrap: str, kafka_secure: SecureListeners) -> None:
    bus = KafkaBus(_target(kafka_bootstrap, tls_ca_file=str(kafka_secure.pki.ca)), env={})
    with pytest.raises(KafkaTlsFailed, match="TLS handshake failed"):
        await bus.start()


async def test_ledger_reader_uses_the_same_security(kafka_secure: SecureListeners) -> None:
    """``syncbus ledger`` reads the bus from outside: it must pass the same TLS/SASL options."""
    env = {"SYNCBUS_KAFKA_PASSWORD": kafka_secure.password}
    target = _sasl_ssl(kafka_secure, "SCRAM-SHA-512")
    bus = KafkaBus(target, env=env)
    topic = f"ledger-{uuid.uuid4().hex[:8]}"
    await bus.start()
    try:
        await bus.ensure_topics([topic], partitions=1)
        await bus.publish(topic, b"{}", headers={H_ID: "rid-ledger"})
        consumer = bus.consumer("ledger-group", [topic])
        await consumer.start()
        got = []
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            got = await consumer.fetch(1, 0.5)
        consumer.done(got[0])
        await consumer.commit()
        await consumer.stop()
    finally:
        await bus.stop()
    monkey = pytest.MonkeyPatch()
    monkey.setenv("SYNCBUS_KAFKA_PASSWORD", kafka_secure.password)
    try:
        entries = await read_entries(f"kafka://{target}", [topic], 0, time.time() + 60)
        offsets = await read_group_offsets(f"kafka://{target}", {"ledger-group": [topic]})
        monkey.setenv("SYNCBUS_KAFKA_PASSWORD", "wrong-password")
        with pytest.raises(KafkaAuthFailed):
            await read_entries(f"kafka://{target}", [topic], 0, time.time() + 60)
    finally:
        monkey.undo()
    assert [e.record_id for e in entries] == ["rid-ledger"]
    assert offsets == {("ledger-group", topic, 0): 1}


# -- the URL options themselves (no broker needed) ---------------------------------------------


def test_password_in_the_url_is_refused() -> None:
    with pytest.raises(KafkaSecurityError, match="does not belong in the URL"):
        KafkaBus("127.0.0.1:9092?sasl_mechanism=PLAIN&sasl_username=u&sasl_password=hunter22", env={})


def test_missing_password_names_the_variable() -> None:
    with pytest.raises(KafkaSecurityError, match=r"\$SYNCBUS_KAFKA_PASSWORD, which is not set"):
        KafkaBus("127.0.0.1:9092?sasl_mechanism=PLAIN&sasl_username=u", env={})
    with pytest.raises(KafkaSecurityError, match=r"\$MY_PW"):
        KafkaBus("127.0.0.1:9092?sasl_mechanism=PLAIN&sasl_username=u&sasl_password_env=MY_PW", env={})


@pytest.mark.parametrize(("query", "expected"), [
    ("sasl_mechanism=GSSAPI&sasl_username=u", "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    ("sasl_mechanism=PLAIN", "needs both sasl_mechanism and sasl_username"),
    ("tls=maybe", "tls='maybe': expected true or false"),
    ("tls=false&tls_ca_file=/x", "tls=false with tls_"),
    ("sasl_password_env=X", "without sasl_mechanism"),
    ("tls_ca_file=/nonexistent/ca.pem", "tls ca_file: /nonexistent/ca.pem: no such file"),
    ("ssl=true", "unknown option(s) ssl"),
])
def test_bad_url_options_are_clear_errors(query: str, expected: str) -> None:
    with pytest.raises(Exception) as caught:
        KafkaBus(f"127.0.0.1:9092?{query}", env={"SYNCBUS_KAFKA_PASSWORD": "pw-123456"})
    assert expected in str(caught.value)
    assert type(caught.value).__name__ in {"KafkaSecurityError", "BusError"}


def test_protocol_follows_the_options() -> None:
    env = {"SYNCBUS_KAFKA_PASSWORD": "pw-123456"}
    assert from_url_options({}, env).protocol == "PLAINTEXT"
    assert from_url_options({"tls": "true"}, env).protocol == "SSL"
    assert from_url_options({"tls_verify": "false"}, env).protocol == "SSL"
    assert from_url_options({"sasl_mechanism": "PLAIN", "sasl_username": "u"}, env).protocol == "SASL_PLAINTEXT"
    secured = from_url_options({"tls": "1", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"}, env)
    assert secured.protocol == "SASL_SSL"
    assert secured.kwargs["sasl_plain_password"] == "pw-123456"
    assert "pw-123456" not in secured.describe()
