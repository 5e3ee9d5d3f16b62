"""The lease keeper: keeps control leases alive, stops continuous moves whose keep-alives lapsed, releases idle control.

Each pod tends the control leases it wrote last, and those nobody has rewritten for half the bucket's TTL (their pod
died). Every change is a compare-and-set, so when two pods tend one lease one of them does it. A continuous move
whose `moving_until_ns` passed without a renewing command is stopped with ONVIF Stop (the camera's own ContinuousMove
timeout stops it too: this is the second line, for cameras that ignore the timeout); a lease whose idle time passed
is deleted, which releases the camera and lets a paused tour resume.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from argus_core.bus import messages as m
from argus_ptz.audit import Auditor
from argus_ptz.errors import PtzError
from argus_ptz.leases import ControlLease, Leases
from argus_ptz.onvif_client import OnvifPool

log = logging.getLogger(__name__)

WATCHDOG_ACTOR = "ptz:keep-alive"


class Keeper:
    def __init__(self, leases: Leases, pool: OnvifPool, auditor: Auditor, *, tick_s: float, ttl_s: float) -> None:
        self._leases = leases
        self._pool = pool
        self._auditor = auditor
        self._tick = tick_s
        self._refresh_ns = int(ttl_s * 1e9 / 3)
        self._orphan_ns = int(ttl_s * 1e9 / 2)
        self._stopping: set[str] = set()
        self._failing: set[str] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            while not stopping.is_set():
                for camera, revision, lease in self._leases.controls():
                    try:
                        await self._tend(tasks, camera, revision, lease)
                    except PtzError as exc:
                        # Once per outage, not once per tick.
                        level = logging.DEBUG if camera in self._failing else logging.WARNING
                        self._failing.add(camera)
                        log.log(level, "camera %s: lease not tended: %s", camera, exc, extra={"camera": camera})
                    else:
                        self._failing.discard(camera)
                try:
                    await asyncio.wait_for(stopping.wait(), self._tick)
                except TimeoutError:
                    pass

    async def _tend(self, tasks: asyncio.TaskGroup, camera: str, revision: int, lease: ControlLease) -> None:
        now = time.time_ns()
        mine = lease.pod == self._leases.pod
        orphaned = now - lease.written_ns > self._orphan_ns
        if not (mine or orphaned):
            return
        if lease.moving_until_ns and lease.moving_until_ns <= now:
            updated = msgspec.structs.replace(lease, moving_until_ns=0, pod=self._leases.pod, written_ns=now)
            if await self._leases.replace(camera, revision, updated) is not None and camera not in self._stopping:
                self._stopping.add(camera)
                tasks.create_task(self._stop(camera, lease), name=f"ptz.keep-alive-stop.{camera}")
            return
        if not lease.active(now):
            await self._leases.expire(camera, revision, lease)
            return
        if now - lease.written_ns >= self._refresh_ns:
            await self._leases.replace(
                camera, revision, msgspec.structs.replace(lease, pod=self._leases.pod, written_ns=now)
            )

    async def _stop(self, camera: str, lease: ControlLease) -> None:
        """ONVIF Stop for a continuous move whose caller went silent."""
        outcome: m.Outcome = "success"
        error = ""
        try:
            async with self._pool.motion_lock(camera):
                now = await self._leases.current(camera)
                if now is not None and now.moving_until_ns > time.time_ns():
                    return  # a keep-alive renewed the move after all
                client = await self._pool.get(camera)
                await client.stop()
        except PtzError as exc:
            outcome, error = "failure", str(exc)
            log.warning("camera %s: stop after lapsed keep-alive failed: %s", camera, exc, extra={"camera": camera})
        finally:
            self._stopping.discard(camera)
        log.info(
            "camera %s: continuous move by %s stopped: its keep-alives lapsed",
            camera,
            lease.holder,
            extra={"camera": camera},
        )
        await self._auditor.record(
            actor=self._auditor.system_actor(WATCHDOG_ACTOR),
            action="ptz.stop",
            outcome=outcome,
            camera=camera,
            reason="keep-alive lapsed",
            details={"holder": lease.holder, **({"error": error} if error else {})},
        )
