"""Start real simcam cameras and an RTSP server on a random loopback port for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from argus_simcam.camera import MediaHub, Mode, SimCamera
from argus_simcam.faults import FaultState
from argus_simcam.rtsp import RtspServer
from argus_simcam.stream import Codec, StreamSpec

MAIN = StreamSpec(1280, 720, fps=25, bitrate=2_000_000)
SUB = StreamSpec(640, 360, fps=25, bitrate=500_000)
SMALL = StreamSpec(640, 360, fps=25, bitrate=800_000)


@dataclass
class CameraDef:
    codec: Codec = "h264"
    mode: Mode = "preencoded"
    main: StreamSpec = MAIN
    sub: StreamSpec | None = SUB
    credentials: tuple[str, str] | None = None
    faults: FaultState = field(default_factory=FaultState)


@dataclass
class Env:
    server: RtspServer
    cameras: dict[str, SimCamera]
    hub: MediaHub

    def url(self, camera_id: str, stream: str = "main", credentials: tuple[str, str] | None = None) -> str:
        url = self.server.url(camera_id, stream)
        if credentials is not None:
            user, password = credentials
            url = url.replace("rtsp://", f"rtsp://{user}:{password}@", 1)
        return url

    def faults(self, camera_id: str) -> FaultState:
        return self.cameras[camera_id].faults


@contextlib.asynccontextmanager
async def simcam(
    defs: dict[str, CameraDef], *, loop_s: float = 2.0, session_timeout: float = 60.0
) -> AsyncIterator[Env]:
    hub = MediaHub(loop_s=loop_s)
    cameras = {
        cid: SimCamera(f"CAM {cid}", d.codec, d.main, d.sub, d.mode, d.credentials, None, d.faults, hub=hub)
        for cid, d in defs.items()
    }
    server = RtspServer("127.0.0.1", 0, cameras, session_timeout=session_timeout)
    try:
        for camera in cameras.values():
            await camera.start()
        await server.start()
        yield Env(server, cameras, hub)
    finally:
        await server.close()
        for camera in cameras.values():
            await camera.close()
        await hub.close()


async def run_tool(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:  # noqa: ASYNC109
    """Run ffprobe/ffmpeg; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def ffprobe(url: str, transport: str) -> tuple[int, str, str]:
    return await run_tool(
        "/usr/bin/ffprobe",
        "-v",
        "error",
        "-rtsp_transport",
        transport,
        "-show_entries",
        "stream=codec_name,width,height",
        "-of",
        "csv=p=0",
        url,
    )


async def ffmpeg_decode(url: str, transport: str, seconds: float = 3.0) -> tuple[int, str, str]:
    return await run_tool(
        "/usr/bin/ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-rtsp_transport",
        transport,
        "-i",
        url,
        "-t",
        str(seconds),
        "-f",
        "null",
        "-",
    )
