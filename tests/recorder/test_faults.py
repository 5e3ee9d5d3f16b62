"""Faults in the media never crash the recorder and are recorded as what they are: segments, boundaries, gap rows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import EVENTS_STREAM
from argus_devstack.s3 import S3Target
from tests.recorder.harness import (
    RecorderProcess,
    Stores,
    check_segment,
    frames_by_seq,
    gap_rows,
    s3_client,
    segment_rows,
    wait_for,
)
from tests.recorder.media import T0_NS, Camera, clip, publish

pytestmark = pytest.mark.slow

FRAME_NS = 40_000_000
NOPTS = -(2**63)


@pytest.fixture
def stores(nats_url: str, database_url: str, s3_bucket: S3Target) -> Stores:
    return Stores(nats_url, database_url, s3_bucket)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test-publisher")
    try:
        yield b
    finally:
        await b.drain()


@pytest.fixture
def recorder(stores: Stores, tmp_path: Path) -> Iterator[RecorderProcess]:
    cameras = "res,nokey,ts,sess,hole,garbage,stall"
    rec = RecorderProcess(stores, tmp_path, "rec-a", cameras=cameras, no_keyframe_s="4", gap_flush_s="5")
    try:
        yield rec
    finally:
        rec.close()


def at(frame: int) -> int:
    return T0_NS + frame * FRAME_NS


async def rows_of(database_url: str, camera: str) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    return await segment_rows(database_url, camera), await gap_rows(database_url, camera)


async def test_faults_are_recorded_as_what_they_are(
    stores: Stores, bus: Bus, recorder: RecorderProcess, tmp_path: Path
) -> None:
    recorder.start()
    await recorder.wait_ready()
    big, small = clip(), clip(width=320, height=180)

    # A resolution change at a keyframe: a boundary and a second init segment, no gap.
    res = Camera("res", big)
    await publish(bus, res.packets(150), sent=res.sent)
    res.clip = small
    await publish(bus, res.packets(150), sent=res.sent)

    # 12 s without a keyframe, then a keyframe and 4 s of normal media.
    nokey = Camera("nokey", big)
    nokey.frame = 1
    no_key_packets = []
    for _ in range(300):
        if nokey.frame % 50 == 0:
            nokey.frame += 1
        no_key_packets.append(nokey.packet())
    await publish(bus, no_key_packets, sent=nokey.sent)
    nokey.frame = 350
    await publish(bus, nokey.packets(100), sent=nokey.sent)

    # Missing, backward and jumping timestamps.
    ts = Camera("ts", big)
    broken = []
    for i in range(300):
        p = ts.packet()
        if i in (30, 31):
            p = msgspec.structs.replace(p, dts=NOPTS, pts=NOPTS)
        elif i == 70:
            p = msgspec.structs.replace(p, dts=p.dts - 90_000 * 3, pts=p.pts - 90_000 * 3)
        elif i >= 120:
            p = msgspec.structs.replace(p, dts=p.dts + 3600 * 90_000, pts=p.pts + 3600 * 90_000)
        broken.append(p)
    await publish(bus, broken, sent=ts.sent)

    # Session changes: the camera went offline (ingest said so), then ingest moved to another pod.
    sess = Camera("sess", big, session="a")
    await publish(bus, sess.packets(200), sent=sess.sent)
    offline = m.CameraStatus(camera="sess", state="offline", at_ns=at(210), ingest_pod="ingest-0", error="timed out")
    await bus.publish(s.CAMERA_STATUS, offline, camera="sess")
    await bus.nc.flush()
    await asyncio.sleep(0.5)
    sess.new_session("b", skip_frames=75)  # back 3 s later, mid-GOP: the gap runs to its first keyframe
    await publish(bus, sess.packets(200), sent=sess.sent)
    await asyncio.sleep(0.5)
    sess.new_session("c")
    await publish(bus, sess.packets(200), sent=sess.sent)

    # Ten packets never reach the bus.
    hole = Camera("hole", big)
    await publish(bus, hole.packets(80), sent=hole.sent)
    hole.seq += 10
    hole.frame += 10
    await publish(bus, hole.packets(110), sent=hole.sent)

    # A message that is not a MediaBatch takes the place of one.
    garbage = Camera("garbage", big)
    await publish(bus, garbage.packets(80), sent=garbage.sent)
    await bus.js.publish(s.RECORD.format(camera="garbage", stream="main"), b"\x93not a media batch")
    garbage.seq += 1
    garbage.frame += 1
    await publish(bus, garbage.packets(119), sent=garbage.sent)

    # The stream stalls for 8 s within one session.
    stall = Camera("stall", big)
    await publish(bus, stall.packets(100), sent=stall.sent)
    stall.frame += 200
    await publish(bus, stall.packets(100), sent=stall.sent)

    expected_frames = {"res": 300, "nokey": 100, "ts": 300, "sess": 200 + 175 + 175, "hole": 180, "garbage": 180}
    expected_frames["stall"] = 200

    async def settled() -> bool:
        for camera, frames in expected_frames.items():
            segs, _ = await rows_of(stores.database_url, camera)
            if sum(r["frames"] for r in segs) < frames:
                return False
        _, nokey_gaps = await rows_of(stores.database_url, "nokey")
        return bool(nokey_gaps) and max(g["end_time"] for g in nokey_gaps).timestamp() * 1e9 >= at(349)

    await wait_for(settled, within_s=60, what="every camera's media stored")
    await asyncio.sleep(1.0)
    assert recorder.alive()
    client = s3_client(stores.s3)

    segs, gaps = await rows_of(stores.database_url, "res")
    assert gaps == []
    assert [(r["width"], r["height"], r["frames"]) for r in segs] == [(640, 360, 150), (320, 180, 150)]
    assert len({r["init_key"] for r in segs}) == 2
    assert segs[0]["end_time"] == segs[1]["start_time"]
    for row in segs:
        found = await asyncio.to_thread(check_segment, client, stores.s3.bucket, row, tmp_path)
        assert (found.width, found.height, found.packets, found.decode_errors) == (
            row["width"],
            row["height"],
            row["frames"],
            "",
        )

    segs, gaps = await rows_of(stores.database_url, "nokey")
    assert {g["cause"] for g in gaps} == {"no_keyframe"}
    assert gaps[0]["start_time"].timestamp() == pytest.approx(at(1) / 1e9, abs=0.001)
    assert max(g["end_time"] for g in gaps) == segs[0]["start_time"]
    assert segs[0]["start_time"].timestamp() == pytest.approx(at(350) / 1e9, abs=0.001)
    for a, b in zip(gaps, gaps[1:], strict=False):
        assert a["end_time"] <= b["start_time"]

    segs, gaps = await rows_of(stores.database_url, "ts")
    assert gaps == []
    assert sum(r["frames"] for r in segs) == 300
    assert sum(r["repaired_timestamps"] for r in segs) >= 4
    assert frames_by_seq(segs) == {"s1": list(range(300))}
    for a, b in zip(segs, segs[1:], strict=False):
        assert a["end_time"] == b["start_time"]
    for row in segs:
        found = await asyncio.to_thread(check_segment, client, stores.s3.bucket, row, tmp_path)
        assert (found.packets, found.decode_errors) == (row["frames"], "")

    segs, gaps = await rows_of(stores.database_url, "sess")
    assert [g["cause"] for g in gaps] == ["camera_offline", "ingest_failover"]
    assert "timed out" in gaps[0]["detail"]
    by_session = {r["session"]: r for r in segs}
    a_end = max(r["end_time"] for r in segs if r["session"] == "a")
    b_start = min(r["start_time"] for r in segs if r["session"] == "b")
    assert gaps[0]["start_time"] == a_end
    assert gaps[0]["end_time"] == b_start
    assert b_start.timestamp() == pytest.approx(at(300) / 1e9, abs=0.001)
    assert set(by_session) == {"a", "b", "c"}
    assert frames_by_seq(segs)["b"] == list(range(25, 200))

    segs, gaps = await rows_of(stores.database_url, "hole")
    assert [g["cause"] for g in gaps] == ["unknown"]
    assert "10 packet(s) missing" in gaps[0]["detail"]
    assert gaps[0]["end_time"].timestamp() == pytest.approx(at(100) / 1e9, abs=0.001)

    segs, gaps = await rows_of(stores.database_url, "garbage")
    assert [g["cause"] for g in gaps] == ["corrupt_data"]
    assert "did not decode" in gaps[0]["detail"]

    segs, gaps = await rows_of(stores.database_url, "stall")
    assert [g["cause"] for g in gaps] == ["camera_offline"]
    assert "stalled" in gaps[0]["detail"]
    assert gaps[0]["start_time"].timestamp() == pytest.approx(at(100) / 1e9, abs=0.001)
    assert gaps[0]["end_time"].timestamp() == pytest.approx(at(300) / 1e9, abs=0.001)

    all_gaps = await gap_rows(stores.database_url)
    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter="argus.recording.gap.>")
    assert info.state is not None
    assert sum((info.state.subjects or {}).values()) == len(all_gaps)
    assert await recorder.terminate() == 0
