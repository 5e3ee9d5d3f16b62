"""simcam as the process the local stack runs: fleet from the environment, RTSP, ONVIF, control API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from onvif import ONVIFCamera

from argus_devstack.ports import free_port
from tests.simcam.onvif_support import WSDL_DIR

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Simcam:
    http: int
    rtsp: int
    onvif_base: int
    proc: asyncio.subprocess.Process

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http}{path}"


async def ffprobe(url: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    streams: list[dict[str, object]] = json.loads(out)["streams"]
    return streams[0]


@pytest.fixture
async def simcam(tmp_path: Path) -> AsyncIterator[Simcam]:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        """
[[camera]]
id = "cam-a"
name = "High St"
latitude = 52.63
longitude = -1.13
main = { width = 640, height = 360, bitrate = 800000 }
sub = { width = 320, height = 180, bitrate = 200000 }

[[camera]]
id = "cam-b"
ptz = false
faults = { clock_skew_s = 2.5 }
"""
    )
    http, rtsp, onvif_base = free_port(), free_port(), free_port()
    while onvif_base + 1 in (http, rtsp):  # two consecutive ONVIF ports
        onvif_base = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env |= {
        "ARGUS_HTTP_HOST": "127.0.0.1",
        "ARGUS_HTTP_PORT": str(http),
        "ARGUS_RTSP_HOST": "127.0.0.1",
        "ARGUS_RTSP_PORT": str(rtsp),
        "ARGUS_ONVIF_PORT_BASE": str(onvif_base),
        "ARGUS_FLEET_FILE": str(fleet),
        "ARGUS_USERNAME": "admin",
        "ARGUS_PASSWORD": "s3cret-pass",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argus_simcam", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    cam = Simcam(http, rtsp, onvif_base, proc)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(cam.url("/readyz")) as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert proc.returncode is None, "simcam exited while starting"
                await asyncio.sleep(0.1)
        yield cam
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, stderr.decode()[-3000:]


@pytest.mark.slow
async def test_fleet_cameras_stream_and_are_listed(simcam: Simcam) -> None:
    async with aiohttp.ClientSession() as http, http.get(simcam.url("/cameras")) as response:
        cameras = {c["id"]: c for c in (await response.json())["cameras"]}
    assert set(cameras) == {"cam-a", "cam-b"}
    assert cameras["cam-a"]["latitude"] == pytest.approx(52.63)
    assert cameras["cam-b"]["ptz"] is None
    assert cameras["cam-b"]["faults"]["clock_skew_s"] == 2.5
    url = f"rtsp://admin:s3cret-pass@127.0.0.1:{simcam.rtsp}/cam-a/main"
    stream = await ffprobe(url)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 360)
    sub = await ffprobe(url.replace("/main", "/sub"))
    assert (sub["width"], sub["height"]) == (320, 180)


@pytest.mark.slow
async def test_onvif_on_its_own_port_gives_stream_uri_snapshot_and_moves(simcam: Simcam) -> None:
    camera = ONVIFCamera("127.0.0.1", simcam.onvif_base, "admin", "s3cret-pass", WSDL_DIR)
    try:
        await camera.update_xaddrs()
        device = await camera.create_devicemgmt_service()
        info = await device.GetDeviceInformation()
        assert info.SerialNumber == "cam-a"
        media = await camera.create_media_service()
        profiles = await media.GetProfiles()
        uri = await media.GetStreamUri(
            {
                "ProfileToken": profiles[0].token,
                "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
            }
        )
        assert uri.Uri == f"rtsp://127.0.0.1:{simcam.rtsp}/cam-a/main"
        snap = await media.GetSnapshotUri({"ProfileToken": profiles[0].token})
        auth = aiohttp.DigestAuthMiddleware("admin", "s3cret-pass")
        async with aiohttp.ClientSession(middlewares=(auth,)) as http, http.get(snap.Uri) as response:
            assert response.status == 200
            assert (await response.read())[:2] == b"\xff\xd8"  # a JPEG
        ptz = await camera.create_ptz_service()
        await ptz.AbsoluteMove(
            {"ProfileToken": profiles[0].token, "Position": {"PanTilt": {"x": 0.5, "y": 0.2}, "Zoom": {"x": 0.3}}}
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(simcam.url("/cameras/cam-a")) as response:
                    position = (await response.json())["ptz"]
                if position["pan"] == pytest.approx(0.5, abs=1e-3) and position["zoom"] == pytest.approx(0.3, abs=1e-3):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"the camera did not reach the position: {position}")
    finally:
        await camera.close()


@pytest.mark.slow
async def test_control_api_sets_faults_and_refuses_bad_ones(simcam: Simcam) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.patch(simcam.url("/cameras/cam-a/faults"), json={"refuse_auth": True}) as response:
            assert response.status == 200
        probe = await asyncio.create_subprocess_exec(
            "ffprobe", "-v", "error", "-rtsp_transport", "tcp",
            f"rtsp://admin:s3cret-pass@127.0.0.1:{simcam.rtsp}/cam-a/main",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(probe.communicate(), 30)
        assert probe.returncode != 0
        assert b"401" in err
        async with http.delete(simcam.url("/cameras/cam-a/faults")) as response:
            assert (await response.json())["refuse_auth"] is False
        async with http.patch(simcam.url("/cameras/cam-a/faults"), json={"cover": "purple"}) as response:
            assert response.status == 400
            assert (await response.json())["fault"] == "cover"
        async with http.post(simcam.url("/cameras/cam-a/reboot"), json={"seconds": -1}) as response:
            assert response.status == 400
        async with http.post(simcam.url("/cameras/nope/drop")) as response:
            assert response.status == 404
        async with http.post(simcam.url("/cameras/cam-b/reboot"), json={"seconds": 2}) as response:
            assert (await response.json())["rebooting"] is True
