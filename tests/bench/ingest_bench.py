"""ingest benchmark: CPU and peak memory of ingest (and nats-server) per camera, beside ffmpeg recording the same.

    python -m tests.bench.ingest_bench --cameras 10 25 50 --seconds 30
    python -m tests.bench.ingest_bench --cameras 10 25 50 --seconds 30 --recorder
    python -m tests.bench.ingest_bench framing --cameras 50 --seconds 20

Cameras: one simcam process (`tests.bench.simcam_bench --role=server`, pre-encoded 720p25 H.264 at 2 Mbps, GOP
2 s, no sub stream), started once with the largest count; only the cameras a client watches cost it anything.

For each camera count, one after the other against the same cameras:

- **ffmpeg**: one `ffmpeg -rtsp_transport tcp -i URL -c copy -f segment -segment_time 6` per camera (how Frigate
  records), writing to a temporary folder;
- **ingest**: a fresh nats-server (JetStream, file store) and the register in Postgres (one row per camera), then
  ingest as a real process (`python -m argus_ingest`) storing every access unit in the MEDIA stream (in
  batches); with `--recorder` the recorder (`python -m argus_recorder`, S3 from `argus_devstack`: moto unless the
  environment names another) records them too, so that ingest + recorder stand beside ffmpeg as the issue's goal asks.

After `--warmup` seconds (every camera online) the CPU time of each process is read from /proc over `--seconds`
(user + system, all threads, as percent of one core); memory is each process's peak resident set (VmHWM). The
whole machine's CPU use and load average over the window are printed too: other work shares the machine.

`framing` compares one message per access unit with batches of `--batch` access units per message: this process
publishes synthetic 2 Mbps 25 fps packets (a 42 kB keyframe every 50 frames, 9.2 kB otherwise) for `--cameras`
cameras to a fresh nats-server's MEDIA stream (as `MediaBatch`es) with the same pipelined publishing as ingest, and
reports the CPU of the publisher and of nats-server per 1,000 access units, and the time from capture to
JetStream's ack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus import subjects as s
from argus_core.bus.codec import encode
from argus_core.bus.messages import CodecConfig, MediaBatch, MediaPacket
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_devstack.backends import new_postgres_server, new_s3_server
from argus_devstack.nats import NatsServer
from argus_devstack.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- measuring --------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Window:
    """CPU percent (of one core) of groups of processes over a window, their peak memory, and the machine's load."""

    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    hwm_mb: dict[str, float] = field(default_factory=dict)
    machine_pct: float = 0.0  # of all cores
    load: tuple[float, float] = (0.0, 0.0)


async def measure(groups: dict[str, list[int]], seconds: float) -> Window:
    load0 = os.getloadavg()[0]
    busy0, total0 = machine_busy()
    first = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    last = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
    busy1, total1 = machine_busy()
    return Window(
        seconds=elapsed,
        cpu={name: 100.0 * (last[name] - first[name]) / elapsed for name in groups},
        hwm_mb={name: sum(status_kb(pid, "VmHWM") for pid in pids) / 1024 for name, pids in groups.items()},
        machine_pct=100.0 * (busy1 - busy0) / max(1, total1 - total0),
        load=(load0, os.getloadavg()[0]),
    )


def scrape(port: int) -> dict[str, float]:
    """Sum of each metric family on /metrics (labels summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if match is None:
            continue
        name, labels = match.group(1), match.group(2) or ""
        if name.endswith("_bucket"):
            le = re.search(r'le="([^"]+)"', labels)
            name = f"{name}[{le.group(1) if le else ''}]"
        totals[name] = totals.get(name, 0.0) + float(match.group(3))
    return totals


def histogram_quantile(before: dict[str, float], after: dict[str, float], family: str, q: float) -> float:
    """A quantile of a histogram's observations between two scrapes (upper bucket bound), seconds."""
    buckets: list[tuple[float, float]] = []
    for key, value in after.items():
        if key.startswith(f"{family}_bucket["):
            bound = key[len(family) + 8 : -1]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value - before.get(key, 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return float("nan")
    wanted = q * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= wanted)


# --- processes ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def child(
    argv: list[str], *, env: dict[str, str] | None = None, log: IO[bytes] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def simcam_server(cameras: int, tmp: Path) -> Iterator[int]:
    port_file = tmp / "simcam-port.json"
    argv = [
        sys.executable,
        "-m",
        "tests.bench.simcam_bench",
        "--role=server",
        f"--port-file={port_file}",
        f"--cameras={cameras}",
        "--mode=preencoded",
        "--width=1280",
        "--height=720",
        "--fps=25",
        "--bitrate=2000000",
        "--no-sub",
    ]
    with child(argv) as proc:
        deadline = time.monotonic() + 300
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("simcam did not start")
            time.sleep(0.2)
        yield int(json.loads(port_file.read_text())["port"])


def camera_urls(port: int, count: int) -> dict[str, str]:
    return {f"cam{i:03d}": f"rtsp://127.0.0.1:{port}/cam{i:03d}/main" for i in range(count)}


# --- the ffmpeg side ----------------------------------------------------------------------------------------------


async def run_ffmpeg(urls: dict[str, str], args: argparse.Namespace, tmp: Path) -> tuple[Window, int]:
    folder = tmp / f"ffmpeg-{len(urls)}"
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                child(
                    [
                        "/usr/bin/ffmpeg",
                        "-nostdin",
                        "-loglevel",
                        "error",
                        "-rtsp_transport",
                        "tcp",
                        "-i",
                        url,
                        "-c",
                        "copy",
                        "-f",
                        "segment",
                        "-segment_time",
                        "6",
                        str(folder / f"{camera}-%05d.mp4"),
                    ]
                )
            )
            for camera, url in urls.items()
        ]
        await asyncio.sleep(args.warmup)
        alive = [p.pid for p in procs if p.poll() is None]
        if len(alive) != len(procs):
            out(f"  warning: {len(procs) - len(alive)} ffmpeg processes exited early")
        window = await measure({"ffmpeg": alive}, args.seconds)
    segments = len(list(folder.iterdir()))
    return window, segments


# --- the ingest side ----------------------------------------------------------------------------------------------


@dataclass
class IngestResult:
    window: Window
    packets_per_s: float
    megabits_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    online: int
    stop_s: float
    recorder_error: str = ""
    segments_indexed: int = -1  # with --recorder: rows in `segments` when the window closed


EXTRA_ENV: dict[str, str] = {}  # --set: settings for ingest and the recorder (a knob's effect)


def service_env(nats_url: str, db_url: str, http_port: int, pod: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    env.update(
        {
            "ARGUS_POD_NAME": pod,
            "ARGUS_HTTP_HOST": "127.0.0.1",
            "ARGUS_HTTP_PORT": str(http_port),
            "ARGUS_LOG_FORMAT": "text",
            "ARGUS_LOG_LEVEL": "warning",
            "ARGUS_NATS_URL": nats_url,
            "ARGUS_DB_URL": db_url,
            "ARGUS_MEDIA_MAX_AGE_S": "120",  # the disk is shared: media the benchmark does not need goes early
        }
    )
    env.update(EXTRA_ENV)
    return env


async def wait_for(what: str, check: Any, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            if check():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{what}: not within {within_s} s")
        await asyncio.sleep(0.5)


async def run_ingest(urls: dict[str, str], args: argparse.Namespace, tmp: Path, postgres: Any) -> IngestResult:
    count = len(urls)
    nats_server = NatsServer(data_dir=tmp / f"nats-{count}")
    nats_server.start()
    try:
        db_url = postgres.create_database(f"ingest_bench_{count}")
        pool = await create_pool(DatabaseConfig(url=db_url, pool_max=2))
        await migrate(pool)
        await pool.executemany("INSERT INTO cameras (id, name, main_url) VALUES ($1, $1, $2)", list(urls.items()))
        await pool.close()
        bus = await Bus.connect(nats_server.url, name="ingest-bench")
        await bus.ensure(topology(TopologyOptions(media_max_age_s=120.0)))
        await bus.drain()
        http_port = free_port()
        log_path = tmp / f"ingest-{count}.log"
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(log_path.open("wb"))
            ingest = stack.enter_context(
                child(
                    [sys.executable, "-m", "argus_ingest"],
                    env=service_env(nats_server.url, db_url, http_port, "bench-ingest"),
                    log=log,
                )
            )
            groups = {"ingest": [ingest.pid], "nats": [nats_server.pid or 0]}
            recorder_error = ""
            if args.recorder:
                recorder_error = start_recorder(stack, args, tmp, nats_server.url, db_url, groups, count)
            await wait_for(
                f"{count} cameras online", lambda: scrape(http_port).get("argus_ingest_cameras_online", 0) >= count
            )
            await asyncio.sleep(args.warmup)
            before = scrape(http_port)
            window = await measure(groups, args.seconds)
            after = scrape(http_port)
            online = int(after.get("argus_ingest_cameras_online", 0))
            indexed = await count_segments(db_url) if args.recorder and not recorder_error else -1
            stopping = time.monotonic()
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(timeout=60)
            stop_s = time.monotonic() - stopping
        packets = after.get("argus_ingest_packets_published_total", 0) - before.get(
            "argus_ingest_packets_published_total", 0
        )
        data = after.get("argus_ingest_bytes_published_total", 0) - before.get("argus_ingest_bytes_published_total", 0)
        family = "argus_ingest_publish_latency_seconds"
        return IngestResult(
            window=window,
            packets_per_s=packets / window.seconds,
            megabits_per_s=data * 8 / window.seconds / 1e6,
            latency_p50_ms=histogram_quantile(before, after, family, 0.5) * 1000,
            latency_p99_ms=histogram_quantile(before, after, family, 0.99) * 1000,
            online=online,
            stop_s=stop_s,
            recorder_error=recorder_error,
            segments_indexed=indexed,
        )
    finally:
        nats_server.close()


async def count_segments(db_url: str) -> int:
    pool = await create_pool(DatabaseConfig(url=db_url, pool_max=1))
    try:
        return int(await pool.fetchval("SELECT count(*) FROM segments"))
    except Exception:  # noqa: BLE001 - a figure for the report, not a check
        return -1
    finally:
        await pool.close()


def start_recorder(
    stack: contextlib.ExitStack,
    args: argparse.Namespace,
    tmp: Path,
    nats_url: str,
    db_url: str,
    groups: dict[str, list[int]],
    count: int,
) -> str:
    """The recorder beside ingest (`--recorder`): its pid joins `groups`; an error text if it could not start."""
    s3 = new_s3_server(data_dir=tmp / f"s3-{count}")
    s3.start()
    stack.callback(s3.close)
    bucket = f"bench-{count}"
    s3.make_bucket(bucket)
    port = free_port()
    env = service_env(nats_url, db_url, port, "bench-recorder")
    env.update(
        {
            "ARGUS_S3_ENDPOINT": s3.endpoint,
            "ARGUS_S3_ACCESS_KEY": s3.access_key,
            "ARGUS_S3_SECRET_KEY": s3.secret_key,
            "ARGUS_S3_RECORDINGS_BUCKET": bucket,
            "ARGUS_RECORDER_SPOOL_DIR": str(tmp / f"spool-{count}"),
        }
    )
    log = stack.enter_context((tmp / f"recorder-{count}.log").open("wb"))
    proc = stack.enter_context(child([sys.executable, "-m", "argus_recorder"], env=env, log=log))
    time.sleep(3.0)
    if proc.poll() is not None:
        return f"the recorder exited with {proc.returncode} (see its log)"
    groups["recorder"] = [proc.pid]
    return ""


# --- framing: one message per access unit or small batches ------------------------------------------------------


KEY_BYTES = 42_000
P_BYTES = 9_200
GOP = 50


async def framing_run(nats_url: str, cameras: int, seconds: float, batch: int, window_size: int) -> dict[str, float]:
    """Publish `cameras` x 25 fps for `seconds`, `batch` access units per message, the way ingest publishes: a
    reply subject per message on one wildcard inbox, at most `window_size` unacknowledged per camera."""
    bus = await Bus.connect(nats_url, name=f"framing-{batch}")
    await bus.ensure(topology(TopologyOptions(media_max_age_s=60.0)))
    blob = os.urandom(KEY_BYTES)
    config = CodecConfig(codec="h264", width=1280, height=720, extradata=blob[:40])
    inbox = bus.nc.new_inbox() + "."
    waiting: dict[str, tuple[float, int]] = {}
    latencies: list[float] = []
    acked = asyncio.Event()

    async def on_ack(msg: Any) -> None:
        captured, n = waiting.pop(msg.subject[len(inbox) :], (0.0, 0))
        if n:
            latencies.extend([time.monotonic() - captured] * n)
            acked.set()

    sub = await bus.nc.subscribe(inbox + "*", cb=on_ack, pending_msgs_limit=1_000_000)
    session = f"bench{batch}"
    held: dict[int, list[MediaPacket]] = {c: [] for c in range(cameras)}
    held_since: dict[int, float] = {}
    messages = units = 0
    cpu0 = time.process_time()
    started = time.monotonic()
    frames = int(seconds * 25)
    for i in range(frames):
        due = started + i / 25
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for camera in range(cameras):
            phase = (i + camera * GOP // cameras) % GOP
            packet = MediaPacket(
                camera=f"cam{camera:03d}",
                stream="main",
                session=session,
                seq=i,
                pts=i * 3600,
                dts=i * 3600,
                duration=3600,
                keyframe=phase == 0,
                capture_ns=time.time_ns(),
                time_trusted=True,
                data=blob if phase == 0 else blob[:P_BYTES],
                config=config if phase == 0 else None,
            )
            subject = s.RECORD.format(camera=packet.camera, stream="main")
            held[camera].append(packet)
            held_since.setdefault(camera, due)
            if len(held[camera]) < batch:
                continue
            payload = encode(
                s.RECORD, MediaBatch(camera=packet.camera, stream="main", session=session, packets=tuple(held[camera]))
            )
            captured = held_since.pop(camera)
            count = len(held[camera])
            held[camera] = []
            token = str(messages)
            waiting[token] = (captured, count)
            await bus.nc.publish(
                subject, payload, reply=inbox + token, headers={"Nats-Msg-Id": f"{session}:{camera}:{i}"}
            )
            messages += 1
            units += count
            while len(waiting) > window_size * cameras:
                acked.clear()
                await acked.wait()
    deadline = time.monotonic() + 10
    while waiting and time.monotonic() < deadline:
        acked.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await acked.wait()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu0
    await sub.unsubscribe()
    await bus.drain()
    latencies.sort()
    return {
        "units": units,
        "messages": messages,
        "seconds": elapsed,
        "publisher_cpu_s": cpu,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "unacknowledged": len(waiting),
    }


async def framing(args: argparse.Namespace) -> int:
    out(f"framing: {args.cameras} cameras x 25 fps x {args.seconds:g} s, 2 Mbps each, window {args.window} per camera")
    out(f"load average before: {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        for batch in (1, args.batch):
            server = NatsServer(data_dir=Path(tmp) / f"nats-{batch}")
            server.start()
            try:
                pid = server.pid or 0
                cpu0 = cpu_seconds(pid)
                busy0, total0 = machine_busy()
                result = await framing_run(server.url, args.cameras, args.seconds, batch, args.window)
                nats_cpu = cpu_seconds(pid) - cpu0
                busy1, total1 = machine_busy()
                result["nats_cpu_s"] = nats_cpu
                result["machine_pct"] = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
                result["nats_hwm_mb"] = status_kb(pid, "VmHWM") / 1024
                rows.append((batch, result))
            finally:
                server.close()
    out()
    out(
        "| access units per message | messages/s | publisher CPU ms per 1000 AU | nats-server CPU ms per 1000 AU "
        "| capture to ack p50 / p99 ms | nats-server peak RSS MB | machine busy % |"
    )
    out("| --- | --- | --- | --- | --- | --- | --- |")
    for batch, r in rows:
        per = 1000.0 / r["units"]
        out(
            f"| {batch} | {r['messages'] / r['seconds']:.0f} | {r['publisher_cpu_s'] * 1000 * per:.1f} "
            f"| {r['nats_cpu_s'] * 1000 * per:.1f} | {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} "
            f"| {r['nats_hwm_mb']:.0f} | {r['machine_pct']:.0f} |"
        )
    out(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


# --- the side-by-side run ---------------------------------------------------------------------------------------


async def side_by_side(args: argparse.Namespace) -> int:
    counts = sorted(args.cameras)
    out(
        f"ingest benchmark: {counts} cameras of 720p25 H.264 2 Mbps (simcam, pre-encoded), warm-up {args.warmup:g} s, "
        f"window {args.seconds:g} s{', with the recorder' if args.recorder else ''}"
    )
    out(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    rows: list[tuple[int, Window, int, IngestResult]] = []
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp_name:
        os.chmod(tmp_name, 0o755)  # Postgres runs as its own account
        tmp = Path(tmp_name)
        postgres = new_postgres_server()
        postgres.start()
        try:
            with simcam_server(max(counts), tmp) as port:
                for count in counts:
                    urls = camera_urls(port, count)
                    if args.ffmpeg:
                        out(f"- {count} cameras: ffmpeg ...")
                        ffmpeg, segments = await run_ffmpeg(urls, args, tmp)
                    else:  # profiling ours alone
                        ffmpeg, segments = Window(seconds=1.0, cpu={"ffmpeg": 1e-9}, hwm_mb={"ffmpeg": 0.0}), 0
                    out(f"- {count} cameras: ingest ...")
                    ingest = await run_ingest(urls, args, tmp, postgres)
                    rows.append((count, ffmpeg, segments, ingest))
                    report_row(count, ffmpeg, segments, ingest)
        finally:
            postgres.close()
    out()
    report_table(rows, args.recorder)
    return 0


def report_row(count: int, ffmpeg: Window, segments: int, ingest: IngestResult) -> None:
    w = ingest.window
    out(
        f"  ffmpeg {ffmpeg.cpu['ffmpeg']:.1f}% CPU, {ffmpeg.hwm_mb['ffmpeg']:.0f} MB, {segments} segment files; "
        f"ingest {w.cpu['ingest']:.1f}% CPU, {w.hwm_mb['ingest']:.0f} MB; nats {w.cpu['nats']:.1f}%, "
        f"{w.hwm_mb['nats']:.0f} MB; {ingest.packets_per_s:.0f} packets/s, {ingest.megabits_per_s:.1f} Mb/s, "
        f"{ingest.online}/{count} online, ack p50 {ingest.latency_p50_ms:.1f} ms p99 {ingest.latency_p99_ms:.1f} ms, "
        f"SIGTERM to exit {ingest.stop_s:.1f} s; machine {ffmpeg.machine_pct:.0f}% / {w.machine_pct:.0f}% busy, "
        f"load {ffmpeg.load[0]:.1f}-{ffmpeg.load[1]:.1f} / {w.load[0]:.1f}-{w.load[1]:.1f}"
        + (f"; recorder: {ingest.recorder_error}" if ingest.recorder_error else "")
        + (f"; {ingest.segments_indexed} segments indexed" if ingest.segments_indexed >= 0 else "")
    )


def report_table(rows: list[tuple[int, Window, int, IngestResult]], recorder: bool) -> None:
    head = (
        "| cameras | ffmpeg CPU % (per camera) | ingest CPU % (per camera) | nats-server CPU % "
        + ("| recorder CPU % " if recorder else "")
        + "| ours / ffmpeg CPU | ffmpeg peak RSS MB (per camera) | ingest peak RSS MB (per camera) "
        + ("| recorder peak RSS MB " if recorder else "")
        + "| nats-server peak RSS MB | ack p50 / p99 ms | machine busy % (ffmpeg / ingest run) |"
    )
    out(head)
    out("|" + " --- |" * (head.count("|") - 1))
    for count, ffmpeg, _, ingest in rows:
        w = ingest.window
        f_cpu = ffmpeg.cpu["ffmpeg"]
        ours = w.cpu["ingest"] + w.cpu.get("recorder", 0.0)
        cells = [
            str(count),
            f"{f_cpu:.1f} ({f_cpu / count:.2f})",
            f"{w.cpu['ingest']:.1f} ({w.cpu['ingest'] / count:.2f})",
            f"{w.cpu['nats']:.1f}",
        ]
        if recorder:
            cells.append(f"{w.cpu.get('recorder', float('nan')):.1f}")
        cells += [
            f"{ours / f_cpu:.2f}" if f_cpu else "n/a",
            f"{ffmpeg.hwm_mb['ffmpeg']:.0f} ({ffmpeg.hwm_mb['ffmpeg'] / count:.1f})",
            f"{w.hwm_mb['ingest']:.0f} ({w.hwm_mb['ingest'] / count:.1f})",
        ]
        if recorder:
            cells.append(f"{w.hwm_mb.get('recorder', float('nan')):.0f}")
        cells += [
            f"{w.hwm_mb['nats']:.0f}",
            f"{ingest.latency_p50_ms:.1f} / {ingest.latency_p99_ms:.1f}",
            f"{ffmpeg.machine_pct:.0f} / {w.machine_pct:.0f}",
        ]
        out("| " + " | ".join(cells) + " |")
    if len(rows) >= 2:
        (n0, _, _, a), (n1, _, _, b) = rows[0], rows[-1]
        slope = (b.window.hwm_mb["ingest"] - a.window.hwm_mb["ingest"]) / (n1 - n0)
        cpu_slope = (b.window.cpu["ingest"] - a.window.cpu["ingest"]) / (n1 - n0)
        out(f"ingest marginal cost per camera ({n0} to {n1}): {cpu_slope:.2f}% CPU, {slope:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("side-by-side", "framing"), default="side-by-side")
    parser.add_argument("--cameras", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--recorder", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--set", action="append", default=[], metavar="ARGUS_X=V", help="a setting for our services")
    parser.add_argument("--ffmpeg", action=argparse.BooleanOptionalAction, default=True, help="run ffmpeg beside")
    parser.add_argument("--batch", type=int, default=25, help="framing: access units per message")
    parser.add_argument("--window", type=int, default=64, help="framing: publishes in flight per camera")
    args = parser.parse_args(argv)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("ARGUS_"):
            parser.error(f"--set {item}: expected ARGUS_NAME=value")
        EXTRA_ENV[name] = value
    if args.mode == "framing":
        args.cameras = args.cameras[-1]
        return asyncio.run(framing(args))
    return asyncio.run(side_by_side(args))


if __name__ == "__main__":
    sys.exit(main())
