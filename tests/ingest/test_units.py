"""Ingest's pure parts on their own: bitstream reading, URLs and redaction, the capture clock, the session rules,
the even spread and the back-off."""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from argus_core.bus.messages import MediaPacket
from argus_ingest import nal
from argus_ingest.camera import backoff_delay
from argus_ingest.clock import NS, CaptureClock, ClockPolicy
from argus_ingest.demux import Closed, Coalescer, Handoff, Opened, Source, redact_url, with_credentials
from argus_ingest.leases import plan
from argus_ingest.session import Session, SessionPolicy, StreamInfo, Unit
from argus_simcam.encoder import codec_available

pytestmark = pytest.mark.no_servers

H265 = pytest.param("h265", marks=pytest.mark.skipif(not codec_available("h265"), reason="no libx265"))


# --- bitstream -----------------------------------------------------------------------------------------------------


def encode(codec: str, width: int, height: int, frames: int = 3) -> list[bytes]:
    """A few real access units (Annex B) from FFmpeg's encoder."""
    ctx = av.CodecContext.create("libx264" if codec == "h264" else "libx265", "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"preset": "ultrafast"} | ({"x265-params": "log-level=none"} if codec == "h265" else {})
    out: list[bytes] = []
    for i in range(frames):
        picture = np.full((height * 3 // 2, width), (i * 40) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in ctx.encode(frame))
    out.extend(bytes(p) for p in ctx.encode(None))
    return out


@pytest.mark.parametrize("codec", ["h264", H265])
@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (1920, 1080), (352, 288), (1000, 562)])
def test_picture_size_from_the_sps(codec: str, size: tuple[int, int]) -> None:
    units = encode(codec, *size)
    params = nal.parameter_sets(codec, nal.split_annexb(units[0]))  # type: ignore[arg-type]
    kinds = {nal.nal_type(codec, p) for p in params}
    assert kinds == ({7, 8} if codec == "h264" else {32, 33, 34})
    assert nal.size_from_parameter_sets(codec, params) == size  # type: ignore[arg-type]
    assert nal.extradata_parameter_sets(codec, nal.annexb(params)) == params  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["h264", H265])
def test_parameter_sets_of_avcc_and_hvcc_extradata(codec: str, tmp_path: Path) -> None:
    units = encode(codec, 640, 360, frames=2)
    params = nal.parameter_sets(codec, nal.split_annexb(units[0]))  # type: ignore[arg-type]
    raw = tmp_path / f"clip.{codec}"
    raw.write_bytes(b"".join(units))
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(
        [
            "/usr/bin/ffmpeg",
            "-v",
            "error",
            "-f",
            "h264" if codec == "h264" else "hevc",
            "-i",
            str(raw),
            "-c",
            "copy",
            str(mp4),
        ],
        check=True,
        timeout=30,
    )
    with av.open(str(mp4)) as back:
        extradata = bytes(back.streams.video[0].codec_context.extradata or b"")
    assert extradata[:1] == b"\x01"  # avcC / hvcC, not Annex B
    assert set(nal.extradata_parameter_sets(codec, extradata)) == set(params)  # type: ignore[arg-type]


def test_split_annexb_handles_three_and_four_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x00\x01\x65\x04\x00"
    assert nal.split_annexb(data) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04"]
    assert nal.split_annexb(b"") == []
    with pytest.raises(nal.BitstreamError):
        nal.picture_size("h264", b"\x67\x64")


# --- URLs ------------------------------------------------------------------------------------------------------------


def test_credentials_go_into_the_url_encoded_and_come_out_of_every_message() -> None:
    url = with_credentials("rtsp://10.0.0.5:554/Streaming/101", "admin", "p@ss:w/rd%!")
    assert url == "rtsp://admin:p%40ss%3Aw%2Frd%25%21@10.0.0.5:554/Streaming/101"
    assert redact_url(url) == "rtsp://***@10.0.0.5:554/Streaming/101"
    assert with_credentials("rtsp://u:p@h/x", "admin", "other") == "rtsp://u:p@h/x"  # the URL's own win
    assert with_credentials("rtsp://h/x", None, "pw") == "rtsp://h/x"
    assert with_credentials("rtsp://h/x", "viewer", None) == "rtsp://viewer@h/x"
    source = Source(camera="c1", stream="main", url=url)
    message = f"Server returned 401 for '{url}' (p%40ss%3Aw%2Frd%25%21)"
    assert "p%40ss" not in source.redact(message)
    assert "***@10.0.0.5" in source.redact(message)
    assert "p%40ss" not in repr(source)


# --- the capture clock -------------------------------------------------------------------------------------------


T0 = 1_790_000_000 * NS
FRAME = 40_000_000


def feed(clock: CaptureClock, frames: range, latency_ns: int, start_ns: int = T0) -> None:
    for i in range(frames.start, frames.stop):
        clock.sample(i * FRAME, start_ns + i * FRAME + latency_ns)


def test_rtcp_clock_within_tolerance_is_the_camera_clock() -> None:
    clock = CaptureClock()
    clock.set_realtime((T0 + 3_000_000) // 1000)  # the camera runs 3 ms ahead
    feed(clock, range(50), latency_ns=20_000_000)
    assert clock.trusted
    assert clock.offset_ns == 3_000_000 - 20_000_000  # low by the smallest delay seen
    assert clock.capture(10 * FRAME) == (T0 + 3_000_000 + 10 * FRAME, True)


def test_a_camera_clock_far_off_is_not_trusted_and_ours_is_used() -> None:
    clock = CaptureClock(ClockPolicy(tolerance_ns=NS))
    clock.set_realtime((T0 + 30 * NS) // 1000)  # the camera's clock is 30 s fast
    feed(clock, range(50), latency_ns=10_000_000)
    assert not clock.trusted
    capture, trusted = clock.capture(60 * FRAME)
    assert not trusted
    assert capture == T0 + 10_000_000 + 60 * FRAME


def test_without_rtcp_capture_times_are_ours_and_move_smoothly() -> None:
    policy = ClockPolicy(slew_ns_per_packet=1_000_000)
    clock = CaptureClock(policy)
    feed(clock, range(25), latency_ns=50_000_000)
    assert not clock.has_rtcp
    assert clock.offset_ns is None
    first, trusted = clock.capture(0)
    assert not trusted
    assert first == T0 + 50_000_000
    # The network got 30 ms faster: the anchor follows, at most 1 ms per packet, so frames never bunch up.
    feed(clock, range(25, 100), latency_ns=20_000_000)
    times = [clock.capture(i * FRAME)[0] for i in range(100, 160)]
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(FRAME - 1_000_000 <= step <= FRAME for step in steps)
    assert times[-1] == T0 + 20_000_000 + 159 * FRAME


# --- session rules ------------------------------------------------------------------------------------------------


SPS_PPS = (
    b"\x00\x00\x00\x01"
    + bytes.fromhex("6742c01eda0280bfe5c05a8303035280000003008000001947")
    + (b"\x00\x00\x00\x01\x68\xce\x3c\x80")
)
INFO = StreamInfo(codec="h264", width=640, height=360, extradata=SPS_PPS, time_base_num=1, time_base_den=90000)
IDR = b"\x00\x00\x00\x01\x65\x88\x84"
P = b"\x00\x00\x00\x01\x41\x9a\x02"


def unit(i: int | None, *, key: bool = False, at: int = 0, lost: int = 0, data: bytes | None = None) -> Unit:
    pts = None if i is None else i * 3600
    arrival = T0 + (0 if i is None else i) * FRAME + at
    return Unit(pts, pts, 3600, key, data or (IDR if key else P), arrival, None, lost)


def quick() -> SessionPolicy:
    return SessionPolicy(settle_min_ns=0, settle_max_ns=0)


def test_first_packet_is_a_keyframe_with_config_and_the_lead_without_pts_is_repaired() -> None:
    session = Session("c1", "main", "s1", INFO, quick())
    out = session.push(unit(None, key=True))
    assert out == []
    out = session.push(unit(1))
    assert [(p.seq, p.pts, p.keyframe) for p in out] == [(0, 0, True), (1, 3600, False)]
    assert out[0].config is not None
    assert (out[0].config.width, out[0].config.height) == (640, 360)
    assert out[0].config.extradata == SPS_PPS
    assert out[1].config is None
    assert session.counters.repaired == 1


def test_a_lead_that_cannot_be_placed_is_skipped_and_the_session_waits_for_a_keyframe() -> None:
    session = Session("c1", "main", "s1", INFO, quick())
    session.push(unit(None, key=True))
    assert session.push(unit(6)) == []  # six frames later: the lead's time is unknown
    assert session.push(unit(7)) == []
    out = session.push(unit(8, key=True))
    assert [(p.seq, p.keyframe) for p in out] == [(0, True)]
    assert session.counters.no_pts == 1
    assert session.counters.before_keyframe == 2
    assert session.push(unit(None)) == []
    assert session.counters.no_pts == 2


def test_units_dropped_by_the_thread_leave_a_hole_and_wait_for_a_keyframe() -> None:
    session = Session("c1", "main", "s1", INFO, quick())
    assert [p.seq for p in session.push(unit(0, key=True))] == [0]
    assert [p.seq for p in session.push(unit(1))] == [1]
    assert session.push(unit(5, lost=3)) == []
    assert [p.seq for p in session.push(unit(6, key=True))] == [5]
    assert session.counters.lost == 3


def test_new_parameter_sets_in_band_make_a_new_config() -> None:
    session = Session("c1", "main", "s1", INFO, quick())
    first = session.push(unit(0, key=True, data=SPS_PPS + IDR))[0]
    assert first.config is not None
    assert first.config.extradata == SPS_PPS  # the same as the SDP's: kept as the demuxer gave it
    session.push(unit(1))
    # 1280x720 parameter sets from a real encoder, in band on the next keyframe.
    big = nal.parameter_sets("h264", nal.split_annexb(encode("h264", 1280, 720, 1)[0]))
    second = session.push(unit(2, key=True, data=nal.annexb(big) + IDR))[0]
    assert second.config is not None
    assert (second.config.width, second.config.height) == (1280, 720)
    assert second.config.extradata == nal.annexb(big)
    third = session.push(unit(3, key=True))[0]  # no parameter sets in band: the config in force
    assert third.config == second.config
    assert session.counters.config_changes == 1


def test_packets_wait_for_the_clock_to_settle_then_get_the_same_clock() -> None:
    policy = SessionPolicy(settle_min_ns=300_000_000, settle_max_ns=NS)
    session = Session("c1", "main", "s1", INFO, policy)
    realtime = (T0 + 2_000_000) // 1000
    burst = [Unit(i * 3600, i * 3600, 3600, i == 0, IDR if i == 0 else P, T0 + 20 * FRAME, None) for i in range(20)]
    assert all(session.push(u) == [] for u in burst)  # a burst read while probing: all arrive at once
    out: list[object] = []
    for i in range(20, 40):
        u = Unit(i * 3600, i * 3600, 3600, False, P, T0 + i * FRAME + 5_000_000, realtime if i > 25 else None)
        out.extend(session.push(u))
    assert session.settled
    assert len(out) == 40
    packets = [p for p in out if isinstance(p, MediaPacket)]
    assert all(p.time_trusted for p in packets)
    assert [p.capture_ns for p in packets] == [T0 + 2_000_000 + i * FRAME for i in range(40)]


def test_a_session_without_rtcp_settles_on_our_clock() -> None:
    session = Session("c1", "main", "s1", INFO, SessionPolicy(settle_min_ns=0, settle_max_ns=200_000_000))
    out = []
    counts = []
    for i in range(10):
        out.extend(session.push(unit(i, key=i == 0, at=7_000_000)))
        counts.append(len(out))
    assert counts == [0, 0, 0, 0, 0, 6, 7, 8, 9, 10]  # held until 200 ms had passed, then as they come
    assert not any(p.time_trusted for p in out)
    assert out[0].capture_ns == T0 + 7_000_000
    out.extend(session.finish())
    assert [p.seq for p in out] == list(range(len(out)))


# --- the spread -----------------------------------------------------------------------------------------------------


def test_plan_spreads_evenly_and_moves_little() -> None:
    cams = [f"c{i}" for i in range(7)]
    # Alone: take everything.
    assert len(plan(cams, {}, {"a"}, "a").take) == 7
    # Two pods, a holds all: a gives 3, b takes 3 once they are free.
    owners = dict.fromkeys(cams, "a")
    assert len(plan(cams, owners, {"a", "b"}, "a").give) == 3
    assert plan(cams, owners, {"a", "b"}, "b").take == ()
    # 4 + 3 is even: nobody moves, whoever has the extra one keeps it.
    owners = {c: ("a" if i < 3 else "b") for i, c in enumerate(cams)}
    for me in ("a", "b"):
        step = plan(cams, owners, {"a", "b"}, me)
        assert step.give == ()
        assert step.take == ()
    # A third pod joins a 3 + b 4: targets 2, 3, 2 (the extra one stays with the pod that has most); a and b give
    # one each, c takes them when they are free.
    three = {"a", "b", "c"}
    assert (plan(cams, owners, three, "a").target, len(plan(cams, owners, three, "a").give)) == (2, 1)
    assert (plan(cams, owners, three, "b").target, len(plan(cams, owners, three, "b").give)) == (3, 1)
    assert (plan(cams, owners, three, "c").target, plan(cams, owners, three, "c").take) == (2, ())
    owners = {c: o for c, o in owners.items() if c not in ("c0", "c6")}
    assert len(plan(cams, owners, three, "c").take) == 2
    # A dead pod's cameras are free: the survivors share them.
    owners = {c: ("a" if i < 4 else "x") for i, c in enumerate(cams)}
    live = {c: o for c, o in owners.items() if o != "x"}
    assert len(plan(cams, live, {"a", "b"}, "b").take) == 3
    # Pods starting together reach for different cameras first.
    firsts = {plan(cams, {}, {"a", "b", "c"}, me).take[0] for me in ("a", "b", "c")}
    assert len(firsts) >= 2


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(4)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(12)]
    assert all(0.25 <= delays[0] <= 0.5 for _ in range(1))
    assert all(0.5 * min(30, 0.5 * 2**n) <= d <= min(30, 0.5 * 2**n) for n, d in enumerate(delays))
    assert delays[-1] <= 30.0
    assert len({round(d, 6) for d in delays}) == len(delays)


# --- the thread-to-loop channel -------------------------------------------------------------------------------------


async def test_handoff_is_bounded_drops_when_full_and_keeps_order() -> None:
    loop = asyncio.get_running_loop()
    coalescer = Coalescer(loop, delay_s=0.002)
    handoff = Handoff(loop, 4, put_wait_s=0.05, coalescer=coalescer)
    results: list[bool | None] = []

    def producer() -> None:
        results.append(handoff.put(Opened(INFO)))
        for i in range(6):
            results.append(handoff.put(unit(i)))
        handoff.end(Closed("the camera closed the stream"))

    thread = threading.Thread(target=producer)
    thread.start()
    await asyncio.to_thread(thread.join)
    # Four slots: Opened and three units went through; the other three found no slot in time and were dropped.
    assert results == [True, True, True, True, None, None, None]
    items = [await handoff.get() for _ in range(5)]
    assert isinstance(items[0], Opened)
    assert [u.pts for u in items[1:4] if isinstance(u, Unit)] == [0, 3600, 7200]
    assert isinstance(items[4], Closed)
    assert handoff.finished.is_set()
    # Taking items gives slots back; a closed channel refuses at once.
    handoff.close()
    assert handoff.put(unit(9)) is False
