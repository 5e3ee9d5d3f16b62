"""The ptz service: drives ONVIF pan/tilt/zoom for operators, tours and park, with arbitration between them.

`PtzNode` is one pod's worth of it, given a bus and a database pool: the command server (request/reply on
`argus.ptz.command.<camera>` in a queue group), the lease mirror and keeper (KV `leases-ptz`), the automation
supervisor (tours and park) and the ONVIF clients. `run(config)` wraps a node in the service runtime: health and
metrics, staged shutdown (stop taking commands, finish queued ones and hand tours to other pods, drain NATS, close
ONVIF clients and the pool).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from prometheus_client import CollectorRegistry, Histogram

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import PTZ_LEASES_BUCKET
from argus_core.runtime import Runtime, Stage
from argus_ptz.audit import SERVICE, Auditor
from argus_ptz.automation import Automation, AutomationSettings
from argus_ptz.commands import CommandHandler, Limits
from argus_ptz.config import Config, PtzSettings
from argus_ptz.keeper import Keeper
from argus_ptz.leases import ControlLease, Leases
from argus_ptz.onvif_client import OnvifPool
from argus_ptz.register import CameraRegister
from argus_ptz.server import CommandServer
from argus_ptz.store import TourStore

__all__ = ["SERVICE", "PtzNode", "run"]

log = logging.getLogger(__name__)


class PtzNode:
    """Everything one ptz pod runs. `run(stopping)` until `stopping` is set; then `close()`."""

    def __init__(
        self,
        bus: Bus,
        db: asyncpg.Pool,
        *,
        pod: str,
        settings: PtzSettings,
        lease_ttl_s: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.bus = bus
        self.pod = pod
        self.settings = settings
        self._ttl = lease_ttl_s
        self.register = CameraRegister(db)
        self.onvif = OnvifPool(self.register.ptz_camera, timeout_s=settings.onvif_timeout_s)
        self.store = TourStore(db)
        self.auditor = Auditor(bus, pod=pod)
        self.leases: Leases | None = None
        self.automation: Automation | None = None
        self.server: CommandServer | None = None
        self._ready = False
        self._seconds = (
            Histogram(
                "argus_ptz_command_seconds",
                "time to answer a PTZ command, by action and outcome",
                ["action", "outcome"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            )
            if registry is not None
            else None
        )

    @property
    def ready(self) -> bool:
        return self._ready

    def _observe(self, action: str, outcome: str, seconds: float) -> None:
        if self._seconds is not None:
            self._seconds.labels(action, outcome).observe(seconds)

    async def run(self, stopping: asyncio.Event) -> None:
        kv = await self.bus.js.key_value(PTZ_LEASES_BUCKET)
        settings = self.settings
        leases = self.leases = Leases(
            kv, pod=self.pod, idle_s=settings.lease_idle_s, ttl_s=self._ttl, on_idle_release=self._idle_released
        )
        automation = self.automation = Automation(
            leases=leases,
            pool=self.onvif,
            store=self.store,
            auditor=self.auditor,
            settings=AutomationSettings(tick_s=settings.tick_s, scan_s=settings.scan_s),
        )
        handler = CommandHandler(
            register=self.register,
            pool=self.onvif,
            leases=leases,
            store=self.store,
            auditor=self.auditor,
            limits=Limits(move_timeout_max_s=settings.move_timeout_max_s),
            on_plans_changed=automation.poke,
            observe=self._observe,
        )
        server = self.server = CommandServer(self.bus, handler, queue_size=settings.camera_queue)
        keeper = Keeper(leases, self.onvif, self.auditor, tick_s=settings.tick_s, ttl_s=self._ttl)
        changes = await self.bus.subscribe(s.CAMERA_CHANGED, self._camera_changed)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(leases.run(stopping), name="ptz.lease-mirror")
                await leases.wait_ready()
                tasks.create_task(keeper.run(stopping), name="ptz.keeper")
                tasks.create_task(automation.run(stopping), name="ptz.automation")
                tasks.create_task(server.run(stopping), name="ptz.commands")
                await server.wait_started()
                self._ready = True
                log.info("ptz pod %s taking commands", self.pod)
        finally:
            self._ready = False
            await changes.unsubscribe()

    async def stop_intake(self) -> None:
        self._ready = False
        if self.server is not None:
            await self.server.stop_intake()

    async def _idle_released(self, camera: str, lease: ControlLease) -> None:
        await self.auditor.record(
            actor=m.Actor(subject=lease.holder, roles=(lease.role,) if lease.role else (), client=lease.client),
            action="ptz.control.release",
            outcome="success",
            camera=camera,
            reason="idle",
            details={"since_ns": str(lease.since_ns), "last_ns": str(lease.last_ns)},
        )

    async def _camera_changed(self, change: m.CameraChanged, subject: str) -> None:
        self.register.forget(change.camera)
        await self.onvif.drop(change.camera)

    async def close(self) -> None:
        await self.onvif.close()


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        bus = await rt.connect_bus()
        db = await rt.open_db(config.db)
        node = PtzNode(
            bus, db, pod=config.pod_name, settings=config.ptz, lease_ttl_s=config.lease_ttl_s, registry=rt.registry
        )
        rt.add_check("commands", lambda: node.ready)
        rt.on_stop(Stage.STOP_INTAKE, "ptz-commands", node.stop_intake)
        rt.on_stop(Stage.CLOSE, "onvif", node.close)
        rt.set_ready()
        return await rt.serve(node.run(rt.stopping))
