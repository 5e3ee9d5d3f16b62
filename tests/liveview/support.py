"""The liveview tests' world: simcam cameras -> ingest (in this process) -> NATS -> liveview (in this process, or as
`python -m argus_liveview`) -> viewers; tokens from a test issuer, audit events read back from the AUDIT stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from nats.js import api

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.codec import decode
from argus_core.bus.jetstream import AUDIT_STREAM
from argus_core.identity import Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_devstack.ports import free_port
from argus_liveview.config import LiveviewSettings
from argus_liveview.metrics import Metrics
from argus_liveview.service import Liveview, build_app
from tests.ingest.support import FAST, World, eventually, world
from tests.simcam.media_env import CameraDef, Env, simcam

ROOT = Path(__file__).resolve().parents[2]

# Quick settings for tests: loopback ICE only, short grace and timeouts. Ingest, liveview and the test share one
# event loop here, so ingest's catch-up answer may take longer than across processes: it gets 3 s, not 1.
TEST_SETTINGS = LiveviewSettings(
    ice_hosts=("127.0.0.1",), idle_grace_s=1.0, viewer_timeout_s=4.0, catchup_timeout_s=3.0
)


@dataclass
class Keys:
    issuer: TokenIssuer
    config: TokenConfig

    def token(
        self,
        cameras: Sequence[str] = ("*",),
        *,
        subject: str = "op-1",
        actions: tuple[str, ...] = ("live",),
        ttl_s: float = 600.0,
    ) -> str:
        grant = Grant(actions=actions, cameras=tuple(cameras))  # type: ignore[arg-type]
        return self.issuer.issue(subject, ["operator"], [grant], ttl_s=ttl_s)


def make_keys(folder: Path) -> Keys:
    private, public = generate_keypair()
    (folder / "k1.pem").write_bytes(public)  # the key id is the public key file's stem
    issuer = TokenIssuer(private, "k1", issuer="argus", audience="argus", ttl_s=600)
    return Keys(issuer, TokenConfig(public_keys=(str(folder / "k1.pem"),)))


@dataclass
class LiveHandle:
    url: str
    liveview: Liveview
    metrics: Metrics
    bus: Bus

    async def metric(self, name: str) -> float:
        """A metric family summed over its labels, from the app's registry."""
        total = 0.0
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                if sample.name == name:
                    total += sample.value
        return total


@contextlib.asynccontextmanager
async def liveview_in_process(
    nats_url: str, keys: Keys, settings: LiveviewSettings = TEST_SETTINGS, *, pod: str = "liveview-test"
) -> AsyncIterator[LiveHandle]:
    """A liveview in this process; `pod` names it in its live demands (and is its NATS connection's name)."""
    bus = await Bus.connect(nats_url, name=pod)
    await bus.ensure(topology(TopologyOptions()))
    metrics = Metrics()
    lv = Liveview(bus, settings, metrics, pod=pod)
    app = build_app(TokenVerifier.from_config(keys.config))
    lv.install(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield LiveHandle(f"http://127.0.0.1:{port}", lv, metrics, bus)
    finally:
        await lv.close()
        await runner.cleanup()
        await bus.drain()


@dataclass
class Stack:
    env: Env
    world: World
    keys: Keys
    cameras: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def camera_stack(
    nats_url: str,
    database_url: str,
    keys: Keys,
    defs: dict[str, CameraDef],
    *,
    streams: tuple[m.StreamName, ...] = ("main",),
) -> AsyncIterator[Stack]:
    """simcam cameras pulled by one ingest pod onto the test's NATS; yielded once every stream is on the bus."""
    settings = FAST.__class__(
        **{
            **{f: getattr(FAST, f) for f in FAST.__struct_fields__},
            "streams": streams,
            "record_streams": streams,
            "clock_settle_s": 0.5,
        }
    )
    async with simcam(defs) as env, world(nats_url, database_url) as w:
        for camera, d in defs.items():
            sub_url = env.url(camera, "sub") if d.sub is not None else None
            await w.add_camera(camera, env.url(camera), sub_url=sub_url)
        await w.start_pod("pod-a", settings)
        for camera, d in defs.items():
            wanted = [x for x in streams if x == "main" or d.sub is not None]
            for stream in wanted:
                await eventually(
                    lambda c=camera, st=stream: len(w.seen.of(c, st)) >= 5,  # type: ignore[misc]
                    within_s=30,
                    what=f"{camera}/{stream} on the bus",
                )
        yield Stack(env, w, keys, list(defs))


async def audit_events(bus: Bus, *, service: str = "liveview") -> list[m.AuditEvent]:
    """Every audit event the service persisted, in order."""
    sub = await bus.js.pull_subscribe(
        s.AUDIT.format(service=service),
        stream=AUDIT_STREAM,
        config=api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, deliver_policy=api.DeliverPolicy.ALL),
    )
    out: list[m.AuditEvent] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=0.5)
            except TimeoutError:
                break
            out.extend(decode(s.AUDIT, msg.data, msg.subject) for msg in msgs)
    finally:
        await sub.unsubscribe()
    return out


# --- viewers in other processes ----------------------------------------------------------------------------------


@dataclass
class ViewerProcess:
    proc: asyncio.subprocess.Process
    results: list[dict[str, Any]] = field(default_factory=list)
    ready: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            item = json.loads(line)
            (self.ready if item.get("event") == "ready" else self.results).append(item)

    async def wait(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            await self.proc.wait()
            if self._reader is not None:
                await self._reader
        return self.results


@contextlib.asynccontextmanager
async def viewer_processes(
    url: str,
    jobs: Sequence[dict[str, Any]],
) -> AsyncIterator[list[ViewerProcess]]:
    """One `python -m tests.liveview.viewer_proc` per job (a dict of its options); killed if still running."""
    procs: list[ViewerProcess] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    try:
        for job in jobs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.liveview.viewer_proc",
                "--url",
                url,
                "--job",
                json.dumps(job),
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            vp = ViewerProcess(proc)
            vp._reader = asyncio.create_task(vp._read(), name="viewer-proc.read")
            procs.append(vp)
        yield procs
    finally:
        for vp in procs:
            if vp.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    vp.proc.kill()
            await vp.proc.wait()
            if vp._reader is not None:
                await vp._reader


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def now_ms() -> float:
    return time.time() * 1000
