"""The sweep against real Postgres and S3: expired footage goes from both, held footage stays, every sweep audited."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_retention.errors import SweepBusy
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import Sweeper, retention_lock
from argus_retention.times import ns_of
from tests.retention.support import (
    SEGMENT,
    T0,
    Clock,
    audit_events,
    object_keys,
    orphans,
    plan,
    record,
    row_keys,
)

DAY = timedelta(days=1)


def sweeper(pool: asyncpg.Pool, objects: RecordingObjects, clock: Clock, **kwargs: object) -> Sweeper:
    return Sweeper(pool, objects, clock=clock, pod="test", **kwargs)  # type: ignore[arg-type]


async def test_expired_footage_is_gone_from_s3_and_the_index(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    # cam-1: 40 segments straddling the 31-day cutoff; cam-2: one old hour, wholly expired (its init goes too).
    cam1 = plan("cam-1", T0, 40)
    cam2 = plan("cam-2", T0 - timedelta(hours=2), 10, variant=2)
    await record(pool, store, bucket, cam1 + cam2)
    await pool.execute(
        "INSERT INTO recording_gaps (camera, stream, start_time, end_time, cause) VALUES "
        "('cam-1', 'main', $1, $2, 'camera_offline'), ('cam-1', 'main', $3, $4, 'camera_offline')",
        T0 - timedelta(hours=1),
        T0,
        T0 + 40 * SEGMENT,
        T0 + 41 * SEGMENT,
    )
    cutoff = cam1[20].end  # segments 0..20 end at or before it
    clock.set(cutoff + timedelta(days=31))

    result = await sweeper(pool, objects, clock, batch=7).sweep()

    assert result.state == "done"
    kept = {g.key for g in cam1[21:]}
    assert await row_keys(pool) == kept
    assert await object_keys(store, bucket) == kept | {cam1[0].init}  # cam-2's init went with its last segment
    assert result.segments == 21 + 10
    assert result.bytes == sum(r["bytes"] for r in await pool.fetch("SELECT bytes FROM segments LIMIT 1")) * (21 + 10)
    assert result.inits == 1
    assert result.gaps == 1
    assert result.first_start == cam2[0].start
    assert result.last_end == cutoff
    assert (await orphans(pool, store, bucket)).none
    # cam-2's day was wholly expired: dropped whole. A second sweep finds nothing to do.
    assert result.partitions == 1
    again = await sweeper(pool, objects, clock).sweep()
    assert (again.segments, again.inits, again.partitions) == (0, 0, 0)


async def test_policies_by_camera_group_site_and_default(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    await pool.execute("INSERT INTO sites (id, name) VALUES ('north', 'North depot')")
    await pool.execute(
        "INSERT INTO cameras (id, name, site_id, main_url) VALUES "
        "('cam-site', 'a', 'north', 'rtsp://a'), ('cam-group', 'b', 'north', 'rtsp://b')"
    )
    await pool.execute("INSERT INTO retention_groups (id, name) VALUES ('parks', 'Parks')")
    await pool.execute("INSERT INTO retention_group_members (camera, group_id) VALUES ('cam-group', 'parks')")
    await pool.execute(
        "INSERT INTO retention_policies (scope, subject, days) VALUES "
        "('camera', 'cam-own', 10), ('group', 'parks', 14), ('site', 'north', 20)"
    )
    policies = {
        cam: tuple((await pool.fetch("SELECT days, scope, subject FROM argus_retention_policy($1)", cam))[0])
        for cam in ("cam-own", "cam-group", "cam-site", "cam-other")
    }
    assert policies == {
        "cam-own": (10, "camera", "cam-own"),
        "cam-group": (14, "group", "parks"),  # the group wins over the camera's site
        "cam-site": (20, "site", "north"),
        "cam-other": (31, "default", "*"),
    }
    # One segment per day for 40 days, for every camera.
    segs = [
        g for cam in policies for day in range(40) for g in plan(cam, T0 + day * DAY, 1, every=timedelta(minutes=1))
    ]
    await record(pool, store, bucket, segs)
    clock.set(T0 + 40 * DAY)
    await sweeper(pool, objects, clock).sweep()
    left = {r["camera"]: r["n"] for r in await pool.fetch("SELECT camera, count(*) AS n FROM segments GROUP BY camera")}
    assert left == {"cam-own": 10, "cam-group": 14, "cam-site": 20, "cam-other": 31}
    assert (await orphans(pool, store, bucket)).none


async def test_policy_bounds_are_enforced_by_the_database(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.exceptions.CheckViolationError, match="outside the allowed 7 to 90 days"):
        await pool.execute("INSERT INTO retention_policies (scope, subject, days) VALUES ('camera', 'c', 3)")
    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await pool.execute("UPDATE retention_policies SET days = 91 WHERE scope = 'default'")
    await pool.execute("INSERT INTO retention_policies (scope, subject, days) VALUES ('camera', 'c', 60)")
    with pytest.raises(asyncpg.exceptions.CheckViolationError, match="camera c"):
        await pool.execute("UPDATE retention_settings SET max_days = 45")
    with pytest.raises(asyncpg.exceptions.RestrictViolationError):
        await pool.execute("DELETE FROM retention_policies WHERE scope = 'default'")


async def test_held_footage_survives_and_straddling_segments_are_kept_whole(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    segs = plan("cam-1", T0, 30) + plan("cam-2", T0, 30)
    await record(pool, store, bucket, segs)
    # A hold on cam-1 from the middle of segment 10 to the middle of segment 14.
    hold = await pool.fetchval(
        "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
        "created_at) VALUES ($1, $2, 'assault outside', 'CR-1', 'PC 12', $3, 'sup', $4) RETURNING id",
        segs[10].start + timedelta(seconds=3),
        segs[14].start + timedelta(seconds=3),
        T0 + 90 * DAY,
        T0,
    )
    await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, 'cam-1')", hold)
    clock.set(T0 + 60 * DAY)
    result = await sweeper(pool, objects, clock, batch=4).sweep()
    held = {g.key for g in segs[10:15]}
    assert await row_keys(pool) == held  # 10 and 14 straddle the edges: kept whole; cam-2 is not held
    assert await object_keys(store, bucket) == held | {segs[0].init}
    assert result.segments == 55
    assert result.partitions == 0  # a held day is never dropped whole

    # Released, the footage goes at the next sweep.
    await pool.execute("UPDATE evidence_holds SET released_at = $2, released_by = 'sup' WHERE id = $1", hold, T0)
    result = await sweeper(pool, objects, clock).sweep()
    assert result.segments == 5
    assert await object_keys(store, bucket) == set()
    assert await row_keys(pool) == set()


async def test_wholly_expired_days_are_detached_and_dropped(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    segs = [g for day in range(4) for g in plan("cam-1", T0 + day * DAY + timedelta(hours=12), 20)]
    await record(pool, store, bucket, segs)
    clock.set(T0 + 3 * DAY + timedelta(days=31, hours=12, seconds=6 * 10))  # days 0-2 expired, half of day 3
    result = await sweeper(pool, objects, clock, batch=6, parallel=3).sweep()
    assert result.partitions == 3
    assert result.segments == 70
    tables = {
        r["relname"]
        for r in await pool.fetch(
            "SELECT relname FROM pg_class WHERE relkind IN ('r', 'p') AND relname ~ '^(segments|retention_sweep)_2'"
        )
    }
    assert tables == {"segments_20260104"}
    assert await pool.fetchval("SELECT count(*) FROM retention_day_sweeps WHERE state = 'done'") == 3
    assert await row_keys(pool) == {g.key for g in segs[70:]}
    assert (await orphans(pool, store, bucket)).none
    # The recorder can still make and fill a partition for a day that was dropped (a late spooled row).
    late = plan("cam-1", T0 + timedelta(hours=1), 1)
    await record(pool, store, bucket, late)
    assert await pool.fetchval("SELECT count(*) FROM segments_20260101") == 1


async def test_days_with_a_longer_policy_or_a_hold_are_swept_row_by_row(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    await pool.execute("INSERT INTO retention_policies (scope, subject, days) VALUES ('camera', 'cam-long', 60)")
    segs = plan("cam-1", T0, 10) + plan("cam-long", T0, 10) + plan("cam-1", T0 + DAY, 10)
    await record(pool, store, bucket, segs)
    hold = await pool.fetchval(
        "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
        "created_at) VALUES ($1, $2, 'r', 'CR-2', 'o', $3, 'sup', $3) RETURNING id",
        T0 + DAY + timedelta(hours=5),
        T0 + DAY + timedelta(hours=6),
        T0,
    )
    await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, 'cam-1')", hold)
    clock.set(T0 + 40 * DAY)
    result = await sweeper(pool, objects, clock).sweep()
    # Day 0 holds cam-long's footage (60 days) and day 1 has a hold (on an hour without footage): neither is dropped
    # whole, their expired rows go batch by batch. Day 1 is then empty, and only then dropped.
    assert result.segments == 20
    assert await row_keys(pool) == {g.key for g in segs[10:20]}
    assert result.partitions == 1
    assert await pool.fetchval("SELECT day FROM retention_day_sweeps") == (T0 + DAY).date()
    assert await pool.fetchval("SELECT to_regclass('segments_20260101') IS NOT NULL")


async def test_every_sweep_is_audited_per_camera_and_in_total(
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    objects: RecordingObjects,
    clock: Clock,
    bus: Bus,
    emitter: AuditEmitter,
) -> None:
    segs = plan("cam-1", T0, 5) + plan("cam-2", T0 + DAY, 3)
    await record(pool, store, bucket, segs)
    clock.set(T0 + 40 * DAY)
    result = await sweeper(pool, objects, clock, emitter=emitter).sweep()
    events = await audit_events(bus)
    assert [(e.action, e.camera) for e in events] == [
        ("retention.delete", "cam-1"),
        ("retention.delete", "cam-2"),
        ("retention.sweep", ""),
    ]
    size = result.bytes // 8
    cam1, cam2, total = events
    assert cam1.details["segments"] == "5"
    assert cam1.details["bytes"] == str(5 * size)
    assert (cam1.footage_start_ns, cam1.footage_end_ns) == (ns_of(segs[0].start), ns_of(segs[4].end))
    assert (cam2.footage_start_ns, cam2.footage_end_ns) == (ns_of(segs[5].start), ns_of(segs[7].end))
    assert total.actor.subject == "service:retention"
    assert total.outcome == "success"
    assert total.details["segments"] == "8"
    assert total.details["bytes"] == str(8 * size)
    assert total.details["partitions"] == "2"
    assert total.details["inits"] == "2"
    assert total.details["clock"] == "2026-02-10T00:00:00Z"
    assert (total.footage_start_ns, total.footage_end_ns) == (ns_of(segs[0].start), ns_of(segs[7].end))
    assert await pool.fetchval("SELECT count(*) FROM retention_sweeps WHERE audited_at IS NULL") == 0


async def test_one_sweep_at_a_time(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    async with retention_lock(pool):
        with pytest.raises(SweepBusy):
            await sweeper(pool, objects, clock).sweep()
    await sweeper(pool, objects, clock).sweep()


async def test_dry_run_matches_what_the_sweep_deletes(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects, clock: Clock
) -> None:
    segs = plan("cam-1", T0, 12) + plan("cam-2", T0 + timedelta(hours=1), 6)
    await record(pool, store, bucket, segs)
    hold = await pool.fetchval(
        "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
        "created_at) VALUES ($1, $2, 'r', 'CR-3', 'o', $3, 'sup', $3) RETURNING id",
        segs[2].start,
        segs[4].end,
        T0,
    )
    await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, 'cam-1')", hold)
    clock.set(segs[8].end + 31 * DAY)
    dry = {
        r["camera"]: r for r in await pool.fetch("SELECT * FROM argus_retention_dry_run($1)", segs[8].end + 31 * DAY)
    }
    size = len((await store.get(bucket, segs[0].key))[0])
    assert (dry["cam-1"]["segments"], dry["cam-1"]["bytes"]) == (6, 6 * size)  # 0-8 expired, 2-4 held
    assert (dry["cam-1"]["held_segments"], dry["cam-1"]["held_bytes"]) == (3, 3 * size)
    assert dry["cam-2"]["segments"] == 0
    result = await sweeper(pool, objects, clock).sweep()
    assert (result.cameras["cam-1"].segments, result.cameras["cam-1"].bytes) == (6, 6 * size)
    assert "cam-2" not in result.cameras
