"""Reconcile: find objects without rows and rows without objects in the recordings bucket, report or repair them.

The bucket is walked camera by camera (`camera/`, several at once), each camera's listing page by page in key
order. The recorder's layout puts a segment's UTC day in its key (`camera[/sub]/YYYY/MM/DD/HH/MM/SS.mmmZ-tag.m4s`)
and keeps init segments in `camera[/sub]/init/`, so a camera's listing comes as one group per (stream, day), then
its init segments; each group is compared with the index rows of that camera, stream and day (an index range
scan), and days that have rows but no object at all come from a loose index scan of the camera's rows. Memory is
one day of one camera at a time.

Not orphans: objects younger than the grace period (a recorder uploads first and indexes after, and may hold rows
in its spool during a database outage), rows younger than it, keys a sweep has journaled (a detached day, a queued
init segment). Repair (`repair=True`) deletes objects without rows and init segments nothing refers to, and deletes
rows without objects, recording a gap in their place; it never deletes anything an evidence hold covers (that is
only reported), nor keys outside the recorder's layout. It runs under the retention lock (never beside a sweep)
and a repair is audited.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg

from argus_core.audit.emitter import AuditEmitter, AuditUnavailable
from argus_retention.metrics import RetentionMetrics
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import retention_lock
from argus_retention.times import DAY, MAX_SEGMENT, Clock, iso, system_clock, utc

log = logging.getLogger(__name__)

SAMPLE = 100  # keys listed per kind in a report

_SEGMENT_RE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})/(\d{2})/(\d{2})/(\d{2})\.(\d{3})Z-[0-9a-f]+\.m4s$")
_INIT_RE = re.compile(r"^init/[0-9a-f]+\.mp4$")

Notify = Callable[["ReconcileReport"], Awaitable[None]]


@dataclass(frozen=True)
class ParsedKey:
    camera: str
    stream: str
    kind: str  # "segment", "init" or "unknown"
    start: datetime | None = None

    @property
    def day(self) -> date | None:
        return self.start.date() if self.start is not None else None


def parse_key(key: str) -> ParsedKey:
    camera, _, rest = key.partition("/")
    stream = "main"
    if rest.startswith("sub/"):
        stream, rest = "sub", rest[len("sub/") :]
    if _INIT_RE.match(rest):
        return ParsedKey(camera, stream, "init")
    match = _SEGMENT_RE.match(rest)
    if match:
        y, mo, d, h, mi, s, ms = (int(g) for g in match.groups())
        try:
            start = datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=UTC)
        except ValueError:
            return ParsedKey(camera, stream, "unknown")
        return ParsedKey(camera, stream, "segment", start)
    return ParsedKey(camera, stream, "unknown")


@dataclass
class Finding:
    count: int = 0
    sample: list[str] = field(default_factory=list)

    def add(self, keys: list[str]) -> None:
        self.count += len(keys)
        room = SAMPLE - len(self.sample)
        if room > 0:
            self.sample.extend(sorted(keys)[:room])


@dataclass
class ReconcileReport:
    cameras: int = 0
    objects: int = 0
    rows: int = 0
    objects_without_rows: Finding = field(default_factory=Finding)
    rows_without_objects: Finding = field(default_factory=Finding)
    unreferenced_inits: Finding = field(default_factory=Finding)
    missing_inits: Finding = field(default_factory=Finding)
    unknown_objects: Finding = field(default_factory=Finding)  # outside the recorder's layout: reported only
    held: Finding = field(default_factory=Finding)  # orphans an evidence hold covers: reported only
    young: int = 0  # objects and rows inside the grace period: not judged
    repaired_objects: int = 0
    repaired_rows: int = 0
    refused: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not (
            self.objects_without_rows.count
            or self.rows_without_objects.count
            or self.unreferenced_inits.count
            or self.missing_inits.count
            or self.unknown_objects.count
            or self.held.count
        )

    def summary(self) -> str:
        text = (
            f"reconciled {self.objects} objects and {self.rows} rows of {self.cameras} cameras "
            f"in {self.seconds:.1f} s: "
            f"{self.objects_without_rows.count} objects without rows, {self.rows_without_objects.count} rows without "
            f"objects, {self.unreferenced_inits.count} init segments nothing refers to, {self.missing_inits.count} "
            f"missing init segments, {self.unknown_objects.count} objects outside the layout, {self.held.count} "
            f"orphans under an evidence hold; {self.young} too young to judge"
        )
        if self.repaired_objects or self.repaired_rows:
            text += f"; repaired: {self.repaired_objects} objects and {self.repaired_rows} rows deleted"
        return text


_DAY_ROWS = """
SELECT object_key, created_at FROM segments WHERE camera = $1 AND stream = $2 AND start_time >= $3 AND start_time < $4
"""

# The (stream, day) groups a camera has rows in: a loose index scan that jumps a day at a time.
_ROW_DAYS = """
WITH RECURSIVE g(stream, start_time) AS (
    (SELECT stream, start_time FROM segments WHERE camera = $1 ORDER BY stream, start_time LIMIT 1)
    UNION ALL
    SELECT n.stream, n.start_time FROM g CROSS JOIN LATERAL (
        SELECT s.stream, s.start_time FROM segments s
        WHERE s.camera = $1 AND (s.stream, s.start_time) >= (
            g.stream, (date_trunc('day', g.start_time AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
        )
        ORDER BY s.stream, s.start_time LIMIT 1
    ) n
)
SELECT stream, (start_time AT TIME ZONE 'UTC')::date AS day FROM g
"""

_INITS_USED = """
SELECT DISTINCT init_key FROM segments WHERE camera = $1 AND stream = $2
UNION SELECT init_key FROM retention_init_candidates WHERE camera = $1 AND stream = $2
"""

_HELD = """
SELECT EXISTS (SELECT 1 FROM retention_active_holds h WHERE h.camera = $1 AND h.start_time < $3 AND h.end_time > $2)
"""

_DELETE_ROWS = """
WITH gone AS (
    DELETE FROM segments s USING unnest($1::text[]) AS k(object_key)
    WHERE s.camera = $2 AND s.stream = $3 AND s.start_time >= $4 AND s.start_time < $5 AND s.object_key = k.object_key
    RETURNING s.camera, s.stream, s.start_time, s.end_time, s.object_key
)
INSERT INTO recording_gaps (camera, stream, start_time, end_time, cause, detail)
SELECT camera, stream, start_time, end_time, 'unknown', 'segment object missing from storage (found by reconcile)'
FROM gone
ON CONFLICT DO NOTHING
"""


class Reconciler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        objects: RecordingObjects,
        *,
        emitter: AuditEmitter | None = None,
        grace_s: float = 86400.0,
        clock: Clock = system_clock,
        concurrency: int = 4,
        page: int = 1000,
        metrics: RetentionMetrics | None = None,
        notify: Notify | None = None,
    ) -> None:
        self._pool = pool
        self._objects = objects
        self._emitter = emitter
        self._grace_ns = int(grace_s * 1e9)
        self._clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        self._page = page
        self._metrics = metrics
        self._notify = notify

    async def run(self, *, repair: bool = False) -> ReconcileReport:
        """Walk every camera's objects and rows; `SweepBusy` while a sweep runs."""
        report = ReconcileReport()
        started = asyncio.get_running_loop().time()
        async with retention_lock(self._pool):
            young_before = self._clock() - self._grace_ns
            journal = await self._journal()
            folders, strays = await self._objects.store.list_level(self._objects.bucket, "")
            report.unknown_objects.add([o.key for o in strays])
            report.objects += len(strays)
            cameras = sorted(
                {f.rstrip("/") for f in folders}
                | {r[0] for r in await self._pool.fetch("SELECT argus_recorded_cameras()")}
            )
            report.cameras = len(cameras)
            async with asyncio.TaskGroup() as tasks:
                for camera in cameras:
                    tasks.create_task(self._camera(camera, report, journal, young_before, repair))
        report.seconds = asyncio.get_running_loop().time() - started
        await self._after(report, repair)
        return report

    async def _journal(self) -> set[str]:
        """Keys in days a sweep detached and has not finished (a killed sweep's; the next sweep finishes them)."""
        keys: set[str] = set()
        for row in await self._pool.fetch("SELECT table_name FROM retention_day_sweeps WHERE state = 'detached'"):
            name = row["table_name"].replace('"', '""')
            for r in await self._pool.fetch(f'SELECT object_key, init_key FROM "{name}"'):
                keys.add(r["object_key"])
                keys.add(r["init_key"])
        return keys

    async def _pages(self, prefix: str) -> AsyncIterator[list[tuple[str, int]]]:
        after = ""
        while True:
            page = await self._objects.store.list_page(
                self._objects.bucket, prefix, start_after=after, limit=self._page
            )
            if not page:
                return
            yield [(o.key, o.last_modified_ns) for o in page]
            if len(page) < self._page:
                return
            after = page[-1].key

    async def _camera(
        self, camera: str, report: ReconcileReport, journal: set[str], young_before: int, repair: bool
    ) -> None:
        async with self._slots:
            row_days = {(r["stream"], r["day"]) for r in await self._pool.fetch(_ROW_DAYS, camera)}
            streams_with_rows = {stream for stream, _ in row_days}
            group: tuple[str, str, date | None] | None = None
            members: list[tuple[str, int]] = []
            seen_inits: set[str] = set()
            kept: set[str] = set()  # streams with held orphan segments: their init segments stay too

            async def close(done: tuple[str, str, date | None], keys: list[tuple[str, int]]) -> None:
                await self._group(camera, done, keys, report, journal, young_before, repair, kept)
                stream, kind, day = done
                if kind == "init":
                    seen_inits.add(stream)
                elif day is not None:
                    row_days.discard((stream, day))

            async for page in self._pages(camera + "/"):
                report.objects += len(page)
                for key, modified in page:
                    parsed = parse_key(key)
                    if parsed.kind == "unknown":
                        if key not in journal:
                            report.unknown_objects.add([key])
                        continue
                    this = (parsed.stream, parsed.kind, parsed.day)
                    if this != group:
                        if group is not None:
                            await close(group, members)
                        group, members = this, []
                    members.append((key, modified))
            if group is not None:
                await close(group, members)
            for stream, day in sorted(row_days):  # days with rows and no object at all
                await self._group(camera, (stream, "segment", day), [], report, journal, young_before, repair, kept)
            for stream in sorted(streams_with_rows - seen_inits):  # no init folder at all
                await self._group(camera, (stream, "init", None), [], report, journal, young_before, repair, kept)

    async def _group(
        self,
        camera: str,
        group: tuple[str, str, date | None],
        members: list[tuple[str, int]],
        report: ReconcileReport,
        journal: set[str],
        young_before: int,
        repair: bool,
        kept: set[str],
    ) -> None:
        stream, kind, day = group
        if kind == "init":
            await self._inits(camera, stream, members, report, journal, young_before, repair, stream in kept)
            return
        assert day is not None
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        rows = await self._pool.fetch(_DAY_ROWS, camera, stream, lo, lo + DAY)
        report.rows += len(rows)
        row_keys = {r["object_key"] for r in rows}
        objects = {key for key, _ in members}
        young_rows = {r["object_key"] for r in rows if r["created_at"] > utc(young_before)}

        orphans: list[str] = []
        for key, modified in members:
            if key in row_keys or key in journal:
                continue
            if modified > young_before:
                report.young += 1
                continue
            orphans.append(key)
        held_orphans = [k for k in orphans if await self._held(camera, parse_key(k).start)]
        orphans = [k for k in orphans if k not in set(held_orphans)]
        missing = sorted(row_keys - objects - young_rows)
        report.young += len(young_rows - objects)
        held_rows = [k for k in missing if await self._held(camera, parse_key(k).start)]
        missing = [k for k in missing if k not in set(held_rows)]
        report.objects_without_rows.add(orphans)
        report.rows_without_objects.add(missing)
        report.held.add(held_orphans + held_rows)
        if held_orphans:
            kept.add(stream)
        if not repair:
            return
        if orphans:
            refused = await self._objects.delete(orphans)
            report.refused += len(refused)
            report.repaired_objects += len(orphans) - len(refused)
        if missing:
            await self._pool.execute(_DELETE_ROWS, missing, camera, stream, lo, lo + DAY)
            report.repaired_rows += len(missing)

    async def _inits(
        self,
        camera: str,
        stream: str,
        members: list[tuple[str, int]],
        report: ReconcileReport,
        journal: set[str],
        young_before: int,
        repair: bool,
        held: bool,
    ) -> None:
        """Init segments nothing refers to (kept as held when the stream has held orphan segments that may need
        them), and init segments rows refer to that are missing."""
        used = {r["init_key"] for r in await self._pool.fetch(_INITS_USED, camera, stream)}
        present = {key for key, _ in members}
        unused: list[str] = []
        for key, modified in members:
            if key in used or key in journal:
                continue
            if modified > young_before:
                report.young += 1
                continue
            unused.append(key)
        if held:
            report.held.add(unused)
            unused = []
        report.unreferenced_inits.add(unused)
        candidates = {
            r["init_key"]
            for r in await self._pool.fetch(
                "SELECT init_key FROM retention_init_candidates WHERE camera = $1 AND stream = $2", camera, stream
            )
        }
        report.missing_inits.add(sorted(used - present - candidates))
        if repair and unused:
            refused = await self._objects.delete(unused)
            report.refused += len(refused)
            report.repaired_objects += len(unused) - len(refused)

    async def _held(self, camera: str, start: datetime | None) -> bool:
        if start is None:
            return True
        return bool(await self._pool.fetchval(_HELD, camera, start, start + MAX_SEGMENT))

    async def _after(self, report: ReconcileReport, repair: bool) -> None:
        log.log(logging.INFO if report.clean else logging.WARNING, "%s", report.summary())
        if self._metrics is not None:
            self._metrics.orphans.labels("objects_without_rows").set(report.objects_without_rows.count)
            self._metrics.orphans.labels("rows_without_objects").set(report.rows_without_objects.count)
            self._metrics.orphans.labels("unreferenced_inits").set(report.unreferenced_inits.count)
            self._metrics.orphans.labels("missing_inits").set(report.missing_inits.count)
            self._metrics.orphans.labels("unknown_objects").set(report.unknown_objects.count)
            self._metrics.orphans.labels("held").set(report.held.count)
            self._metrics.repaired.labels("objects").inc(report.repaired_objects)
            self._metrics.repaired.labels("rows").inc(report.repaired_rows)
        if self._notify is not None and not report.clean:
            await self._notify(report)
        if self._emitter is not None and (report.repaired_objects or report.repaired_rows):
            try:
                await self._emitter.emit(
                    "retention.reconcile",
                    actor="retention",
                    target=f"bucket:{self._objects.bucket}",
                    reason="objects without index rows and rows without objects repaired",
                    details={
                        "objects_deleted": str(report.repaired_objects),
                        "rows_deleted": str(report.repaired_rows),
                        "objects_without_rows": str(report.objects_without_rows.count),
                        "rows_without_objects": str(report.rows_without_objects.count),
                        "unreferenced_inits": str(report.unreferenced_inits.count),
                        "missing_inits": str(report.missing_inits.count),
                        "held": str(report.held.count),
                        "refused": str(report.refused),
                        "at": iso(utc(self._clock())),
                    },
                )
            except AuditUnavailable as exc:
                log.error("the reconcile repair was not audited: %s", exc)  # noqa: TRY400
