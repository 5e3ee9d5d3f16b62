"""The retention service as a real process: it makes an object-locked recordings bucket when asked, sweeps on its
schedule, puts S3 legal holds on held footage, exposes metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from argus_core.bus import Bus
from argus_core.storage import ObjectStore
from argus_devstack.backends import S3Handle
from argus_devstack.ports import free_port
from argus_devstack.pytest_plugin import bucket_name_for
from argus_devstack.s3 import S3Target
from tests.retention.conftest import store_for
from tests.retention.support import T0, audit_events, object_keys, plan, record
from tests.retention.test_crash import sweep_env

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


async def wait_for(pool: asyncpg.Pool, sql: str, *, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await pool.fetchval(sql):
        assert time.monotonic() < deadline, f"not true within {within_s} s: {sql}"
        await asyncio.sleep(0.1)


async def test_the_service_sweeps_holds_and_stops_cleanly(
    pool: asyncpg.Pool,
    database_url: str,
    nats_url: str,
    s3_server: S3Handle,
    bus: Bus,
    request: pytest.FixtureRequest,
) -> None:
    bucket = bucket_name_for(request.node.nodeid)
    target = s3_server.target(bucket)
    port = free_port()
    env = sweep_env(
        database_url,
        target,
        nats_url,
        ARGUS_HTTP_HOST="127.0.0.1",
        ARGUS_HTTP_PORT=str(port),
        ARGUS_POD_NAME="retention-0",
        ARGUS_S3_RECORDINGS_OBJECT_LOCK="true",
        ARGUS_RETENTION_LEGAL_HOLDS="on",
        ARGUS_RETENTION_FIRST_SWEEP_AFTER_S="0.5",
        ARGUS_RETENTION_SWEEP_INTERVAL_S="1",
        ARGUS_RETENTION_LEGAL_HOLD_INTERVAL_S="0.5",
        ARGUS_RETENTION_NOTICE_INTERVAL_S="0.5",
        ARGUS_SHUTDOWN_BUDGET_S="10",
    )
    # Nothing of cam-1 expires until the hold is in place (sweeps run every second from the start).
    await pool.execute("INSERT INTO retention_policies (scope, subject, days) VALUES ('camera', 'cam-1', 90)")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "argus_retention", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    store: ObjectStore | None = None
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "the service did not become ready"
                await asyncio.sleep(0.1)
            store = store_for(target)
            assert await store.object_lock_enabled(bucket)  # made by the service, with object lock
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=40)
            segs = plan("cam-1", start, 30)
            await record(pool, store, bucket, segs)
            hold = await pool.fetchval(
                "INSERT INTO evidence_holds (start_time, end_time, reason, case_reference, owner, review_at, "
                "created_by, created_at) VALUES ($1, $2, 'r', 'CR-7', 'o', now() + interval '1 day', 'sup', now()) "
                "RETURNING id",
                segs[10].start,
                segs[12].end,
            )
            await pool.execute("INSERT INTO evidence_hold_cameras (hold_id, camera) VALUES ($1, 'cam-1')", hold)
            await pool.execute("DELETE FROM retention_policies WHERE scope = 'camera'")  # back to 31 days

            await wait_for(
                pool, "SELECT EXISTS (SELECT 1 FROM retention_sweeps WHERE segments > 0 AND audited_at IS NOT NULL)"
            )
            held = {g.key for g in segs[10:13]}
            assert await object_keys(store, bucket) == held | {segs[0].init}
            for key in held:
                assert await store.legal_hold_enabled(bucket, key)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
            assert "argus_retention_segments_deleted_total 27.0" in metrics
            assert "argus_retention_legal_holds 4.0" in metrics
            assert "argus_retention_holds_active 1.0" in metrics
        assert [e.action for e in await audit_events(bus)][-1] == "retention.sweep"
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        if store is not None:
            await store.close()


async def test_the_cli_dry_run_and_reconcile(
    pool: asyncpg.Pool,
    store: ObjectStore,
    bucket: str,
    s3_bucket: S3Target,
    database_url: str,
    nats_url: str,
) -> None:
    segs = plan("cam-1", T0, 6)
    await record(pool, store, bucket, segs)
    await store.put(bucket, "cam-1/2026/01/01/05/00/00.000Z-abcdef.m4s", b"an object without a row")
    env = sweep_env(database_url, s3_bucket, nats_url, ARGUS_RETENTION_RECONCILE_GRACE_S="0")

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "argus_retention", *args, env=env, cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, text, err = await cli("dry-run", "--now", "2026-02-10T00:00:00Z", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert [(c["camera"], c["segments"]) for c in report["cameras"]] == [("cam-1", 6)]
    code, text, err = await cli("reconcile", "--json")
    assert code == 1, err  # found something, repaired nothing
    assert json.loads(text)["objects_without_rows"]["count"] == 1
    code, text, err = await cli("reconcile", "--repair")
    assert code == 0, err
    assert "1 objects and 0 rows deleted" in text
    code, text, err = await cli("sweep", "--now", "not-a-time")
    assert code == 2
    assert "ISO 8601" in err
