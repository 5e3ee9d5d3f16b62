"""playback benchmark: timeline, playlist and seek over an index of 31 days x 100 cameras of 6 s segments.

    python -m tests.bench.playback_bench --cameras 100 --days 31 --queries 500 [--data-dir DIR]

Fills `segments` (migration 0002: a partition per UTC day, a covering primary key) with the rows the recorder
bench's `index` subcommand writes (same columns, keys and values, the cameras interleaved in each day's heap as
recorders write them), generated in the server with `generate_series` rather than sent by COPY, and with one
two-minute outage per camera and day (20 segments left out, a `camera_offline` gap row), so a day is two spans.
Every finished day is frozen as the recorders do (`Index.settle_day`); the last day is left as written, like
today's partition. `--data-dir` keeps the cluster (about 24 GB) for the next run.

Then, for random cameras and days, through the api's playback routes over HTTP on loopback (token checked, audit
event persisted to a real NATS JetStream, as in production) and, underneath, the index reads alone:

* a timeline of one camera-day (spans merged in SQL, the gaps, the JSON answer);
* a one-hour HLS playlist (600 segments listed, each URL signed: `proxy`, or presigned for S3);
* a seek: the segment holding a random instant, and the playlist URL that starts there;
* a timeline of one camera's whole month (first ask and again), and of the day still being written, for reference.

Each figure is asked of its own random camera and day, so no query runs on pages another one just read; the cluster
(22 GB) nearly fills the page cache of a 23 GB machine, so a first ask often reads from disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry

from argus_api import cameras, playback
from argus_api.playback import PlaybackConfig
from argus_api.playback.index import PlaybackIndex
from argus_api.playback.timeline import build_timeline
from argus_core.audit.emitter import AuditEmitter
from argus_core.bus import Bus, topology
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.http import VERIFIER_KEY, auth_middleware, problem_middleware
from argus_core.identity import Grant, TokenConfig, TokenIssuer, TokenVerifier, generate_keypair
from argus_core.storage import ObjectStore, S3Config
from argus_devstack.errors import DevstackError
from argus_devstack.ports import free_port

FIRST_DAY = date(2026, 1, 1)
PER_DAY = 86_400 // 6
OUTAGE = 20  # segments


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def outage_start(camera: int, day: int) -> int:
    """Index of the first segment left out of camera `camera`'s day `day`."""
    return 100 + (camera * 37 + day * 101) % (PER_DAY - 200)


FILL_DAY = """
INSERT INTO segments (camera, stream, start_time, end_time, duration_ms, frames, keyframes, bytes, sha256, codec,
                      width, height, object_key, init_key, time_trusted, session, first_seq, last_seq)
SELECT name, 'main', t, t + interval '6 s', 6000, 150, 3, 1500000, decode(repeat('ab', 32), 'hex'), 'h264', 1280,
       720, name || '/' || to_char(t AT TIME ZONE 'UTC', 'YYYY/MM/DD/HH24/MI/SS') || '.' || lpad(c::text, 3, '0')
       || 'Z-abcdef.m4s', name || '/init/0123456789abcdef.mp4', true, 'session-0001', i * 150, i * 150 + 149
FROM generate_series(0, $2 - 1) AS i
CROSS JOIN generate_series(0, $3 - 1) AS c
CROSS JOIN LATERAL (SELECT 'cam-' || lpad(c::text, 3, '0') AS name,
                           $1::timestamptz + i * interval '6 s' + c * interval '1 ms' AS t) AS x
WHERE NOT (i >= 100 + (c * 37 + $4 * 101) % ($2 - 200) AND i < 100 + (c * 37 + $4 * 101) % ($2 - 200) + $5)
"""

FILL_GAPS = """
INSERT INTO recording_gaps (camera, stream, start_time, end_time, cause, detail, recorder)
SELECT 'cam-' || lpad(c::text, 3, '0'), 'main',
       $1::timestamptz + (100 + (c * 37 + $4 * 101) % ($2 - 200)) * interval '6 s' + c * interval '1 ms',
       $1::timestamptz + (100 + (c * 37 + $4 * 101) % ($2 - 200) + $5) * interval '6 s' + c * interval '1 ms',
       'camera_offline', 'bench outage', 'bench'
FROM generate_series(0, $3 - 1) AS c
"""


def day_start(d: int) -> datetime:
    return datetime.combine(FIRST_DAY + timedelta(days=d), datetime.min.time(), tzinfo=UTC)


async def fill(pool: asyncpg.Pool, cameras_n: int, days: int) -> None:
    from argus_recorder.index import Index

    index = Index(pool, timeout_s=3600, lookback_s=86400)
    await index.ensure_days(*(FIRST_DAY + timedelta(days=d) for d in range(days + 1)))
    want = PER_DAY - OUTAGE
    async with pool.acquire() as conn:
        started = time.monotonic()
        total = 0
        for d in range(days):
            part = f"segments_{FIRST_DAY + timedelta(days=d):%Y%m%d}"
            have = await conn.fetchval(f'SELECT count(*) FROM "{part}"')
            if have == want * cameras_n:
                total += have
                continue
            if have:
                await conn.execute(f'TRUNCATE "{part}"')
                await conn.execute("DELETE FROM recording_gaps WHERE start_time >= $1 AND start_time < $2",
                                   day_start(d), day_start(d + 1))  # fmt: skip
            await conn.execute(FILL_DAY, day_start(d), PER_DAY, cameras_n, d, OUTAGE, timeout=3600)
            await conn.execute(FILL_GAPS, day_start(d), PER_DAY, cameras_n, d, OUTAGE)
            total += want * cameras_n
            elapsed = time.monotonic() - started
            out(f"  day {d + 1}/{days}: {total:,} rows ({elapsed:.0f} s)")
    for d in range(days - 1):  # the last day stays as written: today's partition is not frozen yet
        await index.settle_day(FIRST_DAY + timedelta(days=d))
    async with pool.acquire() as conn:
        size = await conn.fetchval(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'segments'::regclass"
        )
        rows = await conn.fetchval("SELECT count(*) FROM segments")
    out(f"{rows:,} segment rows in {days} day partitions, {size} with indexes")


class Figures:
    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    async def time(self, name: str, work: Awaitable[object]) -> None:
        """Time `work` (a coroutine: it starts running when awaited here)."""
        clock = time.perf_counter()
        await work
        self.values.setdefault(name, []).append(time.perf_counter() - clock)

    def report(self) -> None:
        out("")
        out("| query | p50 | p95 | max |")
        out("| --- | --- | --- | --- |")
        for name, values in self.values.items():
            values.sort()
            p50 = statistics.median(values)
            p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
            out(f"| {name} | {1000 * p50:.1f} ms | {1000 * p95:.1f} ms | {1000 * values[-1]:.1f} ms |")


async def explain(pool: asyncpg.Pool, camera: str, day: datetime) -> None:
    from argus_api.playback import index as q

    async with pool.acquire() as conn:
        for name, sql, args in (
            (
                "spans",
                q.SPANS,
                (camera, "main", day - q.MAX_SEGMENT, day + timedelta(days=1), timedelta(milliseconds=100), day),
            ),
            ("segments of an hour", q.SEGMENTS, (camera, "main", day, day + timedelta(hours=1))),
            ("seek", q.AT, (camera, "main", day + timedelta(hours=5, seconds=3))),
        ):
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *args)
            out(f"-- {name}:")
            for row in plan:
                out("   " + row[0])


async def queries(pool: asyncpg.Pool, nats_url: str, cameras_n: int, days: int, n: int, workdir: Path) -> None:
    private, public = generate_keypair()
    (workdir / "k.key").write_bytes(private)
    (workdir / "k.pem").write_bytes(public)
    issuer = TokenIssuer.from_file(str(workdir / "k.key"), issuer="argus", audience="argus", ttl_s=3600)
    token = issuer.issue("bench", ["operator"], [Grant(actions=("playback",), cameras=("*",))])
    bus = await Bus.connect(nats_url, name="playback-bench")
    await bus.ensure(topology())
    store = ObjectStore(S3Config(endpoint="127.0.0.1:9", access_key="bench", secret_key="bench-secret"))
    app = web.Application(middlewares=[problem_middleware, auth_middleware])
    app[VERIFIER_KEY] = TokenVerifier.from_config(TokenConfig(public_keys=(str(workdir / "k.pem"),)))
    app[cameras.POOL_KEY] = pool
    playback.routes(app)
    playback.setup(app, store=store, config=PlaybackConfig(delivery="presigned"), emitter=AuditEmitter(bus, "api"),
                   bus=bus, registry=CollectorRegistry())  # fmt: skip
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    index = PlaybackIndex(pool)
    rng = random.Random(11)
    figures = Figures()
    try:
        await explain(pool, "cam-007", day_start(3))
        async with aiohttp.ClientSession(base, headers=headers) as http:

            async def get(path: str, params: dict[str, str], expect: int = 200) -> bytes:
                async with http.get(path, params=params) as response:
                    body = await response.read()
                    assert response.status == expect, (response.status, body[:300])
                    return body

            def pick() -> tuple[str, int]:
                """A random camera and the start (ms) of a random finished (frozen) day: each figure below is asked
                of its own pair, so none runs on pages that another query of the same round just read."""
                return f"cam-{rng.randrange(cameras_n):03d}", int(day_start(rng.randrange(days - 1)).timestamp() * 1000)

            async def timeline_index(cam: str, lo: int, hi: int) -> None:
                spans = await index.spans(cam, "main", lo, hi, 100)
                gaps = await index.gaps(cam, "main", lo, hi)
                build_timeline(cam, "main", lo, hi, spans, gaps)

            def path(cam: str, kind: str) -> str:
                return f"/api/v1/cameras/{cam}/playback/{kind}"

            def hour_of(lo: int) -> dict[str, str]:
                hour = lo + rng.randrange(24) * 3_600_000
                return {"from": str(hour / 1000), "until": str((hour + 3_600_000) / 1000)}

            for _ in range(n):
                cam, lo = pick()
                await figures.time("timeline of a camera-day: index reads", timeline_index(cam, lo, lo + 86_400_000))
                cam, lo = pick()
                await figures.time(
                    "timeline of a camera-day: HTTP answer (auth, audit, JSON)",
                    get(path(cam, "timeline"), {"from": str(lo / 1000), "until": str(lo / 1000 + 86_400)}),
                )
                cam, lo = pick()
                hour = lo + rng.randrange(24) * 3_600_000
                await figures.time(
                    "one-hour playlist: index read (600 rows)", index.segments(cam, "main", hour, hour + 3_600_000)
                )
                cam, lo = pick()
                await figures.time(
                    "one-hour playlist: HTTP answer, proxied segment URLs",
                    get(path(cam, "hls.m3u8"), {**hour_of(lo), "delivery": "proxy"}),
                )
                cam, lo = pick()
                await figures.time(
                    "one-hour playlist: HTTP answer, presigned S3 URLs",
                    get(path(cam, "hls.m3u8"), {**hour_of(lo), "delivery": "presigned"}),
                )
                cam, lo = pick()
                at = lo + rng.randrange(86_400_000)
                await figures.time("seek: index read (segment holding an instant)", index.segment_at(cam, "main", at))
                cam, lo = pick()
                at = lo + rng.randrange(86_400_000)
                await figures.time("seek: HTTP answer", get(path(cam, "seek"), {"at": str(at / 1000)}))
            month = {"from": str(day_start(0).timestamp()), "until": str(day_start(days).timestamp())}
            last = day_start(days - 1).timestamp()
            for _ in range(max(10, n // 25)):
                cam = f"cam-{rng.randrange(cameras_n):03d}"
                await figures.time(
                    f"timeline of a camera's {days} days: HTTP answer, first ask", get(path(cam, "timeline"), month)
                )
                await figures.time(
                    f"timeline of a camera's {days} days: HTTP answer, asked again", get(path(cam, "timeline"), month)
                )
                cam = f"cam-{rng.randrange(cameras_n):03d}"
                await figures.time(
                    "timeline of a camera-day still being written (not frozen): HTTP answer",
                    get(path(cam, "timeline"), {"from": str(last), "until": str(last + 86_400)}),
                )
        figures.report()
    finally:
        await runner.cleanup()
        await store.close()
        await bus.drain()


async def run(args: argparse.Namespace) -> None:
    from argus_devstack.backends import new_postgres_server
    from argus_devstack.nats import NatsServer

    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="argus-playback-bench-") as tmp:
        pg = new_postgres_server(data_dir=data_dir)
        nats = NatsServer(data_dir=Path(tmp) / "nats")
        try:
            pg.start()
            nats.start()
            try:
                dsn = pg.create_database("bench")
            except DevstackError:
                dsn = pg.dsn("bench")
            pool = await create_pool(DatabaseConfig(url=dsn, pool_max=4, command_timeout_s=3600))
            try:
                await migrate(pool)
                await fill(pool, args.cameras, args.days)
                await queries(pool, nats.url, args.cameras, args.days, args.queries, Path(tmp))
            finally:
                await pool.close()
        finally:
            for server in (nats, pg):
                with contextlib.suppress(Exception):
                    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--data-dir", default="", help="keep the Postgres cluster here (reused when present)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
