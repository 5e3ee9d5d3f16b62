"""recorder benchmark: CPU and peak memory of the recorder (and nats-server) per camera of 720p25 at 2 Mbps.

    python -m tests.bench.recorder_bench --cameras 10 25 50 --seconds 60

For each camera count: a fresh nats-server (JetStream, file store), Postgres and S3 (moto unless
`ARGUS_TEST_S3_ENDPOINT` names another), then the recorder as a real process (`python -m argus_recorder`) and a
publisher process standing in for ingest: it publishes the access units of a real 720p25 2 Mbps H.264 clip (x264,
GOP 2 s, looped), per camera, paced in real time, with the wall clock of each frame as its capture time, in
`MediaBatch`es made by ingest's own rules (`argus_ingest.batch`). After `--warmup` seconds the CPU time of each
process is read from /proc over `--seconds`; peak memory is the process's high-water mark (VmHWM);
capture-to-indexed latency is, per segment indexed in the window, the row's `created_at` minus the capture time of
the frame that closed it (its `end_time`), i.e. what the recorder adds beyond the segment's own length.

    python -m tests.bench.recorder_bench index --cameras 100 --days 31

The index benchmark fills the `segments` table (migration 0002: day partitions) with `--days` x `--cameras` x
14,400 six-second segments (45 M rows for 31 x 100) by COPY, then times the playback query "segments of camera X
overlapping one day" for random cameras and days, and the recorder's own "newest row of camera X" query.

For the side-by-side with ingest and `ffmpeg -f segment`, `measure()` and `ProcessSample` are reusable, and
`--external` records cameras fed by someone else (a running ingest): pass `--nats`, `--db`, the S3 settings and
`--camera-prefix`, and no publisher is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg

from argus_core.bus import Bus
from argus_core.bus import subjects as s
from argus_core.bus.codec import encode
from argus_core.bus.messages import MediaBatch, MediaPacket
from argus_devstack.ports import free_port
from argus_devstack.s3 import S3Target

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- measuring processes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    cpu_s: float  # user + system since the process started
    rss_bytes: int
    hwm_bytes: int  # peak resident set


def sample(pid: int) -> ProcessSample:
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLOCK_TICKS
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return ProcessSample(pid, cpu, rss, hwm)


@dataclass(frozen=True)
class Usage:
    name: str
    cpu_percent: float  # of one core, over the window
    rss_max_mb: float  # highest resident set seen in the window
    hwm_mb: float  # peak resident set over the process's life


async def measure(pids: dict[str, int], seconds: float, every_s: float = 1.0) -> list[Usage]:
    """CPU (percent of one core) and memory of each process over the next `seconds`."""
    first = {name: sample(pid) for name, pid in pids.items()}
    rss_max = {name: s.rss_bytes for name, s in first.items()}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(every_s)
        for name, pid in pids.items():
            rss_max[name] = max(rss_max[name], sample(pid).rss_bytes)
    elapsed = time.monotonic() - started
    last = {name: sample(pid) for name, pid in pids.items()}
    return [
        Usage(
            name,
            100.0 * (last[name].cpu_s - first[name].cpu_s) / elapsed,
            rss_max[name] / 2**20,
            last[name].hwm_bytes / 2**20,
        )
        for name in pids
    ]


# --- the publisher (a separate process standing in for ingest) ----------------------------------------------------


async def publish_cameras(nats_url: str, cameras: list[str], seconds: float, clip_args: dict[str, int]) -> None:
    from tests.recorder.media import Batches, clip

    media = clip(**clip_args)  # type: ignore[arg-type]
    bus = await Bus.connect(nats_url, name="bench-publisher")
    try:
        frames = int(seconds * media.fps)
        session = f"bench-{os.getpid()}"
        started = time.monotonic()
        inflight: set[asyncio.Future[Any]] = set()
        batches = {camera: Batches() for camera in cameras}

        def send(batch: MediaBatch) -> None:
            subject = s.RECORD.format(camera=batch.camera, stream="main")
            msg_id = f"{batch.camera}.main.{session}.{batch.packets[0].seq}"
            future = asyncio.ensure_future(
                bus.js.publish(subject, encode(s.RECORD, batch), headers={"Nats-Msg-Id": msg_id})
            )
            inflight.add(future)
            future.add_done_callback(inflight.discard)

        for i in range(frames):
            due = started + i / media.fps
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time_ns()
            for index, camera in enumerate(cameras):
                # Cameras are not in step: each one's GOPs start at its own phase, as on a real site.
                data, key = media.packets[(i + index * media.gop // len(cameras)) % len(media.packets)]
                pkt = MediaPacket(
                    camera=camera,
                    stream="main",
                    session=session,
                    seq=i,
                    pts=i * media.frame_ticks,
                    dts=i * media.frame_ticks,
                    duration=media.frame_ticks,
                    keyframe=key,
                    capture_ns=now,
                    time_trusted=True,
                    data=data,
                    config=media.config if key else None,
                )
                for batch in batches[camera].add(pkt):
                    send(batch)
            if len(inflight) > 4 * len(cameras):
                await asyncio.wait(set(inflight), return_when=asyncio.ALL_COMPLETED)
        for camera in cameras:
            for batch in batches[camera].flush():
                send(batch)
        if inflight:
            await asyncio.wait(set(inflight))
    finally:
        await bus.drain()


# --- one run ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    cameras: int
    seconds: float
    recorder: Usage
    nats: Usage | None
    publisher: Usage | None
    s3: Usage | None
    segments: int
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float

    @property
    def recorder_cpu_per_camera(self) -> float:
        return self.recorder.cpu_percent / self.cameras

    @property
    def recorder_mb_per_camera(self) -> float:
        return self.recorder.hwm_mb / self.cameras


def recorder_env(
    *, nats_url: str, db_url: str, s3: S3Target, cameras: list[str], spool: Path, port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": "bench-recorder",
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(port),
            "ARGUS_LOG_FORMAT": "json",
            "ARGUS_LOG_LEVEL": "warning",
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_DB_URL": db_url,
            "ARGUS_S3_ENDPOINT": s3.endpoint,
            "ARGUS_S3_ACCESS_KEY": s3.access_key,
            "ARGUS_S3_SECRET_KEY": s3.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": s3.bucket,
            "ARGUS_RECORDER_CAMERAS": ",".join(cameras),
            "ARGUS_RECORDER_SPOOL_DIR": str(spool),
        }
    )
    return env


def start_recorder(env: dict[str, str], log: IO[bytes] | None) -> subprocess.Popen[bytes]:
    """`python -m argus_recorder` with `env` (see `recorder_env`), its log to `log`."""
    return subprocess.Popen([sys.executable, "-m", "argus_recorder"], env=env, cwd=ROOT, stderr=log)


def start_publisher(
    nats_url: str, seconds: float, clip_args: dict[str, int], cameras: list[str]
) -> subprocess.Popen[bytes]:
    """The stand-in for ingest: real-time `MediaPacket`s of a real clip for `cameras`, in its own process."""
    argv = [sys.executable, "-m", "tests.bench.recorder_bench", "publish", "--nats", nats_url]
    argv += ["--seconds", str(seconds), "--clip", json.dumps(clip_args), *cameras]
    return subprocess.Popen(argv, cwd=ROOT)


async def wait_ready(port: int, proc: subprocess.Popen[bytes], within_s: float = 60.0) -> None:
    import aiohttp

    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the recorder exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the recorder did not become ready")


async def latencies(db_url: str, since: float, until: float) -> list[float]:
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM created_at - end_time) AS lag FROM segments "
            "WHERE created_at >= to_timestamp($1) AND created_at < to_timestamp($2)",
            since,
            until,
        )
    finally:
        await conn.close()
    return sorted(float(r["lag"]) for r in rows)


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[int, str, str, S3Target, int | None]]:
    """nats-server (its pid, url), a Postgres database, an S3 bucket (and its server's pid), closed afterwards."""
    from argus_devstack.backends import new_postgres_server, new_s3_server
    from argus_devstack.nats import NatsServer

    nats = NatsServer(data_dir=workdir / "nats")
    pg = new_postgres_server()
    s3 = new_s3_server()
    try:
        nats.start()
        pg.start()
        s3.start()
        bucket = f"bench-{os.getpid()}-{int(time.time())}"
        target = s3.make_bucket(bucket)
        assert nats.pid is not None
        yield nats.pid, nats.url, pg.create_database("bench"), target, getattr(s3, "pid", None)
    finally:
        for server in (s3, pg, nats):
            with contextlib.suppress(Exception):
                server.close()


async def run_one(cameras: int, seconds: float, warmup: float, clip_args: dict[str, int]) -> Result:
    names = [f"bench-{i:03d}" for i in range(cameras)]
    with (
        tempfile.TemporaryDirectory(prefix="argus-recorder-bench-") as tmp,
        servers(Path(tmp)) as (
            nats_pid,
            nats_url,
            db_url,
            target,
            s3_pid,
        ),
    ):
        port = free_port()
        env = recorder_env(
            nats_url=nats_url, db_url=db_url, s3=target, cameras=names, spool=Path(tmp) / "spool", port=port
        )
        log = (Path(tmp) / "recorder.log").open("wb")
        recorder = start_recorder(env, log)
        publisher: subprocess.Popen[bytes] | None = None
        try:
            await wait_ready(port, recorder)
            publisher = start_publisher(nats_url, warmup + seconds + 10, clip_args, names)
            await asyncio.sleep(warmup)
            window_start = time.time()
            pids = {"recorder": recorder.pid, "nats-server": nats_pid, "publisher": publisher.pid}
            if s3_pid is not None:
                pids["s3"] = s3_pid
            usage = await measure(pids, seconds)
            window_end = time.time()
            lags = await latencies(db_url, window_start, window_end)
        finally:
            if publisher is not None:
                publisher.terminate()
                publisher.wait(30)
            recorder.terminate()
            recorder.wait(60)
            log.close()
        by_name = {u.name: u for u in usage}
        return Result(
            cameras=cameras,
            seconds=seconds,
            recorder=by_name["recorder"],
            nats=by_name["nats-server"],
            publisher=by_name["publisher"],
            s3=by_name.get("s3"),
            segments=len(lags),
            latency_p50_s=statistics.median(lags) if lags else float("nan"),
            latency_p95_s=lags[int(0.95 * (len(lags) - 1))] if lags else float("nan"),
            latency_max_s=lags[-1] if lags else float("nan"),
        )


def report(result: Result) -> None:
    r = result
    out(
        f"{r.cameras:>3} cameras  recorder {r.recorder.cpu_percent:6.1f}% CPU "
        f"({r.recorder_cpu_per_camera:.2f}%/camera), peak {r.recorder.hwm_mb:6.1f} MB "
        f"({r.recorder_mb_per_camera:.2f} MB/camera)  | nats-server "
        f"{r.nats.cpu_percent if r.nats else float('nan'):5.1f}% CPU, peak {r.nats.hwm_mb if r.nats else 0:6.1f} MB"
        f"  | publisher {r.publisher.cpu_percent if r.publisher else float('nan'):5.1f}% CPU"
        f"  | S3 {r.s3.cpu_percent if r.s3 else float('nan'):5.1f}% CPU"
        f"  | capture-to-indexed p50 {r.latency_p50_s:.2f} s p95 {r.latency_p95_s:.2f} s max {r.latency_max_s:.2f} s"
        f" ({r.segments} segments)"
    )


async def external(args: argparse.Namespace) -> None:
    """Measure a recorder fed by a running ingest (the side-by-side bench)."""
    names = [f"{args.camera_prefix}{i}" for i in range(args.cameras[0])]
    target = S3Target(args.s3_endpoint, args.s3_access_key, args.s3_secret_key, "us-east-1", False, args.s3_bucket)
    with tempfile.TemporaryDirectory(prefix="argus-recorder-bench-") as tmp:
        port = free_port()
        env = recorder_env(
            nats_url=args.nats, db_url=args.db, s3=target, cameras=names, spool=Path(tmp) / "spool", port=port
        )
        recorder = start_recorder(env, None)
        try:
            await wait_ready(port, recorder)
            await asyncio.sleep(args.warmup)
            window_start = time.time()
            (usage,) = await measure({"recorder": recorder.pid}, args.seconds)
            lags = await latencies(args.db, window_start, time.time())
        finally:
            recorder.terminate()
            recorder.wait(60)
    report(
        Result(
            len(names),
            args.seconds,
            usage,
            None,
            None,
            None,
            len(lags),
            statistics.median(lags) if lags else float("nan"),
            lags[int(0.95 * (len(lags) - 1))] if lags else float("nan"),
            lags[-1] if lags else float("nan"),
        )
    )


TIMELINE = (
    "SELECT start_time, end_time, duration_ms, frames, bytes, object_key, init_key, time_trusted, codec, width, "
    "height FROM segments "
    "WHERE camera = $1 AND stream = 'main' AND start_time >= $2::timestamptz - interval '10 minutes' "
    "AND start_time < $3 AND end_time > $2 ORDER BY start_time"
)
SPANS = (
    "SELECT min(start_time) AS start, max(end_time) AS end, sum(frames) AS frames FROM ("
    " SELECT start_time, end_time, frames,"
    "  count(*) FILTER (WHERE start_time <> prev_end) OVER (ORDER BY start_time) AS span"
    " FROM (SELECT start_time, end_time, frames, lag(end_time) OVER (ORDER BY start_time) AS prev_end FROM segments"
    "  WHERE camera = $1 AND stream = 'main' AND start_time >= $2::timestamptz - interval '10 minutes'"
    "  AND start_time < $3 AND end_time > $2) a) b GROUP BY span ORDER BY 1"
)
NEWEST = (
    "SELECT session, last_seq, end_time FROM segments WHERE camera = $1 AND stream = 'main' AND start_time > $2 "
    "ORDER BY start_time DESC LIMIT 1"
)
COLUMNS = [
    "camera", "stream", "start_time", "end_time", "duration_ms", "frames", "keyframes", "bytes", "sha256", "codec",
    "width", "height", "object_key", "init_key", "time_trusted", "session", "first_seq", "last_seq",
]  # fmt: skip


async def index_bench(cameras: int, days: int, queries: int) -> None:
    from datetime import UTC, date, datetime, timedelta

    from argus_core.db import DatabaseConfig, create_pool, migrate
    from argus_devstack.backends import new_postgres_server
    from argus_recorder.index import Index

    pg = new_postgres_server()
    try:
        pg.start()
        pool = await create_pool(DatabaseConfig(url=pg.create_database("bench"), pool_max=4, command_timeout_s=3600))
        try:
            await migrate(pool)
            first_day = date(2026, 1, 1)
            index = Index(pool, timeout_s=600, lookback_s=86400)
            await index.ensure_days(*(first_day + timedelta(days=d) for d in range(days + 1)))
            per_day = 86400 // 6
            started = time.monotonic()
            total = 0
            sha = b"\xab" * 32
            for d in range(days):
                day0 = datetime.combine(first_day + timedelta(days=d), datetime.min.time(), tzinfo=UTC)
                records = []
                for i in range(per_day):  # time-major, as recorders write them: cameras interleaved in the heap
                    for c in range(cameras):
                        camera = f"cam-{c:03d}"
                        t = day0 + timedelta(seconds=6 * i, milliseconds=c)
                        key = f"{camera}/{t:%Y/%m/%d/%H/%M/%S}.{c:03d}Z-abcdef.m4s"
                        records.append((camera, "main", t, t + timedelta(seconds=6), 6000, 150, 3, 1_500_000, sha,
                                        "h264", 1280, 720, key, f"{camera}/init/0123456789abcdef.mp4", True,
                                        "session-0001", i * 150, i * 150 + 149))  # fmt: skip
                async with pool.acquire() as conn:
                    await conn.copy_records_to_table("segments", records=records, columns=COLUMNS)
                total += len(records)
                elapsed = time.monotonic() - started
                out(f"  day {d + 1}/{days}: {total:,} rows in {elapsed:.0f} s ({total / elapsed:,.0f} rows/s)")
            async with pool.acquire() as conn:
                for d in range(days):  # what the recorders do to each day once it is over (Index.settle_day)
                    await index.settle_day(first_day + timedelta(days=d))
                size = await conn.fetchval("SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM "
                                           "pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                           "WHERE i.inhparent = 'segments'::regclass")  # fmt: skip
                out(f"{total:,} rows in {days} day partitions, {size} with indexes")
                import random

                rng = random.Random(7)
                timings: list[float] = []
                server: list[float] = []
                spans: list[float] = []
                newest: list[float] = []
                returned = 0
                for _ in range(queries):
                    camera = f"cam-{rng.randrange(cameras):03d}"
                    day0 = datetime.combine(
                        first_day + timedelta(days=rng.randrange(days)), datetime.min.time(), tzinfo=UTC
                    )
                    clock = time.perf_counter()
                    rows = await conn.fetch(TIMELINE, camera, day0, day0 + timedelta(days=1))
                    timings.append(time.perf_counter() - clock)
                    returned += len(rows)
                    clock = time.perf_counter()
                    await conn.fetchval(f"SELECT count(*) FROM ({TIMELINE}) x", camera, day0, day0 + timedelta(days=1))
                    server.append(time.perf_counter() - clock)
                    clock = time.perf_counter()
                    await conn.fetch(SPANS, camera, day0, day0 + timedelta(days=1))
                    spans.append(time.perf_counter() - clock)
                    clock = time.perf_counter()
                    await conn.fetchrow(NEWEST, camera, day0 - timedelta(days=1))
                    newest.append(time.perf_counter() - clock)

            def figures(what: str, values: list[float]) -> None:
                values.sort()
                p50, p95 = values[len(values) // 2], values[int(0.95 * len(values))]
                out(f"{what}: p50 {1000 * p50:.1f} ms, p95 {1000 * p95:.1f} ms, max {1000 * values[-1]:.1f} ms")

            out(f"{queries} random (camera, day) pairs; a day is {returned // queries} segments of one camera:")
            figures("  one-day segment list, fetched into Python (asyncpg)", timings)
            figures("  the same query executed in the server only (count)", server)
            figures("  one-day recorded spans (contiguous segments merged in SQL)", spans)
            figures("  newest row of one camera (a recorder taking it over)", newest)
        finally:
            await pool.close()
    finally:
        pg.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["index"]:
        p = argparse.ArgumentParser(prog="recorder_bench index")
        p.add_argument("--cameras", type=int, default=100)
        p.add_argument("--days", type=int, default=31)
        p.add_argument("--queries", type=int, default=500)
        a = p.parse_args(argv[1:])
        asyncio.run(index_bench(a.cameras, a.days, a.queries))
        return 0
    if argv[:1] == ["publish"]:
        p = argparse.ArgumentParser(prog="recorder_bench publish")
        p.add_argument("--nats", required=True)
        p.add_argument("--seconds", type=float, required=True)
        p.add_argument("--clip", default="{}")
        p.add_argument("cameras", nargs="+")
        a = p.parse_args(argv[1:])
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(publish_cameras(a.nats, a.cameras, a.seconds, json.loads(a.clip)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cameras", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="also print each result as JSON")
    parser.add_argument("--external", action="store_true", help="record cameras fed by a running ingest")
    parser.add_argument("--nats", default="")
    parser.add_argument("--db", default="")
    parser.add_argument("--s3-endpoint", default="")
    parser.add_argument("--s3-access-key", default="")
    parser.add_argument("--s3-secret-key", default="")
    parser.add_argument("--s3-bucket", default="argus-recordings")
    parser.add_argument("--camera-prefix", default="cam-")
    args = parser.parse_args(argv)
    if args.external:
        asyncio.run(external(args))
        return 0
    clip_args = {"width": 1280, "height": 720, "fps": 25, "seconds": 10, "gop": 50, "bitrate": 2_000_000}
    from tests.recorder.media import clip

    started = time.monotonic()
    made = clip(**clip_args)  # type: ignore[arg-type]
    bitrate = sum(len(d) for d, _ in made.packets) * 8 / (len(made.packets) / made.fps)
    out(f"clip: 1280x720 25 fps H.264 {bitrate / 1e6:.2f} Mbps, GOP 2 s ({time.monotonic() - started:.1f} s to get)")
    out(f"cpu count {os.cpu_count()}, window {args.seconds:.0f} s after {args.warmup:.0f} s of warm-up")
    for n in args.cameras:
        result = asyncio.run(run_one(n, args.seconds, args.warmup, clip_args))
        report(result)
        if args.json:
            out(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
