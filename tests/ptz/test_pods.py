"""Several ptz pods at once, one of them a real `python -m argus_ptz` process: one driver per tour and per lease."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from argus_core.bus import messages as m
from argus_devstack.ports import free_port
from argus_simcam.ptz import PtzModel
from tests.ptz.support import (
    FAST,
    LEASE_TTL_S,
    OPERATOR,
    OPERATOR_2,
    SUPERVISOR,
    World,
    events,
    eventually,
    ptz_pod,
    world,
)

ROOT = Path(__file__).resolve().parents[2]
CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")


@contextlib.asynccontextmanager
async def process_pod(w: World, pod: str, **settings: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m argus_ptz` on this test's NATS and database, ready when yielded; killed if still running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": pod,
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_NATS_URL": w.nats_url,
            "ARGUS_DB_URL": w.database_url,
            "ARGUS_LEASE_TTL_S": str(LEASE_TTL_S),
            "ARGUS_SHUTDOWN_BUDGET_S": "10",
            "ARGUS_PTZ_LEASE_IDLE_S": "3",
            "ARGUS_PTZ_TICK_S": "0.05",
            "ARGUS_PTZ_SCAN_S": "0.2",
            "ARGUS_PTZ_ONVIF_TIMEOUT_S": "2",
            **{f"ARGUS_PTZ_{k.upper()}": v for k, v in settings.items()},
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argus_ptz",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if proc.returncode is not None:
                    pytest.fail(f"ptz pod {pod} exited with {proc.returncode}")
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, within_s=30, every_s=0.1)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def tour_steps(audit: list[m.AuditEvent], camera: str) -> list[m.AuditEvent]:
    return sorted(events(audit, "ptz.tour.step", camera), key=lambda e: e.at_ns)


def drivers(steps: list[m.AuditEvent]) -> list[str]:
    """The pods that drove a tour, in order, each run of steps by one pod counted once."""
    out: list[str] = []
    for e in steps:
        if not out or out[-1] != e.details["pod"]:
            out.append(e.details["pod"])
    return out


async def start_tours(w: World, cameras: tuple[str, ...] = CAMERAS) -> None:
    for camera in cameras:
        for pan in (-0.5, 0.0, 0.5):
            assert (await w.command(camera, m.PtzAbsoluteMove(pan=pan, tilt=0.0, zoom=0.0), SUPERVISOR, 80)).ok
            await eventually(lambda c=camera, p=pan: abs(w.cameras[c].position()[0] - p) < 1e-3)
            assert (await w.command(camera, m.PtzSetPreset(name=f"p{pan}"), SUPERVISOR, 80)).ok
        steps = tuple(m.PtzTourStep(preset=t, dwell_s=0.3) for t in ("1", "2", "3"))
        assert (await w.command(camera, m.PtzSaveTour(name="patrol", steps=steps), SUPERVISOR, 80)).ok
        assert (await w.command(camera, m.PtzStartTour(name="patrol"), SUPERVISOR, 80)).ok


@pytest.mark.slow
async def test_two_pods_never_both_drive_a_tour_and_a_dead_pods_tours_move(nats_url: str, database_url: str) -> None:
    models = {c: PtzModel(limits=FAST) for c in CAMERAS}
    async with world(nats_url, database_url, dict(models)) as w, process_pod(w, "proc-1") as proc:
        await start_tours(w, CAMERAS[:2])  # only the process pod runs yet: these two are its
        async with ptz_pod(w, "pod-a"):
            await start_tours(w, CAMERAS[2:])  # either pod may take these
            await asyncio.sleep(4.0)
            audit = await w.audit()
            for camera in CAMERAS:
                assert drivers(tour_steps(audit, camera)) in (["proc-1"], ["pod-a"]), camera
            by_process = [c for c in CAMERAS if drivers(tour_steps(audit, c)) == ["proc-1"]]
            assert set(CAMERAS[:2]) <= set(by_process)

            # Kill the process pod without warning: its tours move to pod-a within the TTL, and never overlap.
            killed = time.time_ns()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await asyncio.sleep(LEASE_TTL_S + 2.5)
            audit = await w.audit()
            for camera in CAMERAS:
                steps = tour_steps(audit, camera)
                after = [e for e in steps if e.at_ns > killed + 1_000_000_000 * (LEASE_TTL_S + 1.5)]
                assert after, f"{camera}: the tour stopped with the pod"
                assert {e.details["pod"] for e in after} == {"pod-a"}, camera
                expected = ["proc-1", "pod-a"] if camera in by_process else ["pod-a"]
                assert drivers(steps) == expected, (camera, drivers(steps))


async def test_a_stopping_pod_hands_its_tours_over_where_they_were(nats_url: str, database_url: str) -> None:
    ttl = 6.0  # a takeover by expiry would take this long at least
    async with (
        world(nats_url, database_url, {c: PtzModel(limits=FAST) for c in CAMERAS}, lease_ttl_s=ttl) as w,
        contextlib.AsyncExitStack() as stays,
    ):
        async with ptz_pod(w, "pod-a", lease_ttl_s=ttl):
            await start_tours(w)  # all on pod-a: it is the only pod
            await stays.enter_async_context(ptz_pod(w, "pod-b", lease_ttl_s=ttl))
            await asyncio.sleep(1.5)
            stopped = time.time_ns()
        # pod-a stopped cleanly: pod-b carries on at once, from the step pod-a was at.
        await asyncio.sleep(1.5)
        audit = await w.audit()
        for camera in CAMERAS:
            steps = tour_steps(audit, camera)
            assert drivers(steps) == ["pod-a", "pod-b"], camera
            last_a = int([e for e in steps if e.details["pod"] == "pod-a"][-1].details["step"])
            first_b = next(e for e in steps if e.details["pod"] == "pod-b")
            assert first_b.at_ns - stopped < 2_000_000_000, camera  # no wait for the TTL
            # The same step again (it was dwelling there) or the next one (it had just finished): not step 0.
            assert int(first_b.details["step"]) in (last_a, (last_a + 1) % 3), camera


@pytest.mark.slow
async def test_control_leases_live_on_the_bus_not_in_a_pod(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": PtzModel(limits=FAST)}) as w:
        async with process_pod(w, "proc-1", lease_idle_s="10") as proc:
            granted = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.4), OPERATOR)  # only proc-1 answers
            assert granted.ok
            async with ptz_pod(w, "pod-a", lease_idle_s=10):
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                # The pod that wrote the lease is gone; pod-a keeps it alive well past the bucket's TTL.
                await asyncio.sleep(LEASE_TTL_S * 2)
                refused = await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.4), OPERATOR_2)
                assert (refused.ok, refused.error, refused.holder) == (False, "refused", "op-ann")
                assert refused.lease_until_ns == granted.lease_until_ns
                renewed = await w.command("cam-1", m.PtzAbsoluteMove(pan=-0.4), OPERATOR)
                assert renewed.ok
                assert renewed.lease_until_ns > granted.lease_until_ns
