"""simcam's RTSP server against clients nobody here wrote (ffprobe, ffmpeg, PyAV) and a raw client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re

import av
import pytest

from argus_simcam.encoder import codec_available
from argus_simcam.timecode import read_timecode
from tests.simcam.media_env import CameraDef, ffmpeg_decode, ffprobe, run_tool, simcam
from tests.simcam.rtsp_client import RtspTestClient

pytestmark = pytest.mark.slow

H265 = pytest.param("h265", marks=pytest.mark.skipif(not codec_available("h265"), reason="no libx265"))
CREDS = ("admin", "s3cret!")


@pytest.mark.parametrize("codec", ["h264", H265])
@pytest.mark.parametrize("mode", ["preencoded", "live"])
async def test_ffprobe_reads_every_stream(codec: str, mode: str) -> None:
    name = "h264" if codec == "h264" else "hevc"
    async with simcam({"cam1": CameraDef(codec=codec, mode=mode)}) as env:  # type: ignore[arg-type]
        for stream, size in (("main", "1280,720"), ("sub", "640,360")):
            for transport in ("tcp", "udp"):
                code, out, err = await ffprobe(env.url("cam1", stream), transport)
                assert code == 0, err
                assert out.strip() == f"{name},{size}", (stream, transport, err)


@pytest.mark.parametrize("codec", ["h264", H265])
@pytest.mark.parametrize("mode", ["preencoded", "live"])
async def test_ffmpeg_decodes_without_errors(codec: str, mode: str) -> None:
    async with simcam({"cam1": CameraDef(codec=codec, mode=mode)}) as env:  # type: ignore[arg-type]
        for transport in ("tcp", "udp"):
            code, _, err = await ffmpeg_decode(env.url("cam1"), transport, 3.0)
            assert code == 0
            assert err == "", f"{transport}: {err}"


def _pyav_read(url: str, frames: int, out: list[tuple[int | None, float | None, int | None, int]]) -> None:
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=15) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            out.append((container.start_time_realtime, frame.time, read_timecode(frame), frame.width))
            if len(out) >= frames:
                break


@pytest.mark.parametrize("mode", ["preencoded", "live"])
async def test_pyav_client_demuxes_and_decodes(mode: str) -> None:
    async with simcam({"cam1": CameraDef(mode=mode)}) as env:  # type: ignore[arg-type]
        out: list[tuple[int | None, float | None, int | None, int]] = []
        await asyncio.to_thread(_pyav_read, env.url("cam1"), 60, out)
    assert len(out) == 60
    assert {w for *_, w in out} == {1280}
    codes = [tc for _, _, tc, _ in out]
    assert None not in codes
    assert all(b - a == 40 for a, b in zip(codes, codes[1:], strict=False))  # type: ignore[operator]
    # FFmpeg's RTSP demuxer maps the first sender report to start_time_realtime (us): the capture times agree.
    for start, when, code, _ in out:
        if start is not None and when is not None and code is not None:
            assert abs((start + when * 1e6) / 1000 - code) < 1.5


async def test_many_cameras_on_one_listener() -> None:
    defs = {f"cam{i}": CameraDef(sub=None) for i in range(3)}
    async with simcam(defs) as env:
        for cid in defs:
            code, out, err = await ffprobe(env.url(cid), "tcp")
            assert code == 0, err
            assert out.strip() == "h264,1280,720"
        code, _, err = await ffprobe(env.url("nope"), "tcp")
        assert code != 0
        assert "404" in err


async def test_digest_authentication() -> None:
    async with simcam({"cam1": CameraDef(credentials=CREDS, sub=None)}) as env:
        code, _, err = await ffprobe(env.url("cam1"), "tcp")
        assert code != 0
        assert "401" in err
        code, _, err = await ffprobe(env.url("cam1", credentials=("admin", "wrong")), "tcp")
        assert code != 0
        assert "401" in err
        code, out, err = await ffprobe(env.url("cam1", credentials=CREDS), "tcp")
        assert code == 0, err
        assert out.strip() == "h264,1280,720"
        code, _, err = await ffmpeg_decode(env.url("cam1", credentials=CREDS), "udp", 2.0)
        assert code == 0
        assert err == ""
        async with RtspTestClient(env.url("cam1")) as client:
            assert (await client.request("OPTIONS")).status == 200  # OPTIONS needs no credentials
            denied = await client.request("DESCRIBE")
            assert denied.status == 401
            assert denied.header("www-authenticate").startswith("Digest ")
            basic_header = "Authorization: Basic YWRtaW46czNjcmV0IQ=="
            basic = await client.send_raw(
                f"DESCRIBE {client.url} RTSP/1.0\r\nCSeq: 9\r\n{basic_header}\r\n\r\n".encode()
            )
            assert basic is not None
            assert basic.status == 401  # Basic is refused even with the right password
        async with RtspTestClient(env.url("cam1"), credentials=CREDS) as client:
            reply = await client.start("tcp")
            assert reply.status == 200
            assert len(await client.units(10)) == 10


async def test_protocol_errors_get_clean_answers() -> None:
    async with simcam({"cam1": CameraDef(sub=None)}) as env:
        url = env.url("cam1")
        async with RtspTestClient(url) as c:
            options = await c.request("OPTIONS")
            assert options.status == 200
            for method in ("DESCRIBE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER", "SET_PARAMETER"):
                assert method in options.header("public")
            assert (await c.request("DESCRIBE", env.url("nosuch"))).status == 404
            assert (await c.request("DESCRIBE", env.url("cam1", "sub"))).status == 404
            assert (await c.request("DESCRIBE", url + "/trackID=9")).status == 404
            assert (await c.request("RECORD")).status == 405
            assert (await c.request("FLY")).status == 501
            assert (await c.request("PLAY", headers={"Session": "DEADBEEF"})).status == 454
            track = url + "/trackID=0"
            multicast = await c.request("SETUP", track, {"Transport": "RTP/AVP;multicast;port=5000-5001"})
            assert multicast.status == 461
            assert (await c.request("SETUP", track)).status == 461
            version = await c.send_raw(f"OPTIONS {url} RTSP/2.0\r\nCSeq: 50\r\n\r\n".encode())
            assert version is not None
            assert version.status == 505
            assert (await c.request("GET_PARAMETER")).status == 200
            reply = await c.start("tcp")
            assert reply.header("rtp-info").startswith(f"url={url}/trackID=0;seq=")
            assert reply.header("session").endswith(";timeout=60")
            again = await c.request("SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=2-3"})
            assert again.status == 455
            assert (await c.request("SET_PARAMETER", headers={"Content-Length": "0"})).status == 200
            body = b"foo: bar\r\n"
            raw = (
                f"SET_PARAMETER {url} RTSP/1.0\r\nCSeq: 60\r\nSession: {c.session}\r\n"
                f"Content-Type: text/parameters\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            answer = await c.send_raw(raw)
            assert answer is not None
            assert answer.status == 451
            assert (await c.request("GET_PARAMETER")).status == 200
            assert (await c.request("TEARDOWN")).status == 200
            assert (await c.request("PLAY")).status == 454
        async with RtspTestClient(url) as c:
            bad = await c.send_raw(b"DESCRIBE " + url.encode() + b" RTSP/1.0\r\nAccept: application/sdp\r\n\r\n")
            assert bad is not None
            assert bad.status == 400  # no CSeq


async def test_pause_and_resume() -> None:
    async with simcam({"cam1": CameraDef(sub=None)}) as env, RtspTestClient(env.url("cam1")) as c:
        await c.start("tcp")
        before = await c.units(30)
        assert len(before) == 30
        assert (await c.request("PAUSE")).status == 200
        await asyncio.sleep(0.3)
        while await c.packet(0.2) is not None:  # drain what was in flight
            pass
        assert await c.packet(0.8) is None  # nothing while paused
        reply = await c.checked("PLAY", c.content_base)
        info = dict(p.split("=", 1) for p in reply.header("rtp-info").split(";"))
        last = before[-1]
        after = await c.units(10)
        assert len(after) == 10
        assert int(info["rtptime"]) == after[0].timestamp
        assert ((after[0].timestamp - last.timestamp) & 0xFFFFFFFF) < 1 << 31  # time moves on
        assert after[0].first_seq == int(info["seq"])


async def test_session_expires_without_keepalive() -> None:
    async with simcam({"cam1": CameraDef(sub=None)}, session_timeout=1.0) as env:
        async with RtspTestClient(env.url("cam1")) as quiet:
            await quiet.start("tcp")
            loop = asyncio.get_running_loop()
            start = loop.time()
            while await quiet.packet(5.0) is not None:
                pass
            assert quiet.eof
            assert 0.8 < loop.time() - start < 4.0
        async with RtspTestClient(env.url("cam1")) as chatty:
            await chatty.start("udp")
            for _ in range(8):
                await asyncio.sleep(0.4)
                assert (await chatty.request("GET_PARAMETER")).status == 200
            assert len(await chatty.units(5)) == 5


async def test_slow_client_does_not_hold_up_others() -> None:
    """A client that stops reading fills its own queue and TCP buffers; a second client keeps getting frames."""
    async with simcam({"cam1": CameraDef(sub=None)}) as env:
        async with RtspTestClient(env.url("cam1")) as stuck, RtspTestClient(env.url("cam1")) as fine:
            await stuck.start("tcp")
            await stuck.stop_reading()  # the socket buffers fill up, then the server's queue for it
            await fine.start("tcp")
            units = await fine.units(100, timeout=8.0)
            assert len(units) == 100
            codes = [u.timestamp for u in units]
            assert all(((b - a) & 0xFFFFFFFF) == 3600 for a, b in zip(codes, codes[1:], strict=False))


async def test_event_loop_stays_responsive() -> None:
    """Encoding, clip making and splicing stay off the event loop: it never stalls for long, start-up included.

    (Encoder threads still compete for the GIL, which delays the loop by tens of milliseconds at worst; work done on
    the loop itself, such as encoding a clip, would take seconds.)"""
    loop = asyncio.get_running_loop()
    worst = 0.0

    async def sample() -> None:
        nonlocal worst
        while True:
            before = loop.time()
            await asyncio.sleep(0.005)
            worst = max(worst, loop.time() - before - 0.005)

    sampler = loop.create_task(sample())
    try:
        defs = {"live": CameraDef(mode="live"), "pre1": CameraDef(), "pre2": CameraDef(codec="h264")}
        async with simcam(defs) as env:
            clients = [RtspTestClient(env.url(cid, stream)) for cid in defs for stream in ("main", "sub")]
            for client in clients:
                await client.__aenter__()
            try:
                for client in clients:
                    await client.start("tcp")
                counts = await asyncio.gather(*(client.units(50) for client in clients))
                assert all(len(c) == 50 for c in counts)
            finally:
                for client in clients:
                    await client.close()
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    assert worst < 0.25, f"event loop stalled for {worst * 1000:.0f} ms"


GST = "/usr/bin/gst-launch-1.0"


@pytest.mark.skipif(not os.path.exists(GST), reason="GStreamer is not installed")
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_gstreamer_plays_with_digest(transport: str) -> None:
    async with simcam({"cam1": CameraDef(credentials=CREDS, sub=None)}) as env:
        user, password = CREDS
        code, out, err = await run_tool(
            GST,
            "rtspsrc",
            f"location={env.url('cam1')}",
            f"protocols={transport}",
            f"user-id={user}",
            f"user-pw={password}",
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "fakesink",
            "num-buffers=50",
        )
        # EOS comes once fakesink has taken 50 decoded buffers: GStreamer played the camera through digest auth.
        assert "Got EOS from element" in out, err
        if code != 0:
            # Its shutdown then sends PAUSE, which sometimes reads an end of file (1 run in 2 on the development
            # machine; simcam logs no closed session, so not yet explained): allowed, nothing else.
            places = re.findall(r"gstrtspsrc\.c\(\d+\): (\w+)", err)
            assert places, err
            assert set(places) <= {"gst_rtspsrc_pause", "gst_rtspsrc_try_send"}, err
            assert "Received end-of-file" in err, err
