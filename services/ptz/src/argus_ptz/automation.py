"""Tours and park: what a camera does when nobody drives it, run by exactly one pod per camera.

Every pod re-reads the plans (running tours, park settings) every `scan_s` and claims the `auto.<camera>` lease of a
camera whose automation no live pod runs; the claimant runs a `CameraRunner` for it, renewing the lease as it goes
and stopping at once if a renewal fails (another pod took over). A tour holds control at tour priority, the lowest:
any manual control preempts it, and it waits, paused, until that control is released (idle time or release), then
goes back to the preset it was at. Park returns the camera to a preset or home once nobody has commanded it for the
camera's park idle time. Steps, pauses, resumptions and parks are audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg

from argus_core.bus import messages as m
from argus_core.identity import ROLE_PRIORITY
from argus_ptz.audit import Auditor
from argus_ptz.errors import PtzError
from argus_ptz.leases import AutoLease, Claimant, Leases
from argus_ptz.onvif_client import OnvifPool
from argus_ptz.store import Plan, TourStore

log = logging.getLogger(__name__)

PARK_HOLDER = "park"
TOUR_PREFIX = "tour:"
ARRIVAL_LIMIT_S = 60.0  # a tour step waits at most this long for the camera to reach its preset


def tour_holder(name: str) -> str:
    return TOUR_PREFIX + name


@dataclass(frozen=True)
class AutomationSettings:
    tick_s: float
    scan_s: float


class CameraRunner:
    """Runs one camera's tour or park while this pod holds its automation lease."""

    def __init__(
        self,
        camera: str,
        plan: Plan,
        auto: tuple[int, AutoLease],
        *,
        leases: Leases,
        pool: OnvifPool,
        auditor: Auditor,
        settings: AutomationSettings,
    ) -> None:
        self.camera = camera
        self._plan: Plan | None = plan
        self._auto_revision, self._auto = auto
        self._leases = leases
        self._pool = pool
        self._auditor = auditor
        self._settings = settings
        self._stop = asyncio.Event()
        self._handing_back = False
        # tour state
        self._tour = ""
        self._step = 0
        self._phase = "goto"  # goto, arriving, dwell, paused
        self._deadline = 0.0  # monotonic: end of the dwell, or of the wait for arrival
        # park state
        self._last_activity_ns = time.time_ns()
        self._parked = False

    def update(self, plan: Plan | None) -> None:
        self._plan = plan
        if plan is None:
            self._stop.set()

    def stop(self) -> None:
        """The pod is stopping: hand the camera over to another pod where it is."""
        self._handing_back = True
        self._stop.set()

    async def run(self) -> None:
        failing = False
        try:
            while not self._stop.is_set():
                plan = self._plan
                if plan is None:
                    break
                try:
                    if not await self._renew_auto(force=False):
                        return
                    if plan.tour is not None:
                        await self._tour_tick(plan.tour)
                    elif plan.park is not None:
                        await self._park_tick(plan.park)
                except PtzError as exc:
                    # Once per outage, not once per tick.
                    log.log(
                        logging.DEBUG if failing else logging.WARNING,
                        "camera %s: automation: %s",
                        self.camera,
                        exc,
                        extra={"camera": self.camera},
                    )
                    failing = True
                else:
                    failing = False
                try:
                    await asyncio.wait_for(self._stop.wait(), self._settings.tick_s)
                except TimeoutError:
                    pass
            await self._finish()
        except PtzError as exc:
            log.warning("camera %s: automation stopped: %s", self.camera, exc, extra={"camera": self.camera})

    async def _finish(self) -> None:
        if self._handing_back:
            await self._leases.hand_back_auto(self.camera, self._auto_revision, self._tour, self._step)
            return
        # The plan changed: a tour that no longer runs gives control back at once.
        if self._tour and (self._plan is None or self._plan.tour is None or self._plan.tour.name != self._tour):
            await self._leases.release(self.camera, tour_holder(self._tour))
        await self._leases.hand_back_auto(self.camera, self._auto_revision, "", 0)

    async def _renew_auto(self, *, force: bool) -> bool:
        now = time.time_ns()
        if not force and now - self._auto.written_ns < self._leases.ttl_ns / 3:
            return True
        renewed = await self._leases.renew_auto(self.camera, self._auto_revision, self._tour, self._step)
        if renewed is None:
            log.warning("camera %s: another pod took over its automation", self.camera, extra={"camera": self.camera})
            return False
        self._auto_revision, self._auto = renewed
        return True

    # --- tours -----------------------------------------------------------------------------------------------

    async def _tour_tick(self, tour: m.PtzTour) -> None:
        if tour.name != self._tour:
            if self._tour:
                await self._leases.release(self.camera, tour_holder(self._tour))
            self._tour = tour.name
            self._step = self._auto.step if self._auto.tour == tour.name else 0
            self._phase = "goto"
        holder = tour_holder(tour.name)
        now = time.time_ns()
        control = self._leases.control(self.camera)
        if control is not None and control[1].active(now) and control[1].holder != holder:
            if self._phase != "paused":
                self._phase = "paused"
                await self._audit_tour("ptz.tour.pause", tour, "success", {"by": control[1].holder})
            return
        resuming = self._phase == "paused"
        if resuming:
            self._phase = "goto"
        step_index = self._step % len(tour.steps)
        step = tour.steps[step_index]
        if self._phase == "goto":
            details = {"step": str(step_index), "preset": step.preset, "dwell_s": f"{step.dwell_s:g}"}
            error = ""
            async with self._pool.motion_lock(self.camera):
                claim = await self._leases.claim(self.camera, Claimant(holder, ROLE_PRIORITY["tour"], "tour"))
                if claim.granted and await self._renew_auto(force=True):
                    try:
                        client = await self._pool.get(self.camera)
                        await client.goto_preset(step.preset, step.speed)
                    except PtzError as exc:
                        error = str(exc)
                elif claim.granted:
                    self._stop.set()  # another pod runs this camera now
                    return
            if not claim.granted:
                if not resuming:
                    await self._audit_tour("ptz.tour.pause", tour, "success", {"by": claim.lease.holder})
                self._phase = "paused"
                return
            if resuming:
                await self._audit_tour("ptz.tour.resume", tour, "success", {"step": str(step_index)})
            if error:
                # Skip a step that cannot be done (a preset removed from the camera) after its dwell time.
                await self._audit_tour("ptz.tour.step", tour, "failure", {**details, "error": error})
                self._phase = "dwell"
                self._deadline = time.monotonic() + step.dwell_s
                return
            await self._audit_tour("ptz.tour.step", tour, "success", details)
            self._phase = "arriving"
            self._deadline = time.monotonic() + ARRIVAL_LIMIT_S
            return
        if self._phase == "arriving":
            try:
                moving = (await (await self._pool.get(self.camera)).status()).moving
            except PtzError:
                moving = False
            if not moving or time.monotonic() >= self._deadline:
                self._phase = "dwell"
                self._deadline = time.monotonic() + step.dwell_s
            await self._keep_control(holder, now)
            return
        if self._phase == "dwell":
            if time.monotonic() >= self._deadline:
                self._step = (step_index + 1) % len(tour.steps)
                self._phase = "goto"
            else:
                await self._keep_control(holder, now)

    async def _keep_control(self, holder: str, now: int) -> None:
        """Renew the tour's control when half its idle time has gone."""
        control = self._leases.control(self.camera)
        if control is None or control[1].holder != holder:
            return
        if control[1].until_ns - now < self._leases.idle_ns // 2:
            await self._leases.claim(self.camera, Claimant(holder, ROLE_PRIORITY["tour"], "tour"))

    async def _audit_tour(self, action: str, tour: m.PtzTour, outcome: m.Outcome, details: dict[str, str]) -> None:
        if action != "ptz.tour.step":
            log.info(
                "camera %s: tour %s: %s %s", self.camera, tour.name, action, details, extra={"camera": self.camera}
            )
        await self._auditor.record(
            actor=self._auditor.system_actor(tour_holder(tour.name)),
            action=action,
            outcome=outcome,
            camera=self.camera,
            target=tour.name,
            details=details,
        )

    # --- park ------------------------------------------------------------------------------------------------

    async def _park_tick(self, park: m.PtzPark) -> None:
        if self._tour:
            # The tour stopped: give control back and count idle time from now.
            await self._leases.release(self.camera, tour_holder(self._tour))
            self._tour = ""
            self._step = 0
            self._last_activity_ns = time.time_ns()
            self._parked = False
        now = time.time_ns()
        control = self._leases.control(self.camera)
        if control is not None and control[1].holder != PARK_HOLDER:
            lease = control[1]
            if lease.last_ns > self._last_activity_ns:
                self._last_activity_ns = lease.last_ns
                self._parked = False
            if lease.active(now):
                self._last_activity_ns = max(self._last_activity_ns, now)
                self._parked = False
                return
        if self._parked or now - self._last_activity_ns < park.idle_s * 1e9:
            return
        target = park.preset or "home"
        outcome: m.Outcome = "success"
        details = {"idle_s": f"{park.idle_s:g}", "position": target}
        async with self._pool.motion_lock(self.camera):
            claim = await self._leases.claim(self.camera, Claimant(PARK_HOLDER, ROLE_PRIORITY["tour"], "tour"))
            if not claim.granted:
                return
            try:
                client = await self._pool.get(self.camera)
                if park.preset:
                    await client.goto_preset(park.preset, None)
                else:
                    await client.goto_home(None)
            except PtzError as exc:
                outcome = "failure"
                details["error"] = str(exc)
            finally:
                await self._leases.release(self.camera, PARK_HOLDER)
        self._parked = True
        self._last_activity_ns = time.time_ns()
        log.info("camera %s: parked at %s (%s)", self.camera, target, outcome, extra={"camera": self.camera})
        await self._auditor.record(
            actor=self._auditor.system_actor(PARK_HOLDER),
            action="ptz.park",
            outcome=outcome,
            camera=self.camera,
            target=target,
            reason="idle",
            details=details,
        )


class Automation:
    """Claims cameras whose tour or park no live pod runs, and supervises their runners."""

    def __init__(
        self,
        *,
        leases: Leases,
        pool: OnvifPool,
        store: TourStore,
        auditor: Auditor,
        settings: AutomationSettings,
    ) -> None:
        self._leases = leases
        self._pool = pool
        self._store = store
        self._auditor = auditor
        self._settings = settings
        self._runners: dict[str, CameraRunner] = {}
        self._wake = asyncio.Event()

    @property
    def cameras(self) -> set[str]:
        """Cameras whose automation this pod runs now."""
        return set(self._runners)

    def poke(self) -> None:
        """Re-read the plans now (a tour or park setting changed)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tasks:
            try:
                while not stopping.is_set():
                    self._wake.clear()
                    try:
                        await self._scan(tasks)
                    except PtzError as exc:
                        log.warning("automation scan failed: %s", exc)
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        log.warning("automation scan failed: the database did not answer: %s", exc)
                    waits = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(self._wake.wait())}
                    try:
                        await asyncio.wait(waits, timeout=self._settings.scan_s, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for waiter in waits:
                            waiter.cancel()
                        await asyncio.gather(*waits, return_exceptions=True)
            finally:
                for runner in self._runners.values():
                    runner.stop()

    async def _scan(self, tasks: asyncio.TaskGroup) -> None:
        plans = await self._store.plans()
        for camera, runner in list(self._runners.items()):
            runner.update(plans.get(camera))
        for camera, plan in plans.items():
            if camera in self._runners or not self._leases.auto_free(camera):
                continue
            tour = plan.tour.name if plan.tour is not None else ""
            claimed = await self._leases.claim_auto(camera, tour)
            if claimed is None:
                continue
            log.info(
                "camera %s: running its %s here", camera, f"tour {tour}" if tour else "park", extra={"camera": camera}
            )
            runner = CameraRunner(
                camera,
                plan,
                claimed,
                leases=self._leases,
                pool=self._pool,
                auditor=self._auditor,
                settings=self._settings,
            )
            self._runners[camera] = runner
            tasks.create_task(self._supervise(runner), name=f"ptz.automation.{camera}")

    async def _supervise(self, runner: CameraRunner) -> None:
        try:
            await runner.run()
        finally:
            if self._runners.get(runner.camera) is runner:
                del self._runners[runner.camera]
