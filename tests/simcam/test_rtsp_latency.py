"""Capture-time round trip: the time burnt into each decoded picture equals the capture time its RTP timestamp
maps to through the RTCP sender reports, to the millisecond, and frames are consecutive."""

from __future__ import annotations

import time

import pytest

from argus_simcam.timecode import read_timecode
from tests.simcam.media_env import CameraDef, simcam
from tests.simcam.rtsp_client import RtspTestClient, decode_units

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["preencoded", "live"])
@pytest.mark.parametrize(("stream", "transport"), [("main", "tcp"), ("main", "udp"), ("sub", "tcp")])
async def test_capture_time_round_trip(mode: str, stream: str, transport: str) -> None:
    async with simcam({"cam": CameraDef(mode=mode)}) as env, RtspTestClient(env.url("cam", stream)) as client:  # type: ignore[arg-type]
        await client.start(transport)
        units = await client.units(100)
        assert client.reports, "no RTCP sender report"
    assert len(units) == 100
    decoded = list(decode_units(client.codec, units))
    assert len(decoded) == 100
    codes: list[int] = []
    for unit, frame in decoded:
        code = read_timecode(frame)
        assert code is not None
        assert unit.capture_ns is not None
        assert code == unit.capture_ns // 1_000_000
        codes.append(code)
    assert all(b - a == 40 for a, b in zip(codes, codes[1:], strict=False))  # no loss, no repeat
    # The last frames arrive soon after their capture (the first ones are the cached GOP); generous for busy CI.
    now_wall, now_mono = time.time(), time.monotonic()
    for unit, code in zip(units[-20:], codes[-20:], strict=True):
        arrival_ms = (now_wall - (now_mono - unit.arrival)) * 1000
        assert 0 <= arrival_ms - code < 1500
