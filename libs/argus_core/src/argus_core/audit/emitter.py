"""How a service records an audit event: build it, then persist it on the AUDIT stream before going on.

    audit = AuditEmitter(bus, "api")
    await audit.emit("playback.clip", actor=identity, client=client, camera="cam-1",
                     footage=(start_ns, end_ns), reason=reason, reference="INC-2231")

`emit` returns once JetStream has stored the event (the audit service appends it to the chain from there). A short
NATS outage is ridden out: the publish is retried with backoff for up to `retry_for_s`, always with the event id as
`Nats-Msg-Id`, so a retry of a publish that did reach the server is dropped by the stream's de-duplication (and the
audit service stores an event id once anyway). If the stream cannot be reached within the budget, `emit` raises
`AuditUnavailable` and the caller decides; for an access to footage the answer is to refuse it (fail closed), since
a view that cannot be logged must not happen. At most `max_in_flight` events wait at once; further callers wait for
a slot, so an outage cannot grow memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping

import nats.errors

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.errors import ArgusError
from argus_core.identity import Identity

log = logging.getLogger(__name__)


class AuditUnavailable(ArgusError):
    """An audit event could not be stored on the bus within the retry budget."""

    def __init__(self, event: m.AuditEvent, reason: str) -> None:
        super().__init__(f"audit event {event.id} ({event.action}) was not stored: {reason}")
        self.event = event
        self.reason = reason


def actor_of(who: Identity | m.Actor | str, client: str = "") -> m.Actor:
    """The `Actor` of a verified identity (subject and roles), an Actor as given, or a service acting by itself
    (`"retention"` becomes `service:retention` with the `service` role)."""
    if isinstance(who, Identity):
        return m.Actor(subject=who.subject, roles=tuple(who.roles), client=client)
    if isinstance(who, m.Actor):
        return who if not client or who.client else m.Actor(subject=who.subject, roles=who.roles, client=client)
    return m.Actor(subject=f"service:{who}", roles=("service",), client=client)


def new_event(
    service: str,
    action: str,
    *,
    actor: Identity | m.Actor | str,
    outcome: m.Outcome = "success",
    client: str = "",
    camera: str = "",
    target: str = "",
    footage: tuple[int, int] | None = None,
    reason: str = "",
    reference: str = "",
    details: Mapping[str, str] | None = None,
    at_ns: int | None = None,
) -> m.AuditEvent:
    """A new event with a fresh id (UUID4, hex) and the current UTC time; `footage` is (start_ns, end_ns)."""
    return m.AuditEvent(
        id=uuid.uuid4().hex,
        at_ns=time.time_ns() if at_ns is None else at_ns,
        service=service,
        actor=actor_of(actor, client),
        action=action,
        outcome=outcome,
        camera=camera,
        target=target,
        footage_start_ns=footage[0] if footage is not None else None,
        footage_end_ns=footage[1] if footage is not None else None,
        reason=reason,
        reference=reference,
        details=dict(details or {}),
    )


class AuditEmitter:
    """Builds and persists the audit events of one service (one per service process, shared by its tasks)."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        *,
        retry_for_s: float = 30.0,
        ack_timeout_s: float = 2.0,
        max_in_flight: int = 10_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        s.AUDIT.format(service=service)  # refuse a service name that is not a plain subject token, now
        self._bus = bus
        self.service = service
        self._retry_for_s = retry_for_s
        self._ack_timeout_s = ack_timeout_s
        self._slots = asyncio.Semaphore(max_in_flight)
        self._clock = clock
        self.persisted = 0
        self.retries = 0

    def event(
        self,
        action: str,
        *,
        actor: Identity | m.Actor | str,
        outcome: m.Outcome = "success",
        client: str = "",
        camera: str = "",
        target: str = "",
        footage: tuple[int, int] | None = None,
        reason: str = "",
        reference: str = "",
        details: Mapping[str, str] | None = None,
    ) -> m.AuditEvent:
        return new_event(
            self.service,
            action,
            actor=actor,
            outcome=outcome,
            client=client,
            camera=camera,
            target=target,
            footage=footage,
            reason=reason,
            reference=reference,
            details=details,
            at_ns=self._clock(),
        )

    async def emit(
        self,
        action: str,
        *,
        actor: Identity | m.Actor | str,
        outcome: m.Outcome = "success",
        client: str = "",
        camera: str = "",
        target: str = "",
        footage: tuple[int, int] | None = None,
        reason: str = "",
        reference: str = "",
        details: Mapping[str, str] | None = None,
    ) -> m.AuditEvent:
        """Build an event and persist it; `AuditUnavailable` if the stream could not be reached in time."""
        event = self.event(
            action,
            actor=actor,
            outcome=outcome,
            client=client,
            camera=camera,
            target=target,
            footage=footage,
            reason=reason,
            reference=reference,
            details=details,
        )
        await self.persist(event)
        return event

    async def persist(self, event: m.AuditEvent) -> None:
        """Store `event` on the AUDIT stream, retrying with backoff within the budget."""
        async with self._slots:
            deadline = time.monotonic() + self._retry_for_s
            delay = 0.05
            attempt = 0
            while True:
                attempt += 1
                remaining = deadline - time.monotonic()
                try:
                    await self._bus.persist(
                        s.AUDIT,
                        event,
                        msg_id=event.id,
                        ack_timeout_s=max(0.05, min(self._ack_timeout_s, remaining)),
                        service=self.service,
                    )
                except nats.errors.ConnectionClosedError as exc:
                    raise AuditUnavailable(event, "the NATS connection is closed") from exc
                except (nats.errors.Error, TimeoutError) as exc:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.error(  # noqa: TRY400 - the failure is the news, the traceback is not
                            "audit event %s (%s) not stored after %d attempts: %s",
                            event.id,
                            event.action,
                            attempt,
                            exc or type(exc).__name__,
                            extra={"event_id": event.id, "action": event.action},
                        )
                        raise AuditUnavailable(event, f"{type(exc).__name__}: {exc}") from exc
                    if attempt == 1:
                        log.warning(
                            "audit stream unreachable (%s); retrying event %s for up to %.0f s",
                            exc or type(exc).__name__,
                            event.id,
                            remaining,
                            extra={"event_id": event.id},
                        )
                    self.retries += 1
                    await asyncio.sleep(min(delay, remaining))
                    delay = min(delay * 2, 1.0)
                    continue
                self.persisted += 1
                if attempt > 1:
                    log.info("audit event %s stored after %d attempts", event.id, attempt)
                return
