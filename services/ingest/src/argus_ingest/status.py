"""Camera health out of ingest: each `CameraStatus` goes on `argus.camera.status.{camera}` (kept by the EVENTS
stream) and, as the camera's latest, into the `camera-status` KV bucket (JSON, key = camera id).

A status that cannot be sent is logged and dropped: health reporting never stops a camera's media.
"""

from __future__ import annotations

import logging

import nats.errors
from nats.js.kv import KeyValue

from argus_core.bus import Bus
from argus_core.bus import subjects as s
from argus_core.bus.codec import encode
from argus_core.bus.messages import CameraStatus

log = logging.getLogger(__name__)


class StatusReporter:
    def __init__(self, bus: Bus, kv: KeyValue | None) -> None:
        self._bus = bus
        self._kv = kv
        self.sent = 0
        self.failed = 0

    async def report(self, status: CameraStatus) -> None:
        try:
            await self._bus.publish(s.CAMERA_STATUS, status, camera=status.camera)
            if self._kv is not None:
                await self._kv.put(status.camera, encode(s.CAMERA_STATUS, status))
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            self.failed += 1
            log.warning("status of camera %s not sent: %r", status.camera, exc, extra={"camera": status.camera})
            return
        self.sent += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("camera %s %s %s", status.camera, status.state, status.error, extra={"camera": status.camera})
