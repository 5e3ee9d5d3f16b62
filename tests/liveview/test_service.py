"""`python -m argus_liveview` as it runs in production: configured from the environment, ready, serving a viewer
that waits for an offline camera, and on SIGTERM closing every session with its end audited."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from argus_core.bus import Bus
from argus_devstack.ports import free_port
from tests.ingest.support import eventually
from tests.liveview.support import ROOT, audit_events, camera_stack, make_keys
from tests.liveview.whep_client import WhepViewer
from tests.simcam.media_env import CameraDef

pytestmark = pytest.mark.slow


def service_env(nats_url: str, port: int, keys_file: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": "liveview-a",
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_LOG_FORMAT": "text",
            "ARGUS_SHUTDOWN_BUDGET_S": "10",
            "ARGUS_TOKENS_PUBLIC_KEYS": keys_file,
            "ARGUS_LIVEVIEW_ICE_HOSTS": "127.0.0.1",
            **extra,
        }
    )
    return env


async def test_the_service_waits_for_an_offline_camera_and_closes_sessions_on_sigterm(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path)
    port = free_port()
    env = service_env(nats_url, port, keys.config.public_keys[0], ARGUS_LIVEVIEW_VIEWER_TIMEOUT_S="2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argus_liveview",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    viewer = WhepViewer(url, "cam1", keys.token(["cam1"]))
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                assert proc.returncode is None, "liveview exited"
                try:
                    async with http.get(f"{url}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(ready, within_s=30, what="liveview ready")
            # The camera is not on the bus yet: the session starts and waits (its viewer is not judged meanwhile).
            assert await viewer.open(), viewer.problem
            await eventually(lambda: viewer.pc.connectionState == "connected", within_s=15, what="connected")
            await asyncio.sleep(4.0)  # twice the viewer timeout without a frame
            assert not viewer.ended.is_set()
            async with camera_stack(nats_url, database_url, keys, {"cam1": CameraDef(sub=None)}):
                await eventually(lambda: viewer.received.frames >= 25, within_s=30, what="the camera came online")
                async with http.get(f"{url}/metrics") as response:
                    text = await response.text()
                assert "argus_liveview_viewers 1.0" in text
                assert "argus_liveview_cameras_watched 1.0" in text
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(30):
                    assert await proc.wait() == 0
                await eventually(lambda: viewer.ended.is_set(), within_s=10, what="the viewer told it is over")
    finally:
        await viewer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    bus = await Bus.connect(nats_url, name="check")
    try:
        events = await audit_events(bus)
    finally:
        await bus.drain()
    assert [e.action for e in events] == ["live.view.start", "live.view.end"]
    assert events[1].details["reason"] == "shutdown"
    assert float(events[1].details["duration_s"]) > 4.0


async def test_a_bad_setting_stops_the_service_naming_it(nats_url: str, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    env = service_env(nats_url, free_port(), keys.config.public_keys[0], ARGUS_LIVEVIEW_ICE_HOSTS="not-an-address")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "argus_liveview",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 2
    assert b"ARGUS_LIVEVIEW" in out
    assert b"not-an-address" in out
