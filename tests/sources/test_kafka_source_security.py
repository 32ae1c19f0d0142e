"""The ``kafka`` source over TLS and SASL, against the session broker's secured listeners.

"Their" topic is created and written through the broker's plaintext listener
(same broker, same topics); the source reads it through a secured one, as
it would read a SAP or partner cluster. What must hold: records, cursor and
the mirrored group offsets are the same as over plaintext; a cluster that
refuses us is a refusal (fix the config, the next slot runs), not an outage
retried with backoff; settings that cannot work stop the load.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from syncbus.bus.embedded import EmbeddedBus
from syncbus.bus.kafka_security import KafkaSecurityError
from syncbus.config import load_connector_file
from syncbus.errors import ConfigErrors
from syncbus.metrics import Metrics
from syncbus.sources.kafka_source import KafkaSource, KafkaSourceRefused, KafkaSourceUnavailable
from syncbus.sources.poller import PollRefused
from tests.support.kafka import SecureListeners

from .helpers import State, topic_records
from .test_kafka_source import Foreign, group_offsets, order_ids, runner

pytestmark = pytest.mark.kafka

PASSWORD_ENV = "SAP_KAFKA_PASSWORD"


@pytest.fixture
async def foreign(kafka_bootstrap: str) -> AsyncIterator[Foreign]:
    """Their topic, written through the broker's plaintext listener."""
    topic = await Foreign(kafka_bootstrap).start()
    yield topic
    await topic.stop()


def secured_options(secure: SecureListeners, listener: str, mechanism: str = "SCRAM-SHA-512",
                    ca: Path | None = None) -> dict[str, Any]:
    """The source's connection options for one of the secured listeners (the password via password_env)."""
    pki = secure.pki
    if listener == "mTLS":
        return {"bootstrap": secure.bootstrap("SSL"),
                "tls": {"ca_file": str(pki.ca), "client_cert": str(pki.client_cert), "client_key": str(pki.client_key)}}
    return {"bootstrap": secure.bootstrap("SASL_SSL"), "tls": {"ca_file": str(ca or pki.ca)},
            "sasl": {"mechanism": mechanism, "username": secure.user, "password_env": PASSWORD_ENV}}


def loaded_source(tmp_path: Path, foreign: Foreign, options: dict[str, Any], password: str) -> KafkaSource:
    """A source built the way a node builds it: a connectors file, the password from the environment."""
    block = {"name": "sap-orders", "type": "kafka", "topic": "orders.in", "from_topic": foreign.name,
             "group": f"g-{foreign.name}", **options}
    path = tmp_path / "sap.yaml"
    path.write_text(yaml.safe_dump({"sources": [block]}, sort_keys=False))
    component = load_connector_file(path, env={PASSWORD_ENV: password}).sources["sap-orders"]
    return KafkaSource(component.config)


@pytest.mark.parametrize("listener", ["SASL_SSL", "mTLS"])
async def test_reads_a_topic_over_a_secured_listener(foreign: Foreign, bus: EmbeddedBus, state: State,
                                                     metrics: Metrics, kafka_secure: SecureListeners,
                                                     tmp_path: Path, listener: str) -> None:
    await foreign.orders(1, 5)
    options = secured_options(kafka_secure, listener)
    r = runner(loaded_source(tmp_path, foreign, options, kafka_secure.password), bus, state, metrics)
    try:
        assert (await r.run()).records == 5
        committed = await group_offsets(foreign)  # mirrored in the foreign group, through the secured listener
        assert committed is not None and sum(committed.values()) == 5
        assert state.get_checkpoint("sap-orders") == {"topic": foreign.name,
                                                     "offsets": {str(p): o for p, o in committed.items()}}
        await foreign.orders(6, 7)
        assert (await r.run()).records == 2  # from the stored cursor on: only what came since
    finally:
        await r.stop()
    committed = await group_offsets(foreign)
    assert committed is not None and sum(committed.values()) == 7
    published = await topic_records(bus, "orders.in")
    assert sorted(order_ids(published)) == list(range(1, 8))
    assert {rec.key for rec in published} == {f"SO-{i}" for i in range(1, 8)}


async def test_plain_sasl_over_tls(foreign: Foreign, kafka_secure: SecureListeners, tmp_path: Path) -> None:
    await foreign.orders(1, 3)
    src = loaded_source(tmp_path, foreign, secured_options(kafka_secure, "SASL_SSL", mechanism="PLAIN"),
                        kafka_secure.password)
    try:
        batch = await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()
    assert len(batch.records) == 3 and not batch.more


# -- refusals: PollRefused (fix, next slot), not an outage ------------------------------------------


async def test_a_wrong_password_is_refused_naming_the_user(foreign: Foreign, kafka_secure: SecureListeners,
                                                            tmp_path: Path) -> None:
    src = loaded_source(tmp_path, foreign, secured_options(kafka_secure, "SASL_SSL"), "not-the-password-5e1")
    try:
        with pytest.raises(KafkaSourceRefused) as caught:
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()
    assert isinstance(caught.value, PollRefused)
    message = str(caught.value)
    assert "source 'sap-orders'" in message and f"SCRAM-SHA-512 as {kafka_secure.user!r}" in message
    assert "authentication refused" in message and "not-the-password-5e1" not in message


async def test_an_untrusted_broker_certificate_is_refused(foreign: Foreign, kafka_secure: SecureListeners,
                                                          tmp_path: Path) -> None:
    options = secured_options(kafka_secure, "SASL_SSL", ca=kafka_secure.pki.rogue_ca)
    src = loaded_source(tmp_path, foreign, options, kafka_secure.password)
    try:
        with pytest.raises(KafkaSourceRefused, match="not trusted"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


async def test_a_missing_client_certificate_is_refused(foreign: Foreign, kafka_secure: SecureListeners) -> None:
    src = KafkaSource({"name": "k", "type": "kafka", "topic": "t", "from_topic": foreign.name,
                       "bootstrap": kafka_secure.bootstrap("SSL"), "tls": {"ca_file": str(kafka_secure.pki.ca)}})
    try:
        with pytest.raises(KafkaSourceRefused, match="requires a client certificate"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


async def test_an_unreachable_secured_cluster_is_unavailable(kafka_secure: SecureListeners) -> None:
    src = KafkaSource({"name": "k", "type": "kafka", "topic": "t", "from_topic": "x", "bootstrap": "127.0.0.1:1",
                       "tls": {"ca_file": str(kafka_secure.pki.ca)},
                       "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"}})
    try:
        with pytest.raises(KafkaSourceUnavailable, match="cannot connect"):
            await src.poll(None, full=True, limit=10)
    finally:
        await src.stop()


# -- settings that cannot work (no broker needed) ----------------------------------------------------


def test_a_missing_ca_file_fails_when_the_source_is_built(tmp_path: Path) -> None:
    missing = tmp_path / "sap-kafka-ca.pem"
    with pytest.raises(KafkaSecurityError, match=rf"kafka source 'k': kafka tls ca_file: {missing}: no such file"):
        KafkaSource({"name": "k", "type": "kafka", "topic": "t", "from_topic": "x", "bootstrap": "h:9094",
                     "tls": {"ca_file": str(missing)}})


def test_a_password_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        sources:
          - name: sap
            type: kafka
            bootstrap: sap-kafka-1.corp:9094
            from_topic: sap.delivery.outbound
            topic: erp.deliveries
            sasl:
              mechanism: SCRAM-SHA-512
              username: syncbus
              password: hunter22
        """))
    with pytest.raises(ConfigErrors) as caught:
        load_connector_file(path, env={})
    messages = [str(e) for e in caught.value.errors]
    assert messages == [f"{path}:10:7: secrets come from the environment only: use password_env: VAR"], messages


def test_an_unset_password_variable_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(f"""\
        sources:
          - name: sap
            type: kafka
            bootstrap: sap-kafka-1.corp:9094
            from_topic: sap.delivery.outbound
            topic: erp.deliveries
            sasl: {{mechanism: PLAIN, username: syncbus, password_env: {PASSWORD_ENV}}}
        """))
    with pytest.raises(ConfigErrors, match=PASSWORD_ENV):
        load_connector_file(path, env={})
