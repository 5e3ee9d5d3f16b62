"""S3 legal holds on held footage in an object-locked recordings bucket: the store refuses a mistaken delete."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import asyncpg
import pytest

from argus_core.storage import ObjectStore
from argus_retention.errors import LegalHoldUnavailable
from argus_retention.legalholds import legal_holds_for
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import Sweeper
from tests.retention.support import T0, Clock, media, object_keys, orphans, plan, record, row_keys

DAY = timedelta(days=1)


async def hold(pool: asyncpg.Pool, camera: str, start: object, end: object) -> UUID:
    hold_id: UUID = await pool.fetchval(
        "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
        "created_at) VALUES ($1, $2, 'theft', 'CR-9', 'DC 4', $3, 'sup', $3) RETURNING id",
        start,
        end,
        T0 + 90 * DAY,
    )
    await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, $2)", hold_id, camera)
    return hold_id


async def test_the_store_refuses_to_delete_held_segments(pool: asyncpg.Pool, locked: ObjectStore, clock: Clock) -> None:
    bucket = locked.config.recordings_bucket
    segs = plan("cam-1", T0, 20) + plan("cam-2", T0, 5, variant=2)
    await record(pool, locked, bucket, segs)
    hold_id = await hold(pool, "cam-1", segs[5].start, segs[9].end)
    legal = await legal_holds_for("auto", pool, locked, bucket)
    assert legal is not None
    report = await legal.sync()
    held = {g.key for g in segs[5:10]} | {segs[0].init}
    assert (report.applied, report.held, report.failed) == (6, 6, 0)
    for key in sorted(await object_keys(locked, bucket)):
        assert await locked.legal_hold_enabled(bucket, key) == (key in held), key

    objects = await RecordingObjects.open(locked, bucket)
    assert objects.versioned
    # A mistaken delete of everything: the store refuses the held objects and deletes the rest for good.
    refused = await objects.delete(sorted(g.key for g in segs))
    assert refused == {g.key for g in segs[5:10]}
    assert {v.key for v in await locked.list_versions(bucket, "")} == held | {segs[20].init}

    # Released in the index but not yet in the store (the sync has not run): a sweep's deletes are refused, rows kept.
    await pool.execute("UPDATE evidence_holds SET released_at = $2, released_by = 'sup' WHERE id = $1", hold_id, T0)
    await pool.execute("DELETE FROM segments WHERE NOT (object_key = ANY($1::text[]))", sorted(held))
    clock.set(T0 + 40 * DAY)
    result = await Sweeper(pool, objects, clock=clock).sweep()
    assert (result.segments, result.refused) == (0, 5)
    assert await row_keys(pool) == {g.key for g in segs[5:10]}
    # With the sync (as every sweep of the service runs it first) the legal holds go, and so does the footage.
    result = await Sweeper(pool, objects, clock=clock, legal_holds=legal).sweep()
    assert (result.segments, result.refused) == (5, 0)
    # (cam-2's init segment stays: the test removed its rows behind the sweep's back; reconcile finds such things.)
    assert {v.key for v in await locked.list_versions(bucket, "")} == {segs[20].init}
    assert await pool.fetchval("SELECT count(*) FROM retention_legal_holds") == 0


async def test_footage_recorded_into_a_hold_later_is_held_too(
    pool: asyncpg.Pool, locked: ObjectStore, clock: Clock
) -> None:
    bucket = locked.config.recordings_bucket
    await hold(pool, "cam-1", T0, T0 + DAY)
    legal = await legal_holds_for("on", pool, locked, bucket)
    assert legal is not None
    first = plan("cam-1", T0, 3)
    await record(pool, locked, bucket, first)
    assert (await legal.sync()).applied == 4
    later = plan("cam-1", T0 + timedelta(hours=1), 2)
    await record(pool, locked, bucket, later)
    assert (await legal.sync()).applied == 2
    assert await legal.sync() == type(await legal.sync())(held=6)  # nothing left to do


async def test_a_versioned_bucket_is_swept_version_by_version(
    pool: asyncpg.Pool, locked: ObjectStore, clock: Clock
) -> None:
    bucket = locked.config.recordings_bucket
    segs = plan("cam-1", T0, 10)
    await record(pool, locked, bucket, segs)
    for g in segs[:3]:  # a recorder retry stores a segment twice: two versions
        await locked.put(bucket, g.key, media().media)
    clock.set(T0 + 40 * DAY)
    objects = await RecordingObjects.open(locked, bucket)
    result = await Sweeper(pool, objects, clock=clock).sweep()
    assert result.segments == 10
    assert await locked.list_versions(bucket, "") == []  # no version and no delete marker left
    assert (await orphans(pool, locked, bucket)).none


async def test_legal_holds_on_needs_an_object_locked_bucket(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str
) -> None:
    assert await legal_holds_for("auto", pool, store, bucket) is None
    assert await legal_holds_for("off", pool, store, bucket) is None
    with pytest.raises(LegalHoldUnavailable, match="ARGUS_S3_RECORDINGS_OBJECT_LOCK"):
        await legal_holds_for("on", pool, store, bucket)
