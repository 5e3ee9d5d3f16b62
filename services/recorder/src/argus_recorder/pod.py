"""The recorder pod: which cameras it records (register and leases), their workers, and its orderly stop.

Every TTL/3 the pod beats its heartbeat, renews its leases (dropping at once a camera whose lease another pod now
holds), and balances: it hands over cameras above its fair share or no longer in the register, and takes free
ones up to its share (see `leases`). A worker that fails is restarted with a back-off while the lease is held.

Stopping (SIGTERM): no camera is taken any more; every worker hands over (stores its complete GOPs and acks them)
while the leases are still renewed; then the leases are deleted, so the other pods take the cameras at their next
tick instead of waiting for the TTL, and the heartbeat is withdrawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import nats.errors
from nats.js.errors import APIError

from argus_recorder.camera import CameraWorker, StopMode, WorkerContext
from argus_recorder.index import Index, IndexRejected, IndexUnavailable
from argus_recorder.leases import Leases, Snapshot, camera_key, fair_share, rank
from argus_recorder.metrics import Metrics
from argus_recorder.pull import ConsumerGone

log = logging.getLogger(__name__)

_RESTART_MAX_S = 30.0
_NATS_ERRORS = (nats.errors.Error, APIError, TimeoutError)


class _Slot:
    """A camera this pod holds: its worker and the task running it."""

    def __init__(self, worker: CameraWorker, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.task = task
        self.releasing = False


class RecorderPod:
    def __init__(
        self,
        *,
        ctx: WorkerContext,
        leases: Leases,
        index: Index,
        metrics: Metrics,
        static_cameras: tuple[str, ...],
        registry_refresh_s: float,
        stopping: asyncio.Event,
        on_ready: Callable[[], None],
    ) -> None:
        self._ctx = ctx
        self._leases = leases
        self._index = index
        self._metrics = metrics
        self._static = static_cameras
        self._refresh_s = registry_refresh_s
        self._stopping = stopping
        self._on_ready = on_ready
        self._cameras: frozenset[str] = frozenset(static_cameras)
        self._slots: dict[str, _Slot] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._register_changed = asyncio.Event()

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._slots)

    def register_changed(self) -> None:
        self._register_changed.set()

    async def run(self) -> None:
        await self._leases.open()
        if not self._static:
            await self._load_register()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            if not self._static:
                tg.create_task(self._register_loop(), name="recorder.register")
            await self._lease_loop()
        self._tg = None

    # --- the register ---------------------------------------------------------------------------------------------

    async def _load_register(self) -> None:
        try:
            cameras = frozenset(await self._index.enabled_cameras())
        except (IndexUnavailable, IndexRejected) as exc:
            log.warning("camera register unavailable (%s): keeping %d cameras", exc, len(self._cameras))
            return
        if cameras != self._cameras:
            log.info("camera register: %d cameras to record", len(cameras))
        self._cameras = cameras

    async def _register_loop(self) -> None:
        while not self._stopping.is_set():
            waiters = {
                asyncio.ensure_future(self._stopping.wait()),
                asyncio.ensure_future(self._register_changed.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=self._refresh_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if self._stopping.is_set():
                return
            self._register_changed.clear()
            await self._load_register()

    # --- leases ---------------------------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        interval = self._leases.ttl_s / 3
        first = True
        while not self._stopping.is_set():
            started = time.monotonic()
            await self._tick(take=not first)
            if first:
                self._on_ready()
                first = False
            remaining = interval - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, remaining)):
                    await self._stopping.wait()
        await self._stop_all(interval)

    async def _tick(self, *, take: bool) -> None:
        try:
            await self._leases.heartbeat()
        except _NATS_ERRORS as exc:
            log.warning("lease heartbeat failed: %s", exc)
        await self._renew()
        try:
            snapshot = await self._leases.snapshot()
        except _NATS_ERRORS as exc:
            log.warning("cannot read the lease bucket: %s", exc)
            return
        self._balance(snapshot, take=take)
        if take:
            await self._take(snapshot)
        self._metrics.cameras_held.set(len(self._slots))

    async def _renew(self) -> None:
        for camera, slot in list(self._slots.items()):
            try:
                ours = await self._leases.renew(camera)
            except _NATS_ERRORS as exc:
                if not self._leases.expired(camera):
                    continue
                log.error(  # noqa: TRY400 - an outage, not a bug
                    "%s: lease not renewed for most of its TTL (%s): stopping without acking", camera, exc
                )
                ours = False
            if not ours:
                log.warning("%s: lease lost to another pod: stopping at once", camera, extra={"camera": camera})
                self._leases.forget(camera)
                slot.releasing = True
                slot.worker.stop("abandon")

    def _balance(self, snapshot: Snapshot, *, take: bool) -> None:
        mine = [c for c, slot in self._slots.items() if not slot.releasing]
        for camera in mine:
            if camera not in self._cameras:
                log.info("%s left the register: handing it over", camera, extra={"camera": camera})
                self._release(camera, "handover")
        mine = [c for c in mine if c in self._cameras]
        share = fair_share(len(self._cameras), sorted(snapshot.pods), self._leases.pod)
        excess = len(mine) - share
        if excess > 0 and take:
            for camera in sorted(mine, key=lambda c: rank(c, self._leases.pod))[:excess]:
                log.info(
                    "%s: handing over (%d held, fair share %d of %d cameras over %d pods)",
                    camera,
                    len(mine),
                    share,
                    len(self._cameras),
                    len(snapshot.pods),
                    extra={"camera": camera},
                )
                self._release(camera, "handover")

    async def _take(self, snapshot: Snapshot) -> None:
        mine = [c for c, slot in self._slots.items() if not slot.releasing and c in self._cameras]
        share = fair_share(len(self._cameras), sorted(snapshot.pods), self._leases.pod)
        wanted = share - len(mine)
        if wanted <= 0:
            return
        stream = self._leases.stream
        free = [c for c in self._cameras if c not in self._slots and camera_key(c, stream) not in snapshot.owners]
        free.sort(key=lambda c: rank(c, self._leases.pod), reverse=True)
        for camera in free:
            if wanted <= 0:
                break
            try:
                if not await self._leases.acquire(camera):
                    continue
            except _NATS_ERRORS as exc:
                log.warning("%s: cannot take the lease: %s", camera, exc)
                continue
            log.info("%s: lease taken", camera, extra={"camera": camera})
            self._start(camera)
            wanted -= 1

    # --- workers --------------------------------------------------------------------------------------------------

    def _start(self, camera: str) -> None:
        assert self._tg is not None
        worker = CameraWorker(camera, self._ctx)
        task = self._tg.create_task(self._supervise(worker), name=f"recorder.camera.{camera}")
        self._slots[camera] = _Slot(worker, task)

    def _release(self, camera: str, mode: StopMode) -> None:
        slot = self._slots.get(camera)
        if slot is None or slot.releasing:
            return
        slot.releasing = True
        slot.worker.stop(mode)

    async def _supervise(self, worker: CameraWorker) -> None:
        camera = worker.camera
        backoff = 1.0
        try:
            while True:
                try:
                    await worker.run()
                except asyncio.CancelledError:
                    raise
                except ConsumerGone:  # logged by the worker; nothing failed, so no back-off
                    if worker.stop_mode is not None or await worker.wait_stopped(0.5):
                        break
                    continue
                except Exception:
                    if worker.stop_mode is not None:
                        log.exception("%s: worker failed while stopping", camera)
                        break
                    log.exception("%s: worker failed; restarting in %.0f s", camera, backoff)
                    if await worker.wait_stopped(backoff):
                        break
                    backoff = min(backoff * 2, _RESTART_MAX_S)
                    continue
                break
        finally:
            slot = self._slots.pop(camera, None)
            if worker.stop_mode == "abandon":
                self._leases.forget(camera)
            else:
                try:
                    await self._leases.release(camera)
                except _NATS_ERRORS as exc:
                    log.warning("%s: lease not deleted (%s): it expires after its TTL", camera, exc)
            if slot is not None:
                self._metrics.cameras_held.set(len(self._slots))

    async def _stop_all(self, interval: float) -> None:
        if self._slots:
            log.info("stopping: handing over %d cameras", len(self._slots))
        for camera in list(self._slots):
            self._release(camera, "handover")
        while self._slots:
            tasks = {slot.task for slot in self._slots.values()}
            await asyncio.wait(tasks, timeout=interval)
            if self._slots:
                await self._renew()  # still ours while their last segments are stored
        try:
            await self._leases.leave()
        except _NATS_ERRORS as exc:
            log.warning("heartbeat not withdrawn (%s): it expires after its TTL", exc)
        self._metrics.cameras_held.set(0)
