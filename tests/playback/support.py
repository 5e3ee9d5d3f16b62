"""Helpers of the playback tests: an HTTP client with tokens, the events on the bus, ffmpeg and ffprobe."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from argus_core.bus import Bus, decode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_STREAM, EVENTS_STREAM
from argus_core.identity import Grant, TokenIssuer

T0 = datetime(2026, 3, 9, 2, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Api:
    url: str
    issuer: TokenIssuer
    app: web.Application
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def token(
        self,
        cameras: tuple[str, ...] = ("*",),
        *,
        subject: str = "op-1",
        actions: tuple[str, ...] = ("playback",),
        footage: tuple[int, int] | None = None,
    ) -> str:
        grant = Grant(
            actions=actions,  # type: ignore[arg-type]
            cameras=cameras,
            footage_from=footage[0] if footage else None,
            footage_until=footage[1] if footage else None,
        )
        return self.issuer.issue(subject, ["operator"], [grant])

    async def get(
        self,
        path: str,
        token: str | None = None,
        params: Mapping[str, str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else self.url + path
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, params=params or None, headers=sent) as response,
        ):
            return Reply(response.status, dict(response.headers), await response.read())

    def playlist_url(self, camera: str, start_ms: int, end_ms: int, **extra: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"from": iso(start_ms), "until": iso(end_ms), **extra}.items())
        return f"{self.url}/api/v1/cameras/{camera}/playback/hls.m3u8?{query}"


async def stream_messages(bus: Bus, stream: str) -> list[tuple[str, bytes]]:
    info = await bus.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(stream, seq)
        assert msg.data is not None
        assert msg.subject is not None
        out.append((msg.subject, msg.data))
    return out


async def audit_events(bus: Bus) -> list[m.AuditEvent]:
    return [decode(s.AUDIT, data, subject) for subject, data in await stream_messages(bus, AUDIT_STREAM)]


async def service_events(bus: Bus) -> list[m.ServiceEvent]:
    return [
        decode(s.SERVICE_EVENT, data, subject)
        for subject, data in await stream_messages(bus, EVENTS_STREAM)
        if subject.startswith("argus.event.")
    ]


@dataclass(frozen=True)
class Played:
    frames: int
    out_time_s: float
    errors: str


def ffmpeg_play(url: str, token: str, *, timeout_s: float = 100) -> Played:
    """Decode every frame of an HLS playlist with ffmpeg (to null); frame count, last timestamp and any complaint."""
    out = subprocess.run(
        [
            "/usr/bin/ffmpeg", "-nostdin", "-v", "error", "-headers", f"Authorization: Bearer {token}\r\n",
            "-i", url, "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-",
        ],
        capture_output=True,
        check=False,
        timeout=timeout_s,
    )  # fmt: skip
    progress: dict[str, str] = {}
    for line in out.stdout.decode().splitlines():
        key, _, value = line.partition("=")
        progress[key.strip()] = value.strip()
    errors = out.stderr.decode().strip()
    if out.returncode != 0:
        errors = f"rc={out.returncode} {errors}"
    return Played(int(progress.get("frame", "0")), int(progress.get("out_time_us", "0")) / 1e6, errors)


def ffprobe(path: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            "/usr/bin/ffprobe", "-v", "error", "-count_packets", "-show_entries",
            "format=duration,format_name:stream=codec_name,width,height,nb_read_packets,duration",
            "-of", "json", path,
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()
    assert not out.stderr.strip(), out.stderr.decode()
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def decode_errors(path: str) -> str:
    out = subprocess.run(
        ["/usr/bin/ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    return out.stderr.decode().strip() if out.returncode == 0 else f"rc={out.returncode} {out.stderr.decode()}"
