"""The recording index in Postgres: segment and gap rows, day partitions, where a new owner resumes, the register.

A row is an upsert keyed by what it describes, so writing it twice (a retry, a spooled copy written later, a
replacement recorder storing the same segment again) leaves one row; for a segment the version holding more
frames wins. Errors come out as `IndexUnavailable` (try again later: the row is spooled) or `IndexRejected` (the
row itself is wrong: it will never be accepted).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta

import asyncpg
import msgspec

from argus_recorder.errors import RecorderError
from argus_recorder.keys import ns_of, utc
from argus_recorder.segmenter import Checkpoint

log = logging.getLogger(__name__)


class IndexUnavailable(RecorderError):
    """Postgres cannot be reached or is not answering: the row waits in the spool."""


class IndexRejected(RecorderError):
    """Postgres refused the row itself (a constraint): retrying will not help."""


class SegmentRow(msgspec.Struct, frozen=True, kw_only=True):
    camera: str
    stream: str
    start_ns: int
    end_ns: int
    duration_ms: int
    frames: int
    keyframes: int
    bytes: int
    sha256: str
    codec: str
    width: int
    height: int
    object_key: str
    init_key: str
    time_trusted: bool
    session: str
    first_seq: int
    last_seq: int
    repaired_timestamps: int
    recorder: str
    last_capture_ns: int = 0


class GapRow(msgspec.Struct, frozen=True, kw_only=True):
    camera: str
    stream: str
    start_ns: int
    end_ns: int
    cause: str
    detail: str
    session: str | None
    last_seq: int | None
    recorder: str


_INSERT_SEGMENT = """
INSERT INTO segments (camera, stream, start_time, end_time, duration_ms, frames, keyframes, bytes, sha256, codec,
                      width, height, object_key, init_key, time_trusted, session, first_seq, last_seq,
                      repaired_timestamps, recorder)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (camera, stream, start_time, object_key) DO UPDATE SET
    end_time = EXCLUDED.end_time, duration_ms = EXCLUDED.duration_ms, frames = EXCLUDED.frames,
    keyframes = EXCLUDED.keyframes, bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, codec = EXCLUDED.codec,
    width = EXCLUDED.width, height = EXCLUDED.height, init_key = EXCLUDED.init_key,
    time_trusted = EXCLUDED.time_trusted, session = EXCLUDED.session, first_seq = EXCLUDED.first_seq,
    last_seq = EXCLUDED.last_seq, repaired_timestamps = EXCLUDED.repaired_timestamps, recorder = EXCLUDED.recorder
WHERE EXCLUDED.frames >= segments.frames
"""

_INSERT_GAP = """
INSERT INTO recording_gaps (camera, stream, start_time, end_time, cause, detail, session, last_seq, recorder)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (camera, stream, start_time, cause) DO UPDATE SET
    end_time = GREATEST(recording_gaps.end_time, EXCLUDED.end_time), detail = EXCLUDED.detail,
    session = COALESCE(EXCLUDED.session, recording_gaps.session),
    last_seq = COALESCE(EXCLUDED.last_seq, recording_gaps.last_seq), recorder = EXCLUDED.recorder
"""

_LAST_SEGMENT = """
SELECT session, last_seq, end_time FROM segments
WHERE camera = $1 AND stream = $2 AND start_time > $3
ORDER BY start_time DESC LIMIT 1
"""

_LAST_GAP = """
SELECT session, last_seq, end_time FROM recording_gaps
WHERE camera = $1 AND stream = $2 AND end_time > $3 AND last_seq IS NOT NULL
ORDER BY end_time DESC LIMIT 1
"""

_STORED_FRAMES = """
SELECT frames FROM segments WHERE camera = $1 AND stream = $2 AND start_time = $3 AND object_key = $4
"""

# Errors about the row itself; everything else (connections, timeouts, a server shutting down) is transient.
_REJECTED: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
)


class Index:
    """Index writes and reads over an asyncpg pool, each bounded by `timeout_s`."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float, lookback_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._lookback_s = lookback_s
        self._days: set[date] = set()

    async def _run(self, what: str, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._pool.acquire() as conn:
                    return list(await conn.fetch(sql, *args))
        except _REJECTED as exc:
            raise IndexRejected(f"{what}: {exc}") from exc
        except _TRANSIENT as exc:
            raise IndexUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def ensure_days(self, *days: date) -> None:
        for day in days:
            if day in self._days:
                continue
            await self._run(f"partition {day}", "SELECT argus_segments_partition($1::date)", day)
            self._days.add(day)

    async def ensure_around(self, now_ns: int) -> None:
        today = utc(now_ns).date()
        await self.ensure_days(today, today + timedelta(days=1))

    async def settle_day(self, day: date) -> bool:
        """Freeze a finished day's partition, so timeline queries are index-only scans; False if another did.

        Rows of a past day no longer change: after `VACUUM (FREEZE)` every page is all-visible and the covering
        primary key answers a timeline without reading the table. One pod does it (an advisory lock), once.
        """
        name = f"segments_{day:%Y%m%d}"
        lock = f"argus.segments.settle.{day:%Y%m%d}"
        try:
            async with self._pool.acquire() as conn:
                if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
                    return False
                if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", lock):
                    return False
                try:
                    await conn.execute(f'VACUUM (FREEZE, ANALYZE) "{name}"', timeout=3600)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock)
        except _TRANSIENT as exc:
            raise IndexUnavailable(f"settling {name}: {type(exc).__name__}: {exc}") from exc
        log.info("partition %s frozen for index-only timeline scans", name)
        return True

    async def insert_segment(self, row: SegmentRow) -> None:
        start, end = utc(row.start_ns), utc(row.end_ns)
        await self.ensure_days(start.date())
        await self._run(
            f"segment {row.object_key}",
            _INSERT_SEGMENT,
            row.camera,
            row.stream,
            start,
            end,
            row.duration_ms,
            row.frames,
            row.keyframes,
            row.bytes,
            bytes.fromhex(row.sha256),
            row.codec,
            row.width,
            row.height,
            row.object_key,
            row.init_key,
            row.time_trusted,
            row.session,
            row.first_seq,
            row.last_seq,
            row.repaired_timestamps,
            row.recorder,
        )

    async def insert_gap(self, row: GapRow) -> None:
        await self._run(
            f"gap {row.camera} {row.cause}",
            _INSERT_GAP,
            row.camera,
            row.stream,
            utc(row.start_ns),
            utc(row.end_ns),
            row.cause,
            row.detail,
            row.session,
            row.last_seq,
            row.recorder,
        )

    async def stored_frames(self, row: SegmentRow) -> int | None:
        """How many frames the index holds for this segment's key (None: not indexed)."""
        found = await self._run(
            f"lookup {row.object_key}", _STORED_FRAMES, row.camera, row.stream, utc(row.start_ns), row.object_key
        )
        return int(found[0]["frames"]) if found else None

    async def checkpoint(self, camera: str, stream: str, now_ns: int) -> Checkpoint | None:
        """The newest segment or gap of a camera stream that accounts for packets: a new owner resumes after it."""
        since = utc(now_ns - int(self._lookback_s * 1e9))
        rows = await self._run(f"checkpoint {camera}", _LAST_SEGMENT, camera, stream, since)
        rows += await self._run(f"checkpoint {camera}", _LAST_GAP, camera, stream, since)
        if not rows:
            return None
        newest = max(rows, key=lambda r: r["end_time"])  # a segment wins a tie: it comes first
        return Checkpoint(str(newest["session"]), int(newest["last_seq"]), ns_of(newest["end_time"]))

    async def enabled_cameras(self) -> list[str]:
        rows = await self._run("camera register", "SELECT id FROM cameras WHERE enabled ORDER BY id")
        return [str(r["id"]) for r in rows]
