"""Recording floors: what the parts the design prescribes cost at the very least, beside ffmpeg recording the same.

    python -m tests.bench.recording_floors --cameras 25 50 --seconds 30

Issue #4 asks ingest + recorder + nats-server to cost at most 1.5 times the CPU of one
`ffmpeg -rtsp_transport tcp -i URL -c copy -f segment -segment_time 6` per camera. The design fixes two parts of
that sum: ingest reads RTSP with PyAV (FFmpeg's RTSP demuxer), and media reaches the recorder through a durable
JetStream stream. This measures each part alone, doing nothing else, against the same simcam cameras
(`ingest_bench`'s: pre-encoded 720p25 H.264 at 2 Mbps, GOP 2 s), one after the other:

- **ffmpeg -f segment**: the reference, as in `ingest_bench`;
- **ffmpeg -f null**: ffmpeg reading RTSP and throwing the packets away: FFmpeg's reading alone, in C;
- **PyAV demux**: one process, a thread per camera opening the camera as ingest does (`demux.py`'s options) and
  iterating `container.demux()`, taking each packet's bytes and nothing else: the floor of ingest;
- **bus**: a fresh nats-server (JetStream, file store) carrying the cameras' bytes the way Argus does and no more:
  a publisher process stores one `MediaBatch` per camera per second on the MEDIA stream (25 synthetic access units,
  a 42 kB keyframe every 50 frames and 9.2 kB otherwise: 2 Mbps), and a consumer process reads each camera back
  through its durable pull consumer (`recorder_consumer`, the recorder's own `Pull` once a second) and acks every
  six seconds, as the recorder does per segment. nats-server's CPU is the floor of the durable hop.

CPU is user + system time from /proc over `--seconds` after `--warmup`, in percent of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from nats.js import api

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.bus import subjects as s
from argus_core.bus.codec import encode
from argus_core.bus.jetstream import MEDIA_STREAM, ensure_consumer, ensure_stream, recorder_consumer
from argus_core.bus.messages import CodecConfig, MediaBatch, MediaPacket
from argus_devstack.nats import NatsServer
from tests.bench.ingest_bench import Window, camera_urls, child, measure, out, simcam_server

KEY_BYTES = 42_000
P_BYTES = 9_200
GOP = 50
FPS = 25


# --- the children -------------------------------------------------------------------------------------------------


def demux_child(urls: list[str]) -> int:
    """PyAV's RTSP reading alone: a thread per camera, as ingest's `demux_rtsp` opens and reads it."""
    import av

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def read(url: str) -> None:
        options = {"rtsp_transport": "tcp", "allowed_media_types": "video", "timeout": "5000000"}
        with av.open(url, options=options) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if stop.is_set():
                    return
                if packet.size:
                    bytes(packet)

    threads = [threading.Thread(target=read, args=(url,), daemon=True) for url in urls]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(0.5)
    return 0


def _batch(camera: int, second: int, blob: bytes, config: CodecConfig) -> MediaBatch:
    packets = []
    for j in range(FPS):
        i = second * FPS + j
        key = (i + camera) % GOP == 0  # keyframes staggered across cameras
        packets.append(
            MediaPacket(
                camera=f"cam{camera:03d}",
                stream="main",
                session="floor",
                seq=i,
                pts=i * 3600,
                dts=i * 3600,
                duration=3600,
                keyframe=key,
                capture_ns=time.time_ns(),
                time_trusted=True,
                data=blob if key else blob[:P_BYTES],
                config=config if key else None,
            )
        )
    return MediaBatch(camera=f"cam{camera:03d}", stream="main", session="floor", packets=tuple(packets))


async def _per_camera_until_sigterm(bus: Bus, stop: asyncio.Event, work: list[Coroutine[Any, Any, None]]) -> int:
    tasks = [asyncio.create_task(job) for job in work]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await bus.drain()
    return 0


async def publish_child(nats_url: str, cameras: int, storage: str) -> int:
    """One MediaBatch per camera per second on the MEDIA stream, each with its message id, as ingest stores them."""
    bus = await Bus.connect(nats_url, name="floor-publisher")
    (media,) = [spec for spec in topology(TopologyOptions(media_max_age_s=120.0)).streams if spec.name == MEDIA_STREAM]
    await ensure_stream(bus.js, dataclasses.replace(media, storage=api.StorageType(storage)), 1)
    blob = os.urandom(KEY_BYTES)
    config = CodecConfig(codec="h264", width=1280, height=720, extradata=blob[:40])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def camera(c: int) -> None:
        subject = s.RECORD.format(camera=f"cam{c:03d}", stream="main")
        await asyncio.sleep(c / cameras)  # spread over the second, as cameras are
        started = time.monotonic()
        second = 0
        while not stop.is_set():
            payload = encode(s.RECORD, _batch(c, second, blob, config))
            await bus.js.publish(subject, payload, headers={"Nats-Msg-Id": f"floor:{c}:{second}"})
            second += 1
            await asyncio.sleep(max(0.0, started + second - time.monotonic()))

    return await _per_camera_until_sigterm(bus, stop, [camera(c) for c in range(cameras)])


async def consume_child(nats_url: str, cameras: int) -> int:
    """Each camera read back through its durable pull consumer once a second, acked (AckAll) every six seconds."""
    from argus_recorder.pull import Pull

    bus = await Bus.connect(nats_url, name="floor-consumer")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def camera(c: int) -> None:
        spec = recorder_consumer(f"cam{c:03d}")
        while True:  # the publisher makes the stream
            try:
                await ensure_consumer(bus.js, spec)
                break
            except Exception:  # noqa: BLE001 - not there yet
                await asyncio.sleep(0.2)
        pull = Pull(bus.nc, MEDIA_STREAM, spec.durable)
        await pull.start()
        unacked = 0
        while not stop.is_set():
            msgs = await pull.fetch(1000, 1.0)
            unacked += len(msgs)
            if msgs and unacked >= 6:
                await msgs[-1].ack()
                unacked = 0
            await asyncio.sleep(1.0)
        await pull.stop()

    return await _per_camera_until_sigterm(bus, stop, [camera(c) for c in range(cameras)])


# --- the runs -----------------------------------------------------------------------------------------------------


async def run_ffmpeg(urls: dict[str, str], output: list[str], warmup: float, seconds: float) -> Window:
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                child(
                    ["/usr/bin/ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", url, "-c"]
                    + ["copy", *[part.replace("{camera}", camera) for part in output]]
                )
            )
            for camera, url in urls.items()
        ]
        await asyncio.sleep(warmup)
        alive = [p.pid for p in procs if p.poll() is None]
        if len(alive) != len(procs):
            out(f"  warning: {len(procs) - len(alive)} ffmpeg processes exited early")
        return await measure({"ffmpeg": alive}, seconds)


async def run_demux(urls: dict[str, str], warmup: float, seconds: float) -> Window:
    with child([sys.executable, "-m", "tests.bench.recording_floors", "demux", *urls.values()]) as proc:
        await asyncio.sleep(warmup)
        if proc.poll() is not None:
            raise SystemExit("the PyAV demux child exited early")
        return await measure({"demux": [proc.pid]}, seconds)


async def run_bus(cameras: int, tmp: Path, warmup: float, seconds: float, storage: str = "file") -> Window:
    server = NatsServer(data_dir=tmp / f"nats-floor-{cameras}-{storage}")
    server.start()
    try:
        me = [sys.executable, "-m", "tests.bench.recording_floors"]
        flags = [f"--nats={server.url}", f"--cameras={cameras}"]
        with (
            child([*me, "publish", *flags, f"--storage={storage}"]) as publisher,
            child([*me, "consume", *flags]) as consumer,
        ):
            await asyncio.sleep(warmup)
            if publisher.poll() is not None or consumer.poll() is not None:
                raise SystemExit("a bus child exited early")
            window = await measure(
                {"nats": [server.pid or 0], "publisher": [publisher.pid], "consumer": [consumer.pid]}, seconds
            )
        info = await _stream_bytes(server.url)
        out(f"  MEDIA stream: {info}")
        return window
    finally:
        server.close()


async def _stream_bytes(url: str) -> str:
    bus = await Bus.connect(url, name="floor-check")
    try:
        info = await bus.js.stream_info(MEDIA_STREAM)
        return f"{info.state.messages} messages, {info.state.bytes / 1e6:.0f} MB"
    finally:
        await bus.close()


async def floors(args: argparse.Namespace) -> int:
    counts = sorted(args.cameras)
    out(
        f"recording floors: {counts} cameras of 720p25 H.264 2 Mbps, "
        f"warm-up {args.warmup:g} s, window {args.seconds:g} s"
    )
    out(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory(prefix="floors-") as tmp_name:
        tmp = Path(tmp_name)
        with simcam_server(max(counts), tmp) as port:
            for count in counts:
                urls = camera_urls(port, count)
                folder = tmp / f"segments-{count}"
                folder.mkdir()
                segment = ["-f", "segment", "-segment_time", "6", str(folder / "{camera}-%05d.mp4")]
                out(f"- {count} cameras: ffmpeg -f segment ...")
                seg = await run_ffmpeg(urls, segment, args.warmup, args.seconds)
                out(f"- {count} cameras: ffmpeg -f null ...")
                null = await run_ffmpeg(urls, ["-f", "null", "-"], args.warmup, args.seconds)
                out(f"- {count} cameras: PyAV demux ...")
                demux = await run_demux(urls, args.warmup, args.seconds)
                out(f"- {count} cameras: bus ...")
                bus = await run_bus(count, tmp, args.warmup, args.seconds)
                out(f"- {count} cameras: bus, memory storage ...")
                memory = await run_bus(count, tmp, args.warmup, args.seconds, "memory")
                row = (count, seg, null, demux, bus, memory)
                rows.append(row)
                windows = (seg, null, demux, bus, memory)
                out(
                    "  "
                    + ", ".join(f"{k} {v:.1f}%" for w in windows for k, v in w.cpu.items())
                    + "; machine busy "
                    + " / ".join(f"{w.machine_pct:.0f}" for w in windows)
                    + " %"
                )
    out()
    out(
        "| cameras | ffmpeg -f segment | ffmpeg -f null | PyAV demux | nats-server (bus) | publisher | consumer "
        "| nats-server (bus, memory storage) | PyAV demux + nats-server / ffmpeg -f segment "
        "| PyAV demux + nats-server + publisher + consumer / ffmpeg -f segment |"
    )
    out("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for count, seg, null, demux, bus, memory in rows:
        ref = seg.cpu["ffmpeg"]

        def cell(value: float, n: int = count, r: float = ref) -> str:
            return f"{value:.1f} % ({value / n:.2f}, {value / r:.2f} x)"

        out(
            f"| {count} | {ref:.1f} % ({ref / count:.2f}) | {cell(null.cpu['ffmpeg'])} | {cell(demux.cpu['demux'])} "
            f"| {cell(bus.cpu['nats'])} | {cell(bus.cpu['publisher'])} | {cell(bus.cpu['consumer'])} "
            f"| {cell(memory.cpu['nats'])} | {(demux.cpu['demux'] + bus.cpu['nats']) / ref:.2f} "
            f"| {(demux.cpu['demux'] + sum(bus.cpu.values())) / ref:.2f} |"
        )
    out("(per camera in % of a core, and times ffmpeg -f segment's CPU)")
    out(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("floors", "demux", "publish", "consume"), default="floors")
    parser.add_argument("urls", nargs="*", help="demux: the cameras")
    parser.add_argument("--cameras", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--nats", default="", help="publish/consume: the server")
    parser.add_argument("--storage", choices=("file", "memory"), default="file", help="publish: the stream's storage")
    args = parser.parse_args(argv)
    if args.mode == "demux":
        return demux_child(args.urls)
    if args.mode == "publish":
        return asyncio.run(publish_child(args.nats, args.cameras[0], args.storage))
    if args.mode == "consume":
        return asyncio.run(consume_child(args.nats, args.cameras[0]))
    return asyncio.run(floors(args))


if __name__ == "__main__":
    sys.exit(main())
