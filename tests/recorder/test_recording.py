"""A recorder process records real H.264 from the bus: contiguous, complete, decodable, indexed segments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.js import api

from argus_core.bus import Bus
from argus_core.bus.jetstream import EVENTS_STREAM, MEDIA_STREAM
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
from tests.recorder.media import T0_NS, Camera, clip, length_prefixed, publish

pytestmark = pytest.mark.slow

FRAME_MS = 40


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
def processes() -> Iterator[list[RecorderProcess]]:
    started: list[RecorderProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.close()


async def all_indexed(database_url: str, cameras: list[Camera]) -> bool:
    for cam in cameras:
        rows = await segment_rows(database_url, cam.camera)
        if sum(r["frames"] for r in rows) < len(cam.sent):
            return False
    return True


def assert_contiguous_and_complete(segs: list[asyncpg.Record], cam: Camera) -> None:
    assert segs, cam.camera
    for a, b in zip(segs, segs[1:], strict=False):
        assert a["end_time"] == b["start_time"], (cam.camera, a["object_key"], b["object_key"])
    frames = len(cam.sent)
    wall_ms = (segs[-1]["end_time"] - segs[0]["start_time"]).total_seconds() * 1000
    media_ms = sum(r["duration_ms"] for r in segs)
    minutes = frames * FRAME_MS / 60_000
    assert abs(wall_ms - frames * FRAME_MS) <= FRAME_MS * max(1.0, minutes), (wall_ms, frames)
    assert abs(media_ms - frames * FRAME_MS) <= FRAME_MS * max(1.0, minutes), (media_ms, frames)
    assert frames_by_seq(segs) == {cam.session: list(range(frames))}
    assert all(r["session"] == cam.session for r in segs)


async def test_sixty_seconds_of_three_cameras_are_contiguous_complete_and_decodable(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    names = ["cam-1", "cam-2", "cam-3"]
    rec = RecorderProcess(stores, tmp_path, "rec-a", cameras=",".join(names))
    processes.append(rec)
    rec.start()
    await rec.wait_ready()
    media = clip()
    cams = [Camera(name, media, session=f"sess-{name}", t0_ns=T0_NS + i * 7_000_000) for i, name in enumerate(names)]
    for _ in range(0, 1500, 50):  # 60 s of 25 fps each, published faster than real time, interleaved
        for cam in cams:
            await publish(bus, cam.packets(50), sent=cam.sent)
    await wait_for(lambda: all_indexed(stores.database_url, cams), within_s=60, what="every frame indexed")

    client = s3_client(stores.s3)
    for cam in cams:
        rows = await segment_rows(stores.database_url, cam.camera)
        assert_contiguous_and_complete(rows, cam)
        assert [r["frames"] for r in rows[:-1]] == [150] * (len(rows) - 1)  # 6 s target, GOP of 2 s
        assert {r["init_key"] for r in rows} == {rows[0]["init_key"]}
        assert rows[0]["start_time"].timestamp() == pytest.approx(cam.t0_ns / 1e9, abs=0.001)
        for row in rows:
            assert row["object_key"].startswith(f"{cam.camera}/2025/11/21/")
            assert row["codec"] == "h264"
            assert (row["width"], row["height"]) == (640, 360)
            assert row["keyframes"] == -(-row["frames"] // 50)
            assert row["time_trusted"] is True
            assert row["repaired_timestamps"] == 0
            found = await asyncio.to_thread(check_segment, client, stores.s3.bucket, row, tmp_path)
            assert found.decode_errors == ""
            assert (found.codec, found.width, found.height, found.packets) == ("h264", 640, 360, row["frames"])
    assert await gap_rows(stores.database_url) == []

    info = await bus.js.stream_info(EVENTS_STREAM, subjects_filter="argus.recording.segment.>")
    assert isinstance(info.state, api.StreamState)
    announced = sum((info.state.subjects or {}).values())
    assert announced == len(await segment_rows(stores.database_url))
    text = await rec.metrics()
    assert "argus_recorder_cameras_held 3.0" in text
    assert await rec.terminate() == 0
    assert rec.errors() == []


async def test_length_prefixed_h264_and_annexb_h265_are_recorded(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    rec = RecorderProcess(stores, tmp_path, "rec-a", cameras="avcc,hevc")
    processes.append(rec)
    rec.start()
    await rec.wait_ready()
    cams = [
        Camera("avcc", length_prefixed(clip(width=320, height=240))),
        Camera("hevc", clip("h265", 320, 240, seconds=2)),
    ]
    for cam in cams:
        await publish(bus, cam.packets(400), sent=cam.sent)
    await wait_for(lambda: all_indexed(stores.database_url, cams), within_s=60, what="every frame indexed")
    client = s3_client(stores.s3)
    for cam, codec in zip(cams, ["h264", "hevc"], strict=True):
        rows = await segment_rows(stores.database_url, cam.camera)
        assert_contiguous_and_complete(rows, cam)
        for row in rows:
            found = await asyncio.to_thread(check_segment, client, stores.s3.bucket, row, tmp_path)
            assert found.decode_errors == ""
            assert (found.codec, found.width, found.height, found.packets) == (codec, 320, 240, row["frames"])
    assert await rec.terminate() == 0


async def test_a_consumer_deleted_under_a_recording_camera_is_made_again_and_no_frame_is_lost(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    rec = RecorderProcess(stores, tmp_path, "rec-a", cameras="cam-d")
    processes.append(rec)
    rec.start()
    await rec.wait_ready()
    cam = Camera("cam-d", clip(), session="sess-d")
    await publish(bus, cam.packets(400), sent=cam.sent)

    async def stored(frames: int) -> bool:
        return sum(int(r["frames"]) for r in await segment_rows(stores.database_url, cam.camera)) >= frames

    await wait_for(lambda: stored(300), within_s=30, what="two segments stored")
    info = await bus.js.consumer_info(MEDIA_STREAM, "recorder-cam-d")
    assert info.config.inactive_threshold == 3600.0  # ARGUS_RECORDER_CONSUMER_IDLE_S's default
    # Deleted by hand, or by the server after its inactivity threshold, while the camera's open segment holds
    # fetched packets that are not acked: pulling on would record nothing, silently.
    await bus.js.delete_consumer(MEDIA_STREAM, "recorder-cam-d")
    await publish(bus, cam.packets(350), sent=cam.sent)
    await wait_for(lambda: all_indexed(stores.database_url, [cam]), within_s=60, what="every frame indexed")
    rows = await segment_rows(stores.database_url, cam.camera)
    assert_contiguous_and_complete(rows, cam)
    assert (await bus.js.consumer_info(MEDIA_STREAM, "recorder-cam-d")).config.inactive_threshold == 3600.0
    assert await rec.terminate() == 0
    assert rec.errors() == []
    assert any("consumer is gone" in r.get("message", "") for r in rec.log_records()), rec.log_tail()
