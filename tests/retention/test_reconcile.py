"""Reconcile: objects without rows and rows without objects are found, reported, and repaired when asked."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_retention.objects import RecordingObjects
from argus_retention.reconcile import Reconciler, parse_key
from tests.retention.support import T0, audit_events, index, media, object_keys, orphans, plan, record, upload

DAY = timedelta(days=1)


def test_keys_are_parsed_by_the_recorder_layout() -> None:
    g = plan("cam-1", T0 + timedelta(hours=5), 1, stream="sub")[0]
    parsed = parse_key(g.key)
    assert (parsed.camera, parsed.stream, parsed.kind, parsed.start) == ("cam-1", "sub", "segment", g.start)
    assert parse_key(g.init) == type(parsed)("cam-1", "sub", "init")
    assert parse_key("cam-1/notes.txt").kind == "unknown"
    assert parse_key("cam-1/2026/13/01/00/00/00.000Z-abc.m4s").kind == "unknown"


async def test_orphans_both_ways_are_reported_then_repaired(
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    objects: RecordingObjects,
    bus: Bus,
    emitter: AuditEmitter,
) -> None:
    good = plan("cam-1", T0, 10) + plan("cam-1", T0 + DAY, 5, stream="sub")
    await record(pool, store, bucket, good)
    stray_objects = plan("cam-1", T0 + timedelta(hours=3), 4)  # objects whose rows were lost
    await upload(store, bucket, stray_objects)
    lost = plan("cam-2", T0 + 2 * DAY, 3, variant=2)  # rows whose objects were lost (a whole day of them)
    await index(pool, lost)
    lost_one = plan("cam-1", T0 + timedelta(hours=6), 1)  # one row in a day that has objects
    await index(pool, lost_one)
    stale_init = plan("cam-3", T0, 1, variant=3)[0].init  # an init segment nothing refers to
    await store.put(bucket, stale_init, media().init)
    await store.put(bucket, "cam-1/notes.txt", b"not footage")
    await store.put(bucket, "stray.bin", b"not footage either")
    held = plan("cam-4", T0, 2, variant=4)  # orphan objects an evidence hold covers
    await upload(store, bucket, held)
    hold = await pool.fetchval(
        "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, created_by, "
        "created_at) VALUES ($1, $2, 'r', 'CR-5', 'o', $2, 'sup', $2) RETURNING id",
        T0,
        T0 + DAY,
    )
    await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, 'cam-4')", hold)

    reconciler = Reconciler(pool, objects, emitter=emitter, grace_s=0, page=7)
    report = await reconciler.run()
    assert report.objects_without_rows.count == 4
    assert set(report.objects_without_rows.sample) == {g.key for g in stray_objects}
    assert set(report.rows_without_objects.sample) == {g.key for g in lost + lost_one}
    assert set(report.unreferenced_inits.sample) == {stale_init}
    assert set(report.missing_inits.sample) == {lost[0].init}
    assert set(report.unknown_objects.sample) == {"cam-1/notes.txt", "stray.bin"}
    # Held orphans stay for a person to judge, with the init segment they need to play.
    assert set(report.held.sample) == {g.key for g in held} | {held[0].init}
    assert report.repaired_objects == report.repaired_rows == 0
    assert not report.clean

    repaired = await reconciler.run(repair=True)
    assert (repaired.repaired_objects, repaired.repaired_rows) == (4 + 1, 4)  # the strays and cam-3's init
    gaps = await pool.fetch("SELECT camera, start_time, cause FROM recording_gaps ORDER BY camera, start_time")
    assert [(r["camera"], r["start_time"], r["cause"]) for r in gaps] == [
        ("cam-1", lost_one[0].start, "unknown"),
        *[("cam-2", g.start, "unknown") for g in lost],
    ]
    left = await object_keys(store, bucket)
    kept = {g.key for g in good} | {good[0].init, good[10].init} | {g.key for g in held} | {held[0].init}
    assert left == kept | {"cam-1/notes.txt", "stray.bin"}
    after = await Reconciler(pool, objects, grace_s=0).run()
    assert after.objects_without_rows.count == after.rows_without_objects.count == 0
    assert after.unreferenced_inits.count == after.missing_inits.count == 0
    found = await orphans(pool, store, bucket)
    assert found.rows_without_objects == found.missing_inits == set()
    events = [e for e in await audit_events(bus) if e.action == "retention.reconcile"]
    assert len(events) == 1
    assert events[0].details["objects_deleted"] == "5"
    assert events[0].details["rows_deleted"] == "4"


async def test_young_objects_are_left_to_the_recorder(
    pool: asyncpg.Pool, store: ObjectStore, bucket: str, objects: RecordingObjects
) -> None:
    await upload(store, bucket, plan("cam-1", T0, 3))  # just uploaded, not indexed yet
    report = await Reconciler(pool, objects, grace_s=3600).run(repair=True)
    assert report.objects_without_rows.count == report.unreferenced_inits.count == 0
    assert report.young == 4
    assert len(await object_keys(store, bucket)) == 4
