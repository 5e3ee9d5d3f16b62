"""One ingest pod: which cameras it pulls (register and leases), their pullers, and its orderly stop.

Two loops run side by side:

- the keeper (`_keep`), every third of the lease TTL: rewrites the pod's heartbeat and renews its leases; a lease
  another pod holds now is dropped at once (its pullers stop, nothing is flushed), and so is one that could not be
  renewed for most of a TTL (the bus is away: the others may have taken it). It has a task of its own so that a
  hand-over waiting for acks on a slow bus never delays a renewal past the TTL;
- the balancer (`_loop`), every `tick_s` and at once when the lease bucket or the register changes: hands over
  cameras that left the register or were disabled (reported `disabled`) or moved to a site this pod does not
  serve (`ARGUS_INGEST_SITES`; pods serving the same sites form a pool that shares them), restarts the pullers
  of a camera whose row changed (URL, credentials, transport), then takes its share (`leases.plan`): hands over
  cameras above it, takes free or stale ones up to it.

Handing a camera over stops its pullers (no packet after that), waits for the acks of what they sent, then
deletes the lease, so that the next pod starts its session after this one's last packet. A pod that dies stops
renewing: its leases go stale after the TTL and the other pods take its cameras at their next tick.

Stopping (SIGTERM): the pod stops taking cameras, hands every camera over as above (all at once), deletes its
heartbeat, and returns once the demux threads have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import CAMERA_STATUS_BUCKET, INGEST_LEASES_BUCKET
from argus_ingest.camera import PullSettings, StreamPuller, Takeover
from argus_ingest.config import IngestSettings
from argus_ingest.demux import Coalescer
from argus_ingest.leases import KV_ERRORS, Acquired, LeaseTable, plan
from argus_ingest.live import LiveDemands
from argus_ingest.metrics import Metrics
from argus_ingest.publisher import AckRouter
from argus_ingest.register import CameraRow, Register
from argus_ingest.status import StatusReporter

log = logging.getLogger(__name__)

_RESTART_AFTER_CRASH_S = 5.0


@dataclass
class _Slot:
    row: CameraRow
    pullers: list[StreamPuller]
    task: asyncio.Task[None]


class IngestPod:
    """Everything one ingest pod runs. `run(stopping)` until `stopping` is set, then it hands its cameras over."""

    def __init__(
        self,
        bus: Bus,
        pool: asyncpg.Pool,
        *,
        pod: str,
        settings: IngestSettings,
        lease_ttl_s: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.pod = pod
        self.settings = settings
        self.pull: PullSettings = settings.pull_settings()
        self.ttl_s = lease_ttl_s
        self.metrics = metrics or Metrics()
        self.register = Register(pool, refresh_s=settings.registry_refresh_s)
        self.leases: LeaseTable | None = None
        self.status: StatusReporter | None = None
        self.router = AckRouter(bus)
        self.live = LiveDemands(bus, pod)
        self._coalescer: Coalescer | None = None
        self._slots: dict[str, _Slot] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._slots)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def pullers(self, camera: str) -> list[StreamPuller]:
        slot = self._slots.get(camera)
        return list(slot.pullers) if slot is not None else []

    def stop_intake(self) -> None:
        """Stop taking cameras and start handing them over (the runtime's first shutdown stage)."""
        self._stopping = True
        self._ready = False
        self._wake.set()

    async def _camera_changed(self, change: m.CameraChanged, subject: str) -> None:
        self.register.poke()

    # --- main loop --------------------------------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        js = self.bus.js
        leases = self.leases = LeaseTable(
            await js.key_value(INGEST_LEASES_BUCKET), pod=self.pod, ttl_s=self.ttl_s, sites=self.settings.sites
        )
        leases.changed = self._wake
        self.status = StatusReporter(self.bus, await js.key_value(CAMERA_STATUS_BUCKET))
        await self.router.start()
        await self.live.start()
        self._coalescer = Coalescer(asyncio.get_running_loop(), self.pull.coalesce_s)
        changes = await self.bus.subscribe(s.CAMERA_CHANGED, self._camera_changed)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                mirror_stop = asyncio.Event()
                tg.create_task(leases.run(mirror_stop), name="ingest.lease-mirror")
                reader = tg.create_task(self.register.run(stopping, self._wake), name="ingest.register")
                watch = tg.create_task(self._watch_stop(stopping), name="ingest.stop-watch")
                keeper: asyncio.Task[None] | None = None
                try:
                    await self._start(stopping)
                    keeper = tg.create_task(self._keep(), name="ingest.lease-keeper")
                    await self._loop(stopping)
                finally:
                    self._ready = False
                    await self._hand_over_all()
                    mirror_stop.set()
                    for task in (reader, watch, keeper):
                        if task is not None:
                            task.cancel()
        finally:
            self._tg = None
            with contextlib.suppress(*KV_ERRORS):
                await changes.unsubscribe()
            await self.router.close()
            await self.live.close()
            self.metrics.cameras_held.set(0)
            self.metrics.cameras_online.set(0)

    async def _watch_stop(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self.stop_intake()

    async def _start(self, stopping: asyncio.Event) -> None:
        leases = self._leases()
        while not (leases.ready.is_set() and self.register.loaded.is_set()) and not self._stopping:
            await self._sleep(0.05)
        # Say we are here, then give pods that start with us a moment to say so too: fewer cameras change hands.
        with contextlib.suppress(*KV_ERRORS):
            await leases.heartbeat(0)
        await self._sleep(min(1.0, self.ttl_s / 3))
        if not self._stopping:
            self._ready = True
            log.info("ingest pod %s taking cameras", self.pod)

    async def _loop(self, stopping: asyncio.Event) -> None:
        """Balance at every tick, and at once when the bucket or the register changed."""
        while not self._stopping:
            self._wake.clear()
            await self._balance()
            self.metrics.cameras_held.set(len(self._slots))
            self.metrics.cameras_online.set(sum(1 for slot in self._slots.values() if slot.pullers[0].online))
            if self.stopping:
                return
            try:
                async with asyncio.timeout(self.settings.tick_s):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _keep(self) -> None:
        """Heartbeat and lease renewals every third of the TTL, in a task of their own: a hand-over that waits for
        acks (a slow bus) never delays them past the TTL. Runs until cancelled."""
        every = self.ttl_s / 3
        while True:
            started = time.monotonic()
            await self._renew()
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._stopping:
                    await self._wake.wait()
                    self._wake.clear()

    def _leases(self) -> LeaseTable:
        if self.leases is None:
            raise RuntimeError("IngestPod.run() first")
        return self.leases

    # --- leases -----------------------------------------------------------------------------------------------------

    async def _renew(self) -> None:
        leases = self._leases()
        try:
            await leases.heartbeat(len(self._slots))
        except KV_ERRORS as exc:
            log.warning("heartbeat of pod %s failed: %r", self.pod, exc)
        cameras = list(self._slots)
        # All at once: one round trip for the lot, however many cameras, so that a slow bus or a busy loop does not
        # stretch a round past the TTL for the cameras at its end.
        results = await asyncio.gather(*(leases.renew(camera) for camera in cameras))
        for camera, renewed in zip(cameras, results, strict=True):
            if camera not in self._slots:  # handed over meanwhile
                continue
            if renewed is False or (renewed is None and leases.expired(camera)):
                why = "another pod holds it now" if renewed is False else "it could not be renewed in time"
                log.warning("lost the lease on camera %s: %s", camera, why, extra={"camera": camera})
                self.metrics.lease_changes.labels("lost").inc()
                leases.forget(camera)
                await self._stop_slot(camera, flush=False)

    async def _balance(self) -> None:
        leases = self._leases()
        streams, sites = self.settings.streams, leases.sites
        enabled = self.register.enabled
        register = {
            cid: row for cid, row in enabled.items() if row.served_by(sites) and any(row.url(x) for x in streams)
        }
        pools = leases.live_pools()
        self.metrics.cameras_unserved.set(
            sum(1 for row in enabled.values() if not any(row.served_by(pool) for pool in pools))
        )
        for camera, slot in list(self._slots.items()):
            row = register.get(camera)
            if row is None:
                known = self.register.cameras.get(camera)
                await self._hand_over([camera])
                if known is not None and known.enabled and not known.served_by(sites):
                    log.info("camera %s moved to site %s: handed over", camera, known.site, extra={"camera": camera})
                    continue
                await self._report_disabled(camera, "removed from the register" if known is None else "disabled")
            elif row != slot.row:
                log.info("camera %s changed in the register: reconnecting", camera, extra={"camera": camera})
                await self._stop_slot(camera, flush=True)
                self._launch(row, Takeover())
        if self._stopping:
            return
        step = plan(register, leases.owners(), leases.live_pods(), self.pod)
        if step.give:
            log.info("handing over %s to even the spread (target %d)", ", ".join(step.give), step.target)
            await self._hand_over(list(step.give))
        for camera in step.take:
            if self.stopping:
                return
            try:
                acquired = await leases.acquire(camera)
            except KV_ERRORS as exc:
                log.warning("could not take camera %s: %r", camera, exc, extra={"camera": camera})
                return
            if acquired is not None:
                self._take(register[camera], acquired)

    def _take(self, row: CameraRow, acquired: Acquired) -> None:
        self.metrics.lease_changes.labels("taken").inc()
        if acquired.previous_pod:
            log.info(
                "took camera %s over from %s (%s)",
                row.id,
                acquired.previous_pod,
                acquired.takeover,
                extra={"camera": row.id, "previous_pod": acquired.previous_pod},
            )
        else:
            log.info("took camera %s", row.id, extra={"camera": row.id})
        self._launch(row, Takeover(acquired.previous_pod, acquired.takeover))

    def _launch(self, row: CameraRow, takeover: Takeover) -> None:
        if self._tg is None:
            raise RuntimeError("IngestPod.run() first")
        pullers: list[StreamPuller] = []
        for stream in self.settings.streams:
            source = row.source(stream, stall_s=self.pull.stall_s)
            if source is None:
                continue
            pullers.append(
                StreamPuller(
                    self.bus,
                    self.router,
                    source,
                    pod=self.pod,
                    settings=self.pull,
                    metrics=self.metrics,
                    status=self.status if not pullers else None,
                    takeover=takeover,
                    coalescer=self._coalescer,
                    live=self.live,
                    record=stream in self.settings.record_streams,
                )
            )
        task = self._tg.create_task(self._run_pullers(pullers), name=f"ingest.camera.{row.id}")
        self._slots[row.id] = _Slot(row, pullers, task)

    async def _run_pullers(self, pullers: list[StreamPuller]) -> None:
        async with asyncio.TaskGroup() as tg:
            for puller in pullers:
                tg.create_task(self._guard(puller), name=f"ingest.{puller.camera}.{puller.stream}")

    async def _guard(self, puller: StreamPuller) -> None:
        """A puller's top: a bug in it is logged and the puller started again, never a crash of the pod."""
        while True:
            try:
                await puller.run()
            except Exception:
                log.exception("puller of %s/%s failed; restarting", puller.camera, puller.stream)
            else:
                return
            if puller.stopping:
                return
            await asyncio.sleep(_RESTART_AFTER_CRASH_S)

    async def _stop_slot(self, camera: str, *, flush: bool) -> None:
        slot = self._slots.pop(camera, None)
        if slot is None:
            return
        for puller in slot.pullers:
            puller.stop()
        if flush:
            await self._quiesced([slot])

    async def _quiesced(self, slots: list[_Slot]) -> None:
        waits = [puller.quiesced.wait() for slot in slots for puller in slot.pullers]
        if not waits:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.pull.flush_timeout_s + 1.0):
                await asyncio.gather(*waits)

    async def _hand_over(self, cameras: list[str]) -> None:
        """Stop, flush, then release: the next pod's first packet comes after this pod's last one."""
        slots = [slot for camera in cameras if (slot := self._slots.pop(camera, None)) is not None]
        for slot in slots:
            for puller in slot.pullers:
                puller.stop()
        await self._quiesced(slots)
        leases = self._leases()
        for slot in slots:
            await leases.release(slot.row.id)
            self.metrics.lease_changes.labels("released").inc()

    async def _hand_over_all(self) -> None:
        if self._slots:
            log.info("handing over %d camera(s)", len(self._slots))
        await self._hand_over(list(self._slots))
        if self.leases is not None:
            await self.leases.leave()

    async def _report_disabled(self, camera: str, why: str) -> None:
        if self.status is not None:
            await self.status.report(
                m.CameraStatus(camera=camera, state="disabled", at_ns=time.time_ns(), ingest_pod=self.pod, error=why)
            )
