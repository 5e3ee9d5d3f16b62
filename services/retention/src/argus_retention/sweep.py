"""The sweep: delete expired footage from S3 and the index, never what an evidence hold covers.

A segment is expired when it ended at or before `now - retention(camera)` (`argus_retention_cutoffs`). A sweep:

1. brings S3 legal holds in line with the evidence holds (so released footage can be deleted);
2. finishes any day a killed sweep had detached (below);
3. days: a day partition whose every segment is expired and none held is detached from `segments` and renamed
   (nothing reads its rows any more), its objects are deleted in batches, several at once, with a cursor committed
   after each window, then the table is dropped: no row-by-row DELETE, no vacuum debt;
4. rows: the rest, camera by camera in key order, in batches: one transaction per batch takes a SHARE lock on the
   hold tables (a hold being created waits for the batch), selects up to `batch` expired unheld segments, deletes
   their objects (multi-object delete), then their rows, and commits;
5. gaps: expired, unheld recording gaps;
6. init segments: those queued by steps 3 and 4 that no segment refers to any more are deleted, then dequeued.

Safe to stop anywhere. Objects always go before the rows that name them, so no object is ever left without a
row; a row outlives its object only until its batch commits (a kill there leaves the row, and the next sweep deletes
the missing object again, which S3 treats as done, and the row). A detached day is invisible to readers while its
objects go. Totals are committed with each batch, so a sweep killed midway is still audited, by the next one, with
what it did. Only one sweep runs at a time (a Postgres advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from argus_core.audit.emitter import AuditEmitter, AuditUnavailable
from argus_core.bus import messages as m
from argus_retention.errors import SweepBusy
from argus_retention.metrics import RetentionMetrics
from argus_retention.objects import RecordingObjects
from argus_retention.times import DAY, EPOCH, MAX_SEGMENT, Clock, iso, ns_of, system_clock, utc

log = logging.getLogger(__name__)

LOCK_NAME = "argus.retention"  # one sweep or reconcile at a time, whichever pod runs it
PARTITION_LOCK_NAME = "argus.segments.partition"  # the recorder's lock for partition DDL

Connection = asyncpg.Connection | PoolConnectionProxy
Fault = Callable[[str], Awaitable[None]]  # called at named points; tests raise from it to simulate a crash


class LegalHoldSync(Protocol):
    async def sync(self) -> Any: ...


@dataclass
class CameraTotals:
    segments: int = 0
    bytes: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None

    def add(self, segments: int, size: int, first: datetime | None, last: datetime | None) -> None:
        self.segments += segments
        self.bytes += size
        if first is not None and (self.first_start is None or first < self.first_start):
            self.first_start = first
        if last is not None and (self.last_end is None or last > self.last_end):
            self.last_end = last


@dataclass
class SweepResult:
    sweep_id: int
    clock_ns: int
    state: str = "running"
    segments: int = 0
    bytes: int = 0
    inits: int = 0
    partitions: int = 0
    gaps: int = 0
    refused: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None
    seconds: float = 0.0
    cameras: dict[str, CameraTotals] = field(default_factory=dict)
    refused_keys: set[str] = field(default_factory=set)  # not tried again in this sweep

    def add(self, rows: Sequence[asyncpg.Record]) -> dict[str, CameraTotals]:
        """Count deleted rows; the per-camera totals of just these rows."""
        batch: dict[str, CameraTotals] = {}
        for r in rows:
            batch.setdefault(r["camera"], CameraTotals()).add(1, r["bytes"], r["start_time"], r["end_time"])
        for camera, totals in batch.items():
            self.cameras.setdefault(camera, CameraTotals()).add(
                totals.segments, totals.bytes, totals.first_start, totals.last_end
            )
            self.segments += totals.segments
            self.bytes += totals.bytes
            if totals.first_start is not None and (self.first_start is None or totals.first_start < self.first_start):
                self.first_start = totals.first_start
            if totals.last_end is not None and (self.last_end is None or totals.last_end > self.last_end):
                self.last_end = totals.last_end
        return batch


@dataclass
class _Position:
    """Where the row sweep is: the camera (index into the cutoffs) and the last key done in it."""

    index: int = 0
    stream: str = ""
    start: datetime = EPOCH - timedelta(days=365 * 100)
    key: str = ""

    def next_camera(self) -> None:
        self.index += 1
        self.stream, self.start, self.key = "", EPOCH - timedelta(days=365 * 100), ""


_LOCK_HOLDS = "LOCK TABLE evidence_holds, evidence_hold_cameras IN SHARE MODE"

_CUTOFFS = "SELECT camera, cutoff FROM argus_retention_cutoffs($1)"

_EXPIRED = """
SELECT s.camera, s.stream, s.start_time, s.end_time, s.object_key, s.init_key, s.bytes
FROM segments s
WHERE s.camera = $1 AND s.start_time < $2 AND s.end_time <= $2
  AND (s.stream, s.start_time, s.object_key) > ($3, $4, $5)
  AND NOT EXISTS (
      SELECT 1 FROM retention_active_holds h
      WHERE h.camera = $1 AND h.start_time < s.end_time AND h.end_time > s.start_time
  )
ORDER BY s.stream, s.start_time, s.object_key
LIMIT $6
"""

_DELETE_ROWS = """
DELETE FROM segments s
USING unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS k(camera, stream, start_time, object_key)
WHERE s.camera = k.camera AND s.stream = k.stream AND s.start_time = k.start_time AND s.object_key = k.object_key
"""

_QUEUE_INITS = """
INSERT INTO retention_init_candidates (camera, stream, init_key)
SELECT DISTINCT * FROM unnest($1::text[], $2::text[], $3::text[])
ON CONFLICT DO NOTHING
"""

_RECORD_SWEEP = """
UPDATE retention_sweeps SET segments = segments + $2, bytes = bytes + $3,
    first_start = LEAST(first_start, $4), last_end = GREATEST(last_end, $5), refused = refused + $6
WHERE id = $1
"""

_RECORD_CAMERAS = """
INSERT INTO retention_sweep_cameras (sweep_id, camera, segments, bytes, first_start, last_end)
SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (sweep_id, camera) DO UPDATE SET
    segments = retention_sweep_cameras.segments + EXCLUDED.segments,
    bytes = retention_sweep_cameras.bytes + EXCLUDED.bytes,
    first_start = LEAST(retention_sweep_cameras.first_start, EXCLUDED.first_start),
    last_end = GREATEST(retention_sweep_cameras.last_end, EXCLUDED.last_end)
"""

_INVALIDATE_USAGE = """
WITH gone AS (DELETE FROM retention_usage_days WHERE day = ANY($1::date[]) RETURNING day)
DELETE FROM retention_usage WHERE day = ANY($1::date[])
"""

_DAY_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'segments'::regclass AND c.relname ~ '^segments_[0-9]{8}$'
ORDER BY c.relname
"""

# Every camera in one day's partition (a loose index scan) has its cutoff at or after its last segment's end there,
# and no active hold of such a camera touches the day (to the last possible end of a segment that starts in it).
_DAY_EXPIRED = """
WITH RECURSIVE c(camera) AS (
    (SELECT camera FROM {t} ORDER BY camera LIMIT 1)
    UNION ALL
    SELECT (SELECT s.camera FROM {t} s WHERE s.camera > c.camera ORDER BY s.camera LIMIT 1)
    FROM c WHERE c.camera IS NOT NULL
)
SELECT NOT EXISTS (
    SELECT 1 FROM c CROSS JOIN LATERAL argus_retention_policy(c.camera) p
    WHERE c.camera IS NOT NULL AND (
        $3::timestamptz - make_interval(days => p.days) < (SELECT max(s.end_time) FROM {t} s WHERE s.camera = c.camera)
        OR EXISTS (
            SELECT 1 FROM retention_active_holds h WHERE h.camera = c.camera AND h.start_time < $2 AND h.end_time > $1
        )
    )
)
"""

_WALK_FIRST = """
SELECT camera, stream, start_time, end_time, object_key, init_key, bytes FROM {t}
ORDER BY camera, stream, start_time, object_key LIMIT $1
"""

_WALK = """
SELECT camera, stream, start_time, end_time, object_key, init_key, bytes FROM {t}
WHERE (camera, stream, start_time, object_key) > ($1, $2, $3, $4)
ORDER BY camera, stream, start_time, object_key LIMIT $5
"""

_RESTORE_REFUSED = """
INSERT INTO segments SELECT d.* FROM {t} d
JOIN unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS k(camera, stream, start_time, object_key)
  ON d.camera = k.camera AND d.stream = k.stream AND d.start_time = k.start_time AND d.object_key = k.object_key
ON CONFLICT DO NOTHING
"""

_DELETE_GAPS = """
WITH doomed AS (
    DELETE FROM recording_gaps g
    USING (SELECT DISTINCT camera FROM recording_gaps) c CROSS JOIN LATERAL argus_retention_policy(c.camera) p
    WHERE g.camera = c.camera AND g.end_time <= $1::timestamptz - make_interval(days => p.days)
      AND NOT EXISTS (
          SELECT 1 FROM retention_active_holds h
          WHERE h.camera = g.camera AND h.start_time < g.end_time AND h.end_time > g.start_time
      )
    RETURNING 1
)
SELECT count(*) FROM doomed
"""

_INIT_CANDIDATES = """
SELECT c.camera, c.stream, c.init_key,
       EXISTS (SELECT 1 FROM segments s WHERE s.camera = c.camera AND s.stream = c.stream AND s.init_key = c.init_key)
           AS used
FROM retention_init_candidates c
WHERE (c.camera, c.stream, c.init_key) > ($1, $2, $3)
ORDER BY c.camera, c.stream, c.init_key
LIMIT $4
"""

_DEQUEUE_INITS = """
DELETE FROM retention_init_candidates c
USING unnest($1::text[], $2::text[], $3::text[]) AS k(camera, stream, init_key)
WHERE c.camera = k.camera AND c.stream = k.stream AND c.init_key = k.init_key
"""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(rows: Sequence[asyncpg.Record]) -> tuple[list[str], list[str], list[datetime], list[str]]:
    return (
        [r["camera"] for r in rows],
        [r["stream"] for r in rows],
        [r["start_time"] for r in rows],
        [r["object_key"] for r in rows],
    )


def _days_of(rows: Sequence[asyncpg.Record]) -> list[date]:
    return sorted({utc(ns_of(r["start_time"])).date() for r in rows})


@contextlib.asynccontextmanager
async def retention_lock(pool: asyncpg.Pool) -> AsyncIterator[Connection]:
    """Hold the retention lock (a session advisory lock on one connection) or raise `SweepBusy`."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", LOCK_NAME):
            raise SweepBusy("another sweep or reconcile is running")
        try:
            yield conn
        finally:
            # The pool's reset on release unlocks too, should this fail (a connection lost mid-sweep).
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", LOCK_NAME)


class Sweeper:
    """Runs sweeps; one instance per service (or CLI run), its sweeps one at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        objects: RecordingObjects,
        *,
        clock: Clock = system_clock,
        emitter: AuditEmitter | None = None,
        pod: str = "",
        batch: int = 1000,
        parallel: int = 4,
        drop_days: bool = True,
        legal_holds: LegalHoldSync | None = None,
        metrics: RetentionMetrics | None = None,
        stopping: asyncio.Event | None = None,
        fault: Fault | None = None,
    ) -> None:
        self._pool = pool
        self._objects = objects
        self._clock = clock
        self._emitter = emitter
        self._pod = pod
        self._batch = batch
        self._parallel = parallel
        self._drop_days = drop_days
        self._legal_holds = legal_holds
        self._metrics = metrics
        self._stopping = stopping if stopping is not None else asyncio.Event()
        self._fault = fault

    async def _at(self, point: str) -> None:
        if self._fault is not None:
            await self._fault(point)

    def _stopped(self) -> bool:
        return self._stopping.is_set()

    # --- the sweep -----------------------------------------------------------------------------------------------

    async def sweep(self) -> SweepResult:
        """Run one sweep to the end (or until asked to stop); `SweepBusy` if another is running."""
        async with retention_lock(self._pool):
            await self._recover()
            await self.audit_pending()
            clock_ns = self._clock()
            now = utc(clock_ns)
            sweep_id = await self._pool.fetchval(
                "INSERT INTO retention_sweeps (pod, clock_at) VALUES ($1, $2) RETURNING id", self._pod, now
            )
            result = SweepResult(sweep_id=sweep_id, clock_ns=clock_ns)
            started = time.monotonic()
            log.info("sweep %d started (expiry judged at %s)", sweep_id, iso(now), extra={"sweep": sweep_id})
            try:
                if self._legal_holds is not None:
                    await self._legal_holds.sync()
                await self._finish_detached_days(result)
                if self._drop_days and not self._stopped():
                    await self._drop_expired_days(result, now)
                if not self._stopped():
                    await self._sweep_rows(result, now)
                if self._drop_days and not self._stopped():
                    await self._drop_expired_days(result, now, only_empty=True)  # days the rows sweep emptied
                if not self._stopped():
                    await self._sweep_gaps(result, now)
                await self._sweep_inits(result)
            except Exception as exc:
                result.seconds = time.monotonic() - started
                cause = exc.exceptions[0] if isinstance(exc, ExceptionGroup) and exc.exceptions else exc
                await self._finish(result, "failed", f"{type(cause).__name__}: {cause}")
                raise
            await self._at("finish")
            result.seconds = time.monotonic() - started
            await self._finish(result, "stopped" if self._stopped() else "done")
            return result

    async def _finish(self, result: SweepResult, state: str, error: str = "") -> None:
        result.state = state
        await self._pool.execute(
            "UPDATE retention_sweeps SET state = $2, finished_at = now(), error = $3 WHERE id = $1",
            result.sweep_id,
            state,
            error[:2000],
        )
        log.log(
            logging.ERROR if state == "failed" else logging.INFO,
            "sweep %d %s in %.1f s: %d segments (%d bytes), %d days dropped, %d init segments, %d gaps, %d refused%s",
            result.sweep_id,
            state,
            result.seconds,
            result.segments,
            result.bytes,
            result.partitions,
            result.inits,
            result.gaps,
            result.refused,
            f": {error}" if error else "",
            extra={"sweep": result.sweep_id, "segments": result.segments, "bytes": result.bytes},
        )
        if self._metrics is not None:
            self._metrics.sweeps.labels(state).inc()
            self._metrics.last_sweep.set(time.time())
            self._metrics.last_sweep_seconds.set(result.seconds)
        await self.audit_pending()

    # --- rows --------------------------------------------------------------------------------------------------

    async def _sweep_rows(self, result: SweepResult, now: datetime) -> None:
        cutoffs = [(r["camera"], r["cutoff"]) for r in await self._pool.fetch(_CUTOFFS, now)]
        pos = _Position()
        while pos.index < len(cutoffs) and not self._stopped():
            began = time.monotonic()
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_LOCK_HOLDS)
                rows, pos = await self._collect(conn, cutoffs, pos)
                if not rows:
                    break
                if result.refused_keys:
                    rows = [r for r in rows if r["object_key"] not in result.refused_keys]
                refused = await self._objects.delete([r["object_key"] for r in rows])
                result.refused_keys |= refused
                await self._at("rows.objects_deleted")
                gone = [r for r in rows if r["object_key"] not in refused] if refused else rows
                await conn.execute(_DELETE_ROWS, *_columns(gone))
                await self._queue_inits(conn, gone)
                await self._record(conn, result, gone, len(refused))
                await conn.execute(_INVALIDATE_USAGE, _days_of(gone))
            self._count(len(gone), sum(r["bytes"] for r in gone), len(refused), time.monotonic() - began)
            await self._at("rows.committed")

    async def _collect(
        self, conn: Connection, cutoffs: list[tuple[str, datetime]], pos: _Position
    ) -> tuple[list[asyncpg.Record], _Position]:
        """Up to `batch` expired, unheld segments from `pos` on, and where the next batch starts."""
        out: list[asyncpg.Record] = []
        pos = _Position(pos.index, pos.stream, pos.start, pos.key)
        while pos.index < len(cutoffs) and len(out) < self._batch:
            camera, cutoff = cutoffs[pos.index]
            wanted = self._batch - len(out)
            rows = await conn.fetch(_EXPIRED, camera, cutoff, pos.stream, pos.start, pos.key, wanted)
            out.extend(rows)
            if len(rows) < wanted:
                pos.next_camera()
            else:
                last = rows[-1]
                pos.stream, pos.start, pos.key = last["stream"], last["start_time"], last["object_key"]
        return out, pos

    async def _queue_inits(self, conn: Connection, rows: Sequence[asyncpg.Record]) -> None:
        inits = {(r["camera"], r["stream"], r["init_key"]) for r in rows}
        if inits:
            cams, streams, keys = zip(*sorted(inits), strict=True)
            await conn.execute(_QUEUE_INITS, list(cams), list(streams), list(keys))

    async def _record(
        self, conn: Connection, result: SweepResult, rows: Sequence[asyncpg.Record], refused: int
    ) -> None:
        """Add deleted rows to the sweep's committed totals (in the caller's transaction) and to `result`."""
        batch = result.add(rows)
        result.refused += refused
        if not batch and not refused:
            return
        first = min((t.first_start for t in batch.values() if t.first_start is not None), default=None)
        last = max((t.last_end for t in batch.values() if t.last_end is not None), default=None)
        size = sum(t.bytes for t in batch.values())
        count = sum(t.segments for t in batch.values())
        await conn.execute(_RECORD_SWEEP, result.sweep_id, count, size, first, last, refused)
        if batch:
            cams = sorted(batch)
            await conn.execute(
                _RECORD_CAMERAS,
                result.sweep_id,
                cams,
                [batch[c].segments for c in cams],
                [batch[c].bytes for c in cams],
                [batch[c].first_start for c in cams],
                [batch[c].last_end for c in cams],
            )

    def _count(self, segments: int, size: int, refused: int, seconds: float) -> None:
        if self._metrics is None:
            return
        self._metrics.segments_deleted.inc(segments)
        self._metrics.bytes_deleted.inc(size)
        if refused:
            self._metrics.refused.inc(refused)
        self._metrics.batch_seconds.observe(seconds)

    # --- whole days --------------------------------------------------------------------------------------------

    async def _drop_expired_days(self, result: SweepResult, now: datetime, *, only_empty: bool = False) -> None:
        min_days = await self._pool.fetchval("SELECT min_days FROM retention_settings")
        newest = now - timedelta(days=min_days) - MAX_SEGMENT - DAY  # no camera keeps footage for less
        for row in await self._pool.fetch(_DAY_PARTITIONS):
            name = row["relname"]
            digits = name[len("segments_") :]
            day = datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:]), tzinfo=UTC)
            if day > newest or self._stopped():
                break
            if only_empty and await self._pool.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_quote(name)})"):
                continue
            detached = await self._detach(name, day, now, result.sweep_id)
            if detached is not None:
                await self._sweep_detached(detached, day.date(), None, result)

    async def _detach(self, name: str, day: datetime, now: datetime, sweep_id: int) -> tuple[int, str] | None:
        """Detach and rename a wholly expired, unheld day partition; its day sweep's id and table, or None."""
        renamed = f"retention_sweep_{day:%Y%m%d}_{sweep_id}"
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # DETACH takes an ACCESS EXCLUSIVE lock on `segments`: while it waits, recorders' inserts queue
                # behind it, so it waits briefly and the day is tried again at the next sweep.
                await conn.execute("SET LOCAL lock_timeout = '1s'")
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", PARTITION_LOCK_NAME)
                await conn.execute(_LOCK_HOLDS)
                expired = await conn.fetchval(_DAY_EXPIRED.format(t=_quote(name)), day, day + DAY + MAX_SEGMENT, now)
                if not expired:
                    return None
                await conn.execute(f"ALTER TABLE segments DETACH PARTITION {_quote(name)}")
                await conn.execute(f"ALTER TABLE {_quote(name)} RENAME TO {_quote(renamed)}")
                day_id = await conn.fetchval(
                    "INSERT INTO retention_day_sweeps (day, table_name, sweep_id) VALUES ($1, $2, $3) RETURNING id",
                    day.date(),
                    renamed,
                    sweep_id,
                )
                await conn.execute(_INVALIDATE_USAGE, [day.date()])
        except (
            asyncpg.exceptions.LockNotAvailableError,
            asyncpg.exceptions.QueryCanceledError,
            asyncpg.exceptions.DeadlockDetectedError,
        ) as exc:
            log.warning("day %s not detached now (%s): its rows are swept one batch at a time", name, exc)
            return None
        log.info("day %s wholly expired: detached as %s", name, renamed, extra={"sweep": sweep_id})
        await self._at("day.detached")
        return day_id, renamed

    async def _finish_detached_days(self, result: SweepResult) -> None:
        rows = await self._pool.fetch(
            "SELECT id, day, table_name, cursor_camera, cursor_stream, cursor_start, cursor_key "
            "FROM retention_day_sweeps WHERE state = 'detached' ORDER BY id"
        )
        for row in rows:
            if self._stopped():
                return
            cursor = (
                (row["cursor_camera"], row["cursor_stream"], row["cursor_start"], row["cursor_key"])
                if row["cursor_camera"] is not None
                else None
            )
            log.info("finishing day %s detached by an earlier sweep (%s)", row["day"], row["table_name"])
            await self._sweep_detached((row["id"], row["table_name"]), row["day"], cursor, result)

    async def _sweep_detached(
        self,
        detached: tuple[int, str],
        day: date,
        cursor: tuple[str, str, datetime, str] | None,
        result: SweepResult,
    ) -> None:
        """Delete the objects of a detached day, a window of `parallel` batches at a time, then drop its table."""
        day_id, table = detached
        t = _quote(table)
        walk_first, walk = _WALK_FIRST.format(t=t), _WALK.format(t=t)
        while not self._stopped():
            began = time.monotonic()
            window: list[list[asyncpg.Record]] = []
            for _ in range(self._parallel):
                if cursor is None:
                    rows = await self._pool.fetch(walk_first, self._batch)
                else:
                    rows = await self._pool.fetch(walk, *cursor, self._batch)
                if not rows:
                    break
                window.append(rows)
                last = rows[-1]
                cursor = (last["camera"], last["stream"], last["start_time"], last["object_key"])
            if not window:
                break
            async with asyncio.TaskGroup() as tasks:
                deletes = [tasks.create_task(self._objects.delete([r["object_key"] for r in w])) for w in window]
            refusals = [t.result() for t in deletes]
            await self._at("day.objects_deleted")
            refused = set().union(*refusals)
            result.refused_keys |= refused
            rows = [r for w in window for r in w]
            gone = [r for r in rows if r["object_key"] not in refused] if refused else rows
            assert cursor is not None
            async with self._pool.acquire() as conn, conn.transaction():
                if refused:
                    kept = [r for r in rows if r["object_key"] in refused]
                    log.warning("%d objects of day %s were refused: their rows go back to segments", len(kept), day)
                    await conn.execute(_RESTORE_REFUSED.format(t=t), *_columns(kept))
                await conn.execute(
                    "UPDATE retention_day_sweeps SET cursor_camera = $2, cursor_stream = $3, cursor_start = $4, "
                    "cursor_key = $5, segments = segments + $6, bytes = bytes + $7 WHERE id = $1",
                    day_id,
                    *cursor,
                    len(gone),
                    sum(r["bytes"] for r in gone),
                )
                await self._record(conn, result, gone, len(refused))
            self._count(len(gone), sum(r["bytes"] for r in gone), len(refused), time.monotonic() - began)
            if len(window[-1]) < self._batch:
                break
        else:
            return  # stopped: the next sweep resumes from the cursor
        await self._at("day.before_drop")
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO retention_init_candidates (camera, stream, init_key) "
                f"SELECT DISTINCT camera, stream, init_key FROM {t} ON CONFLICT DO NOTHING"
            )
            await conn.execute(f"DROP TABLE {t}")
            await conn.execute(
                "UPDATE retention_day_sweeps SET state = 'done', finished_at = now() WHERE id = $1", day_id
            )
            await conn.execute("UPDATE retention_sweeps SET partitions = partitions + 1 WHERE id = $1", result.sweep_id)
        result.partitions += 1
        if self._metrics is not None:
            self._metrics.partitions_dropped.inc()
        log.info("day %s swept and its table dropped", day, extra={"sweep": result.sweep_id})

    # --- gaps and init segments ----------------------------------------------------------------------------------

    async def _sweep_gaps(self, result: SweepResult, now: datetime) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(_LOCK_HOLDS)
            gaps = int(await conn.fetchval(_DELETE_GAPS, now))
            if gaps:
                await conn.execute("UPDATE retention_sweeps SET gaps = gaps + $2 WHERE id = $1", result.sweep_id, gaps)
        result.gaps += gaps

    async def _sweep_inits(self, result: SweepResult) -> None:
        """Delete queued init segments that no segment refers to any more (objects first, then the queue)."""
        after: tuple[str, str, str] = ("", "", "")
        while True:
            rows = await self._pool.fetch(_INIT_CANDIDATES, *after, self._batch)
            if not rows:
                return
            after = (rows[-1]["camera"], rows[-1]["stream"], rows[-1]["init_key"])
            unused = [r for r in rows if not r["used"]]
            refused = await self._objects.delete([r["init_key"] for r in unused])
            await self._at("inits.objects_deleted")
            done = [r for r in rows if r["init_key"] not in refused]
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    _DEQUEUE_INITS,
                    [r["camera"] for r in done],
                    [r["stream"] for r in done],
                    [r["init_key"] for r in done],
                )
                deleted = len(unused) - len(refused)
                await conn.execute(
                    "UPDATE retention_sweeps SET inits = inits + $2, refused = refused + $3 WHERE id = $1",
                    result.sweep_id,
                    deleted,
                    len(refused),
                )
            result.inits += deleted
            result.refused += len(refused)
            if self._metrics is not None:
                self._metrics.inits_deleted.inc(deleted)
            if len(rows) < self._batch:
                return

    # --- audit ---------------------------------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Mark sweeps left running as interrupted: only while holding the retention lock, so none is running."""
        await self._pool.execute(
            "UPDATE retention_sweeps SET state = 'interrupted', finished_at = now(), "
            "error = 'the sweeper stopped before the end (killed, or it lost its database)' WHERE state = 'running'"
        )

    async def audit_pending(self) -> int:
        """Audit every finished sweep not audited yet (interrupted ones too); how many were audited."""
        return await self._audit_finished()

    async def _audit_finished(self) -> int:
        if self._emitter is None:
            return 0
        rows = await self._pool.fetch(
            "SELECT * FROM retention_sweeps WHERE audited_at IS NULL AND state <> 'running' ORDER BY id"
        )
        done = 0
        for row in rows:
            try:
                await self._audit(row)
            except AuditUnavailable as exc:
                log.error("sweep %d not audited yet (retried at the next sweep): %s", row["id"], exc)  # noqa: TRY400
                return done
            await self._pool.execute("UPDATE retention_sweeps SET audited_at = now() WHERE id = $1", row["id"])
            done += 1
        return done

    async def _audit(self, row: asyncpg.Record) -> None:
        assert self._emitter is not None
        token: uuid.UUID = row["token"]
        sweep_id = row["id"]
        outcome: m.Outcome = "success" if row["state"] in ("done", "stopped") else "failure"
        reference = f"sweep {sweep_id}"
        cameras = await self._pool.fetch(
            "SELECT * FROM retention_sweep_cameras WHERE sweep_id = $1 ORDER BY camera", sweep_id
        )
        events: list[m.AuditEvent] = []
        for cam in cameras:
            event = self._emitter.event(
                "retention.delete",
                actor="retention",
                outcome=outcome,
                camera=cam["camera"],
                target=f"sweep:{sweep_id}",
                footage=_footage(cam["first_start"], cam["last_end"]),
                reason="retention period expired",
                reference=reference,
                details={"segments": str(cam["segments"]), "bytes": str(cam["bytes"]), "sweep": str(sweep_id)},
            )
            events.append(msgspec.structs.replace(event, id=uuid.uuid5(token, f"camera:{cam['camera']}").hex))
        details = {
            "sweep": str(sweep_id),
            "state": row["state"],
            "clock": iso(row["clock_at"]),
            "segments": str(row["segments"]),
            "bytes": str(row["bytes"]),
            "cameras": str(len(cameras)),
            "partitions": str(row["partitions"]),
            "inits": str(row["inits"]),
            "gaps": str(row["gaps"]),
            "refused": str(row["refused"]),
            "first_start": iso(row["first_start"]),
            "last_end": iso(row["last_end"]),
            "pod": row["pod"],
        }
        if row["error"]:
            details["error"] = row["error"][:500]
        summary = self._emitter.event(
            "retention.sweep",
            actor="retention",
            outcome=outcome,
            target=f"sweep:{sweep_id}",
            footage=_footage(row["first_start"], row["last_end"]),
            reason="retention period expired",
            reference=reference,
            details=details,
        )
        events.append(msgspec.structs.replace(summary, id=uuid.uuid5(token, "sweep").hex))
        for event in events:
            await self._emitter.persist(event)


def _footage(first: datetime | None, last: datetime | None) -> tuple[int, int] | None:
    if first is None or last is None:
        return None
    return ns_of(first), ns_of(last)
