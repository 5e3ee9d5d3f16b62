"""The ingest tests' world: the bus and the register, cameras (simcam in-process, GStreamer in a subprocess), ingest
pods in this process or as real `python -m argus_ingest` processes, and what they put on the bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import av
import nats.errors
import pytest
from nats.js import api

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import decode
from argus_core.bus.jetstream import MEDIA_STREAM
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_devstack.ports import free_port
from argus_ingest.config import IngestSettings
from argus_ingest.metrics import Metrics
from argus_ingest.pod import IngestPod

ROOT = Path(__file__).resolve().parents[2]
GST_SCRIPT = Path(__file__).with_name("gst_rtsp_server.py")
DEBIAN_PYTHON = "/usr/bin/python3"

# Quick settings for tests: short stalls and back-offs, frequent status and register reads.
FAST = IngestSettings(
    tick_s=0.1,
    registry_refresh_s=1.0,
    stall_s=2.0,
    backoff_initial_s=0.2,
    backoff_max_s=2.0,
    stable_s=3.0,
    status_interval_s=1.0,
)
FAST_ENV = {
    "ARGUS_INGEST_TICK_S": "0.1",
    "ARGUS_INGEST_REGISTRY_REFRESH_S": "1",
    "ARGUS_INGEST_STALL_S": "2",
    "ARGUS_INGEST_BACKOFF_INITIAL_S": "0.2",
    "ARGUS_INGEST_BACKOFF_MAX_S": "2",
    "ARGUS_INGEST_STATUS_INTERVAL_S": "1",
}


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, within_s: float = 15.0, every_s: float = 0.1, what: str = ""
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within_s} s: {what or check}")
        await asyncio.sleep(every_s)


@dataclass
class Seen:
    """What arrived on the bus (core subscriptions), in arrival order: the packets of the batches stored for
    recording (not the live subject, which carries packets only while a live view asks for them)."""

    packets: list[m.MediaPacket] = field(default_factory=list)
    statuses: list[m.CameraStatus] = field(default_factory=list)

    def of(self, camera: str, stream: str = "main") -> list[m.MediaPacket]:
        return [p for p in self.packets if p.camera == camera and p.stream == stream]

    def sessions(self, camera: str) -> list[str]:
        return list(dict.fromkeys(p.session for p in self.of(camera)))

    def status_of(self, camera: str) -> list[m.CameraStatus]:
        return [x for x in self.statuses if x.camera == camera]

    def states(self, camera: str) -> list[str]:
        """The camera's states in order, repeats collapsed."""
        out: list[str] = []
        for status in self.status_of(camera):
            if not out or out[-1] != status.state:
                out.append(status.state)
        return out


@dataclass
class World:
    nats_url: str
    database_url: str
    bus: Bus
    db: asyncpg.Pool
    seen: Seen
    ttl_s: float
    pods: dict[str, tuple[IngestPod, asyncio.Event, asyncio.Task[None], Bus]] = field(default_factory=dict)

    async def add_camera(
        self,
        camera: str,
        main_url: str,
        *,
        sub_url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: str = "tcp",
        enabled: bool = True,
        site: str | None = None,
    ) -> None:
        if site is not None:
            await self.db.execute("INSERT INTO sites (id, name) VALUES ($1, $1) ON CONFLICT DO NOTHING", site)
        await self.db.execute(
            "INSERT INTO cameras (id, name, main_url, sub_url, username, password, transport, enabled, site_id) "
            "VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO UPDATE SET main_url = $2, "
            "sub_url = $3, username = $4, password = $5, transport = $6, enabled = $7, site_id = $8, "
            "updated_at = now()",
            camera,
            main_url,
            sub_url,
            username,
            password,
            transport,
            enabled,
            site,
        )

    async def remove_camera(self, camera: str) -> None:
        await self.db.execute("DELETE FROM cameras WHERE id = $1", camera)

    async def announce(self, camera: str, change: str = "upsert") -> None:
        await self.bus.publish(
            s.CAMERA_CHANGED,
            m.CameraChanged(camera=camera, change=change, at_ns=time.time_ns()),  # type: ignore[arg-type]
            camera=camera,
        )

    async def start_pod(self, name: str, settings: IngestSettings = FAST) -> IngestPod:
        bus = await Bus.connect(self.nats_url, name=f"ingest@{name}")
        pod = IngestPod(bus, self.db, pod=name, settings=settings, lease_ttl_s=self.ttl_s, metrics=Metrics())
        stopping = asyncio.Event()
        task = asyncio.create_task(pod.run(stopping), name=f"test.pod.{name}")
        self.pods[name] = (pod, stopping, task, bus)
        await eventually(lambda: pod.ready or task.done(), what=f"pod {name} ready")
        if task.done():
            task.result()
        return pod

    async def stop_pod(self, name: str) -> None:
        pod, stopping, task, bus = self.pods.pop(name)
        stopping.set()
        try:
            async with asyncio.timeout(30):
                await task
        finally:
            await bus.drain()

    def holders(self) -> dict[str, str]:
        """Camera -> the in-process pod that pulls it."""
        return {camera: name for name, (pod, *_) in self.pods.items() for camera in pod.held}

    async def stored(self, camera: str, stream: str = "main") -> list[m.MediaPacket]:
        """Every packet of the camera stream stored in the MEDIA stream, in stream order."""
        sub = await self.bus.js.pull_subscribe(
            s.RECORD.format(camera=camera, stream=stream),
            stream=MEDIA_STREAM,
            config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL),
        )
        out: list[m.MediaPacket] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(512, timeout=1.0)
                except TimeoutError:  # nats-py raises asyncio's or its own (a subclass)
                    break
                for msg in msgs:
                    out.extend(decode(s.RECORD, msg.data, msg.subject).packets)
        finally:
            await sub.unsubscribe()
        return out


@contextlib.asynccontextmanager
async def world(nats_url: str, database_url: str, *, ttl_s: float = 3.0) -> AsyncIterator[World]:
    bus = await Bus.connect(nats_url, name="ingest-test")
    await bus.ensure(topology(TopologyOptions(lease_ttl_s=ttl_s)))
    db = await create_pool(DatabaseConfig(url=database_url, pool_min=1, pool_max=4))
    await migrate(db)
    seen = Seen()

    async def on_batch(batch: m.MediaBatch, subject: str) -> None:
        seen.packets.extend(batch.packets)

    async def on_status(status: m.CameraStatus, subject: str) -> None:
        seen.statuses.append(status)

    subs = [
        await bus.subscribe(s.RECORD, on_batch, pending_msgs_limit=100_000),
        await bus.subscribe(s.CAMERA_STATUS, on_status),
    ]
    w = World(nats_url, database_url, bus, db, seen, ttl_s)
    try:
        yield w
    finally:
        for name in list(w.pods):
            with contextlib.suppress(Exception):
                await w.stop_pod(name)
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await bus.drain()
        await db.close()


# --- GStreamer camera ----------------------------------------------------------------------------------------------


@dataclass
class GstCamera:
    url: str
    proc: asyncio.subprocess.Process


@contextlib.asynccontextmanager
async def gst_camera(codec: str = "h264", *, width: int = 640, height: int = 360) -> AsyncIterator[GstCamera]:
    """GStreamer's RTSP server in a Debian python3 subprocess (see gst_rtsp_server.py)."""
    proc = await asyncio.create_subprocess_exec(
        DEBIAN_PYTHON,
        str(GST_SCRIPT),
        "--codec",
        codec,
        "--width",
        str(width),
        "--height",
        str(height),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        info = json.loads(line)
        assert "url" in info, info
        yield GstCamera(info["url"], proc)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(5):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- ingest as a process -------------------------------------------------------------------------------------------


@dataclass
class ProcessPod:
    proc: asyncio.subprocess.Process
    http_port: int

    async def metrics(self) -> dict[str, float]:
        """The pod's /metrics, each family summed over its labels."""
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.http_port}/metrics") as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name = line.split("{", 1)[0].split(" ", 1)[0]
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out


@contextlib.asynccontextmanager
async def process_pod(w: World, pod: str, **settings: str) -> AsyncIterator[ProcessPod]:
    """`python -m argus_ingest` on this test's NATS and database, ready when yielded; killed if still running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": pod,
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_NATS_URL": w.nats_url,
            "ARGUS_DB_URL": w.database_url,
            "ARGUS_LEASE_TTL_S": str(w.ttl_s),
            "ARGUS_SHUTDOWN_BUDGET_S": "15",
            "ARGUS_LOG_FORMAT": "text",
            **FAST_ENV,
            **{f"ARGUS_INGEST_{k.upper()}": v for k, v in settings.items()},
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argus_ingest",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if proc.returncode is not None:
                    pytest.fail(f"ingest pod {pod} exited with {proc.returncode}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, within_s=30, what=f"process pod {pod} ready")
        yield ProcessPod(proc, port)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


# --- media checks --------------------------------------------------------------------------------------------------


def decode_timecodes(packets: list[m.MediaPacket], read: Callable[[av.VideoFrame], int | None]) -> list[int | None]:
    """Decode `packets` (the first must be a keyframe with its config) and read each picture's timecode (ms)."""
    first = packets[0]
    assert first.keyframe
    assert first.config is not None
    ctx = av.CodecContext.create("h264" if first.config.codec == "h264" else "hevc", "r")
    ctx.extradata = first.config.extradata or None
    out: list[int | None] = []
    for packet in packets:
        frames = ctx.decode(av.Packet(packet.data))
        out.extend(read(frame) for frame in frames if isinstance(frame, av.VideoFrame))
    out.extend(read(frame) for frame in ctx.decode(None) if isinstance(frame, av.VideoFrame))
    return out
