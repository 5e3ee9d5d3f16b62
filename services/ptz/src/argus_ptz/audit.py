"""Audit events of the ptz service: every command, tour step, park and automatic stop, persisted on the bus."""

from __future__ import annotations

import logging

from argus_core.audit import AuditEmitter, AuditUnavailable
from argus_core.bus import Bus
from argus_core.bus import messages as m

log = logging.getLogger(__name__)

SERVICE = "ptz"


class Auditor:
    """Writes `AuditEvent`s to `argus.audit.ptz` through the shared emitter (the AUDIT stream, de-duplicated by id).

    A PTZ command is not refused when the audit stream is unreachable (an operator following a suspect must keep
    control): the lost event is logged loudly instead.
    """

    def __init__(self, bus: Bus, *, pod: str) -> None:
        self._emitter = AuditEmitter(bus, SERVICE, retry_for_s=5.0)
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
        event = self._emitter.event(
            action,
            actor=actor,
            outcome=outcome,
            camera=camera,
            target=target,
            reason=reason,
            details={"pod": self.pod, **(details or {})},
        )
        try:
            await self._emitter.persist(event)
        except AuditUnavailable as exc:
            log.error(  # noqa: TRY400 - the lost event is the news, not the traceback
                "audit event %s (%s on %s) could not be stored: %s",
                event.id,
                action,
                camera,
                exc,
                extra={"camera": camera, "audit_id": event.id},
            )
        return event
