"""Recorder pods come and go (SIGKILL, SIGTERM, scaling) without losing or duplicating a frame."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from nats.js.errors import KeyNotFoundError, NoKeysError

from argus_core.bus import Bus
from argus_core.bus.jetstream import RECORDER_LEASES_BUCKET
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
from tests.recorder.media import T0_NS, Camera, clip, publish_paced

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NAMES = ["cam-a", "cam-b", "cam-c", "cam-d"]


class _Lease(msgspec.Struct):
    pod: str


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


async def owners(bus: Bus) -> dict[str, str]:
    """camera -> pod holding its lease now."""
    kv = await bus.js.key_value(RECORDER_LEASES_BUCKET)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    out: dict[str, str] = {}
    for key in keys:
        if key.startswith("cams."):
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # released between keys() and get(): a handover in progress
                continue
            out[key.split(".")[1]] = msgspec.json.decode(entry.value or b"", type=_Lease).pod
    return out


def cameras(n: int = 4) -> list[Camera]:
    media = clip()
    return [Camera(name, media, session=f"s-{name}", t0_ns=T0_NS + i * 11_000_000) for i, name in enumerate(NAMES[:n])]


async def all_indexed(database_url: str, cams: list[Camera]) -> bool:
    for cam in cams:
        rows = await segment_rows(database_url, cam.camera)
        if sum(r["frames"] for r in rows) < len(cam.sent):
            return False
    return True


async def assert_every_frame_once(stores: Stores, cams: list[Camera], workdir: Path, *, probe: bool) -> None:
    client = s3_client(stores.s3)
    for cam in cams:
        rows = await segment_rows(stores.database_url, cam.camera)
        assert frames_by_seq(rows) == {cam.session: list(range(len(cam.sent)))}, cam.camera
        for a, b in zip(rows, rows[1:], strict=False):
            assert a["end_time"] == b["start_time"], (a["object_key"], b["object_key"])
        if probe:
            for row in rows:
                found = await asyncio.to_thread(check_segment, client, stores.s3.bucket, row, workdir)
                assert (found.packets, found.decode_errors) == (row["frames"], "")
    assert await gap_rows(stores.database_url) == []


async def test_sigkill_of_a_recorder_mid_segment_loses_no_frame(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    recs = [RecorderProcess(stores, tmp_path, pod, cameras=",".join(NAMES)) for pod in ("rec-1", "rec-2")]
    processes.extend(recs)
    for rec in recs:
        rec.start()
    for rec in recs:
        await rec.wait_ready()

    async def spread() -> dict[str, str] | None:
        held = await owners(bus)
        pods = list(held.values())
        return held if len(held) == 4 and pods.count("rec-1") == 2 and pods.count("rec-2") == 2 else None

    await wait_for(spread, within_s=20, what="two cameras per recorder")
    cams = cameras()
    publishing = asyncio.create_task(publish_paced(bus, cams, 24 * 25))
    try:
        await asyncio.sleep(9.0)  # segments are cut at 6 s: every recorder is mid-segment now
        holder = (await owners(bus))["cam-a"]
        victim = next(r for r in recs if r.pod == holder)
        survivor = next(r for r in recs if r is not victim)
        await victim.kill()
        killed = time.monotonic()

        async def taken_over() -> bool:
            held = await owners(bus)
            return len(held) == 4 and set(held.values()) == {survivor.pod}

        await wait_for(taken_over, within_s=12, every_s=0.2, what="the survivor holding every camera")
        assert time.monotonic() - killed < 10.5
    finally:
        await publishing
    await wait_for(lambda: all_indexed(stores.database_url, cams), within_s=40, what="every frame indexed")
    await assert_every_frame_once(stores, cams, tmp_path, probe=True)
    assert await survivor.terminate() == 0


async def test_sigterm_stores_the_open_segment_and_a_successor_carries_on(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    first = RecorderProcess(stores, tmp_path, "rec-1", cameras="cam-a,cam-b")
    processes.append(first)
    first.start()
    await first.wait_ready()
    cams = cameras(2)
    publishing = asyncio.create_task(publish_paced(bus, cams, 20 * 25))
    try:
        await asyncio.sleep(9.5)
        sent_at_term = len(cams[0].sent)
        started = time.monotonic()
        assert await first.terminate() == 0
        assert time.monotonic() - started < 10
        for cam in cams:
            rows = await segment_rows(stores.database_url, cam.camera)
            stored = sum(r["frames"] for r in rows)
            # Everything up to the last keyframe it had was stored, including the open segment's complete GOPs.
            assert stored % 50 == 0
            assert stored >= (sent_at_term // 50 - 2) * 50, (stored, sent_at_term)
            assert rows[-1]["frames"] < 150  # the open segment, cut at its last keyframe
        second = RecorderProcess(stores, tmp_path, "rec-2", cameras="cam-a,cam-b")
        processes.append(second)
        second.start()
        await second.wait_ready()
    finally:
        await publishing
    await wait_for(lambda: all_indexed(stores.database_url, cams), within_s=40, what="every frame indexed")
    await assert_every_frame_once(stores, cams, tmp_path, probe=False)
    assert await second.terminate() == 0
    assert first.errors() == []


async def test_scaling_up_and_down_hands_cameras_over_without_a_gap(
    stores: Stores, bus: Bus, processes: list[RecorderProcess], tmp_path: Path
) -> None:
    first = RecorderProcess(stores, tmp_path, "rec-1", cameras=",".join(NAMES))
    second = RecorderProcess(stores, tmp_path, "rec-2", cameras=",".join(NAMES))
    processes.extend([first, second])
    first.start()
    await first.wait_ready()
    await wait_for(lambda: _held_by(bus, {"rec-1": 4}), within_s=10, what="rec-1 holding every camera")
    cams = cameras()
    publishing = asyncio.create_task(publish_paced(bus, cams, 28 * 25))
    try:
        await asyncio.sleep(5.0)
        second.start()  # scale up: it takes half, rec-1 hands them over at GOP boundaries
        await second.wait_ready()
        await wait_for(lambda: _held_by(bus, {"rec-1": 2, "rec-2": 2}), within_s=15, what="two cameras each")
        await asyncio.sleep(6.0)
        assert await second.terminate() == 0  # scale down: rec-1 takes them back
        await wait_for(lambda: _held_by(bus, {"rec-1": 4}), within_s=10, what="rec-1 holding every camera again")
    finally:
        await publishing
    await wait_for(lambda: all_indexed(stores.database_url, cams), within_s=40, what="every frame indexed")
    await assert_every_frame_once(stores, cams, tmp_path, probe=False)
    recorders = {r["recorder"] for r in await segment_rows(stores.database_url)}
    assert recorders == {"rec-1", "rec-2"}
    assert await first.terminate() == 0
    assert first.errors() == []
    assert second.errors() == []


async def _held_by(bus: Bus, counts: dict[str, int]) -> bool:
    held = list((await owners(bus)).values())
    return all(held.count(pod) == n for pod, n in counts.items()) and len(held) == sum(counts.values())
