"""Audit events of the ptz service: every command, tour step, park and automatic stop, persisted on the bus."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import nats.errors

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s

log = logging.getLogger(__name__)

SERVICE = "ptz"
_ATTEMPTS = 3


class Auditor:
    """Writes `AuditEvent`s to `argus.audit.ptz` through JetStream (the AUDIT stream), de-duplicated by id."""

    def __init__(self, bus: Bus, *, pod: str) -> None:
        self._bus = bus
        self.pod = pod

    def system_actor(self, subject: str) -> m.Actor:
        """The actor of what the service does by itself (a tour, a park, a stop when keep-alives lapse)."""
        return m.Actor(subject=subject, roles=("tour",), client=f"ptz@{self.pod}")

    async def record(
        self,
        *,
        actor: m.Actor,
        action: str,
        outcome: m.Outcome,
        camera: str,
        target: str = "",
        reason: str = "",
        details: dict[str, str] | None = None,
    ) -> m.AuditEvent:
        event = m.AuditEvent(
            id=uuid.uuid4().hex,
            at_ns=time.time_ns(),
            service=SERVICE,
            actor=actor,
            action=action,
            outcome=outcome,
            camera=camera,
            target=target,
            reason=reason,
            details={"pod": self.pod, **(details or {})},
        )
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                await self._bus.persist(s.AUDIT, event, msg_id=event.id, service=SERVICE)
            except (nats.errors.Error, TimeoutError) as exc:
                if attempt == _ATTEMPTS:
                    log.error(  # noqa: TRY400 - the lost event is the news, not the traceback
                        "audit event %s (%s on %s) could not be stored: %s",
                        event.id,
                        action,
                        camera,
                        exc,
                        extra={"camera": camera, "audit_id": event.id},
                    )
                    return event
                await asyncio.sleep(0.1 * attempt)
            else:
                return event
        return event
