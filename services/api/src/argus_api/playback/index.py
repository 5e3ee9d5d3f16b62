"""Reads of the recording index (migration 0002) for playback, and the clip records (migration 0005).

Every query names one camera and stream and bounds `start_time` on both sides, so Postgres prunes to the day
partitions of the range and walks an index in order: the covering primary key `(camera, stream, start_time,
object_key) INCLUDE (end_time, duration_ms, ...)` for segment lists, the slim `segments_spans_idx` (migration 0005)
for spans. Segments are at most 10 minutes long (a CHECK), so "overlapping [t0, t1)" is
`start_time >= t0 - 10 min AND start_time < t1 AND end_time > t0`. A timeline asks for spans, merged in the server
(turning 14,400 rows a day into Python objects costs ten times what the server spends finding them); only a
playlist or a clip, which needs every segment, lists segments, and only for the window played.

Times cross this module as integer milliseconds since the epoch, UTC (what the index keeps).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from argus_core.errors import ArgusError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SEGMENT = timedelta(minutes=10)  # the CHECK on segments: how far before t0 an overlapping segment can start
SPAN_QUERIES = 3  # connections one long timeline may use at once


class IndexUnavailable(ArgusError):
    """Postgres did not answer in time, or at all."""


def ms_of(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


def at_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """`2026-03-09T02:14:05.120Z`."""
    return at_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Span:
    start_ms: int
    end_ms: int
    segments: int


@dataclass(frozen=True, slots=True)
class Gap:
    start_ms: int
    end_ms: int
    cause: str
    detail: str


@dataclass(frozen=True, slots=True)
class Segment:
    start_ms: int
    end_ms: int
    duration_ms: int
    frames: int
    bytes: int
    object_key: str
    init_key: str
    codec: str
    width: int
    height: int


def join_spans(spans: list[Span], tolerance_ms: int) -> list[Span]:
    """Spans in start order, those that touch (within the tolerance) or overlap joined into one."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start_ms):
        if out and span.start_ms <= out[-1].end_ms + tolerance_ms:
            last = out[-1]
            out[-1] = Span(last.start_ms, max(last.end_ms, span.end_ms), last.segments + span.segments)
        else:
            out.append(span)
    return out


_OVERLAP = """camera = $1 AND stream = $2 AND start_time >= $3::timestamptz - interval '10 minutes'
    AND start_time < $4 AND end_time > $3"""

# Gaps and islands: a row opens a new span when it starts later than every earlier row of the range ended (plus
# the tolerance); the running max handles overlapping rows (a clock stepped back). Ordered by start_time alone, the
# window is fed without a sort by an index-only scan of segments_spans_idx (migration 0005: start_time and end_time
# only, a quarter of the primary key's size). The bounds are explicit ($3 <= start_time < $4, end_time > $6) so
# that a long range can be cut into days that share no row.
SPANS = """
SELECT min(start_time) AS start_time, max(end_time) AS end_time, count(*) AS segments
FROM (
    SELECT start_time, end_time,
           count(*) FILTER (WHERE prev_end IS NULL OR start_time > prev_end + $5::interval)
               OVER (ORDER BY start_time) AS span
    FROM (
        SELECT start_time, end_time,
               max(end_time) OVER (ORDER BY start_time ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
        FROM segments
        WHERE camera = $1 AND stream = $2 AND start_time >= $3 AND start_time < $4 AND end_time > $6
    ) rows
) numbered
GROUP BY span ORDER BY span
"""

GAPS = """
SELECT start_time, end_time, cause, detail FROM recording_gaps
WHERE camera = $1 AND stream = $2 AND end_time > $3 AND start_time < $4
ORDER BY start_time, cause
"""

SEGMENTS = f"""
SELECT start_time, end_time, duration_ms, frames, bytes, object_key, init_key, codec, width, height
FROM segments WHERE {_OVERLAP}
ORDER BY start_time, object_key
"""

# The segment holding an instant: the newest one starting at or before it (within the longest segment).
AT = """
SELECT start_time, end_time, duration_ms, frames, bytes, object_key, init_key, codec, width, height
FROM segments
WHERE camera = $1 AND stream = $2 AND start_time <= $3 AND start_time > $3::timestamptz - interval '10 minutes'
ORDER BY start_time DESC, object_key DESC LIMIT 1
"""

# The first segment after an instant, looking no further than $4.
AFTER = """
SELECT start_time, end_time, duration_ms, frames, bytes, object_key, init_key, codec, width, height
FROM segments
WHERE camera = $1 AND stream = $2 AND start_time > $3 AND start_time < $4
ORDER BY start_time, object_key LIMIT 1
"""

KNOWN = """
SELECT EXISTS (SELECT 1 FROM cameras WHERE id = $1)
    OR EXISTS (SELECT 1 FROM segments WHERE camera = $1)
    OR EXISTS (SELECT 1 FROM recording_gaps WHERE camera = $1)
"""

INSERT_CLIP = """
INSERT INTO playback_clips (id, camera, stream, requested_from, requested_until, subject, org)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

FINISH_CLIP = """
UPDATE playback_clips SET status = $2, start_time = $3, end_time = $4, bytes = $5, packets = $6, segments = $7,
    sha256 = $8, detail = $9, finished_at = now()
WHERE id = $1
"""

GET_CLIP = """
SELECT id, camera, stream, requested_from, requested_until, start_time, end_time, status, bytes, packets, segments,
       sha256, subject, org, detail, created_at, finished_at
FROM playback_clips WHERE id = $1
"""

_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresError,
    asyncpg.exceptions.InterfaceError,
)


def _segment(row: asyncpg.Record) -> Segment:
    return Segment(
        start_ms=ms_of(row["start_time"]),
        end_ms=ms_of(row["end_time"]),
        duration_ms=int(row["duration_ms"]),
        frames=int(row["frames"]),
        bytes=int(row["bytes"]),
        object_key=str(row["object_key"]),
        init_key=str(row["init_key"]),
        codec=str(row["codec"]),
        width=int(row["width"]),
        height=int(row["height"]),
    )


@dataclass(frozen=True, slots=True)
class ClipRecord:
    id: str
    camera: str
    stream: str
    requested_from_ms: int
    requested_until_ms: int
    start_ms: int | None
    end_ms: int | None
    status: str
    bytes: int | None
    packets: int | None
    segments: int | None
    sha256: str | None
    subject: str
    org: str
    detail: str
    created_ms: int
    finished_ms: int | None


class PlaybackIndex:
    """The playback queries over an asyncpg pool, each bounded by `timeout_s`."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def _fetch(self, what: str, sql: str, *args: object) -> list[asyncpg.Record]:
        try:
            async with asyncio.timeout(self._timeout_s):
                return list(await self._pool.fetch(sql, *args))
        except _ERRORS as exc:
            raise IndexUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    async def camera_known(self, camera: str) -> bool:
        """In the register, or footage or gaps of it are indexed (footage outlives a camera's removal)."""
        rows = await self._fetch("camera lookup", KNOWN, camera)
        return bool(rows[0][0])

    async def spans(self, camera: str, stream: str, start_ms: int, end_ms: int, tolerance_ms: int) -> list[Span]:
        """Recorded spans overlapping [start, end). A range of more than a day is asked a UTC day at a time, a few
        days at once on separate connections (a month of one camera is 446,400 rows), and the answers joined."""
        tolerance = timedelta(milliseconds=tolerance_ms)
        lo = at_ms(start_ms)
        cuts = [lo - MAX_SEGMENT]
        day = datetime.combine(lo.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        while ms_of(day) < end_ms:
            cuts.append(day)
            day += timedelta(days=1)
        cuts.append(at_ms(end_ms))
        slots = asyncio.Semaphore(SPAN_QUERIES)

        async def chunk(a: datetime, b: datetime) -> list[Span]:
            async with slots:
                rows = await self._fetch("spans", SPANS, camera, stream, a, b, tolerance, lo)
            return [Span(ms_of(r["start_time"]), ms_of(r["end_time"]), int(r["segments"])) for r in rows]

        if len(cuts) == 2:
            parts = [await chunk(cuts[0], cuts[1])]
        else:
            try:
                async with asyncio.TaskGroup() as tasks:
                    running = [tasks.create_task(chunk(a, b)) for a, b in zip(cuts, cuts[1:], strict=False)]
            except* IndexUnavailable as group:
                raise group.exceptions[0] from None
            parts = [t.result() for t in running]
        return join_spans([span for part in parts for span in part], tolerance_ms)

    async def gaps(self, camera: str, stream: str, start_ms: int, end_ms: int) -> list[Gap]:
        rows = await self._fetch("gaps", GAPS, camera, stream, at_ms(start_ms), at_ms(end_ms))
        return [Gap(ms_of(r["start_time"]), ms_of(r["end_time"]), str(r["cause"]), str(r["detail"])) for r in rows]

    async def segments(self, camera: str, stream: str, start_ms: int, end_ms: int) -> list[Segment]:
        rows = await self._fetch("segments", SEGMENTS, camera, stream, at_ms(start_ms), at_ms(end_ms))
        return [_segment(r) for r in rows]

    async def segment_at(self, camera: str, stream: str, at: int) -> Segment | None:
        """The segment whose span holds the instant `at` (ms), or None."""
        rows = await self._fetch("seek", AT, camera, stream, at_ms(at))
        if rows and ms_of(rows[0]["end_time"]) > at:
            return _segment(rows[0])
        return None

    async def segment_after(self, camera: str, stream: str, at: int, within_ms: int) -> Segment | None:
        rows = await self._fetch("seek", AFTER, camera, stream, at_ms(at), at_ms(at + within_ms))
        return _segment(rows[0]) if rows else None

    # --- clip records -----------------------------------------------------------------------------------------

    async def clip_started(
        self, clip_id: str, camera: str, stream: str, start_ms: int, end_ms: int, subject: str, org: str
    ) -> None:
        await self._fetch(
            "clip record", INSERT_CLIP, clip_id, camera, stream, at_ms(start_ms), at_ms(end_ms), subject, org
        )

    async def clip_finished(
        self,
        clip_id: str,
        *,
        status: str,
        start_ms: int | None,
        end_ms: int | None,
        size: int,
        packets: int,
        segments: int,
        sha256: bytes | None,
        detail: str = "",
    ) -> None:
        await self._fetch(
            "clip record",
            FINISH_CLIP,
            clip_id,
            status,
            at_ms(start_ms) if start_ms is not None else None,
            at_ms(end_ms) if end_ms is not None else None,
            size,
            packets,
            segments,
            sha256,
            detail[:1000],
        )

    async def clip(self, clip_id: str) -> ClipRecord | None:
        rows = await self._fetch("clip record", GET_CLIP, clip_id)
        if not rows:
            return None
        r = rows[0]

        def opt_ms(value: datetime | None) -> int | None:
            return ms_of(value) if value is not None else None

        return ClipRecord(
            id=str(r["id"]),
            camera=str(r["camera"]),
            stream=str(r["stream"]),
            requested_from_ms=ms_of(r["requested_from"]),
            requested_until_ms=ms_of(r["requested_until"]),
            start_ms=opt_ms(r["start_time"]),
            end_ms=opt_ms(r["end_time"]),
            status=str(r["status"]),
            bytes=r["bytes"],
            packets=r["packets"],
            segments=r["segments"],
            sha256=bytes(r["sha256"]).hex() if r["sha256"] is not None else None,
            subject=str(r["subject"]),
            org=str(r["org"]),
            detail=str(r["detail"]),
            created_ms=ms_of(r["created_at"]),
            finished_ms=opt_ms(r["finished_at"]),
        )
