"""Storage use per day, camera and stream, kept for past days so that the api answers without scanning 45 M rows.

A day is computed once it is over (the day before yesterday and older, by the clock), from its partition; a sweep
that deletes from a day drops that day's figures, and the next refresh computes them again. Today's and
yesterday's rows (and any day without figures) are counted live by `argus_storage_usage()`.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import asyncpg

from argus_retention.times import DAY, Clock, system_clock, utc

log = logging.getLogger(__name__)

_MISSING = """
SELECT to_date(substr(c.relname, 10), 'YYYYMMDD') AS day
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'segments'::regclass AND c.relname ~ '^segments_[0-9]{8}$'
  AND to_date(substr(c.relname, 10), 'YYYYMMDD') < $1
  AND NOT EXISTS (SELECT 1 FROM retention_usage_days d WHERE d.day = to_date(substr(c.relname, 10), 'YYYYMMDD'))
ORDER BY 1
"""

_COMPUTE = """
INSERT INTO retention_usage (day, camera, stream, segments, bytes, first_start, last_end)
SELECT $1::date, camera, stream, count(*), sum(bytes), min(start_time), max(end_time)
FROM segments WHERE start_time >= $2 AND start_time < $3
GROUP BY camera, stream
"""


class UsageCache:
    def __init__(self, pool: asyncpg.Pool, *, clock: Clock = system_clock) -> None:
        self._pool = pool
        self._clock = clock

    async def refresh(self) -> list[date]:
        """Compute the figures of past days that have none; the days computed."""
        before = utc(self._clock()).date() - timedelta(days=1)
        done: list[date] = []
        for row in await self._pool.fetch(_MISSING, before):
            day: date = row["day"]
            lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM retention_usage WHERE day = $1", day)
                await conn.execute(_COMPUTE, day, lo, lo + DAY)
                await conn.execute(
                    "INSERT INTO retention_usage_days (day) VALUES ($1) ON CONFLICT (day) DO UPDATE "
                    "SET computed_at = now()",
                    day,
                )
            done.append(day)
        if done:
            log.info("storage use computed for %d days (%s to %s)", len(done), done[0], done[-1])
        return done
