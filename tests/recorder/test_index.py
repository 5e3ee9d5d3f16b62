"""The recording index in Postgres: day partitions, idempotent rows, where a new owner resumes, the timeline query."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_recorder.index import GapRow, Index, IndexRejected, SegmentRow
from argus_recorder.keys import ns_of
from argus_recorder.segmenter import Checkpoint

DAY = datetime(2026, 3, 9, tzinfo=UTC)
S = 1_000_000_000


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(DatabaseConfig(url=database_url))
    try:
        await migrate(p)
        yield p
    finally:
        await p.close()


def seg(camera: str, start: datetime, *, frames: int = 150, session: str = "s", first_seq: int = 0) -> SegmentRow:
    start_ns = ns_of(start)
    return SegmentRow(
        camera=camera, stream="main", start_ns=start_ns, end_ns=start_ns + 6 * S, duration_ms=6000, frames=frames,
        keyframes=3, bytes=1000, sha256="ab" * 32, codec="h264", width=1280, height=720,
        object_key=f"{camera}/{start:%Y/%m/%d/%H/%M/%S}.000Z-abcdef.m4s", init_key=f"{camera}/init/0.mp4",
        time_trusted=True, session=session, first_seq=first_seq, last_seq=first_seq + frames - 1,
        repaired_timestamps=0, recorder="rec-1",
    )  # fmt: skip


async def test_rows_go_into_day_partitions_made_on_demand_and_are_upserts(pool: asyncpg.Pool) -> None:
    index = Index(pool, timeout_s=5, lookback_s=10 * 86400)
    row = seg("cam-1", DAY + timedelta(hours=2))
    await index.insert_segment(row)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT to_regclass('segments_20260309') IS NOT NULL")
        assert await conn.fetchval("SELECT count(*) FROM segments_20260309") == 1
        await index.insert_segment(seg("cam-1", DAY + timedelta(hours=2), frames=100))  # a shorter copy: kept out
        assert await conn.fetchval("SELECT frames FROM segments") == 150
        await index.insert_segment(seg("cam-1", DAY + timedelta(hours=2), frames=175))  # a longer one wins
        assert await conn.fetchval("SELECT frames FROM segments") == 175
        assert await conn.fetchval("SELECT count(*) FROM segments") == 1
    assert await index.stored_frames(row) == 175
    with pytest.raises(IndexRejected):
        await index.insert_segment(seg("cam 1", DAY))  # not a camera id


async def test_rows_of_a_day_without_partition_move_when_it_is_made(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO segments (camera, stream, start_time, end_time, duration_ms, frames, keyframes, bytes, "
            "sha256, codec, width, height, object_key, init_key, time_trusted, session, first_seq, last_seq) "
            "VALUES ('cam-1', 'main', $1::timestamptz, $1::timestamptz + interval '6 s', 6000, 150, 3, 1, "
            "decode(repeat('ab', 32), 'hex'), "
            "'h264', 1, 1, 'k', 'i', false, 's', 0, 149)",
            datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC),
        )
        assert await conn.fetchval("SELECT count(*) FROM segments_default") == 1
    indexes = [Index(pool, timeout_s=5, lookback_s=86400) for _ in range(5)]
    await asyncio.gather(*(i.ensure_days(date(1970, 1, 1)) for i in indexes))  # many recorders at once
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM segments_default") == 0
        assert await conn.fetchval("SELECT count(*) FROM segments_19700101") == 1


async def test_the_checkpoint_is_the_newest_row_that_accounts_for_packets(pool: asyncpg.Pool) -> None:
    index = Index(pool, timeout_s=5, lookback_s=10 * 86400)
    now = ns_of(DAY + timedelta(days=1))
    assert await index.checkpoint("cam-1", "main", now) is None
    await index.insert_segment(seg("cam-1", DAY, session="a", first_seq=0))
    await index.insert_segment(seg("cam-1", DAY + timedelta(seconds=6), session="a", first_seq=150))
    await index.insert_segment(seg("cam-2", DAY + timedelta(seconds=60), session="z", first_seq=0))
    assert await index.checkpoint("cam-1", "main", now) == Checkpoint("a", 299, ns_of(DAY) + 12 * S)
    gap_start = ns_of(DAY) + 12 * S
    gap = GapRow(camera="cam-1", stream="main", start_ns=gap_start, end_ns=gap_start + 20 * S, cause="no_keyframe",
                 detail="", session="b", last_seq=400, recorder="rec-1")  # fmt: skip
    await index.insert_gap(gap)
    assert await index.checkpoint("cam-1", "main", now) == Checkpoint("b", 400, gap_start + 20 * S)
    outage = GapRow(camera="cam-1", stream="main", start_ns=gap_start + 20 * S, end_ns=gap_start + 90 * S,
                    cause="camera_offline", detail="", session=None, last_seq=None, recorder="rec-1")  # fmt: skip
    await index.insert_gap(outage)
    await index.insert_gap(outage)  # idempotent
    assert await index.checkpoint("cam-1", "main", now) == Checkpoint("b", 400, gap_start + 20 * S)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM recording_gaps") == 2


async def test_a_timeline_query_reads_one_index_range_of_one_partition(pool: asyncpg.Pool) -> None:
    index = Index(pool, timeout_s=5, lookback_s=86400)
    for day in range(3):
        await index.ensure_days(date(2026, 3, 8 + day))
    async with pool.acquire() as conn:
        rows = [
            (f"cam-{c}", DAY + timedelta(days=d, seconds=6 * i), f"cam-{c}/{d}/{i}")
            for c in range(20)
            for d in (-1, 0, 1)
            for i in range(0, 14400, 48)
        ]
        await conn.copy_records_to_table(
            "segments",
            records=[
                (
                    cam,
                    "main",
                    t,
                    t + timedelta(seconds=6),
                    6000,
                    150,
                    3,
                    1,
                    b"\xab" * 32,
                    "h264",
                    1,
                    1,
                    key,
                    "i",
                    True,
                    "s",
                    0,
                    149,
                )
                for cam, t, key in rows
            ],  # fmt: skip
            columns=[
                "camera",
                "stream",
                "start_time",
                "end_time",
                "duration_ms",
                "frames",
                "keyframes",
                "bytes",
                "sha256",
                "codec",
                "width",
                "height",
                "object_key",
                "init_key",
                "time_trusted",
                "session",
                "first_seq",
                "last_seq",
            ],  # fmt: skip
        )
        await conn.execute("ANALYZE segments")
        query = (
            "SELECT * FROM segments WHERE camera = $1 AND stream = 'main' "
            "AND start_time >= $2::timestamptz - interval '10 minutes' AND start_time < $3 AND end_time > $2"
        )
        t0, t1 = DAY, DAY + timedelta(days=1)
        found = await conn.fetch(query, "cam-7", t0, t1)
        assert len(found) == 300
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF) " + query, "cam-7", t0, t1))
        assert "Seq Scan" not in plan, plan
        assert "segments_20260309" in plan
        assert "segments_20260310" not in plan, plan
