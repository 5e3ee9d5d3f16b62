"""Helpers for the ONVIF tests: a camera, a server on a random loopback port, hand-signed SOAP, leak checks."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import onvif
from aiohttp import web
from onvif import ONVIFCamera

from argus_simcam.onvif import OnvifCamera, VideoCodec, VideoProfile
from argus_simcam.ptz import PtzModel

USER = "admin"
PASSWORD = "s3cret-Pa55"
WSDL_DIR = str(Path(onvif.__file__).parent / "wsdl")
RTSP_PORT = 8554

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "ter": "http://www.onvif.org/ver10/error",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
}
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"


def make_jpeg(width: int, height: int) -> bytes:
    """A real JPEG (PyAV's mjpeg encoder) of a gradient."""
    codec = av.CodecContext.create("mjpeg", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)], axis=-1).astype(
        np.uint8
    )
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)


async def probe_image(data: bytes) -> dict[str, Any]:
    """Debian's ffprobe on an image: its first stream (codec_name, width, height)."""
    result = await asyncio.to_thread(
        subprocess.run,
        ["/usr/bin/ffprobe", "-v", "error", "-show_streams", "-of", "json", "-i", "pipe:0"],
        input=data,
        capture_output=True,
        timeout=30,
        check=True,
    )
    streams: list[dict[str, Any]] = json.loads(result.stdout)["streams"]
    return streams[0]


async def _snapshot(profile: VideoProfile) -> bytes:
    return await asyncio.to_thread(make_jpeg, profile.width // 4, profile.height // 4)


def make_camera(name: str = "Gate 1", *, ptz: PtzModel | None = None, **overrides: Any) -> OnvifCamera:
    fields: dict[str, Any] = {
        "name": name,
        "username": USER,
        "password": PASSWORD,
        "profiles": [
            VideoProfile("main", "MainStream", 1920, 1080, VideoCodec.H264, fps=25, bitrate_kbps=4096),
            VideoProfile("sub", "SubStream", 640, 360, VideoCodec.H265, fps=15, bitrate_kbps=512),
        ],
        "rtsp_url": lambda profile, host: f"rtsp://{host}:{RTSP_PORT}/{name.replace(' ', '_')}/{profile.token}",
        "snapshot_jpeg": _snapshot,
        "ptz": ptz if ptz is not None else PtzModel(),
        "manufacturer": "Argus",
        "model": "SimCam-PTZ",
        "firmware_version": "2.5.1",
        "location": "city/high_street",
    }
    fields.update(overrides)
    return OnvifCamera(**fields)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    """Run `app` on 127.0.0.1, on a random port; yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        address = runner.addresses[0]
        yield int(address[1])
    finally:
        await runner.cleanup()


@asynccontextmanager
async def onvif_client(
    port: int, user: str = USER, password: str = PASSWORD, **kwargs: Any
) -> AsyncIterator[ONVIFCamera]:
    """onvif-zeep-async's camera client (what Home Assistant uses), closed on exit."""
    camera = ONVIFCamera("127.0.0.1", port, user, password, WSDL_DIR, no_cache=True, **kwargs)
    try:
        yield camera
    finally:
        await camera.close()


def security_header(
    user: str = USER,
    password: str = PASSWORD,
    *,
    created: dt.datetime | None = None,
    nonce: bytes | None = None,
) -> str:
    """A WS-Security UsernameToken header, PasswordDigest, signed by hand."""
    nonce = os.urandom(16) if nonce is None else nonce
    when = created or dt.datetime.now(dt.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(hashlib.sha1(nonce + stamp.encode() + password.encode()).digest()).decode()
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{user}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{digest}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{stamp}</wsu:Created>"
        "</wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "") -> bytes:
    declarations = " ".join(f'xmlns:{p}="{u}"' for p, u in NS.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {declarations}>'
        f"<env:Header>{header}</env:Header><env:Body>{body}</env:Body></env:Envelope>"
    ).encode()


async def post_soap(session: aiohttp.ClientSession, url: str, data: bytes) -> tuple[int, ET.Element, str]:
    """POST a SOAP message; returns (HTTP status, parsed response envelope, content type)."""
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
    async with session.post(url, data=data, headers=headers) as response:
        body = await response.read()
        return response.status, ET.fromstring(body), response.headers.get("Content-Type", "")


def fault_subcodes(root: ET.Element) -> list[str]:
    """The subcode values of a SOAP 1.2 fault, outermost first (as their prefixed text)."""
    values: list[str] = []
    node = root.find("env:Body/env:Fault/env:Code", NS)
    while node is not None:
        node = node.find("env:Subcode", NS)
        if node is not None:
            values.append((node.findtext("env:Value", "", NS)).strip())
    return values


@asynccontextmanager
async def no_leaks() -> AsyncIterator[None]:
    """Fail if the test leaves a task or a thread behind (the default executor is shut down first)."""
    threads = set(threading.enumerate())
    yield
    await asyncio.get_running_loop().shutdown_default_executor()
    current = asyncio.current_task()
    leftover: list[asyncio.Task[Any]] = []
    for _ in range(50):
        leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not leftover:
            break
        await asyncio.sleep(0.01)
    assert not leftover, f"tasks left behind: {leftover}"
    extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not extra, f"threads left behind: {extra}"
