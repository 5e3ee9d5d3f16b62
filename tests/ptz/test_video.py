"""The video shows it: a PTZ command through the bus turns simcam's rendered, H.264-encoded picture."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pytest

from argus_core.bus import messages as m
from argus_simcam.camera import MediaHub, SimCamera
from argus_simcam.faults import FaultState
from argus_simcam.ptz import PtzModel
from argus_simcam.rtsp import RtspServer
from argus_simcam.stream import StreamSpec
from tests.ptz.support import FAST, SUPERVISOR, eventually, ptz_pod, world

WIDTH, HEIGHT = 320, 180
Frame = npt.NDArray[np.uint8]


class Viewer:
    """Debian's ffmpeg pulling the camera's RTSP stream and decoding every frame to grey levels."""

    def __init__(self) -> None:
        self.latest: Frame | None = None
        self.frames = 0

    async def watch(self, url: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/ffmpeg",
            "-v",
            "error",
            "-rtsp_transport",
            "tcp",
            "-i",
            url,
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            while True:
                data = await proc.stdout.readexactly(WIDTH * HEIGHT)
                self.latest = np.frombuffer(data, dtype=np.uint8).reshape(HEIGHT, WIDTH)
                self.frames += 1
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def frame_after(self, frames: int) -> Frame:
        """A frame at least `frames` frames newer than now."""
        target = self.frames + frames
        await eventually(lambda: self.frames >= target, within_s=20)
        assert self.latest is not None
        return self.latest


def difference(a: Frame, b: Frame) -> float:
    # The OSD strip at the bottom carries the time and changes every frame: leave it out.
    body = slice(0, HEIGHT * 3 // 4)
    return float(np.abs(a[body].astype(np.int16) - b[body].astype(np.int16)).mean())


@contextlib.asynccontextmanager
async def rtsp(camera: SimCamera, hub: MediaHub) -> AsyncIterator[str]:
    server = RtspServer("127.0.0.1", 0, {"cam-1": camera})
    try:
        await camera.start()
        await server.start()
        yield server.url("cam-1", "main")
    finally:
        await server.close()
        await camera.close()
        await hub.close()


@pytest.mark.slow
async def test_a_ptz_command_moves_the_picture(nats_url: str, database_url: str) -> None:
    async with world(nats_url, database_url, {"cam-1": None}) as w:
        sim = w.cameras["cam-1"]
        # The ONVIF camera and the RTSP camera share one PTZ head, as in simcam.
        model = PtzModel(limits=FAST)
        sim.model = model
        sim.camera.ptz = model
        hub = MediaHub(loop_s=2.0)
        media = SimCamera(
            "CAM 1",
            "h264",
            StreamSpec(WIDTH, HEIGHT, fps=25, bitrate=400_000),
            None,
            "live",
            None,
            model.view,
            FaultState(),
            hub=hub,
        )
        viewer = Viewer()
        async with rtsp(media, hub) as url, ptz_pod(w), asyncio.TaskGroup() as tasks:
            watching = tasks.create_task(viewer.watch(url))
            before = await viewer.frame_after(150)  # past what the stream had queued before we joined
            still = await viewer.frame_after(25)
            assert difference(before, still) < 5  # the scene's movers only

            result = await w.command("cam-1", m.PtzAbsoluteMove(pan=0.8, tilt=0.5, zoom=0.7), SUPERVISOR, 80)
            assert result.ok, result
            await eventually(lambda: not sim.moving())
            moved = await viewer.frame_after(25)
            assert difference(before, moved) > 15  # another part of the town, closer

            assert (await w.command("cam-1", m.PtzAbsoluteMove(pan=0.0, tilt=0.0, zoom=0.0), SUPERVISOR, 80)).ok
            await eventually(lambda: not sim.moving())
            back = await viewer.frame_after(25)
            assert difference(before, back) < 5  # the same view as at first
            watching.cancel()
