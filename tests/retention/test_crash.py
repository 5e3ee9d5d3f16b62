"""A sweep stopped anywhere (an injected crash between phases, or SIGKILL of a real process) and run again leaves
no object without a row and no row without an object, and the stopped sweep is still audited."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_devstack.s3 import S3Target
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import Sweeper
from tests.retention.support import (
    T0,
    Clock,
    SimulatedCrash,
    audit_events,
    crash_at,
    journal_keys,
    object_keys,
    orphans,
    plan,
    record,
    row_keys,
)

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]


async def seed(pool: asyncpg.Pool, store: ObjectStore, bucket: str) -> tuple[set[str], set[str]]:
    """Day 0 wholly expired (dropped whole); day 1 half expired (row batches); cam-3 only on day 0 (its init goes).
    Returns the keys that must stay and the keys that must go."""
    day0 = plan("cam-1", T0 + timedelta(hours=1), 25) + plan("cam-3", T0 + timedelta(hours=2), 15, variant=3)
    day1 = plan("cam-1", T0 + DAY, 40) + plan("cam-2", T0 + DAY, 40, variant=2)
    await record(pool, store, bucket, day0 + day1)
    kept = {g.key for g in day1 if g.start >= T0 + DAY + timedelta(minutes=2)}
    kept |= {day1[0].init, day1[40].init}
    gone = ({g.key for g in day0 + day1} | {day0[25].init}) - kept
    return kept, gone


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("day.detached", 1),
        ("day.objects_deleted", 2),
        ("day.before_drop", 1),
        ("rows.objects_deleted", 2),
        ("rows.committed", 1),
        ("inits.objects_deleted", 1),
        ("finish", 1),
    ],
)
async def test_a_crash_anywhere_then_a_rerun_leaves_no_orphans(
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    objects: RecordingObjects,
    clock: Clock,
    bus: Bus,
    emitter: AuditEmitter,
    point: str,
    nth: int,
) -> None:
    kept, gone = await seed(pool, store, bucket)
    clock.set(T0 + DAY + timedelta(days=31, minutes=2))
    crashing = Sweeper(pool, objects, clock=clock, emitter=emitter, batch=8, parallel=2, fault=crash_at(point, nth))
    with pytest.raises(SimulatedCrash):
        await crashing.sweep()

    # Right after the crash: no object lacks a row (visible, or in a detached day still being deleted); a row
    # lacks its object only for the batch that was in flight.
    found = await orphans(pool, store, bucket)
    journal = await journal_keys(pool)
    assert found.objects_without_rows - journal == set()
    assert len(found.rows_without_objects) <= 8
    assert found.missing_inits == set()

    result = await Sweeper(pool, objects, clock=clock, emitter=emitter, batch=8, parallel=2).sweep()
    assert result.state == "done"
    assert await object_keys(store, bucket) == kept
    assert await row_keys(pool) | {g for g in kept if "/init/" in g} == kept
    assert (await orphans(pool, store, bucket)).none
    assert await journal_keys(pool) == set()
    assert await pool.fetchval("SELECT count(*) FROM retention_init_candidates") == 0

    # Both sweeps are audited; together they account for every segment deleted, each counted once.
    states = await pool.fetch("SELECT id, state, segments FROM retention_sweeps ORDER BY id")
    assert [r["state"] for r in states] == (["interrupted", "done"] if point != "finish" else ["interrupted", "done"])
    assert sum(r["segments"] for r in states) == len([k for k in gone if "/init/" not in k])
    summaries = [e for e in await audit_events(bus) if e.action == "retention.sweep"]
    assert [(e.outcome, e.details["state"]) for e in summaries] == [("failure", "interrupted"), ("success", "done")]


def sweep_env(database_url: str, s3: S3Target, nats_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_LOG_FORMAT": "json",
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_DB_URL": database_url,
            "ARGUS_S3_ENDPOINT": s3.endpoint,
            "ARGUS_S3_ACCESS_KEY": s3.access_key,
            "ARGUS_S3_SECRET_KEY": s3.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": s3.bucket,
            "ARGUS_S3_EVIDENCE_BUCKET": s3.bucket + "-ev",
            "ARGUS_S3_AUDIT_BUCKET": s3.bucket + "-au",
            **extra,
        }
    )
    return env


@pytest.mark.slow
async def test_sigkill_midway_then_a_rerun_finishes_the_job(
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    s3_bucket: S3Target,
    database_url: str,
    nats_url: str,
    bus: Bus,
) -> None:
    # 3,000 expired segments over two days (one dropped whole, one swept row by row: another camera keeps it).
    await pool.execute("INSERT INTO retention_policies (scope, subject, days) VALUES ('camera', 'cam-keep', 60)")
    segs = plan("cam-1", T0, 1500) + plan("cam-1", T0 + DAY, 1500) + plan("cam-keep", T0 + DAY, 20, variant=1)
    await record(pool, store, bucket, segs)
    kept = {g.key for g in segs[3000:]} | {segs[3000].init}
    env = sweep_env(database_url, s3_bucket, nats_url, ARGUS_RETENTION_BATCH="25", ARGUS_RETENTION_PARALLEL="1")
    argv = [sys.executable, "-m", "argus_retention", "sweep", "--now", "2026-02-10T00:00:00Z"]

    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it has committed some deletes, then kill it mid-way
            done = await pool.fetchval("SELECT coalesce(sum(segments), 0) FROM retention_sweeps")
            if done >= 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert 200 <= done < 3000, f"the sweep was not caught mid-way ({done} done)"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        _, err = await proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]

    found = await orphans(pool, store, bucket)
    assert found.objects_without_rows - await journal_keys(pool) == set()
    assert len(found.rows_without_objects) <= 25

    rerun = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await rerun.communicate()
    assert rerun.returncode == 0, err.decode()[-3000:]
    assert await object_keys(store, bucket) == kept
    assert (await orphans(pool, store, bucket)).none
    assert await journal_keys(pool) == set()
    states = [r["state"] for r in await pool.fetch("SELECT state FROM retention_sweeps ORDER BY id")]
    assert states == ["interrupted", "done"]
    assert await pool.fetchval("SELECT sum(segments) FROM retention_sweeps") == 3000
    summaries = [e for e in await audit_events(bus) if e.action == "retention.sweep"]
    assert [e.details["state"] for e in summaries] == ["interrupted", "done"]
