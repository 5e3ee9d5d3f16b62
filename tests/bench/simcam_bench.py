"""simcam benchmark: N cameras in one simcam process, every main stream read by a light RTSP client.

    python -m tests.bench.simcam_bench --cameras 100 --mode preencoded --seconds 30
    python -m tests.bench.simcam_bench --cameras 4 --mode live --seconds 30

Three processes: this one (orchestrator), the simcam server (cameras + RTSP server on a random loopback port) and
the client (one asyncio RTSP/TCP-interleaved reader per camera, counting bytes, RTP packets and frames). The server's
CPU is read from /proc/PID/stat (user + system, all threads) over the measured window, after a warm-up, and its peak
memory from VmHWM in /proc/PID/status. Not a pytest test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

_log = logging.getLogger("simcam_bench")

# -- server role ----------------------------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> int:
    from argus_simcam.camera import MediaHub, SimCamera
    from argus_simcam.faults import FaultState
    from argus_simcam.rtsp import RtspServer
    from argus_simcam.stream import StreamSpec

    main = StreamSpec(args.width, args.height, fps=args.fps, bitrate=args.bitrate)
    sub = StreamSpec(640, 360, fps=args.fps, bitrate=500_000) if args.sub else None
    hub = MediaHub(loop_s=args.loop_s)
    cameras = {
        f"cam{i:03d}": SimCamera(f"CAM {i:03d}", args.codec, main, sub, args.mode, None, None, FaultState(), hub=hub)
        for i in range(args.cameras)
    }
    server = RtspServer("127.0.0.1", 0, cameras)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    started = time.monotonic()
    try:
        await asyncio.gather(*(camera.start() for camera in cameras.values()))
        await server.start()
        info = json.dumps({"port": server.port, "startup_s": time.monotonic() - started})
        await asyncio.to_thread(Path(args.port_file).write_text, info)
        await stop.wait()
    finally:
        await server.close()
        for camera in cameras.values():
            await camera.close()
        await hub.close()
    return 0


# -- client role ----------------------------------------------------------------------------------------------------


@dataclass
class CameraStats:
    camera: str
    bytes: int = 0
    packets: int = 0
    frames: int = 0
    first_frame_s: float = -1.0
    error: str = ""


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lines: list[str]
) -> tuple[int, dict[str, str], bytes]:
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status = int(head.split(" ", 2)[1])
    headers = {}
    for line in head.split("\r\n")[1:]:
        if ":" in line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def _read_camera(url: str, camera: str, deadline: float, t0: float) -> CameraStats:
    stats = CameraStats(camera)
    host, port = url.split("/")[2].split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
    except OSError as exc:
        stats.error = str(exc)
        return stats
    try:
        _, headers, _ = await _request(
            reader, writer, [f"DESCRIBE {url} RTSP/1.0", "CSeq: 1", "Accept: application/sdp"]
        )
        base = headers.get("content-base", url + "/")
        _, headers, _ = await _request(
            reader,
            writer,
            [f"SETUP {base}trackID=0 RTSP/1.0", "CSeq: 2", "Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        )
        session = headers["session"].split(";")[0]
        status, _, _ = await _request(reader, writer, [f"PLAY {base} RTSP/1.0", "CSeq: 3", f"Session: {session}"])
        if status != 200:
            stats.error = f"PLAY {status}"
            return stats
        buffer = bytearray()
        unpack = struct.Struct("!BBH").unpack_from
        next_keepalive = time.monotonic() + 20
        cseq = 4
        while time.monotonic() < deadline:
            chunk = await reader.read(1 << 18)
            if not chunk:
                stats.error = "EOF"
                break
            stats.bytes += len(chunk)
            buffer += chunk
            pos = 0
            size = len(buffer)
            while pos + 4 <= size:
                if buffer[pos] != 0x24:  # an RTSP reply to a keep-alive: skip to its end
                    end = buffer.find(b"\r\n\r\n", pos)
                    if end < 0:
                        break
                    pos = end + 4
                    continue
                _, channel, length = unpack(buffer, pos)
                if pos + 4 + length > size:
                    break
                if channel == 0:
                    stats.packets += 1
                    if buffer[pos + 5] & 0x80:
                        stats.frames += 1
                        if stats.first_frame_s < 0:
                            stats.first_frame_s = time.monotonic() - t0
                pos += 4 + length
            del buffer[:pos]
            if time.monotonic() > next_keepalive:
                next_keepalive += 20
                writer.write(f"GET_PARAMETER {base} RTSP/1.0\r\nCSeq: {cseq}\r\nSession: {session}\r\n\r\n".encode())
                cseq += 1
    except (OSError, asyncio.IncompleteReadError, KeyError, ValueError) as exc:
        stats.error = repr(exc)
    finally:
        writer.close()
    return stats


async def _client(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    deadline = t0 + args.run_s
    urls = [(f"rtsp://127.0.0.1:{args.port}/cam{i:03d}/main", f"cam{i:03d}") for i in range(args.cameras)]
    results = await asyncio.gather(*(_read_camera(url, cam, deadline, t0) for url, cam in urls))
    json.dump([asdict(r) for r in results], sys.stdout)
    return 0


# -- orchestrator ---------------------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _role_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--cameras={args.cameras}",
        f"--mode={args.mode}",
        f"--codec={args.codec}",
        f"--width={args.width}",
        f"--height={args.height}",
        f"--fps={args.fps}",
        f"--bitrate={args.bitrate}",
        f"--loop-s={args.loop_s}",
        "--sub" if args.sub else "--no-sub",
    ]


def _orchestrate(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port.json"
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.simcam_bench", "--role=server", f"--port-file={port_file}"]
            + _role_args(args),
            env=env,
        )
        try:
            deadline = time.monotonic() + 300
            while not port_file.exists() or not port_file.read_text():
                if server.poll() is not None or time.monotonic() > deadline:
                    print("simcam server failed to start", file=sys.stderr)  # noqa: T201
                    return 1
                time.sleep(0.2)
            info = json.loads(port_file.read_text())
            print(  # noqa: T201
                f"simcam: {args.cameras} cameras, {args.mode}, {args.codec} {args.width}x{args.height}@{args.fps} "
                f"{args.bitrate // 1000} kb/s{' + sub stream' if args.sub else ''}; "
                f"started in {info['startup_s']:.1f} s"
            )
            idle_cpu0, idle_t0 = _cpu_seconds(server.pid), time.monotonic()
            time.sleep(2.0)
            idle_cpu = (_cpu_seconds(server.pid) - idle_cpu0) / (time.monotonic() - idle_t0) * 100
            run_s = args.warmup + args.seconds + 2
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.simcam_bench",
                    "--role=client",
                    f"--port={info['port']}",
                    f"--run-s={run_s}",
                ]
                + _role_args(args),
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(args.warmup)
            cpu0, t0 = _cpu_seconds(server.pid), time.monotonic()
            client_cpu0 = _cpu_seconds(client.pid)
            time.sleep(args.seconds)
            cpu1, t1 = _cpu_seconds(server.pid), time.monotonic()
            client_cpu1 = _cpu_seconds(client.pid)
            out, _ = client.communicate(timeout=run_s + 60)
            hwm = _status_kb(server.pid, "VmHWM")
            rss = _status_kb(server.pid, "VmRSS")
            threads = _status_kb(server.pid, "Threads")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    stats = [CameraStats(**s) for s in json.loads(out)]
    window = t1 - t0
    cpu_pct = (cpu1 - cpu0) / window * 100
    total_bytes = sum(s.bytes for s in stats)
    errors = [s for s in stats if s.error]
    expected_frames = args.fps * run_s
    fps = [s.frames / run_s for s in stats]
    print(f"server CPU: {cpu_pct:.1f}% of one core while streaming ({idle_cpu:.1f}% before clients)")  # noqa: T201
    print(f"server memory: peak RSS (VmHWM) {hwm / 1024:.0f} MiB, RSS now {rss / 1024:.0f} MiB, {threads} threads")  # noqa: T201
    print(f"client CPU: {(client_cpu1 - client_cpu0) / window * 100:.1f}% of one core")  # noqa: T201
    print(  # noqa: T201
        f"received: {total_bytes / 1e6:.0f} MB in {run_s:.0f} s = {total_bytes * 8 / run_s / 1e6:.1f} Mb/s total, "
        f"{total_bytes * 8 / run_s / 1e6 / max(1, len(stats)):.2f} Mb/s per camera; "
        f"frames per camera {min(s.frames for s in stats)}..{max(s.frames for s in stats)} "
        f"(~{expected_frames} expected incl. the GOP burst at start), fps {min(fps):.1f}..{max(fps):.1f}"
    )
    if errors:
        print(f"{len(errors)} cameras with errors, e.g. {errors[0].camera}: {errors[0].error}")  # noqa: T201
    return 0 if not errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=("orchestrator", "server", "client"), default="orchestrator")
    parser.add_argument("--cameras", type=int, default=100)
    parser.add_argument("--mode", choices=("preencoded", "live"), default="preencoded")
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", type=int, default=2_000_000)
    parser.add_argument("--loop-s", type=float, default=8.0)
    parser.add_argument("--sub", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--port-file", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--run-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if args.role == "server":
        return asyncio.run(_serve(args))
    if args.role == "client":
        return asyncio.run(_client(args))
    return _orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
