"""S3 legal holds on held footage, so the store itself refuses a mistaken delete.

Where the recordings bucket has object lock, every segment an evidence hold covers (and the init segment it needs
to play) gets an S3 legal hold, and loses it when no hold covers it any more. A sync compares what the holds cover
now (segments recorded into a hold's range since the last sync included) with `retention_legal_holds`, the objects
Argus has put a legal hold on, and closes the difference:

* to hold: the row is written first, then the legal hold set, so a crash between leaves a row for an object that
  may not be held; the release path then clears it harmlessly. An object that is missing is reported, not held;
* to release: the legal hold is cleared first, then the row deleted, so a crash between retries the release.

S3 has no batch call for legal holds: one request per object, `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from argus_core.storage import ObjectNotFound, ObjectStore, StorageError
from argus_retention.config import LegalHoldMode
from argus_retention.errors import LegalHoldUnavailable
from argus_retention.metrics import RetentionMetrics

log = logging.getLogger(__name__)

# What the active holds cover: segments overlapping a hold (a segment is at most 10 minutes long, which bounds the
# index range scan) and their init segments.
_COVERED = """
SELECT s.object_key AS key, s.init_key, s.camera FROM retention_active_holds h
JOIN segments s ON s.camera = h.camera AND s.start_time >= h.start_time - interval '10 minutes'
               AND s.start_time < h.end_time AND s.end_time > h.start_time
"""

_DESIRED = f"""
WITH covered AS ({_COVERED})
SELECT key, camera FROM covered UNION SELECT init_key, camera FROM covered
"""

_TO_APPLY = f"""
WITH desired AS ({_DESIRED})
SELECT d.key, d.camera FROM desired d
WHERE d.key > $1 AND NOT EXISTS (SELECT 1 FROM retention_legal_holds l WHERE l.object_key = d.key)
ORDER BY d.key LIMIT $2
"""

_TO_RELEASE = f"""
WITH desired AS ({_DESIRED})
SELECT l.object_key AS key FROM retention_legal_holds l
WHERE l.object_key > $1 AND NOT EXISTS (SELECT 1 FROM desired d WHERE d.key = l.object_key)
ORDER BY l.object_key LIMIT $2
"""


async def _all(calls: Iterable[Coroutine[Any, Any, str]]) -> list[str]:
    """Run the calls together; if one fails, the others are cancelled (no call is left running)."""
    async with asyncio.TaskGroup() as tasks:
        started = [tasks.create_task(call) for call in calls]
    return [t.result() for t in started]


@dataclass
class LegalHoldReport:
    applied: int = 0
    released: int = 0
    missing: int = 0  # covered by a hold, but the object is not in the store (see reconcile)
    failed: int = 0
    held: int = 0  # objects under a legal hold set by Argus after the sync


class LegalHolds:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        bucket: str,
        *,
        concurrency: int = 8,
        batch: int = 1000,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._store = store
        self._bucket = bucket
        self._slots = asyncio.Semaphore(concurrency)
        self._batch = batch
        self._metrics = metrics
        self._lock = asyncio.Lock()

    async def sync(self) -> LegalHoldReport:
        """Put legal holds on what the evidence holds cover and take them off what they no longer cover."""
        async with self._lock:
            report = LegalHoldReport()
            await self._apply(report)
            await self._release(report)
            report.held = int(await self._pool.fetchval("SELECT count(*) FROM retention_legal_holds"))
        if self._metrics is not None:
            self._metrics.legal_holds.set(report.held)
            if report.failed:
                self._metrics.legal_hold_errors.inc(report.failed)
        if report.applied or report.released or report.failed or report.missing:
            log.info(
                "legal holds: %d applied, %d released, %d objects missing, %d failed; %d held",
                report.applied,
                report.released,
                report.missing,
                report.failed,
                report.held,
            )
        return report

    async def _set(self, key: str, on: bool) -> str:
        async with self._slots:
            try:
                await self._store.set_legal_hold(self._bucket, key, on)
            except ObjectNotFound:
                return "missing"
            except StorageError as exc:
                log.warning("legal hold %s on %s/%s failed: %s", "set" if on else "release", self._bucket, key, exc)
                return "failed"
        return "ok"

    async def _apply(self, report: LegalHoldReport) -> None:
        after = ""
        while True:
            rows = await self._pool.fetch(_TO_APPLY, after, self._batch)
            if not rows:
                return
            after = rows[-1]["key"]
            await self._pool.execute(
                "INSERT INTO retention_legal_holds (object_key, camera) SELECT * FROM unnest($1::text[], $2::text[]) "
                "ON CONFLICT DO NOTHING",
                [r["key"] for r in rows],
                [r["camera"] for r in rows],
            )
            outcomes = await _all(self._set(r["key"], True) for r in rows)
            undo = [r["key"] for r, outcome in zip(rows, outcomes, strict=True) if outcome != "ok"]
            if undo:  # not held after all: forget them, so the next sync tries again
                await self._pool.execute("DELETE FROM retention_legal_holds WHERE object_key = ANY($1::text[])", undo)
            report.applied += outcomes.count("ok")
            report.missing += outcomes.count("missing")
            report.failed += outcomes.count("failed")
            if len(rows) < self._batch:
                return

    async def _release(self, report: LegalHoldReport) -> None:
        after = ""
        while True:
            rows = await self._pool.fetch(_TO_RELEASE, after, self._batch)
            if not rows:
                return
            after = rows[-1]["key"]
            outcomes = await _all(self._set(r["key"], False) for r in rows)
            done = [r["key"] for r, outcome in zip(rows, outcomes, strict=True) if outcome != "failed"]
            await self._pool.execute("DELETE FROM retention_legal_holds WHERE object_key = ANY($1::text[])", done)
            report.released += outcomes.count("ok")
            report.failed += outcomes.count("failed")
            if len(rows) < self._batch:
                return


async def legal_holds_for(
    mode: LegalHoldMode,
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    *,
    metrics: RetentionMetrics | None = None,
) -> LegalHolds | None:
    """The legal-hold sync for `mode` (`off`: None; `auto`: only if the bucket has object lock; `on`: it must)."""
    if mode == "off":
        return None
    if await store.object_lock_enabled(bucket):
        log.info("bucket %s has object lock: held segments also get S3 legal holds", bucket)
        return LegalHolds(pool, store, bucket, concurrency=store.config.workers, metrics=metrics)
    if mode == "on":
        raise LegalHoldUnavailable(
            f"ARGUS_RETENTION_LEGAL_HOLDS=on but bucket {bucket} has no object lock (make it with "
            "ARGUS_S3_RECORDINGS_OBJECT_LOCK=true: object lock can only be set when a bucket is created)"
        )
    log.info("bucket %s has no object lock: evidence holds are kept by the index alone (no S3 legal holds)", bucket)
    return None
