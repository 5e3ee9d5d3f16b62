"""Shared helpers of the retention tests: a controllable clock, real segments in S3 and the index, orphan checks."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec

from argus_core.bus import Bus, decode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.jetstream import AUDIT_STREAM
from argus_core.bus.messages import CodecConfig
from argus_core.storage import ObjectStore
from argus_recorder.keys import init_key, segment_key
from argus_recorder.muxer import MuxedSegment, MuxPacket, mux_segment
from argus_retention.times import ns_of
from tests.recorder.media import clip

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEGMENT = timedelta(seconds=6)


class SimulatedCrash(BaseException):  # noqa: N818 - a kill, not an error: nothing may catch it as an Exception
    """Raised at a fault point: the sweep stops there as if the process died (no handler runs)."""


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> int:
        return ns_of(self.at)

    def set(self, at: datetime) -> None:
        self.at = at


@functools.cache
def media() -> MuxedSegment:
    """One real H.264 segment (an init and a one-second media segment), encoded once per process."""
    c = clip("h264", 160, 96, fps=25, seconds=1, gop=25, bitrate=100_000)
    packets = [
        MuxPacket(data, i * c.frame_ticks, i * c.frame_ticks, c.frame_ticks, key)
        for i, (data, key) in enumerate(c.packets)
    ]
    return mux_segment(c.config, packets)


def config_for(variant: int = 0) -> CodecConfig:
    """The clip's codec configuration; another variant hashes to another init segment key."""
    c = clip("h264", 160, 96, fps=25, seconds=1, gop=25, bitrate=100_000)
    return c.config if variant == 0 else msgspec.structs.replace(c.config, time_base_den=90_000 + variant)


@dataclass(frozen=True)
class Seg:
    camera: str
    stream: str
    start: datetime
    end: datetime
    key: str
    init: str


def plan(
    camera: str, start: datetime, count: int, *, stream: str = "main", every: timedelta = SEGMENT, variant: int = 0
) -> list[Seg]:
    """`count` back-to-back segments of a camera from `start`, keyed as the recorder keys them."""
    config = config_for(variant)
    ikey = init_key(camera, stream, config)
    out = []
    for i in range(count):
        t = start + i * every
        out.append(Seg(camera, stream, t, t + every, segment_key(camera, stream, ns_of(t), "sess-1", i * 150), ikey))
    return out


_INSERT = """
INSERT INTO segments (camera, stream, start_time, end_time, duration_ms, frames, keyframes, bytes, sha256, codec,
                      width, height, object_key, init_key, time_trusted, session, first_seq, last_seq)
SELECT camera, stream, start_time, end_time, duration_ms, 150, 3, bytes, sha, 'h264', 160, 96, object_key, init_key,
       true, 'sess-1', 0, 149
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::int[], $6::bigint[], $7::bytea[],
            $8::text[], $9::text[])
     AS t(camera, stream, start_time, end_time, duration_ms, bytes, sha, object_key, init_key)
"""


async def index(pool: asyncpg.Pool, segs: Sequence[Seg]) -> None:
    """Index rows for `segs` (making their day partitions as the recorder does)."""
    body = media().media
    days = sorted({g.start.date() for g in segs})
    for day in days:
        await pool.execute("SELECT argus_segments_partition($1::date)", day)
    sha = hashlib.sha256(body).digest()
    await pool.execute(
        _INSERT,
        [g.camera for g in segs],
        [g.stream for g in segs],
        [g.start for g in segs],
        [g.end for g in segs],
        [int((g.end - g.start).total_seconds() * 1000) for g in segs],
        [len(body)] * len(segs),
        [sha] * len(segs),
        [g.key for g in segs],
        [g.init for g in segs],
    )


async def upload(store: ObjectStore, bucket: str, segs: Sequence[Seg], *, parallel: int = 16) -> None:
    made = media()
    slots = asyncio.Semaphore(parallel)

    async def put(key: str, data: bytes) -> None:
        async with slots:
            await store.put(bucket, key, data)

    await asyncio.gather(*(put(k, made.init) for k in sorted({g.init for g in segs})))
    await asyncio.gather(*(put(g.key, made.media) for g in segs))


async def record(pool: asyncpg.Pool, store: ObjectStore, bucket: str, segs: Sequence[Seg]) -> None:
    """Store segments as the recorder does: objects (init and media) first, then their rows."""
    await upload(store, bucket, segs)
    await index(pool, segs)


async def row_keys(pool: asyncpg.Pool) -> set[str]:
    return {r["object_key"] for r in await pool.fetch("SELECT object_key FROM segments")}


async def referenced_inits(pool: asyncpg.Pool) -> set[str]:
    return {r["init_key"] for r in await pool.fetch("SELECT DISTINCT init_key FROM segments")}


async def object_keys(store: ObjectStore, bucket: str) -> set[str]:
    return set(await store.list_keys(bucket))


@dataclass(frozen=True)
class Orphans:
    objects_without_rows: set[str]
    rows_without_objects: set[str]
    missing_inits: set[str]

    @property
    def none(self) -> bool:
        return not (self.objects_without_rows or self.rows_without_objects or self.missing_inits)


async def orphans(pool: asyncpg.Pool, store: ObjectStore, bucket: str) -> Orphans:
    objects = await object_keys(store, bucket)
    rows = await row_keys(pool)
    inits = await referenced_inits(pool)
    return Orphans(objects - rows - inits, rows - objects, inits - objects)


async def audit_events(bus: Bus) -> list[m.AuditEvent]:
    """Every event on the AUDIT stream, in order."""
    info = await bus.js.stream_info(AUDIT_STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await bus.js.get_msg(AUDIT_STREAM, seq)
        assert msg.data is not None
        assert msg.subject is not None
        found.append(decode(s.AUDIT, msg.data, msg.subject))
    return found


async def journal_keys(pool: asyncpg.Pool) -> set[str]:
    """Keys a sweep has journaled and not finished: segments and init segments in the rows of days it detached
    (invisible to readers, still to delete), and init segments queued for deletion."""
    keys = {r["init_key"] for r in await pool.fetch("SELECT init_key FROM retention_init_candidates")}
    for table in await pool.fetch("SELECT table_name FROM retention_day_sweeps WHERE state = 'detached'"):
        name = table["table_name"].replace('"', '""')
        for r in await pool.fetch(f'SELECT object_key, init_key FROM "{name}"'):
            keys |= {r["object_key"], r["init_key"]}
    return keys


def crash_at(point: str, nth: int = 1) -> Callable[[str], Awaitable[None]]:
    """A fault hook that kills the sweep the `nth` time it reaches `point`."""
    seen = 0

    async def fault(where: str) -> None:
        nonlocal seen
        if where == point:
            seen += 1
            if seen == nth:
                raise SimulatedCrash(point)

    return fault
