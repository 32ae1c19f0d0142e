"""Our hooks into aiokafka's group machinery, and the probes we use when it seems wedged.

Private aiokafka API on purpose (written against aiokafka 0.14): the
recovery the consumer needs is not reachable otherwise. Everything touched
here is named in tests/bus/test_kafka_recovery.py, so an aiokafka upgrade
that renames it fails loudly there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.group import HeartbeatRequest

from .kafka_security import PLAINTEXT, ClientSecurity


class GroupWatch:
    """Our hooks into one aiokafka GroupCoordinator (private API, written against aiokafka 0.14).

    If aiokafka renames what we touch, ``start()`` fails with AttributeError
    (and tests/bus/test_kafka_recovery.py says which name), never silently.

    All requests to the group coordinator go through ``GroupCoordinator._send_req``;
    wrapping it on the instance gives us two things aiokafka does not:

    * proof of membership: a heartbeat the coordinator accepted means the group
      still counts this member (``on_member``); a request the coordinator did not
      answer means it is unreachable (``on_unreachable``);
    * OffsetFetch v2+ answers with a group-level error (NOT_COORDINATOR,
      COORDINATOR_LOAD_IN_PROGRESS right after a broker restart) come with an
      empty topic list, which aiokafka reads as "nothing committed" and then
      resets the partitions to their start. We raise the error instead, so
      aiokafka retries against a re-discovered coordinator.
    """

    def __init__(self, coordinator: Any, on_member: Callable[[], None],
                 on_unreachable: Callable[[BaseException], None]) -> None:
        self.coordinator = coordinator
        original: Callable[[Any], Awaitable[Any]] = coordinator._send_req
        coordinator._syncbus_watch = self

        async def send_req(request: Any) -> Any:
            try:
                response = await original(request)
            except KafkaError as err:
                on_unreachable(err)
                raise
            if isinstance(request, HeartbeatRequest):
                if kafka_errors.for_code(response.error_code) in (kafka_errors.NoError,
                                                                  kafka_errors.RebalanceInProgressError):
                    on_member()
            elif isinstance(request, OffsetFetchRequest):
                self._check_offset_fetch(response)
            return response

        coordinator._send_req = send_req

    def _check_offset_fetch(self, response: Any) -> None:
        code = getattr(response, "error_code", 0)
        if not code:
            return
        error_type = kafka_errors.for_code(code)
        if error_type in (kafka_errors.NotCoordinatorForGroupError, kafka_errors.GroupCoordinatorNotAvailableError):
            self.coordinator.coordinator_dead()
        raise error_type()

    @property
    def member_id(self) -> str:
        return str(self.coordinator.member_id)

    @property
    def generation(self) -> int:
        return int(self.coordinator.generation)

    def forget_coordinator(self) -> None:
        """Make the next request look the coordinator up again (a no-op if already unknown)."""
        self.coordinator.coordinator_dead()

    def request_rejoin(self) -> None:
        self.coordinator.request_rejoin()


def describe_client(client: AIOKafkaConsumer) -> str:
    """One line on where an aiokafka consumer's group machinery stands (for the log when it seems wedged).

    Reads private state on purpose and never raises: it exists to tell the
    next person what was stuck.
    """
    try:
        coord = client._coordinator
        parts = [f"coordinator={coord.coordinator_id}", f"member={coord.member_id or '-'}",
                 f"generation={coord.generation}", f"lookup_locked={coord._coordinator_lookup_lock.locked()}",
                 f"rejoin_needed={coord._rejoin_needed_fut.done()}",
                 f"reassigning={client._subscription.reassignment_in_progress}"]
        for name in ("_coordination_task", "_heartbeat_task", "_commit_refresh_task"):
            task = getattr(coord, name, None)
            if task is None:
                parts.append(f"{name.strip('_')}=none")
            elif task.done():
                exc = None if task.cancelled() else task.exception()
                parts.append(f"{name.strip('_')}=done({type(exc).__name__ if exc else 'ok'})")
            else:
                parts.append(f"{name.strip('_')}=waiting in {_awaiting(task)}")
        return ", ".join(parts)
    except Exception as exc:  # diagnostics only
        return f"unavailable ({type(exc).__name__})"


def _awaiting(task: asyncio.Task[Any]) -> str:
    """The innermost coroutines a task is suspended in (``get_stack()`` shows only the outermost)."""
    frames: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(frames[-4:]) or "?"


async def broker_answers(bootstrap: str, client_id: str, timeout: float,
                          security: ClientSecurity = PLAINTEXT) -> bool:
    """A fresh client can fetch cluster metadata: the broker is up, whatever state our own clients are in."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id=f"{client_id}-probe",
                            request_timeout_ms=int(timeout * 1000), **security.kwargs)
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await client.close()
