"""A real Kafka broker for the test session.

Register once in tests/conftest.py with ``pytest_plugins = ["tests.support.kafka"]``
and mark tests that use it ``@pytest.mark.kafka``.

* ``kafka_bootstrap`` -> "127.0.0.1:PORT". With ``SYNCBUS_TEST_KAFKA=host:port``
  that broker is used as is; otherwise deploy/kafka/kafka.sh starts a private
  broker on free ports with its own run dir, stopped at session end (and by a
  watchdog if pytest dies, so none is ever left behind).
* ``kafka_broker`` -> the private broker, for tests that stop, kill -9 or
  restart it mid-stream (same ports, same data dir: a real restart). Not
  available with an external broker: we must not restart someone else's Kafka.
* ``kafka_secure`` -> the private broker's secured listeners (issue 12): mutual
  TLS, SASL over TLS (PLAIN and SCRAM-SHA-512) and SASL without TLS, with a CA
  and certificates the session makes itself (tests/security/certs.py) and two
  SASL users. Not available with an external broker.

A broker that cannot start (or, for ``kafka_broker``, an external one) skips
the Kafka tests on a laptop, but FAILS them when ``CI`` is set to any truthy
value (``CI=1``, ``CI=true``, ``CI=yes``...): CI must never go green by
silently skipping Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.security.certs import Pki, make_pki

KAFKA_SH = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"
START_TIMEOUT = 300.0  # includes a cold `fetch` of the broker jars with Maven
STOP_TIMEOUT = 60.0
KILL_TIMEOUT = 30.0
_FALSY = {"", "0", "false", "no", "off"}


class KafkaUnavailable(Exception):
    """The test broker could not be started or stopped; the message says why."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class SecureListeners:
    """Where and how to reach the broker's secured listeners."""

    ssl_port: int              # TLS, client certificate required
    sasl_ssl_port: int         # SASL (PLAIN, SCRAM-SHA-512) over TLS
    sasl_plaintext_port: int   # SASL (PLAIN, SCRAM-SHA-512) without TLS
    pki: Pki                   # ca, server and client certificates; rogue_* are signed by another CA
    users: tuple[tuple[str, str], ...] = (("syncbus", "syncbus-secret-1"), ("auditor", "auditor-secret-2"))

    @property
    def user(self) -> str:
        return self.users[0][0]

    @property
    def password(self) -> str:
        return self.users[0][1]

    def bootstrap(self, listener: str) -> str:
        port = {"SSL": self.ssl_port, "SASL_SSL": self.sasl_ssl_port, "SASL_PLAINTEXT": self.sasl_plaintext_port}
        return f"127.0.0.1:{port[listener]}"

    def env(self) -> dict[str, str]:
        return {"KAFKA_TLS_DIR": str(self.pki.ca.parent), "KAFKA_SSL_PORT": str(self.ssl_port),
                "KAFKA_SASL_SSL_PORT": str(self.sasl_ssl_port),
                "KAFKA_SASL_PLAINTEXT_PORT": str(self.sasl_plaintext_port),
                "KAFKA_SASL_USERS": ",".join(f"{u}:{p}" for u, p in self.users)}


@dataclass
class KafkaBroker:
    """A broker run by kafka.sh from ``run_dir``; stop/start keep its data (a real restart)."""

    run_dir: Path
    port: int
    controller_port: int
    partitions: int = 4
    secure: SecureListeners | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            KAFKA_RUN_DIR=str(self.run_dir),
            KAFKA_PARTITIONS=str(self.partitions),
            KAFKA_WATCH_PID=str(os.getpid()),
        )
        if self.secure is not None:
            env.update(self.secure.env())
        return env

    def _run(self, command: str, timeout: float) -> str:
        try:
            proc = subprocess.run(["bash", str(KAFKA_SH), command], env=self._env(), capture_output=True,
                                  text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise KafkaUnavailable(f"kafka.sh {command} did not finish within {timeout:.0f}s") from err
        except OSError as err:
            raise KafkaUnavailable(f"cannot run {KAFKA_SH}: {err}") from err
        if proc.returncode != 0:
            detail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-40:])
            raise KafkaUnavailable(f"kafka.sh {command} failed (exit {proc.returncode}):\n{detail}")
        return proc.stdout.strip()

    def start(self) -> None:
        self._run("up", START_TIMEOUT)

    def stop(self) -> None:
        self._run("down", STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    def pid(self) -> int | None:
        """The broker JVM's pid while it runs (kafka.sh writes it), else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _process_alive(pid) else None

    def kill9(self) -> None:
        """SIGKILL the broker: no clean shutdown, no final flush, as in a crash or an OOM kill.

        Returns once the process is gone, so the ports are free and ``start()``
        brings the same broker (same ports, same data dir) back after log recovery.
        """
        pid = self.pid()
        if pid is None:
            raise KafkaUnavailable(f"no running broker in {self.run_dir} to kill")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # A killed multi-threaded JVM shows as a zombie before its last thread has exited and
        # closed the sockets: wait for the ports too, or `start()` finds them still in use.
        deadline = time.monotonic() + KILL_TIMEOUT
        ports = [self.port, self.controller_port]
        if self.secure is not None:
            ports += [self.secure.ssl_port, self.secure.sasl_ssl_port, self.secure.sasl_plaintext_port]
        while _process_alive(pid) or any(_listening(p) for p in ports):
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"broker pid {pid} or its ports still alive {KILL_TIMEOUT:.0f}s after SIGKILL")
            time.sleep(0.05)

    def crash_and_restart(self, down_for: float = 0.0) -> None:
        """kill -9, stay down ``down_for`` seconds, start again on the same ports and data."""
        self.kill9()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def running(self) -> bool:
        try:
            self._run("status", 10)
        except KafkaUnavailable:
            return False
        return True

    # Async tests keep their event loop (and the clients on it) alive while the broker bounces.
    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    async def akill9(self) -> None:
        await asyncio.to_thread(self.kill9)


def _process_alive(pid: int) -> bool:
    """Running and not a zombie (a killed JVM reparented to an init that does not reap stays Z)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def in_ci() -> bool:
    """``CI`` set to anything truthy: CI=1, CI=true, CI=yes (every CI system sets one of them)."""
    return os.environ.get("CI", "").strip().lower() not in _FALSY


def _unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"Kafka broker unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"Kafka broker unavailable: {reason}")


@dataclass
class _Session:
    bootstrap: str
    broker: KafkaBroker | None


@pytest.fixture(scope="session")
def _kafka_session() -> Iterator[_Session]:
    external = os.environ.get("SYNCBUS_TEST_KAFKA", "").strip()
    if external:
        yield _Session(external, None)
        return
    run_dir = Path(tempfile.mkdtemp(prefix="syncbus-kafka-"))
    secure = SecureListeners(ssl_port=free_port(), sasl_ssl_port=free_port(), sasl_plaintext_port=free_port(),
                             pki=make_pki(run_dir / "tls"))
    broker = KafkaBroker(run_dir=run_dir, port=free_port(), controller_port=free_port(), secure=secure)
    failure = ""
    try:
        broker.start()
    except KafkaUnavailable as err:
        failure = str(err)
        with contextlib.suppress(KafkaUnavailable):
            broker.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    if failure:
        _unavailable(failure)
    try:
        yield _Session(broker.bootstrap, broker)
    finally:
        try:
            broker.stop()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_session: _Session) -> str:
    """``host:port`` of a running Kafka broker (ours, or SYNCBUS_TEST_KAFKA)."""
    return _kafka_session.bootstrap


@pytest.fixture
def kafka_broker(_kafka_session: _Session) -> Iterator[KafkaBroker]:
    """The session's own broker, for stop/restart tests; it is running again after each test."""
    broker = _kafka_session.broker
    if broker is None:
        _unavailable("SYNCBUS_TEST_KAFKA points at an external broker, which a test must not restart; "
                     "unset it to run the broker-restart tests on a private broker")
    yield broker
    if not broker.running():
        broker.start()


@pytest.fixture(scope="session")
def kafka_secure(_kafka_session: _Session) -> SecureListeners:
    """The private broker's TLS and SASL listeners (same broker, same topics as ``kafka_bootstrap``)."""
    broker = _kafka_session.broker
    if broker is None or broker.secure is None:
        _unavailable("SYNCBUS_TEST_KAFKA points at an external broker; the TLS/SASL tests need the private one "
                     "(its listeners are configured with a CA this session makes)")
    return broker.secure


# -- looking at a group from the outside, as an operator would ----------------------------


@dataclass(frozen=True)
class GroupView:
    """A consumer group as the coordinator describes it."""

    state: str                                         # "Stable", "PreparingRebalance", "Empty", ...
    members: dict[str, frozenset[tuple[str, int]]]     # member id -> assigned (topic, partition)

    @property
    def assigned(self) -> set[tuple[str, int]]:
        return {tp for tps in self.members.values() for tp in tps}


async def _admin(bootstrap: str, timeout: float) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="syncbus-test-probe",
                                request_timeout_ms=int(timeout * 1000))
    await asyncio.wait_for(admin.start(), timeout)
    return admin


async def adescribe_group(bootstrap: str, group: str, timeout: float = 5.0) -> GroupView | None:
    """The group's state and assignment; None while the coordinator cannot answer."""
    from aiokafka.coordinator.protocol import ConsumerProtocol
    from aiokafka.errors import KafkaError

    try:
        admin = await _admin(bootstrap, timeout)
    except (KafkaError, OSError, TimeoutError):
        return None
    try:
        [response] = await asyncio.wait_for(admin.describe_consumer_groups([group]), timeout)
        [described] = response.groups
        error_code, _group, state, _ptype, _protocol, members = described[:6]
        if error_code:
            return None
        view: dict[str, frozenset[tuple[str, int]]] = {}
        for member in members:
            member_id, assignment = member[0], member[-1]
            tps = ConsumerProtocol.ASSIGNMENT.decode(assignment).partitions() if assignment else []
            view[member_id] = frozenset((tp.topic, tp.partition) for tp in tps)
        return GroupView(state, view)
    except (KafkaError, OSError, TimeoutError, ValueError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def acommitted(bootstrap: str, group: str, topic: str, partitions: int,
                     timeout: float = 5.0) -> dict[int, int] | None:
    """Committed offset per partition (-1: nothing committed); None while the coordinator cannot answer.

    A coordinator that is loading or moving answers OffsetFetch with a
    group-level error and no partitions, which aiokafka returns as an empty
    result: a missing partition therefore means "no answer", not "no commit".
    """
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        admin = await _admin(bootstrap, timeout)
    except (KafkaError, OSError, TimeoutError):
        return None
    try:
        got = await asyncio.wait_for(admin.list_consumer_group_offsets(group, partitions=tps), timeout)
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if any(tp not in got for tp in tps):
        return None
    return {tp.partition: got[tp].offset for tp in tps}


async def aend_offsets(bootstrap: str, topic: str, partitions: int, timeout: float = 5.0) -> dict[int, int] | None:
    """The log end offset per partition; None while the broker cannot answer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id="syncbus-test-probe",
                                request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
        return {tp.partition: ends[tp] for tp in tps}
    except (KafkaError, OSError, TimeoutError):
        return None
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def describe_group(bootstrap: str, group: str, timeout: float = 5.0) -> GroupView | None:
    return asyncio.run(adescribe_group(bootstrap, group, timeout))


def committed(bootstrap: str, group: str, topic: str, partitions: int, timeout: float = 5.0) -> dict[int, int] | None:
    return asyncio.run(acommitted(bootstrap, group, topic, partitions, timeout))


def end_offsets(bootstrap: str, topic: str, partitions: int, timeout: float = 5.0) -> dict[int, int] | None:
    return asyncio.run(aend_offsets(bootstrap, topic, partitions, timeout))
