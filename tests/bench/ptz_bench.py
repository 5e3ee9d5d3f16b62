"""ptz benchmark: what the bus and the ptz service add to a PTZ command, over calling the camera's ONVIF directly.

    python -m tests.bench.ptz_bench --commands 500

Four processes on loopback besides nats-server and Postgres (both started here): this one (the caller), a simcam
ONVIF camera (`--role camera`), and the ptz service (`python -m argus_ptz`). For each action the caller sends the
same command both ways, alternating: directly, with the ONVIF client the service itself uses (`OnvifPtz`, connected
and discovered beforehand), and as a `PtzCommand` request on the bus, which the service arbitrates (a compare-and-set
on the control lease in KV), carries out over ONVIF, audits (a JetStream publish acknowledged before the reply) and
answers. The added latency is the difference of the two distributions' percentiles. Not a pytest test: it prints
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp

from argus_core.bus import Bus
from argus_core.bus import messages as msgs
from argus_core.bus import subjects as subs
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_devstack.backends import new_nats_server, new_postgres_server
from argus_devstack.ports import free_port
from argus_ptz.onvif_client import CameraRecord, OnvifPtz

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "bench", "bench-Pa55"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- camera role ------------------------------------------------------------------------------------------------


async def _camera() -> int:
    from aiohttp import web

    from argus_simcam.onvif import OnvifCamera, VideoCodec, VideoProfile, make_onvif_app
    from argus_simcam.ptz import PtzLimits, PtzModel

    async def snapshot(profile: VideoProfile) -> bytes:
        return b""

    camera = OnvifCamera(
        name="bench",
        username=USER,
        password=PASSWORD,
        profiles=[VideoProfile("main", "Main", 1920, 1080, VideoCodec.H264)],
        rtsp_url=lambda profile, host: f"rtsp://{host}/bench",
        snapshot_jpeg=snapshot,
        ptz=PtzModel(limits=PtzLimits(pan_speed=10, tilt_speed=10, zoom_speed=10)),
    )
    runner = web.AppRunner(make_onvif_app(camera), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sys.stdout.write(f"{runner.addresses[0][1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


# -- caller role ------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _process(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while not await condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.1)


async def _bench(args: argparse.Namespace) -> int:
    nats_server = new_nats_server()
    postgres = new_postgres_server()
    nats_server.start()
    postgres.start()
    try:
        dsn = postgres.create_database("ptz_bench")
        camera_role = ("-m", "tests.bench.ptz_bench", "--role", "camera")
        async with _process(sys.executable, *camera_role) as camera:
            assert camera.stdout is not None
            camera_port = int(await asyncio.wait_for(camera.stdout.readline(), 30))
            device_url = f"http://127.0.0.1:{camera_port}/onvif/device_service"
            pool = await create_pool(DatabaseConfig(url=dsn, pool_max=2))
            await migrate(pool)
            await pool.execute(
                "INSERT INTO cameras (id, name, main_url, onvif_url, username, password, has_ptz) "
                "VALUES ('bench-1', 'bench', 'rtsp://127.0.0.1:9/x', $1, $2, $3, true)",
                device_url,
                USER,
                PASSWORD,
            )
            await pool.close()
            http_port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
            env.update(
                {
                    "ARGUS_POD_NAME": "bench-ptz",
                    "ARGUS_HTTP_HOST": "127.0.0.1",
                    "ARGUS_HTTP_PORT": str(http_port),
                    "ARGUS_NATS_URL": nats_server.url,
                    "ARGUS_DB_URL": dsn,
                    "ARGUS_LOG_LEVEL": "warning",
                }
            )
            async with _process(sys.executable, "-m", "argus_ptz", env=env), aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    try:
                        async with http.get(f"http://127.0.0.1:{http_port}/readyz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await _wait_for(ready, "the ptz service readiness")
                bus = await Bus.connect(nats_server.url, name="ptz-bench")
                direct = OnvifPtz(
                    CameraRecord(id="bench-1", onvif_url=device_url, username=USER, password=PASSWORD), timeout_s=5
                )
                try:
                    await direct.connect()
                    results = await _measure(args, bus, direct)
                finally:
                    await direct.close()
                    await bus.drain()
    finally:
        nats_server.close()
        postgres.close()
    _report(args, results)
    return 0


async def _measure(args: argparse.Namespace, bus: Bus, direct: OnvifPtz) -> dict[str, dict[str, list[float]]]:
    actor = msgs.Actor(subject="bench-operator", roles=("operator",), client="127.0.0.1")

    async def via_bus(action: msgs.PtzAction) -> None:
        command = msgs.PtzCommand(camera="bench-1", actor=actor, action=action, priority=60)
        result = await bus.request(subs.PTZ_COMMAND, command, subs.PTZ_RESULT, reply_timeout_s=10, camera="bench-1")
        if not result.ok:
            raise SystemExit(f"the service refused a benchmark command: {result}")

    cases: dict[str, tuple[Callable[[int], Awaitable[object]], Callable[[int], msgs.PtzAction]]] = {
        "absolute": (
            lambda i: direct.absolute_move((i % 10) / 10, 0.0, 0.0, None),
            lambda i: msgs.PtzAbsoluteMove(pan=(i % 10) / 10, tilt=0.0, zoom=0.0),
        ),
        "continuous": (
            lambda i: direct.continuous_move(0.1 if i % 2 else -0.1, 0.0, 0.0, 1.0),
            lambda i: msgs.PtzContinuousMove(pan=0.1 if i % 2 else -0.1, timeout_s=1.0),
        ),
        "status": (lambda i: direct.status(), lambda i: msgs.PtzGetStatus()),
    }
    out: dict[str, dict[str, list[float]]] = {}
    for name, (call_direct, action) in cases.items():
        times: dict[str, list[float]] = {"direct": [], "bus": []}
        for i in range(args.warmup + args.commands):
            started = time.perf_counter()
            await call_direct(i)
            direct_s = time.perf_counter() - started
            started = time.perf_counter()
            await via_bus(action(i))
            bus_s = time.perf_counter() - started
            if i >= args.warmup:
                times["direct"].append(direct_s * 1000)
                times["bus"].append(bus_s * 1000)
            if args.pause_ms:
                await asyncio.sleep(args.pause_ms / 1000)
        out[name] = times
    return out


def _report(args: argparse.Namespace, results: dict[str, dict[str, list[float]]]) -> None:
    rows = []
    for name, times in results.items():
        d, b = times["direct"], times["bus"]
        paired = [y - x for x, y in zip(d, b, strict=True)]
        rows.append(
            {
                "action": name,
                "commands": len(d),
                "direct_p50_ms": round(percentile(d, 50), 3),
                "direct_p95_ms": round(percentile(d, 95), 3),
                "bus_p50_ms": round(percentile(b, 50), 3),
                "bus_p95_ms": round(percentile(b, 95), 3),
                "added_p50_ms": round(percentile(b, 50) - percentile(d, 50), 3),
                "added_p95_ms": round(percentile(b, 95) - percentile(d, 95), 3),
                "paired_added_p50_ms": round(percentile(paired, 50), 3),
                "paired_added_p95_ms": round(percentile(paired, 95), 3),
                "bus_mean_ms": round(statistics.fmean(b), 3),
            }
        )
    header = (
        f"{'action':<11} {'n':>5} {'direct p50':>10} {'p95':>7} {'via bus p50':>11} {'p95':>7} "
        f"{'added p50':>9} {'p95':>7}   (ms)"
    )
    sys.stdout.write(header + "\n")
    for r in rows:
        sys.stdout.write(
            f"{r['action']:<11} {r['commands']:>5} {r['direct_p50_ms']:>10.2f} {r['direct_p95_ms']:>7.2f} "
            f"{r['bus_p50_ms']:>11.2f} {r['bus_p95_ms']:>7.2f} {r['added_p50_ms']:>9.2f} {r['added_p95_ms']:>7.2f}\n"
        )
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["bench", "camera"], default="bench")
    parser.add_argument("--commands", type=int, default=500, help="measured commands per action and path")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--pause-ms", type=float, default=2.0, help="between command pairs (a joystick's pace)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)  # onvif-zeep-async configures the root logger on import
    if args.role == "camera":
        return asyncio.run(_camera())
    return asyncio.run(_bench(args))


if __name__ == "__main__":
    sys.exit(main())
