"""Ingest against real cameras (simcam in this process, GStreamer's RTSP server in a subprocess): what lands on the
bus is every frame the camera sent, once, in order, with the right flags, configuration and capture time."""

from __future__ import annotations

import asyncio
import logging

import pytest

from argus_core.bus import messages as m
from argus_ingest import nal
from argus_simcam.encoder import codec_available
from argus_simcam.timecode import read_timecode
from tests.ingest.support import FAST, decode_timecodes, eventually, gst_camera, world
from tests.simcam.media_env import SMALL, CameraDef, simcam

pytestmark = pytest.mark.slow

H265 = pytest.param("h265", marks=pytest.mark.skipif(not codec_available("h265"), reason="no libx265"))
SECRET = "pa:ss@w/rd!%"


def _is_picture_start_key(codec: str, data: bytes) -> bool:
    """Whether the access unit holds an IDR/IRAP picture (what a keyframe flag must mean)."""
    types = {nal.nal_type(codec, n) for n in nal.split_annexb(data)}
    return bool(types & {5}) if codec == "h264" else any(16 <= t <= 23 for t in types)


def check_session(packets: list[m.MediaPacket], codec: str) -> None:
    """One session's packets: seq from 0 without a hole, keyframe first, flags and configs right, pts increasing."""
    assert packets, "no packets"
    assert [p.seq for p in packets] == list(range(len(packets)))
    first = packets[0]
    assert first.keyframe
    assert first.config is not None
    assert first.config.codec == codec
    for p in packets:
        assert p.keyframe == _is_picture_start_key(codec, p.data), p.seq
        assert (p.config is not None) == p.keyframe, p.seq
        assert p.config is None or p.config.extradata
    assert all(b.dts > a.dts for a, b in zip(packets, packets[1:], strict=False))
    for a, b in zip(packets, packets[1:], strict=False):
        if a.time_trusted == b.time_trusted:
            assert b.capture_ns > a.capture_ns, (a.seq, b.seq)
        else:  # the camera's first RTCP report came after the session started: our clock gives way to the camera's
            assert abs(b.capture_ns - a.capture_ns) < 250_000_000, (a.seq, b.seq)


@pytest.mark.parametrize("codec", ["h264", H265])
async def test_simcam_every_frame_once_with_capture_time_from_rtcp(
    nats_url: str, database_url: str, codec: str
) -> None:
    # simcam's pre-encoded H.265 carries no timecode: that camera encodes live, at a size two cores can afford.
    camera = CameraDef(sub=None) if codec == "h264" else CameraDef(codec="h265", mode="live", main=SMALL, sub=None)
    size = (1280, 720) if codec == "h264" else (640, 360)
    async with simcam({"cam1": camera}) as env, world(nats_url, database_url) as w:
        await asyncio.sleep(2.0)  # a live encoder that just started may skip frames: not what is tested here
        await w.add_camera("cam1", env.url("cam1"))
        pod = await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("cam1")) >= 200, within_s=30, what="200 packets")
        await w.stop_pod("pod-a")
        assert not pod.held
        packets = w.seen.of("cam1")
        assert len(w.seen.sessions("cam1")) == 1
        check_session(packets, codec)
        config = packets[0].config
        assert config is not None
        assert (config.width, config.height) == size
        assert (config.time_base_num, config.time_base_den) == (1, 90000)
        # RTCP gave the capture clock: every packet's time is the camera's, and it is the frame's own timecode.
        assert all(p.time_trusted for p in packets)
        codes = await asyncio.to_thread(decode_timecodes, packets, read_timecode)
        assert len(codes) == len(packets)
        known = [c for c in codes if c is not None]
        assert len(known) == len(codes)
        steps = [
            (b - a, (q.pts - p.pts) // 90) for a, b, p, q in zip(known, known[1:], packets, packets[1:], strict=False)
        ]
        assert all(step == (40, 40) for step in steps), f"a frame is missing or repeated: {steps}"
        for packet, code in zip(packets, known, strict=True):
            assert abs(packet.capture_ns / 1e6 - code) < 2.0, (packet.seq, packet.capture_ns, code)
        # What the bus stored is what was published: every packet once, in order.
        stored = await w.stored("cam1")
        assert [(p.session, p.seq) for p in stored] == [(p.session, p.seq) for p in packets]
        # Health: connecting, online with the stream's facts, and the clock offset the RTCP reports gave.
        statuses = w.seen.status_of("cam1")
        assert w.seen.states("cam1")[:2] == ["connecting", "online"]
        online = [x for x in statuses if x.state == "online"]
        assert online[0].codec == codec
        assert (online[0].width, online[0].height) == size
        assert online[0].ingest_pod == "pod-a"
        assert online[0].session == packets[0].session
        periodic = [x for x in online if x.fps > 0]
        assert periodic, "no periodic status"
        assert all(20 <= x.fps <= 30 for x in periodic[1:]) or 20 <= periodic[-1].fps <= 30
        assert all(x.time_trusted and x.clock_offset_ms is not None for x in periodic)
        assert all(abs(x.clock_offset_ms or 0) < 200 for x in periodic)
        assert periodic[-1].last_keyframe_ns > 0
        assert periodic[-1].bitrate_bps > 100_000


@pytest.mark.parametrize("codec", ["h264", H265])
async def test_gstreamer_camera(nats_url: str, database_url: str, codec: str) -> None:
    async with gst_camera(codec) as cam, world(nats_url, database_url) as w:
        await w.add_camera("gst1", cam.url)
        await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("gst1")) >= 150, within_s=30, what="150 packets")
        await w.stop_pod("pod-a")
        packets = w.seen.of("gst1")
        assert len(w.seen.sessions("gst1")) == 1
        check_session(packets, codec)
        config = packets[0].config
        assert config is not None
        assert (config.width, config.height) == (640, 360)
        # videotestsrc is live at 25 fps: every frame is 3600 ticks after the one before; none is missing.
        assert all(b.pts - a.pts == 3600 for a, b in zip(packets, packets[1:], strict=False))
        assert sum(p.keyframe for p in packets) >= 2
        # GStreamer's first RTCP sender report comes a few seconds in: from then on the time is the camera's.
        assert packets[-1].time_trusted
        flips = sum(a.time_trusted != b.time_trusted for a, b in zip(packets, packets[1:], strict=False))
        assert flips <= 1
        steps = [
            (b.capture_ns - a.capture_ns) / 1e6
            for a, b in zip(packets, packets[1:], strict=False)
            if a.time_trusted == b.time_trusted
        ]
        assert all(20 < step < 60 for step in steps), steps
        stored = await w.stored("gst1")
        assert [p.seq for p in stored] == [p.seq for p in packets]


async def test_credentials_from_the_register_never_logged(
    nats_url: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    defs = {"cam1": CameraDef(credentials=("admin", SECRET), sub=None), "cam2": CameraDef(credentials=("a", "b"))}
    async with simcam(defs) as env, world(nats_url, database_url) as w:
        await w.add_camera("cam1", env.url("cam1"), username="admin", password=SECRET)
        await w.add_camera("cam2", env.url("cam2"), username="a", password="not-" + SECRET)
        await w.start_pod("pod-a")
        await eventually(lambda: len(w.seen.of("cam1")) >= 30, within_s=30, what="cam1 online")
        await eventually(
            lambda: any(x.state == "offline" for x in w.seen.status_of("cam2")), within_s=30, what="cam2 offline"
        )
        # The sub stream is pulled too when asked for.
        await w.stop_pod("pod-a")
    errors = [x.error for x in w.seen.status_of("cam2") if x.state == "offline"]
    assert errors
    assert "401" in errors[0]
    everything = caplog.text + repr([x for x in w.seen.statuses])
    assert SECRET not in everything
    assert "pa:ss" not in everything
    assert "not-pa" not in everything


async def test_udp_and_sub_stream(nats_url: str, database_url: str) -> None:
    settings = FAST.__class__(
        **{
            **{f: getattr(FAST, f) for f in FAST.__struct_fields__},
            "streams": ("main", "sub"),
            "record_streams": ("main", "sub"),
        }
    )
    async with simcam({"cam1": CameraDef()}) as env, world(nats_url, database_url) as w:
        await w.add_camera("cam1", env.url("cam1"), sub_url=env.url("cam1", "sub"), transport="udp")
        await w.start_pod("pod-a", settings)
        await eventually(
            lambda: len(w.seen.of("cam1")) >= 60 and len(w.seen.of("cam1", "sub")) >= 60, within_s=30, what="both"
        )
        await w.stop_pod("pod-a")
    check_session(w.seen.of("cam1"), "h264")
    sub = w.seen.of("cam1", "sub")
    check_session(sub, "h264")
    assert sub[0].config is not None
    assert (sub[0].config.width, sub[0].config.height) == (640, 360)
