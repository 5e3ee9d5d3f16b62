"""retention benchmark: sweep rate (segments deleted per second, index rows and objects) over 100,000 segments.

    python -m tests.bench.retention_bench --segments 100000 --cameras 100 --days 2

Starts its own Postgres (`--durable` turns fsync on, as in production) and moto's S3 server, as the tests do. For
each scenario it seeds `--segments` expired segments: one tiny object each (64 bytes: moto keeps objects in
memory and takes about 90 PUT/s of 2 MiB, and the sweep's cost per object does not depend on its size) under the
recorder's key layout, one init segment per camera, and their index rows (COPY into the day partitions). Then one
`Sweeper.sweep()` runs, exactly as the service runs it, and the rate is segments deleted over its wall time, from
the lock to the audit-ready totals: select, multi-object delete, row delete, init segments, commit.

Scenarios (`--scenario`):
- days: every day wholly expired: each day partition is detached, its objects deleted `--parallel` batches at a
  time (1,000 keys each), then the table dropped;
- rows: the same footage swept batch by batch (day drops off, as when a hold or a longer policy keeps part of the
  day): per batch one transaction selects 1,000 expired unheld segments, deletes their objects, then their rows.

`--versioned` puts the recordings bucket under object lock (versioned): every version is listed and deleted. Do
not measure it on moto: its ListObjectVersions deep-copies and sorts every version in the bucket on each call.
S3 is the one the tests would use (`ARGUS_TEST_S3_ENDPOINT`, a `minio` binary, else moto). Seeding uses unsigned
PUTs straight to moto (it does not check signatures) to save minutes, signed ones elsewhere; it is not measured.
Not a pytest test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.storage import ObjectStore, S3Config
from argus_devstack.backends import S3Handle, new_postgres_server, new_s3_server
from argus_recorder.keys import segment_key
from argus_retention.objects import RecordingObjects
from argus_retention.sweep import Sweeper
from argus_retention.times import ns_of

D0 = datetime(2026, 1, 1, tzinfo=UTC)
SIZE = 64


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def layout(cameras: int, segments: int, days: int) -> list[tuple[str, datetime, str, str]]:
    """(camera, start, key, init key) of every segment: spread evenly over `days` days per camera."""
    per_camera = segments // cameras
    step = timedelta(seconds=days * 86400 / per_camera)
    rows = []
    for c in range(cameras):
        camera = f"cam-{c:04d}"
        init = f"{camera}/init/{hashlib.sha256(camera.encode()).hexdigest()[:16]}.mp4"
        for i in range(per_camera):
            start = D0 + i * step + timedelta(milliseconds=c)
            rows.append((camera, start, segment_key(camera, "main", ns_of(start), "bench", i * 150), init))
    return rows


async def seed_objects(s3: S3Handle, store: ObjectStore, bucket: str, keys: list[str], *, parallel: int = 48) -> float:
    """Unsigned PUTs straight to moto (it does not check signatures); signed ones through the store elsewhere."""
    began = time.perf_counter()
    body = b"\x00" * SIZE
    slots = asyncio.Semaphore(parallel)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=parallel)) as http:

        async def put(key: str) -> None:
            async with slots:
                if s3.kind != "moto":
                    await store.put(bucket, key, body)
                    return
                async with http.put(f"http://{s3.endpoint}/{bucket}/{key}", data=body) as response:
                    if response.status != 200:
                        raise RuntimeError(f"seeding {key}: {response.status} {await response.text()}")

        for i in range(0, len(keys), 5000):
            await asyncio.gather(*(put(k) for k in keys[i : i + 5000]))
            if i and i % 20000 == 0:
                out(f"    {i} objects seeded ({i / (time.perf_counter() - began):.0f}/s)")
    return time.perf_counter() - began


async def seed_rows(pool: asyncpg.Pool, segs: list[tuple[str, datetime, str, str]]) -> float:
    began = time.perf_counter()
    for day in sorted({s[1].date() for s in segs}):
        await pool.execute("SELECT argus_segments_partition($1::date)", day)
    sha = hashlib.sha256(b"\x00" * SIZE).digest()
    records = [
        (cam, "main", start, start + timedelta(seconds=6), 6000, 150, 3, SIZE, sha, "h264", 1920, 1080, key, init,
         True, "bench", i * 150, i * 150 + 149)
        for i, (cam, start, key, init) in enumerate(segs)
    ]  # fmt: skip
    columns = [
        "camera", "stream", "start_time", "end_time", "duration_ms", "frames", "keyframes", "bytes", "sha256",
        "codec", "width", "height", "object_key", "init_key", "time_trusted", "session", "first_seq", "last_seq",
    ]  # fmt: skip
    async with pool.acquire() as conn:
        for i in range(0, len(records), 50_000):
            await conn.copy_records_to_table("segments", records=records[i : i + 50_000], columns=columns)
        await conn.execute("ANALYZE segments")
    return time.perf_counter() - began


async def scenario(args: argparse.Namespace, name: str, dsn: str, s3: S3Handle) -> dict[str, float]:
    out(f"\n== {name}: {args.segments} segments of {args.cameras} cameras over {args.days} days"
        f"{' (versioned bucket)' if args.versioned else ''}")  # fmt: skip
    pool = await create_pool(DatabaseConfig(url=dsn, pool_min=2, pool_max=8))
    bucket = f"bench-{name}-{int(time.time())}"
    store = ObjectStore(
        S3Config(
            endpoint=s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            recordings_bucket=bucket,
            region=s3.region,
            secure=s3.secure,
            workers=16,
        )
    )
    try:
        await migrate(pool)
        await store.ensure_bucket(bucket, object_lock=args.versioned)
        segs = layout(args.cameras, args.segments, args.days)
        keys = [s[2] for s in segs] + sorted({s[3] for s in segs})
        objects_s = await seed_objects(s3, store, bucket, keys)
        rows_s = await seed_rows(pool, segs)
        out(f"  seeded {len(keys)} objects in {objects_s:.0f} s ({len(keys) / objects_s:.0f}/s), "
            f"{len(segs)} rows in {rows_s:.1f} s")  # fmt: skip
        objects = await RecordingObjects.open(store, bucket)
        now = D0 + timedelta(days=args.days + 40)
        sweeper = Sweeper(
            pool,
            objects,
            clock=lambda: ns_of(now),
            batch=args.batch,
            parallel=args.parallel,
            drop_days=name == "days",
        )
        began = time.perf_counter()
        result = await sweeper.sweep()
        seconds = time.perf_counter() - began
        left_rows = await pool.fetchval("SELECT count(*) FROM segments")
        left_objects = len(await store.list_page(bucket, "", limit=10))
        rate = result.segments / seconds
        out(f"  sweep {result.state}: {result.segments} segments ({result.bytes} bytes), {result.inits} init segments, "
            f"{result.partitions} days dropped, in {seconds:.2f} s: {rate:,.0f} segments/s")  # fmt: skip
        out(f"  left: {left_rows} rows, {left_objects} objects")
        return {"seconds": seconds, "rate": rate}
    finally:
        await store.close()
        await pool.close()


async def main(args: argparse.Namespace) -> None:
    pg = new_postgres_server(fast=not args.durable)
    s3 = new_s3_server()  # ARGUS_TEST_S3_ENDPOINT, a minio binary, or moto (as the tests choose)
    pg.start()
    s3.start()
    out(f"S3: {s3.kind} at {s3.endpoint}")
    try:
        results = {}
        for name in ("days", "rows") if args.scenario == "both" else (args.scenario,):
            dsn = pg.create_database(f"bench_{name}")
            results[name] = await scenario(args, name, dsn, s3)
        out(
            "\nsummary: "
            + ", ".join(f"{k} {v['rate']:,.0f} segments/s ({v['seconds']:.1f} s)" for k, v in results.items())
        )
    finally:
        s3.close()
        pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--scenario", choices=("both", "days", "rows"), default="both")
    parser.add_argument("--versioned", action="store_true", help="an object-locked (versioned) bucket")
    parser.add_argument("--durable", action="store_true", help="Postgres with fsync on")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
