"""The ptz tests' world: simcam ONVIF cameras on random loopback ports, the register, the bus, ptz pods."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_STREAM
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_ptz.config import PtzSettings
from argus_ptz.service import PtzNode
from argus_simcam.onvif import OnvifCamera, VideoCodec, VideoProfile, make_onvif_app
from argus_simcam.ptz import PtzLimits, PtzModel

USER = "ptz-admin"
PASSWORD = "Pa55-w0rd-not-in-logs"
LEASE_TTL_S = 2.0
# Fast heads: a full pan sweep takes 0.2 s, so moves end quickly and positions are easy to reason about.
FAST = PtzLimits(pan_speed=10.0, tilt_speed=10.0, zoom_speed=10.0)
# Slow heads: a continuous move is still going a while after it started.
SLOW = PtzLimits(pan_speed=0.5, tilt_speed=0.5, zoom_speed=0.5)

OPERATOR = m.Actor(subject="op-ann", roles=("operator",), client="10.0.0.11")
OPERATOR_2 = m.Actor(subject="op-bob", roles=("operator",), client="10.0.0.12")
SUPERVISOR = m.Actor(subject="sup-cat", roles=("supervisor",), client="10.0.0.13")
PARTNER = m.Actor(subject="pc-1234", roles=("partner",), client="10.9.0.1")
PRIORITY = {"operator": 60, "supervisor": 80, "partner": 40, "emergency": 100}


async def _no_snapshot(profile: VideoProfile) -> bytes:
    return b""


def onvif_camera(name: str, ptz: PtzModel | None, **overrides: Any) -> OnvifCamera:
    fields: dict[str, Any] = {
        "name": name,
        "username": USER,
        "password": PASSWORD,
        "profiles": [VideoProfile("main", "MainStream", 1280, 720, VideoCodec.H264)],
        "rtsp_url": lambda profile, host: f"rtsp://{host}:8554/{name}/{profile.token}",
        "snapshot_jpeg": _no_snapshot,
        "ptz": ptz,
    }
    fields.update(overrides)
    return OnvifCamera(**fields)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    """Run `app` on 127.0.0.1, on a random port; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@dataclass
class SimPtz:
    """One simulated PTZ camera serving ONVIF on a loopback port."""

    id: str
    model: PtzModel | None
    camera: OnvifCamera
    port: int = 0

    @property
    def device_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/onvif/device_service"

    def position(self) -> tuple[float, float, float]:
        assert self.model is not None
        return tuple(self.model.position())  # type: ignore[return-value]

    def moving(self) -> bool:
        assert self.model is not None
        return self.model.status().moving


@dataclass
class World:
    """Cameras, the database and the bus of one test."""

    pool: asyncpg.Pool
    bus: Bus
    nats_url: str
    database_url: str
    cameras: dict[str, SimPtz] = field(default_factory=dict)

    async def command(
        self,
        camera: str,
        action: m.PtzAction,
        actor: m.Actor = OPERATOR,
        priority: int | None = None,
        timeout_s: float = 10.0,
    ) -> m.PtzResult:
        role = actor.roles[0] if actor.roles else ""
        command = m.PtzCommand(
            camera=camera, actor=actor, action=action, priority=PRIORITY.get(role, 0) if priority is None else priority
        )
        return await self.bus.request(s.PTZ_COMMAND, command, s.PTZ_RESULT, reply_timeout_s=timeout_s, camera=camera)

    async def audit(self) -> list[m.AuditEvent]:
        """Every audit event the ptz service stored in the AUDIT stream, in order."""
        info = await self.bus.js.stream_info(AUDIT_STREAM)
        events = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            msg = await self.bus.js.get_msg(AUDIT_STREAM, seq)
            if msg.subject == s.AUDIT.format(service="ptz") and msg.data:
                events.append(msgspec.json.decode(msg.data, type=m.AuditEvent))
        return events


async def register(
    pool: asyncpg.Pool,
    camera: str,
    onvif_url: str | None,
    *,
    has_ptz: bool = True,
    username: str = USER,
    password: str = PASSWORD,
) -> None:
    await pool.execute(
        """
        INSERT INTO cameras (id, name, main_url, onvif_url, username, password, has_ptz)
        VALUES ($1, $1, 'rtsp://127.0.0.1:9/none', $2, $3, $4, $5)
        ON CONFLICT (id) DO UPDATE SET onvif_url = EXCLUDED.onvif_url, username = EXCLUDED.username,
            password = EXCLUDED.password, has_ptz = EXCLUDED.has_ptz
        """,
        camera,
        onvif_url,
        username,
        password,
        has_ptz,
    )


@contextlib.asynccontextmanager
async def world(
    nats_url: str,
    database_url: str,
    cameras: dict[str, PtzModel | None],
    *,
    lease_ttl_s: float = LEASE_TTL_S,
) -> AsyncIterator[World]:
    """Serve each camera's ONVIF on its own port, register them, connect the bus (with the PTZ lease TTL)."""
    pool = await create_pool(DatabaseConfig(url=database_url, pool_max=4))
    bus: Bus | None = None
    try:
        await migrate(pool)
        bus = await Bus.connect(nats_url, name="ptz-test")
        await bus.ensure(topology(TopologyOptions(lease_ttl_s=lease_ttl_s)))
        w = World(pool=pool, bus=bus, nats_url=nats_url, database_url=database_url)
        async with contextlib.AsyncExitStack() as stack:
            for camera_id, model in cameras.items():
                sim = SimPtz(camera_id, model, onvif_camera(camera_id, model))
                sim.port = await stack.enter_async_context(serve(make_onvif_app(sim.camera)))
                await register(pool, camera_id, sim.device_url)
                w.cameras[camera_id] = sim
            yield w
    finally:
        if bus is not None:
            await bus.drain()
        await pool.close()


def settings(**overrides: Any) -> PtzSettings:
    values: dict[str, Any] = {"lease_idle_s": 3.0, "onvif_timeout_s": 2.0, "tick_s": 0.05, "scan_s": 0.2}
    values.update(overrides)
    return PtzSettings(**values)


@contextlib.asynccontextmanager
async def ptz_pod(
    w: World, pod: str = "pod-a", lease_ttl_s: float = LEASE_TTL_S, **overrides: Any
) -> AsyncIterator[PtzNode]:
    """One ptz pod in this process, on its own NATS connection and pool, serving until the block ends."""
    bus = await Bus.connect(w.nats_url, name=f"ptz@{pod}")
    pool = await create_pool(DatabaseConfig(url=w.database_url, pool_max=4))
    node = PtzNode(bus, pool, pod=pod, settings=settings(**overrides), lease_ttl_s=lease_ttl_s)
    stopping = asyncio.Event()
    task = asyncio.create_task(node.run(stopping), name=f"test.{pod}")
    try:
        await eventually(lambda: node.ready or task.done(), within_s=10)
        if task.done():
            await task
        yield node
    finally:
        await node.stop_intake()
        stopping.set()
        try:
            await asyncio.wait_for(task, 15)
        finally:
            await node.close()
            await bus.drain()
            await pool.close()


async def eventually(
    condition: Callable[[], bool] | Callable[[], Awaitable[bool]], *, within_s: float = 5.0, every_s: float = 0.02
) -> None:
    """Wait until `condition()` holds; fail the test if it does not within `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(every_s)


def events(audit: list[m.AuditEvent], action: str, camera: str | None = None) -> list[m.AuditEvent]:
    return [e for e in audit if e.action == action and (camera is None or e.camera == camera)]
