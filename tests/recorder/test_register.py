"""Without a fixed list the recorder records the register's enabled cameras, and follows its changes at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from argus_core.bus import Bus
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_devstack.s3 import S3Target
from tests.recorder.harness import RecorderProcess, Stores, segment_rows, wait_for
from tests.recorder.media import Camera, clip, publish
from tests.recorder.test_failover import owners

pytestmark = pytest.mark.slow


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(nats_url, name="test-api")
    try:
        yield b
    finally:
        await b.drain()


@pytest.fixture
def recorder(nats_url: str, database_url: str, s3_bucket: S3Target, tmp_path: Path) -> Iterator[RecorderProcess]:
    rec = RecorderProcess(Stores(nats_url, database_url, s3_bucket), tmp_path, "rec-1", registry_refresh_s="60")
    try:
        yield rec
    finally:
        rec.close()


async def test_cameras_added_and_disabled_in_the_register_are_followed_without_a_restart(
    database_url: str, bus: Bus, recorder: RecorderProcess
) -> None:
    recorder.start()
    await recorder.wait_ready()  # it ran the migrations: the register exists, empty
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO cameras (id, name, main_url) VALUES ('cam-x', 'Market St', 'rtsp://127.0.0.1:1/x')"
        )
        await bus.persist(
            s.CAMERA_CHANGED, m.CameraChanged(camera="cam-x", change="upsert", at_ns=time.time_ns()), camera="cam-x"
        )
        started = time.monotonic()
        await wait_for(lambda: _held(bus, {"cam-x"}), within_s=5, what="cam-x taken")
        assert time.monotonic() - started < 5  # the change event, not the 60 s refresh
        cam = Camera("cam-x", clip())
        await publish(bus, cam.packets(300), sent=cam.sent)

        async def recorded() -> bool:
            return bool(sum(r["frames"] for r in await segment_rows(database_url, "cam-x")) == 300)

        await wait_for(recorded, within_s=30, what="cam-x recorded")
        await conn.execute("UPDATE cameras SET enabled = false WHERE id = 'cam-x'")
        await bus.persist(
            s.CAMERA_CHANGED, m.CameraChanged(camera="cam-x", change="upsert", at_ns=time.time_ns()), camera="cam-x"
        )
        await wait_for(lambda: _held(bus, set()), within_s=5, what="cam-x released")
    finally:
        await conn.close()
    assert await recorder.terminate() == 0


async def _held(bus: Bus, cameras: set[str]) -> bool:
    return set(await owners(bus)) == cameras
